"""Build the tutorial notebooks from their sources and execute them in place.

Each notebook ``tutorials/<name>.ipynb`` is generated from ``tutorials/src/<name>.py``, a plain
Python file in the "percent" cell format (the format of Jupytext and of VS Code / Spyder cells):

* a line ``# %%`` starts a code cell;
* a line ``# %% [markdown]`` starts a Markdown cell whose lines are comments (``# `` is removed);
* a line ``# %% [solution]`` starts the code cell of an exercise's solution: it computes the
  answer and asserts it, so the build runs every solution and fails on a wrong one; the cell's
  input is collapsed in JupyterLab (``jupyter.source_hidden``) and tagged ``solution``;
* lines before the first marker are ignored (use them for a module comment).

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python tutorials/build.py                 # build + execute all notebooks
    .venv/bin/python tutorials/build.py 02_offset       # only notebooks whose name starts so
    .venv/bin/python tutorials/build.py --no-execute    # regenerate cells, drop outputs
    .venv/bin/python tutorials/build.py --check 03      # execute afresh, compare with the stored outputs

Notebook 04 reads the data directory from ``$DMX_DATA_DIR`` (CI: ``../shared/data``).
Execution uses the ``python3`` kernel; jupyter_client starts it with the interpreter running
this script, so the notebooks see the same environment. Each notebook is written atomically
(temporary file + rename) after it has executed without error, so an interrupted build never
leaves a half-written notebook.

Two checks make a build fail instead of storing an unreadable notebook:

* every figure is checked on its matplotlib objects when it is rendered (axis labels, a legend
  where several lines share an axes; ``tutorials/figure_check.py``, installed in the kernel at
  start-up, outside the notebook's cells);
* (``--check``, and ``tests/project/test_tutorials.py``) a fresh execution must reproduce every number
  the stored outputs state (``stale_outputs``): integers exactly, decimals to one unit in their
  last printed digit; only measured times and memory are exempt. The notebooks' prose points to
  these outputs instead of restating numbers, so a stale stored run cannot go unnoticed.
  The notebooks in ``MACHINE_DEPENDENT`` are compared only on the machine type that stored them
  (``machine_signature``, kept in the notebook's metadata); on another they must still execute
  with every solution's assertion holding, and ``OtherMachine`` says what was not compared;
* the stored outputs must not hold a traceback, a warning or log line (any stderr output) or a
  progress-bar frame (``output_problems``). Notebooks silence library warnings and progress bars
  at their source, in their first cell, rather than having outputs deleted afterwards.
"""

from __future__ import annotations

import argparse
import copy
import platform
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

#: Notebooks whose printed numbers come from short calibrations with SGD momentum 0.99 on a few
#: layers: a last-bit difference between two CPUs' float kernels (another summation order in a
#: matrix product) tips one layer into the other format, and every number after it moves (03's
#: toy printed 7.00 bits on one machine type and 6.50 on another from the same source). Their stored
#: outputs are compared with a fresh run only on the machine type that stored them.
MACHINE_DEPENDENT = frozenset({"03_annealing", "04_kl_baseline_vs_dmx"})
#: The CPU extensions that choose the float kernels of torch (ATen's dispatch, oneDNN, MKL) and numpy.
_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
               "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")
#: Where a notebook keeps the machine its outputs were computed on.
METADATA_KEY = "dmx_build"

#: What a stored text output must not contain (besides any stderr output at all).
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_WARNING_LINE = re.compile(
    r"^(.*\b[A-Z]\w*Warning\b[:(]|WARNING\b|[WE]\d{4} \d\d:\d\d:\d\d)", re.MULTILINE
)  # "...UserWarning: ...", a logging "WARNING ..." line, a glog-style "W1128 08:07:28" torch log line
_PROGRESS_FRAME = re.compile(r"\r|\d+%\|| \d+/\d+ \[\d\d:\d\d")  # tqdm: carriage returns, " 42%|", " 3/14 [00:02"

_CODE_MARK = "# %%"
_MARKDOWN_MARK = "# %% [markdown]"
_SOLUTION_MARK = "# %% [solution]"
#: Metadata of a solution cell: JupyterLab and VS Code show it collapsed (click to open).
SOLUTION_METADATA = {"jupyter": {"source_hidden": True}, "tags": ["solution"]}


def parse_percent(text: str) -> list[tuple[str, str]]:
    """Cells ``[(kind, source)]`` (kind ``"code"``, ``"solution"`` or ``"markdown"``) of a percent-format file.

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
        elif stripped == _SOLUTION_MARK:
            cells.append(("solution", []))
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
        elif kind == "solution":
            nb.cells.append(nbformat.v4.new_code_cell(source, metadata=copy.deepcopy(SOLUTION_METADATA)))
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


#: A number in an output: an optional sign, digits (with thousands commas), decimals, an exponent;
#: not glued to a name ("mxfp4", "L0", "0x3e" stay text and are compared as text).
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
#: Measured run costs, which differ from run to run by nature: a number followed by a unit of
#: time or memory ("scored 14 layers in 22 s", "peak memory 812 MiB") is not compared.
_MEASURED = re.compile(r"\d+(?:\.\d+)?(?= ?(?:s|ms|min|MiB|GiB|MB|GB)\b)")


def stated_texts(nb: nbformat.NotebookNode) -> list[str]:
    """What each code cell states in text, in order: its stdout, its Markdown and its plain-text
    results (a plain text that only stands beside an image or Markdown is left out)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                data = output.get("data", {})
                if "text/markdown" in data:
                    parts.append(data["text/markdown"])
                elif not any(key.startswith("image/") for key in data):
                    parts.append(data.get("text/plain", ""))
        texts.append("".join(parts))
    return texts


def _tokens(text: str) -> list[str]:
    """``text`` cut into numbers and the text between them (measured costs masked as ``<measured>``)."""
    masked = _MEASURED.sub("<measured>", text)
    tokens, last = [], 0
    for match in _NUMBER.finditer(masked):
        tokens += [masked[last:match.start()], match.group()]
        last = match.end()
    return tokens + [masked[last:]]


def _last_place(number: str) -> float:
    """One unit in the last printed digit of a decimal (``"0.123"`` -> 0.001, ``"1.5e-03"`` -> 1e-4)."""
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def number_differs(stored: str, fresh: str) -> bool:
    """Whether two printed numbers disagree beyond what printing can explain.

    An integer (a count, a layer index, a bit code) must be equal. A decimal may differ by one
    unit in its last printed digit: a last-bit difference of the computation (another CPU's
    float summation order) moves a rounded printout by at most that much, while any real change
    of an outcome here (an assignment: 4/14 of a bit per layer; a perplexity that moved) is
    larger. Both must be printed with the same number of digits.
    """
    if stored == fresh:
        return False
    is_decimal = any(c in stored.lower() for c in ".e")
    if not is_decimal or _last_place(stored) != _last_place(fresh):
        return True
    try:
        a, b = (float(v.replace(",", "")) for v in (stored, fresh))
        return abs(a - b) > 1.000001 * _last_place(stored)
    except OverflowError:
        return True


def stale_outputs(stored: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> list[str]:
    """Where the stored outputs of a notebook state something a fresh execution ``fresh`` does not:
    one line per difference (empty: the stored run is current). Text must match exactly, numbers
    as :func:`number_differs` says; measured times and memory are exempt (``_MEASURED``)."""
    old, new = stated_texts(stored), stated_texts(fresh)
    if len(old) != len(new):
        return [f"{len(old)} code cells stored, {len(new)} executed"]
    problems = []
    for index, (a, b) in enumerate(zip(old, new)):
        ta, tb = _tokens(a), _tokens(b)
        if len(ta) != len(tb):
            problems.append(f"code cell {index}: stored {a[:200]!r}, fresh run {b[:200]!r}")
            continue
        for position, (x, y) in enumerate(zip(ta, tb)):
            stale = number_differs(x, y) if position % 2 else x != y
            if stale:
                context = "".join(ta[max(0, position - 3):position + 2])[-120:]
                problems.append(f"code cell {index}: stored {x!r}, fresh run {y!r} (in {context!r})")
                break
    return problems


class StaleOutputs(RuntimeError):
    """A notebook's stored outputs state numbers a fresh execution does not reproduce (``stale_outputs``)."""


class OtherMachine(RuntimeError):
    """A ``MACHINE_DEPENDENT`` notebook executed without error here, but its stored outputs come
    from another machine type, so its numbers were not compared; ``seconds``: the fresh run's wall time."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


def machine_signature() -> str:
    """The machine type as far as float results depend on it: architecture, CPU model and the SIMD
    extensions that pick the float kernels (``"x86_64 AMD EPYC [avx avx2 avx512f ...]"``)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())  # the first processor's entry
    except OSError:  # not Linux: the architecture is what is known
        pass
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("cpu part") or platform.processor() or "unknown CPU"
    return f"{platform.machine()} {model} [{' '.join(f for f in _SIMD_FLAGS if f in flags)}]"


def record_machine(nb: nbformat.NotebookNode) -> None:
    """Keep in ``nb``'s metadata the machine it was executed on (``machine_signature``)."""
    nb.metadata[METADATA_KEY] = {"machine": machine_signature()}


def execute(nb: nbformat.NotebookNode, *, cwd: Path = TUTORIALS, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run every cell of ``nb`` in place (outputs stored in it, and the machine in its metadata:
    ``record_machine``); returns the wall time in seconds.

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
    record_machine(nb)
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


def check_current(src: Path, stored: Path, *, cwd: Path = TUTORIALS, timeout: int = CELL_TIMEOUT_S,
                  machine_dependent: bool | None = None) -> float:
    """Execute the notebook of source ``src`` afresh and compare it with the stored notebook ``stored``.

    Raises ``StaleOutputs`` listing the differences (``stale_outputs``) when the stored outputs
    state a number or text the fresh run does not, and whatever ``execute`` raises (a failing
    cell, e.g. an exercise's solution whose assertion no longer holds); returns the fresh run's
    wall time in seconds. A machine-dependent notebook (default: its name is in
    ``MACHINE_DEPENDENT``) whose stored outputs were computed on another machine type raises
    ``OtherMachine`` instead of comparing them, after it has executed without error.
    """
    if machine_dependent is None:
        machine_dependent = src.stem in MACHINE_DEPENDENT
    fresh = notebook_from_source(src)
    seconds = execute(fresh, cwd=cwd, timeout=timeout)
    stored_nb = nbformat.read(stored, as_version=4)
    recorded = stored_nb.metadata.get(METADATA_KEY, {}).get("machine")
    if machine_dependent and recorded != machine_signature():
        raise OtherMachine(f"{stored.name} executed without error in {seconds:.0f} s, but its stored numbers were "
                           f"NOT compared: they were computed on {recorded or 'an unrecorded machine'}, this is "
                           f"{machine_signature()}, and this notebook's numbers depend on the CPU's float kernels "
                           f"(build.MACHINE_DEPENDENT). Rebuild it here (`python tutorials/build.py {src.stem}`) "
                           "to compare on this machine type.", seconds)
    problems = stale_outputs(stored_nb, fresh)
    if problems:
        raise StaleOutputs(f"{stored.name}: the stored outputs differ from a fresh run (rebuild it with "
                           f"`python tutorials/build.py {src.stem}`):\n  " + "\n  ".join(problems))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without outputs")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: execute afresh and fail if a stored output is stale")
    args = parser.parse_args(argv)
    for src in source_files(args.names):
        if args.check:
            try:
                seconds = check_current(src, TUTORIALS / f"{src.stem}.ipynb")
            except OtherMachine as note:
                print(f"note: {note}", file=sys.stderr)
                continue
            print(f"{src.stem}.ipynb: current (fresh run {seconds:.1f} s)", file=sys.stderr)
            continue
        nb = notebook_from_source(src)
        target = TUTORIALS / f"{src.stem}.ipynb"
        if not args.no_execute:
            seconds = execute(nb)
            print(f"{target.name}: executed in {seconds:.1f} s", file=sys.stderr)
        write_atomic(nb, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
