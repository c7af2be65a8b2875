"""The README's fenced code blocks, as the README doc test runs them.

Blocks tagged ``bash``, ``python`` or ``yaml`` are the examples; untagged ones (the layout
sketch, ``make`` targets) are prose. An HTML comment on the line just before a block says
how to treat it (invisible on GitHub, visible in the source):

- ``<!-- doctest: skip (why) -->``: not run here (needs a Postgres server, BigQuery, …);
- ``<!-- doctest: file examples/x.py -->``: the block is that file of the repository, which
  later blocks use; the test checks the two are identical instead of running the block.

Every other ``bash``/``python`` block runs, in order; a ``yaml`` block must be a ``file``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNNABLE", "Block", "readme_blocks"]

README = Path(__file__).resolve().parent.parent / "README.md"
RUNNABLE = ("bash", "python")
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|file)\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # 1-based line of the opening fence
    action: str = "run"  # run | skip | file
    argument: str = ""  # skip: the reason; file: the path

    def describe(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip()), "")
        return f"README.md:{self.line} ({self.language}) {first[:70]}"


def readme_blocks(path: Path = README) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        language = opening.group(1)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        code = "\n".join(lines[index + 1 : end]) + "\n"
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        if language:
            action, argument = ("run", "")
            if marker is not None:
                action = marker.group(1)
                argument = marker.group(2).strip("() ")
            blocks.append(Block(language, code, index + 1, action, argument))
        index = end + 1
    return blocks
