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

Two checks make a build fail instead of storing an unreadable notebook:

* every figure is checked on its matplotlib objects when it is rendered (axis labels, a legend
  where several lines share an axes; ``tutorials/figure_check.py``, installed in the kernel at
  start-up, outside the notebook's cells);
* the stored outputs must not hold a traceback, a warning or log line (any stderr output) or a
  progress-bar frame (``output_problems``). Notebooks silence library warnings and progress bars
  at their source, in their first cell, rather than having outputs deleted afterwards.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mx_spec.atomic import atomic_write_text

TUTORIALS = Path(__file__).resolve().parent
SOURCES = TUTORIALS / "src"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600
FIGURE_CHECK = TUTORIALS / "figure_check.py"
#: Run by the kernel at start-up (IPython's ``exec_lines``): outside every cell, so the cells stay
#: those of the source; ``runpy`` keeps the helper's names out of the notebook's namespace.
_KERNEL_STARTUP = f"__import__('runpy').run_path({str(FIGURE_CHECK)!r})['install']()"

#: What a stored text output must not contain (besides any stderr output at all).
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_WARNING_LINE = re.compile(
    r"^(.*\b[A-Z]\w*Warning\b[:(]|WARNING\b|[WE]\d{4} \d\d:\d\d:\d\d)", re.MULTILINE
)  # "...UserWarning: ...", a logging "WARNING ..." line, a glog-style "W1128 08:07:28" torch log line
_PROGRESS_FRAME = re.compile(r"\r|\d+%\|| \d+/\d+ \[\d\d:\d\d")  # tqdm: carriage returns, " 42%|", " 3/14 [00:02"

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


class OutputProblem(RuntimeError):
    """An executed notebook holds an output a reader should not see (``output_problems``)."""


def _output_texts(output) -> list[str]:
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return ["\n".join(output.get("traceback", []))]
    return [output.get("data", {}).get("text/plain", "")]


def output_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with the stored outputs of ``nb``: one line per problem, empty if none.

    A problem is an error output or a traceback in any text, any stderr output (library warnings
    and log lines go there), a warning line in any text, or a progress-bar frame.
    """
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            where = f"cell {index}"
            if output.output_type == "error":
                problems.append(f"{where}: error output {output.get('ename')}: {output.get('evalue')}")
                continue
            if output.output_type == "stream" and output.name == "stderr":
                first = output.text.strip().splitlines()[:1] or [repr(output.text)]
                problems.append(f"{where}: stderr output: {first[0][:160]}")
            for text in _output_texts(output):
                for kind, pattern in (("traceback", _TRACEBACK), ("warning line", _WARNING_LINE),
                                      ("progress-bar frame", _PROGRESS_FRAME)):
                    match = pattern.search(text)
                    if match:
                        line = text[text.rfind("\n", 0, match.start()) + 1:].split("\n", 1)[0]
                        problems.append(f"{where}: {kind}: {line.strip()[:160]!r}")
    return problems


def execute(nb: nbformat.NotebookNode, *, cwd: Path = TUTORIALS, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run every cell of ``nb`` in place (outputs stored in it); returns the wall time in seconds.

    The kernel checks every figure it renders (``figure_check.install``). Raises
    ``nbclient.exceptions.CellExecutionError`` on the first failing cell and ``OutputProblem`` if
    the outputs hold an error (e.g. a figure that failed its check while displayed), stderr
    output, a warning line or a progress-bar frame.
    """
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(cwd)}},
        record_timing=False, extra_arguments=[f"--IPKernelApp.exec_lines={_KERNEL_STARTUP}"],
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    problems = output_problems(nb)
    if problems:
        raise OutputProblem("the executed notebook holds outputs a reader should not see:\n  " + "\n  ".join(problems))
    return seconds


def write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    """Validate and write ``nb`` to ``path`` atomically (:mod:`mx_spec.atomic`)."""
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")  # nbformat.write ends files with \n


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
