"""Every relative link of the documentation points to a file that exists (issue #27).

The README is the front door and the reference lives under ``docs/``, one level down, so a link
moved between them breaks silently unless something checks it: every ``[text](target)`` and
``![alt](target)`` of README.md, docs/*.md, golden/README.md, golden/survey/README.md and
tutorials/README.md that is not a web address must name an existing file or folder, and a
``#fragment`` into a markdown file must be one of that file's headings (GitHub's anchors).
Fenced code blocks are not read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "golden" / "README.md",
         REPO / "golden" / "survey" / "README.md", REPO / "tutorials" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, ``-``, ``_``
    and spaces kept), spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of a markdown file (a repeated one gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` that name no existing file, or no heading of the file."""
    bad = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                bad.append(f"line {number}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                bad.append(f"line {number}: {target} (no heading #{fragment} in {resolved.name})")
    return bad


def test_the_pages_are_found():
    assert REPO / "docs" / "RESULTS.md" in PAGES and all(p.is_file() for p in PAGES)


@pytest.mark.parametrize("page", [p.relative_to(REPO).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    bad = broken_links(REPO / page)
    assert not bad, f"{page} has broken links: " + "; ".join(bad)


def test_a_broken_link_and_a_missing_anchor_are_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# A page\n\n## The paper's claims, measured here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/A.md) [ok](docs/A.md#the-papers-claims-measured-here) [web](https://x.org/y)\n"
                    "[moved](A.md) ![figure](results/missing.png) [anchor](docs/A.md#no-such-heading) [self](#a)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page) == ["line 2: A.md (no such file)", "line 2: results/missing.png (no such file)",
                                  "line 2: docs/A.md#no-such-heading (no heading #no-such-heading in A.md)",
                                  "line 2: #a (no heading #a in README.md)"]


def test_github_anchors():
    assert anchor("Byte layout of `pack()`") == "byte-layout-of-pack"
    assert anchor("The calibration recipe (`dmx calibrate`'s defaults)") == "the-calibration-recipe-dmx-calibrates-defaults"
    assert anchor("The β gradient") == "the-β-gradient"
