"""What ``raydeck custom-jobs`` and ``raydeck hpt`` share to look at a run (a job or a trial):
its metric series, and its files (listed, or downloaded keeping their paths)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from raydeck.cli.output import console, print_json, print_table
from raydeck.core.errors import NotFoundError
from raydeck.core.models.training import ArtifactFile, MetricPoint

__all__ = ["Dest", "Download", "show_metrics", "show_or_download"]

Download = Annotated[
    list[str] | None,
    typer.Option(
        "--download",
        "-d",
        help="Download this file, or every file under this directory (e.g. model); repeatable.",
    ),
]
Dest = Annotated[
    Path, typer.Option("--dest", help="Where downloads go (their listed paths kept under it).")
]


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _selected(files: Sequence[ArtifactFile], wanted: str) -> list[ArtifactFile]:
    prefix = wanted.strip("/")
    return [f for f in files if f.path == prefix or f.path.startswith(prefix + "/")]


def show_or_download(
    title: str,
    files: Sequence[ArtifactFile],
    fetch: Callable[[str, Path], Path],
    downloads: list[str] | None,
    dest: Path,
    output: str,
) -> None:
    """Without ``downloads``: the listing. With: save each selected file to dest/<path>."""
    if not downloads:
        if output == "json":
            print_json(list(files))
            return
        rows = [(f.path, _size(f.size), f.modified.strftime("%Y-%m-%d %H:%M:%S")) for f in files]
        print_table(title, ["path", "size", "modified"], rows)
        return
    chosen: dict[str, ArtifactFile] = {}
    for wanted in downloads:
        matched = _selected(files, wanted)
        if not matched:
            raise NotFoundError(f"no artifact file or directory {wanted!r} in {title}")
        chosen.update((f.path, f) for f in matched)
    total = 0
    for path, item in sorted(chosen.items()):
        saved = fetch(path, dest / path)
        total += item.size
        console.print(f"{saved}  {_size(item.size)}", highlight=False)
    console.print(f"{len(chosen)} file(s), {_size(total)} saved under {dest}", highlight=False)


def show_metrics(title: str, points: Sequence[MetricPoint], output: str) -> None:
    """Every stored point, in the order reported."""
    if output == "json":
        print_json(list(points))
        return
    rows = [
        (
            p.metric,
            "" if p.step is None else p.step,
            f"{p.value:.6g}",
            p.time.strftime("%Y-%m-%d %H:%M:%S") if p.time else "",
        )
        for p in points
    ]
    print_table(title, ["metric", "step", "value", "time"], rows)
