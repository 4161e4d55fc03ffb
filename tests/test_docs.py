"""The documentation stays true to the code and to itself: README.md's exit-code table is
`heretic.errors.ExitCode` exactly and is the only exit-code table in any Markdown file, and
every relative link in the Markdown files points to a file (and a heading) that exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from heretic.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Folders that hold local state, not documentation (see .gitignore).
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "heretic-output", "workspace", "tmp"}


def markdown_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(
            d
            for d in dirs
            if not (
                d.startswith(".")
                or d in SKIP_DIRS
                or d.endswith(".egg-info")
                or d.startswith("output")
            )
        )
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".md")]
    return found


def prose_lines(path: Path) -> list[str]:
    """The file's lines with fenced code blocks blanked (line numbers stay)."""
    lines, fence = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            lines.append("")
        else:
            lines.append("" if fence else line)
    return lines


def tables(path: Path) -> list[tuple[int, list[str], list[list[str]]]]:
    """(line number, header cells, body rows) of every pipe table outside code blocks."""

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    found, block, start = [], [], 0
    for number, line in enumerate([*prose_lines(path), ""], 1):
        if line.lstrip().startswith("|"):
            if not block:
                start = number
            block.append(line)
            continue
        if len(block) >= 2 and re.fullmatch(r"[\s|:-]+", block[1]):
            found.append((start, cells(block[0]), [cells(row) for row in block[2:]]))
        block = []
    return found


def is_exit_code_table(header: list[str]) -> bool:
    words = {re.sub(r"[`*_]", "", cell).strip().lower() for cell in header}
    return bool(words & {"code", "codes", "exit code", "exit codes", "exit status"})


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose_lines(path):
        match = re.match(r"#{1,6} +(.*?) *#*$", line)
        if match:
            base = slug(match.group(1))
            count = counts.get(base, 0)
            found.add(f"{base}-{count}" if count else base)  # repeated headings get -1, -2, ...
            counts[base] = count + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(prose_lines(path), 1):
        line = re.sub(r"`[^`]*`", "", line)
        found += [
            (number, m.group(1))
            for m in re.finditer(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)", line)
        ]
    return found


def readme_exit_table() -> list[list[str]]:
    found = [(header, rows) for _, header, rows in tables(README) if is_exit_code_table(header)]
    assert len(found) == 1, f"README.md should hold exactly one exit-code table, found {len(found)}"
    header, rows = found[0]
    assert [c.lower() for c in header] == ["code", "name", "meaning"], header
    return rows


def test_readme_exit_codes_are_the_enum() -> None:
    rows = readme_exit_table()
    listed = []
    for row in rows:
        assert len(row) == 3 and row[2], f"README exit-code row without a meaning: {row}"
        assert re.fullmatch(r"\d+", row[0]), f"one code per row, not {row[0]!r}"
        listed.append((int(row[0]), row[1].strip("`")))
    assert listed == [(code.value, code.name) for code in ExitCode]


def test_no_other_exit_code_table() -> None:
    files = markdown_files()
    assert README in files and ROOT / "BENCHMARKS.md" in files
    assert any(p.parent == ROOT / "docs" for p in files)
    extra = [
        f"{p.relative_to(ROOT)}:{line}: {' | '.join(header)}"
        for p in files
        for line, header, _ in tables(p)
        if is_exit_code_table(header) and p != README
    ]
    assert not extra, (
        "exit codes belong in README.md's one table; link to it instead:\n" + "\n".join(extra)
    )


@pytest.mark.parametrize(
    "path", [p for p in markdown_files() if p.parent == ROOT / "docs"], ids=lambda p: p.name
)
def test_exit_code_sections_link_to_the_readme_table(path: Path) -> None:
    text = path.read_text()
    if re.search(r"^#+ Exit codes", text, flags=re.M):
        assert "../README.md#exit-codes" in text


def test_relative_links_resolve() -> None:
    broken = []
    for path in markdown_files():
        for line, target in links(path):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):
                continue  # http(s), mailto: not checked offline
            file, _, fragment = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}:{line}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{where} (no heading #{fragment} in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_links() -> None:
    readme_links = dict((target, line) for line, target in links(README))
    assert "docs/container.md" in readme_links and "BENCHMARKS.md" in readme_links
    assert "exit-codes" in anchors(README)
    assert (
        slug("When a run fails for good: `--on-failure keep|stop|destroy`")
        == "when-a-run-fails-for-good---on-failure-keepstopdestroy"
    )
