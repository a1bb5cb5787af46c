"""Writing one section of docs/benchmarks.md: each benchmark owns a level-2 section and replaces only that."""

from __future__ import annotations

from pathlib import Path

__all__ = ["replace_section", "replace_sections"]


def replace_section(path: Path, heading: str, section: str) -> None:
    """Put ``section`` (which starts with ``heading``) into ``path``: in place of the section with that heading (up
    to the next level-2 heading), else before "## Method", else at the end. The rest of the file is kept."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == heading]
    if starts:
        start = starts[0]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = next((i for i, line in enumerate(lines) if line.rstrip("\n") == "## Method"), len(lines))
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    block = section if end == len(lines) else section + "\n"
    if start > 0 and lines[start - 1].strip():
        block = "\n" + block
    path.write_text("".join(lines[:start]) + block + "".join(lines[end:]))


def replace_sections(path: Path, text: str) -> None:
    """Put a generated document ``text`` into ``path`` part by part: its preamble (everything before its first
    level-2 heading) in place of the file's, and each of its level-2 sections by :func:`replace_section`. The file's
    other sections, which other benchmarks (or people) own, are kept where they are."""
    if not path.exists():
        path.write_text(text)
        return
    preamble, *sections = ("\n" + text).split("\n## ")
    old = path.read_text()
    _old_preamble, sep, rest = ("\n" + old).partition("\n## ")
    path.write_text(preamble.lstrip("\n").rstrip("\n") + "\n\n" + ("## " + rest if sep else ""))
    for section in sections:
        heading = "## " + section.split("\n", 1)[0].rstrip()
        replace_section(path, heading, "## " + section.rstrip("\n") + "\n")
