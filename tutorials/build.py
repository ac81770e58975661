"""Build the tutorial notebooks from their sources and execute them in place.

Each notebook ``tutorials/<name>.ipynb`` is generated from ``tutorials/src/<name>.py``, a plain
Python file in the "percent" cell format (the format of Jupytext and of VS Code / Spyder cells):

* a line ``# %%`` starts a code cell;
* a line ``# %% [markdown]`` starts a Markdown cell whose lines are comments (``# `` is removed);
* lines before the first marker are ignored (use them for a module comment).

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python tutorials/build.py                 # build + execute all notebooks
    .venv/bin/python tutorials/build.py 02_offset       # only notebooks whose name starts so
    .venv/bin/python tutorials/build.py --no-execute    # regenerate cells, drop outputs

Notebook 04 reads the data directory from ``$DMX_DATA_DIR`` (CI: ``../shared/data``).
Execution uses the ``python3`` kernel; jupyter_client starts it with the interpreter running
this script, so the notebooks see the same environment. Each notebook is written atomically
(temporary file + rename) after it has executed without error, so an interrupted build never
leaves a half-written notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent
SOURCES = TUTORIALS / "src"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600

_CODE_MARK = "# %%"
_MARKDOWN_MARK = "# %% [markdown]"


def parse_percent(text: str) -> list[tuple[str, str]]:
    """Cells ``[(kind, source)]`` (kind ``"code"`` or ``"markdown"``) of a percent-format file.

    Leading and trailing blank lines of each cell are dropped; Markdown lines lose their ``#``
    and one following space. A Markdown line that is not a comment raises ``ValueError`` (it
    would otherwise be silently lost).
    """
    cells: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.rstrip()
        if stripped == _MARKDOWN_MARK:
            cells.append(("markdown", []))
        elif stripped == _CODE_MARK:
            cells.append(("code", []))
        elif cells:
            kind, body = cells[-1]
            if kind == "markdown":
                if stripped and not stripped.startswith("#"):
                    raise ValueError(
                        f"line {lineno}: Markdown cells hold only comment lines ('# text'); "
                        f"start a code cell with '{_CODE_MARK}' first"
                    )
                stripped = stripped[2:] if stripped.startswith("# ") else stripped[1:]
            body.append(stripped)
    out = []
    for kind, body in cells:
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if body:
            out.append((kind, "\n".join(body)))
    return out


def notebook_from_source(path: Path) -> nbformat.NotebookNode:
    """A fresh (unexecuted) nbformat v4 notebook built from the percent-format file ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in parse_percent(path.read_text(encoding="utf-8")):
        if kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        else:
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
    # Cell ids derived from the position keep rebuilt notebooks diff-stable.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def execute(nb: nbformat.NotebookNode, *, cwd: Path = TUTORIALS, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run every cell of ``nb`` in place (outputs stored in it); returns the wall time in seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    """Validate and write ``nb`` to ``path`` via a temporary file in the same folder + rename."""
    nbformat.validate(nb)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(nb, handle)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; notebooks are ordinary repository files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def source_files(prefixes: list[str] | None = None) -> list[Path]:
    """The notebook sources ``src/NN_*.py`` (sorted), optionally filtered by name prefixes."""
    files = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if prefixes:
        files = [f for f in files if any(f.stem.startswith(p) for p in prefixes)]
        if not files:
            valid = ", ".join(f.stem for f in sorted(SOURCES.glob("[0-9][0-9]_*.py")))
            raise SystemExit(f"no notebook source matches {prefixes}; valid names: {valid}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without outputs")
    args = parser.parse_args(argv)
    for src in source_files(args.names):
        nb = notebook_from_source(src)
        target = TUTORIALS / f"{src.stem}.ipynb"
        if not args.no_execute:
            seconds = execute(nb)
            print(f"{target.name}: executed in {seconds:.1f} s", file=sys.stderr)
        write_atomic(nb, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
