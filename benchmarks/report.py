"""Benchmark results: printed as a table and written as JSON for comparison across commits."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["Figure", "p50_p99", "write_report"]

RESULTS = Path(__file__).parent / "results" / "latest.json"


def p50_p99(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile (nearest rank below) of latency samples."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


@dataclass(frozen=True)
class Figure:
    """One measured figure. ``target`` bounds the ratio (≤, or ≥ when ``higher_is_better``)
    unless ``absolute``, when it bounds raydeck's own value; ``None``: shown for context,
    with no target to meet (``met`` is None)."""

    name: str
    unit: str
    raydeck: float
    raw: float | None
    target: float | None
    absolute: bool = False
    higher_is_better: bool = False  # throughputs: met when the ratio reaches the target

    @property
    def ratio(self) -> float | None:
        return None if not self.raw else self.raydeck / self.raw

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.raydeck if self.absolute else self.ratio
        if value is None:
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    @property
    def bound(self) -> str:
        if self.target is None:
            return "-"
        sign = "≥" if self.higher_is_better else "≤"
        return f"{sign} {self.target} {self.unit}" if self.absolute else f"{sign} {self.target}×"

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("absolute")
        data.pop("higher_is_better")
        data["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        data["raydeck"] = round(self.raydeck, 4)
        data["raw"] = None if self.raw is None else round(self.raw, 4)
        data["target"] = self.target
        data["met"] = self.met
        return data


def write_report(figures: list[Figure], path: Path = RESULTS) -> None:
    """Print ``figures``; in the JSON file they replace entries of the same name, so running
    one group keeps the other groups' last figures."""
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
            fig.bound,
            {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[fig.met],
        )
    Console().print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in figures}
    try:
        kept = [e for e in json.loads(path.read_text()) if e["name"] not in names]
    except (OSError, ValueError, KeyError, TypeError):
        kept = []
    path.write_text(json.dumps(kept + [f.as_json() for f in figures], indent=2) + "\n")
    Console().print(f"wrote {path}")
