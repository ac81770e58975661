"""The results tables of the README and docs/ are the committed results files (issue #16, point 1).

``tools/readme_results.py`` (``make readme-results``) rewrites every ``<!-- results:NAME -->``
section of README.md and docs/*.md from the files under ``results/``; these tests fail when a
section was edited by hand, when a results file changed without the pages, and check the
aggregation of repeated runs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "tools" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
README_TEXT = (REPO / "README.md").read_text(encoding="utf-8")
RESULTS_PAGE = REPO / "docs" / "RESULTS.md"
RESULTS_TEXT = RESULTS_PAGE.read_text(encoding="utf-8")
PAGE_TEXTS = {page: page.read_text(encoding="utf-8") for page in gen.pages(REPO)}


@pytest.mark.results
@pytest.mark.parametrize("page", [p.relative_to(REPO).as_posix() for p in gen.pages(REPO)])
def test_page_sections_equal_what_the_results_files_make(page):
    path = REPO / page
    text = PAGE_TEXTS[path]
    fresh = gen.render(text, REPO, page=path)
    stale = [name for name, old, new in zip(gen.section_names(text),
                                            gen.SECTION.finditer(text), gen.SECTION.finditer(fresh))
             if old.group("body") != new.group("body")]
    assert not stale, f"{page} sections {stale} differ from results/: run `make readme-results` and commit"
    assert fresh == text


def test_every_table_has_its_section_once():
    names = [name for text in PAGE_TEXTS.values() for name in gen.section_names(text)]
    assert sorted(names) == sorted(gen.TABLES), \
        "each table of TABLES needs exactly one section in README.md or a docs/ page"
    assert not gen.check_homes(PAGE_TEXTS)


def test_the_pages_are_the_readme_and_the_docs():
    assert gen.pages(REPO)[0] == REPO / "README.md" and RESULTS_PAGE in gen.pages(REPO)
    assert gen.section_names(README_TEXT), "the README's headline is a generated table"
    assert "sweep_rotations" in gen.section_names(RESULTS_TEXT)


def test_a_table_in_two_pages_or_in_none_is_reported(tmp_path):
    one = "<!-- results:claims -->\n<!-- /results:claims -->\n"
    problems = gen.check_homes({tmp_path / "README.md": one, tmp_path / "docs" / "RESULTS.md": one},
                               {"claims": gen.TABLES["claims"], "demo": gen.TABLES["demo"]})
    assert problems == ["no page holds the section of demo",
                        "section claims appears 2 times (README.md, RESULTS.md): a table has one home"]


def test_links_in_a_table_are_written_relative_to_its_page():
    table = "| a | [repro](golden/survey/reproducers/x.py) ![f](results/a.png) [web](https://x.org/a) [s](#top) |"
    assert gen.relink(table, "") == table
    assert gen.relink(table, "../") == ("| a | [repro](../golden/survey/reproducers/x.py) ![f](../results/a.png) "
                                        "[web](https://x.org/a) [s](#top) |")
    assert gen.page_prefix(REPO / "README.md", REPO) == "" and gen.page_prefix(RESULTS_PAGE, REPO) == "../"
    tables = {"t": lambda root: table}
    text = "<!-- results:t -->\n<!-- /results:t -->\n"
    assert "(../golden/" in gen.render(text, REPO, tables, page=RESULTS_PAGE)
    assert "(golden/" in gen.render(text, REPO, tables, page=REPO / "README.md")


@pytest.mark.results
def test_a_hand_edited_number_is_caught(tmp_path):
    edited = RESULTS_TEXT.replace("| uniform MXFP4 E2M1 | 4 | 130.39 |", "| uniform MXFP4 E2M1 | 4 | 92.33 |", 1)
    assert edited != RESULTS_TEXT
    assert gen.render(edited, REPO, page=RESULTS_PAGE) == RESULTS_TEXT  # the generator puts the file's number back
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "RESULTS.md"
    page.write_text(edited, encoding="utf-8")
    assert gen.main(["--check", "--page", str(page)]) == 1
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT, encoding="utf-8")
    assert gen.main(["--check", "--readme", str(readme)]) == 0  # the other page is current


@pytest.mark.results
def test_a_changed_results_file_is_caught(tmp_path):
    import shutil

    shutil.copytree(REPO / "results", tmp_path / "results")
    path = tmp_path / "results" / "sweep_smollm2" / "results.json"
    doc = json.loads(path.read_text())
    next(p for p in doc["points"] if p["key"] == "kl@5")["perplexity"] = 41.0
    path.write_text(json.dumps(doc))
    assert "| KL @ 5 | 4.99 | **41.00** |" in gen.render(RESULTS_TEXT, tmp_path, page=RESULTS_PAGE)


def test_an_unknown_section_is_an_error():
    with pytest.raises(ValueError, match="no_such_table"):
        gen.render("<!-- results:no_such_table -->\n<!-- /results:no_such_table -->\n", REPO)


def test_mean_spread_of_runs():
    assert gen.mean_spread([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert gen.mean_spread([33.62]) == "33.62"  # one run has no spread
    assert gen.value_range([20.81, 20.78, 20.80]) == "20.78 – 20.81"
    assert gen.mean_spread([63.0, 81.0], digits=0) == "72 ± 13"


def _demo_run(folder: Path, *, bits: float, high: int, ppl: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    formats = {f"l{i}": "mxfp8_e4m3" if i < high else "mxfp4_e2m1" for i in range(10)}
    (folder / "assignment.json").write_text(json.dumps({"formats": formats, "element_bits": bits}))
    results = [{"config": name, "ppl": value} for name, value in ppl.items()]
    (folder / "eval.json").write_text(json.dumps({"results": results}))


def test_demo_table_aggregates_every_recorded_run(tmp_path):
    assert "no demo run recorded yet" in gen.table_demo(REPO, tmp_path)
    _demo_run(tmp_path / "run-01", bits=5.2, high=3, ppl={"fp": 18.84, "mxfp8_e4m3": 20.78, "mxfp4_e2m1": 92.33,
                                                          "runs/demo/assignment.json": 33.62})
    _demo_run(tmp_path / "run-02", bits=5.6, high=4, ppl={"fp": 18.84, "mxfp8_e4m3": 20.82, "mxfp4_e2m1": 91.48,
                                                          "runs/demo/assignment.json": 35.62})
    table = gen.table_demo(REPO, tmp_path)
    assert "| dMX average element bits | 5.40 ± 0.28 | 5.20 – 5.60 | 2 |" in table
    assert "| ppl dMX | 34.62 ± 1.41 | 33.62 – 35.62 | 2 |" in table
    assert "| dMX layers at MXFP8 E4M3 | 4 ± 1 | 3 – 4 | 2 |" in table


def test_make_demo_writes_the_files_the_demo_table_reads():
    makefile = (REPO / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--out $(DEMO_OUT)/assignment.json" in demo and "--out $(DEMO_OUT)/eval.json" in demo
    assert "$(THREAD_FLAG)" in demo
    assert "readme-results:" in makefile and "tools/readme_results.py" in makefile


def test_a_new_demo_run_is_compared_with_the_recorded_spread(tmp_path):
    recorded = tmp_path / "results" / "demo"
    for i, (dmx_ppl, mxfp4) in enumerate([(33.62, 92.33), (35.62, 91.48), (34.10, 92.00)]):
        _demo_run(recorded / f"run-0{i}", bits=5.2 + 0.1 * i, high=3, ppl={
            "fp": 18.84, "mxfp8_e4m3": 20.80, "mxfp4_e2m1": mxfp4, "a.json": dmx_ppl})
    _demo_run(tmp_path / "close", bits=5.25, high=3, ppl={"fp": 18.84, "mxfp8_e4m3": 20.80, "mxfp4_e2m1": 92.1,
                                                         "a.json": 34.0})
    table, ok = gen.compare_demo(tmp_path / "close", recorded)
    assert ok and "| ppl dMX | 34.00 | 34.45 ± 1.04 | 33.62 – 35.62 | 3 | yes |" in table
    _demo_run(tmp_path / "far", bits=5.25, high=3, ppl={"fp": 18.84, "mxfp8_e4m3": 20.80, "mxfp4_e2m1": 92.1,
                                                       "a.json": 60.0})
    table, ok = gen.compare_demo(tmp_path / "far", recorded)
    assert not ok and "| ppl dMX | 60.00 |" in table and "**no**" in table
    assert gen.main(["--compare-demo", str(tmp_path / "far"), "--root", str(tmp_path)]) == 1
    # a figure no seed moves (full precision) is within at another thread's round-off, not beyond it
    _demo_run(tmp_path / "threads", bits=5.25, high=3, ppl={"fp": 18.8412, "mxfp8_e4m3": 20.80,
                                                           "mxfp4_e2m1": 92.1, "a.json": 34.0})
    assert gen.compare_demo(tmp_path / "threads", recorded)[1]
    _demo_run(tmp_path / "fp_off", bits=5.25, high=3, ppl={"fp": 18.95, "mxfp8_e4m3": 20.80,
                                                          "mxfp4_e2m1": 92.1, "a.json": 34.0})
    table, ok = gen.compare_demo(tmp_path / "fp_off", recorded)
    assert not ok and "| ppl full precision | 18.95 |" in table


def test_seeds_table_aggregates_sweeps_point_by_point(tmp_path):
    from dmx.llm.sweep.results import ResultStore

    for seed, (bits, ppl) in enumerate([(5.07, 45.0), (5.27, 47.0)]):
        store = ResultStore.open(tmp_path / f"seed{seed}", {"model": "m"})
        store.add({"key": "fp", "method": "fp", "label": "fp", "avg_bits": None, "perplexity": 24.15})
        store.add({"key": "dmx@5", "method": "dmx", "label": "dmx@5", "target": 5.0, "avg_bits": bits,
                   "perplexity": ppl})
    table = gen.seeds_table(sorted(tmp_path.glob("seed*")))
    assert "| full precision |  | 24.15 ± 0.00 | 24.15 – 24.15 | 2 |" in table
    assert "| dMX @ 5, thr | 5.17 ± 0.14 | 46.00 ± 1.41 | 45.00 – 47.00 | 2 |" in table
    with pytest.raises(FileNotFoundError, match="no sweep folders"):
        gen.seeds_table([])


@pytest.mark.results
def test_the_demo_ends_with_dmx_kl_and_uniform_on_the_same_windows(tmp_path):
    """make demo calibrates rotated (dmx calibrate's default) with budget rounding and evaluates a
    KL assignment made on the same rotation beside dMX; the comparison prints KL's rows."""
    from dmx.assignment import Assignment
    from dmx.llm.rotation import CALIBRATION_ROTATION, RotationSpec, recorded_rotation

    makefile = (REPO / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--final-rounding budget" in demo and "$(DEMO_KL)" in demo and "--rotation" not in demo
    kl_path = makefile.split("DEMO_KL ?= ", 1)[1].split("\n", 1)[0]
    kl = Assignment.from_json(REPO / kl_path)
    assert kl.provenance["method"] == "kl" and kl.provenance["target_bits"] == 5.0
    assert recorded_rotation(kl.provenance, REPO / kl_path).key() == CALIBRATION_ROTATION.key()
    assert CALIBRATION_ROTATION != RotationSpec()  # the demo is rotated
    recorded = tmp_path / "recorded"
    for i, (dmx_ppl, kl_ppl) in enumerate([(30.0, 31.0), (30.5, 31.0), (29.8, 31.2)]):
        _demo_run(recorded / f"seed-{i}", bits=5.0, high=3, ppl={"fp": 18.0, "mxfp8_e4m3": 19.0,
                                                                  "mxfp4_e2m1": 60.0, "a.json": dmx_ppl})
        eval_file = recorded / f"seed-{i}" / "eval.json"
        doc = json.loads(eval_file.read_text())
        doc["results"].append({"config": kl_path, "method": "kl", "element_bits": 4.97, "ppl": kl_ppl})
        eval_file.write_text(json.dumps(doc))
    table, ok = gen.compare_demo(recorded / "seed-0", recorded)
    assert ok and "| ppl KL | 31.00 |" in table and "| ppl dMX − KL | -1.00 |" in table
    assert "| KL average element bits | 4.97 |" in table


def test_the_readme_describes_the_demo_as_it_runs():
    """The README's quick start says what make demo runs: rotated, budget rounding, KL beside dMX."""
    readme = " ".join((REPO / "README.md").read_text().split())
    for phrase in ("`make demo`", "fixed Hadamard", "budget rounding", "KL"):
        assert phrase in readme, phrase
    quick = readme.split("## Quick start", 1)[1].split("## ", 1)[0]
    assert "rotat" in quick and "KL" in quick
