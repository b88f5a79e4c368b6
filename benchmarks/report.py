"""Benchmarks write their results into one file, docs/benchmarks.md, each in its own section."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEach section is written by the benchmark it names, with the command that "
    "reproduces it. Ratios are against baselines measured in the same run; tests never assert "
    "wall-clock times.\n"
)


def write_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between `<!-- begin:name -->` and `<!-- end:name -->`."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    body = f"{begin}\n{text.strip()}\n{end}"
    current = doc.read_text() if doc.exists() else HEADER
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(end, 1)[1]
        current = head + body + tail
    else:
        current = current.rstrip() + "\n\n" + body + "\n"
    doc.write_text(current)
