"""The one writer of a benchmark's section in BENCHMARKS.md: the text between its two markers is replaced, and a
section seen for the first time is added at the end under its title."""
from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, title: str, text: str, intro: str = "") -> None:
    """`intro` goes above the markers when the section is new, and stays as edited after that."""
    begin, end = markers(name)
    doc, block = path.read_text(), f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = f"{doc.rstrip()}\n\n## {title}\n\n{intro}{block}\n"
    path.write_text(doc)


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are written as given (format numbers before)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
