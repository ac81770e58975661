"""Reading committed results files and writing markdown tables: shared by the generators of the
tables of the README and docs/ (:mod:`tools.readme_results`, :mod:`tools.study_tables`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmx.files import read_json

__all__ = ["load_json", "load_sweep", "markdown_table"]


def load_json(path: Path) -> Any:
    """A committed results file (JSON); a missing one is an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} is missing; the README's and docs/' tables are made from it")
    return read_json(path, what="results file", fix="restore it from git (`git checkout -- results/`)")


def load_sweep(folder: Path) -> dict[str, dict[str, Any]]:
    """``{point key: point}`` of a ``dmx sweep`` folder's ``results.json``."""
    return {p["key"]: p for p in load_json(folder / "results.json")["points"]}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align``: one character per column, ``l`` or ``r`` (default left)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(headers), "l")]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"
