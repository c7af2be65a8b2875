"""Benchmark results: printed as a table and written as JSON for comparison across commits."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["Figure", "write_report"]

RESULTS = Path(__file__).parent / "results" / "latest.json"


@dataclass(frozen=True)
class Figure:
    """One measured figure. ``target`` is a ratio bound (ratio ≤ target) unless ``absolute``."""

    name: str
    unit: str
    raydeck: float
    raw: float | None
    target: float
    absolute: bool = False  # target bounds raydeck's value itself, not the ratio

    @property
    def ratio(self) -> float | None:
        return None if not self.raw else self.raydeck / self.raw

    @property
    def met(self) -> bool:
        value = self.raydeck if self.absolute else self.ratio
        return value is not None and value <= self.target

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("absolute")
        data["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        data["raydeck"] = round(self.raydeck, 4)
        data["raw"] = None if self.raw is None else round(self.raw, 4)
        data["target"] = self.target
        data["met"] = self.met
        return data


def write_report(figures: list[Figure], path: Path = RESULTS, *, keep_others: bool = False) -> None:
    """Print and save ``figures``; with ``keep_others`` the saved entries of other names stay
    (a run of one section updates only its figures)."""
    table = Table(title="Raydeck vs raw Ray (same run)", title_justify="left")
    for column in ("figure", "unit", "raydeck", "raw", "ratio", "target", "met"):
        table.add_column(column)
    for fig in figures:
        table.add_row(
            fig.name,
            fig.unit,
            f"{fig.raydeck:.3f}",
            "-" if fig.raw is None else f"{fig.raw:.3f}",
            "-" if fig.ratio is None else f"{fig.ratio:.2f}×",
            f"≤ {fig.target} {fig.unit}" if fig.absolute else f"≤ {fig.target}×",
            "[green]yes[/green]" if fig.met else "[red]no[/red]",
        )
    Console().print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [f.as_json() for f in figures]
    if keep_others and path.exists():
        names = {f.name for f in figures}
        kept = [e for e in json.loads(path.read_text()) if e.get("name") not in names]
        entries = kept + entries
    path.write_text(json.dumps(entries, indent=2) + "\n")
    Console().print(f"wrote {path}")
