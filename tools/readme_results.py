"""Rewrite the results tables of README.md and docs/*.md from the committed results files.

``make readme-results`` runs it.

Usage::

    python tools/readme_results.py            # rewrite the generated sections of README.md and docs/*.md
    python tools/readme_results.py --check    # exit 1 and show the difference if any is stale
    python tools/readme_results.py --compare-demo runs/demo   # a new demo run vs the recorded spread

Every generated table sits between two markers in one page (README.md or a page under docs/:
:func:`pages`), and everything between them is replaced on each run (edit the results files or
this script, never the table)::

    <!-- results:NAME -->
    | ... the table TABLES[NAME] makes ... |
    <!-- /results:NAME -->

A table's home is the page that holds its markers; each table has exactly one. Links in a table
are written relative to the repository root and rewritten relative to the page that shows it.
``tests/project/test_readme_results.py`` fails when a section differs from what this script makes from
the files under ``results/``, so a number in the documentation is always one in a committed file.

Adding a table: write ``def table_<name>(root: Path) -> str`` returning the markdown (read
files with :func:`load_sweep` / :func:`load_json`, format with :func:`markdown_table`,
:func:`fmt_bits`, :func:`fmt_ppl`, :func:`gap_closed`), register it in :data:`TABLES`, put the
two empty markers where it belongs (README.md or a docs/ page), run ``make readme-results``,
commit the result.

A figure that varies from run to run is shown with its spread: record each run in its own
folder (e.g. ``make demo DEMO_OUT=results/demo/run-03``, or one sweep ``--out`` per seed), then
let the table aggregate them with :func:`mean_spread` (mean ± sample standard deviation, the
min-max range and the number of runs): :func:`table_demo` for demo runs, :func:`seeds_table` for
sweeps repeated over seeds (one ``--out`` folder per seed).
"""

from __future__ import annotations

import argparse
import difflib
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: the dmx package beside it
from dmx.autograd import BACKENDS  # noqa: E402  (one column per backend, in their order)
from dmx.llm.sweep.results import assignment_file, summarize_points  # noqa: E402  (one definition of each)
from tools.results_io import load_json, load_sweep, markdown_table  # noqa: E402  (shared with the study's tables)
from tools.study_tables import (table_claims, table_gradient_probe, table_pareto_verdicts,  # noqa: E402
                                table_rotation_default, table_zeroshot_verdicts)


def pages(root: Path = REPO) -> list[Path]:
    """The pages that may hold generated tables: README.md, then every ``docs/*.md``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


SECTION = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.DOTALL)

FORMAT_NAMES = {"mxfp4_e2m1": "MXFP4 E2M1", "mxfp6_e2m3": "MXFP6 E2M3", "mxfp6_e3m2": "MXFP6 E3M2",
                "mxfp8_e4m3": "MXFP8 E4M3", "mxfp8_e5m2": "MXFP8 E5M2", "mxint8": "MXINT8"}


# ----------------------------------------------------------------------------- reading and formatting


def fmt_bits(bits: float | None, *, uniform: bool = False) -> str:
    """Average element bits: ``4`` for a uniform format, ``4.99`` for a mix, blank if unknown."""
    if bits is None:
        return ""
    return f"{bits:g}" if uniform else f"{bits:.2f}"


def fmt_ppl(ppl: float | None, *, bold: bool = False) -> str:
    """Perplexity with two decimals (bold when it is the best of its group)."""
    if ppl is None:
        return ""
    return f"**{ppl:.2f}**" if bold else f"{ppl:.2f}"


def gap_closed(ppl: float, low: float, high: float) -> str:
    """Share of the perplexity gap between the ``low`` and ``high`` uniform formats closed by ``ppl``."""
    return f"{round(100 * (low - ppl) / (low - high))} %"


def mean_spread(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± sd`` (sample standard deviation) of several runs; a single run has no spread."""
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def value_range(values: Sequence[float], digits: int = 2) -> str:
    """``min – max`` of several runs (blank for fewer than two)."""
    return f"{min(values):.{digits}f} – {max(values):.{digits}f}" if len(values) > 1 else ""


# ----------------------------------------------------------------------------- the sweep tables

#: Rows of the sweep tables: (label, which source of the column, point key). The sources of a
#: column: "thr" its sweep, "budget" the same calibrations with --final-rounding budget, "long"
#: the 120-step dMX run, "kl_on_learned" KL's assignment on the rotation dMX learned.
SWEEP_ROWS = [
    ("full precision", "thr", "fp"),
    *[(f"uniform {FORMAT_NAMES[f]}", "thr", f"uniform:{f}")
      for f in ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")],
    ("KL @ 4.5", "thr", "kl@4.5"), ("dMX @ 4.5, thr", "thr", "dmx@4.5"), ("dMX @ 4.5, budget", "budget", "dmx@4.5"),
    ("KL @ 5", "thr", "kl@5"), ("dMX @ 5, thr", "thr", "dmx@5"), ("dMX @ 5, budget", "budget", "dmx@5"),
    ("KL @ 5 on dMX's learned rotation", "kl_on_learned", "kl@5"),
    ("dMX @ 5, thr, 120 steps", "long", "dmx@5"),
    ("KL @ 6", "thr", "kl@6"), ("dMX @ 6, thr", "thr", "dmx@6"), ("dMX @ 6, budget", "budget", "dmx@6"),
]


def _eval_points(path: Path, keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Points ``{key: {"avg_bits", "perplexity"}}`` from a ``dmx eval --out`` file, ``keys``:
    ``{point key: file name of the evaluated assignment}``."""
    by_file = {Path(r["config"]).name: r for r in load_json(path)["results"]}
    return {key: {"avg_bits": by_file[name]["element_bits"], "perplexity": by_file[name]["ppl"], "method": "kl",
                  "target": float(key.split("@")[1])} for key, name in keys.items()}


def _cells(point: dict[str, Any] | None, column: dict[str, dict], *, bold: bool, gap_format: tuple[str, str]):
    """``[bits, ppl, gap]`` of one point in one column (blank when the column lacks it)."""
    if point is None:
        return ["", "", ""]
    low, high = (column["thr"][f"uniform:{f}"]["perplexity"] for f in gap_format)
    uniform = point["method"] == "uniform"
    shows_gap = not uniform and point["method"] != "fp" or point.get("format") in gap_format
    gap = gap_closed(point["perplexity"], low, high) if shows_gap else ""
    bits = fmt_bits(point.get("avg_bits"), uniform=uniform)
    return [bits, fmt_ppl(point["perplexity"], bold=bold), gap]


def _best_within_budget(column: dict[str, dict], rows) -> set[tuple[str, str]]:
    """(source, key) of the bold cells of a column: at each target the lowest perplexity among
    the mixed assignments within the budget (bits <= target), and the better uniform 6-bit format."""
    bold: set[tuple[str, str]] = set()
    groups: dict[float, list[tuple[float, tuple[str, str]]]] = {}
    for _, source, key in rows:
        point = column.get(source, {}).get(key)
        if point is None:
            continue
        if point["method"] in ("kl", "dmx") and point["avg_bits"] <= point["target"] + 1e-9:
            groups.setdefault(point["target"], []).append((point["perplexity"], (source, key)))
        elif point["method"] == "uniform" and point["avg_bits"] == 6:
            groups.setdefault("uniform6", []).append((point["perplexity"], (source, key)))
    for name, members in groups.items():
        if name != "uniform6" or len(members) > 1:  # one uniform 6-bit format is not a choice
            bold.add(min(members)[1])
    return bold


def sweep_table(columns: dict[str, dict[str, dict]], rows=SWEEP_ROWS, *, first: str = "method @ target",
                gap_format: tuple[str, str] = ("mxfp4_e2m1", "mxfp8_e4m3")) -> str:
    """One row per ``rows`` entry present in some column; per column bits | ppl | gap."""
    headers = [first]
    for title in columns:
        headers += [f"{title}: bits", "ppl", "gap"]
    bolds = {title: _best_within_budget(column, rows) for title, column in columns.items()}
    body = []
    for label, source, key in rows:
        points = [column.get(source, {}).get(key) for column in columns.values()]
        if all(p is None for p in points):
            continue
        line = [label]
        for (title, column), point in zip(columns.items(), points):
            line += _cells(point, column, bold=(source, key) in bolds[title], gap_format=gap_format)
        body.append(line)
    return markdown_table(headers, body)


def seeds_table(folders: Sequence[Path], rows=SWEEP_ROWS) -> str:
    """Several sweeps of the same settings but another seed (or a rerun), one ``--out`` folder
    each, aggregated per point: bits and perplexity as mean ± sd, the perplexity range, and how
    many of the sweeps hold the point. ``rows`` as in :data:`SWEEP_ROWS` (only the "thr" source
    is read: budget-rounded sweeps are separate folders, pass them as their own table).

    Example for :data:`TABLES`: ``"seeds_5bit": lambda root: seeds_table(sorted((root /
    "results").glob("sweep_smollm2_seed*")))``.
    """
    sweeps = [load_sweep(folder) for folder in folders]
    if not sweeps:
        raise FileNotFoundError("seeds_table got no sweep folders (check the glob)")
    body = []
    for label, source, key in rows:
        points = [s[key] for s in sweeps if source == "thr" and key in s]
        if not points:
            continue
        uniform = points[0]["method"] in ("uniform", "fp")
        bits = [p["avg_bits"] for p in points if p.get("avg_bits") is not None]
        ppl = [p["perplexity"] for p in points]
        body.append([label, fmt_bits(bits[0], uniform=True) if uniform and bits else mean_spread(bits),
                     mean_spread(ppl), value_range(ppl), str(len(points))])
    return markdown_table(["method @ target", "bits (mean ± sd)", "ppl (mean ± sd)", "ppl min – max", "runs"],
                          body, "lrrrr")


def table_sweep_rotations(root: Path) -> str:
    """The main results table: every method under no rotation, the Hadamard-64 and the learned one."""
    results = root / "results"
    return sweep_table({
        "none": {"thr": load_sweep(results / "sweep_smollm2"), "budget": load_sweep(results / "sweep_smollm2_budget"),
                 "long": load_sweep(results / "sweep_smollm2_long")},
        "Hadamard-64": {"thr": load_sweep(results / "sweep_smollm2_hadamard"),
                        "budget": load_sweep(results / "sweep_smollm2_hadamard_budget")},
        "learned": {"thr": load_sweep(results / "sweep_smollm2_learned"),
                    "budget": load_sweep(results / "sweep_smollm2_learned_budget"),
                    "kl_on_learned": _eval_points(results / "kl_on_learned_rotation" / "eval.json",
                                                  {"kl@5": "kl_at_5.json"})},
    })


def table_hadamard_block(root: Path) -> str:
    """The Hadamard rotation with 32-wide (one MX block) and 64-wide (two) blocks, threshold rounding."""
    results = root / "results"
    rows = [r for r in SWEEP_ROWS if r[1] == "thr"]
    return sweep_table({"Hadamard-32": {"thr": load_sweep(results / "sweep_smollm2_hadamard32")},
                        "Hadamard-64": {"thr": load_sweep(results / "sweep_smollm2_hadamard")}}, rows)


def table_fp6_fp4(root: Path) -> str:
    """The fp6_fp4 family (MXFP4 <-> MXFP6 E2M3) at a 5-bit budget, no rotation; gap to MXFP6 E2M3."""
    results = root / "results"
    rows = [("full precision", "thr", "fp"), ("uniform MXFP4 E2M1", "thr", "uniform:mxfp4_e2m1"),
            ("uniform MXFP6 E2M3", "thr", "uniform:mxfp6_e2m3"), ("KL @ 5", "thr", "kl@5"),
            ("dMX @ 5, thr", "thr", "dmx@5"), ("dMX @ 5, budget", "budget", "dmx@5")]
    return sweep_table({"fp6_fp4": {"thr": load_sweep(results / "sweep_smollm2_fp6_fp4"),
                                    "budget": load_sweep(results / "sweep_smollm2_fp6_fp4_budget")}},
                       rows, gap_format=("mxfp4_e2m1", "mxfp6_e2m3"))


def _high_layers(path: Path, high: str = "mxfp8_e4m3") -> set[str]:
    return {layer for layer, fmt in load_json(path)["formats"].items() if fmt == high}


def table_kl_dmx_overlap(root: Path) -> str:
    """How many of the layers KL keeps at MXFP8 dMX keeps there too, at equal bits (dMX's budget
    rounding keeps its highest |beta_hat|, so this compares the two rankings' tops)."""
    results = root / "results"
    body = []
    for title, thr, budget in (("none", "sweep_smollm2", "sweep_smollm2_budget"),
                               ("Hadamard-64", "sweep_smollm2_hadamard", "sweep_smollm2_hadamard_budget")):
        for target in ("4.5", "5", "6"):
            kl = _high_layers(results / thr / "assignments" / f"kl_at_{target}.json")
            dmx = _high_layers(results / budget / "assignments" / f"dmx_at_{target}.json")
            body.append([title, target, str(len(kl)), str(len(dmx)), str(len(kl & dmx))])
    return markdown_table(["rotation", "target", "KL: layers at MXFP8", "dMX, budget: layers at MXFP8", "in both"],
                          body, "llrrr")


ZEROSHOT_TASKS = {"arc_easy": "ARC-E", "arc_challenge": "ARC-C", "winogrande": "WinoGrande", "piqa": "PIQA"}


def table_zeroshot(root: Path) -> str:
    """Zero-shot accuracy (%) of the no-rotation sweep's points, as stored with them."""
    points = load_sweep(root / "results" / "sweep_smollm2")
    rows = [r for r in SWEEP_ROWS if r[1] == "thr"]
    headers = ["model", "avg element bits", *ZEROSHOT_TASKS.values(), f"average ({', '.join(ZEROSHOT_TASKS.values())})"]
    body = []
    for label, _, key in rows:
        point = points.get(key)
        if point is None or not point.get("accuracy"):
            continue
        accuracy = [f"{100 * point['accuracy'][task]:.0f}" for task in ZEROSHOT_TASKS]
        body.append([label.removesuffix(", thr"), fmt_bits(point.get("avg_bits"), uniform=point["method"] == "uniform"),
                     *accuracy, f"{100 * point['avg_accuracy']:.2f}"])
    return markdown_table(headers, body)


def table_zeroshot_stderr(root: Path) -> str:
    """Zero-shot accuracy (%) with lm-eval's standard errors, from one `dmx eval --tasks` run; the
    average's error assumes independent tasks (root of the summed variances over the count)."""
    doc = load_json(root / "results" / "zeroshot" / "smollm2_limit100.json")
    labels = {"fp": "full precision", **{f: f"uniform {name}" for f, name in FORMAT_NAMES.items()}}
    body = []
    for row in doc["results"]:
        tasks = row["zeroshot"]["tasks"]
        cells = [f"{100 * tasks[t]['acc']:.0f} ± {100 * tasks[t]['acc_stderr']:.1f}" for t in ZEROSHOT_TASKS]
        spread = sum(tasks[t]["acc_stderr"] ** 2 for t in ZEROSHOT_TASKS) ** 0.5 / len(ZEROSHOT_TASKS)
        average = statistics.fmean(tasks[t]["acc"] for t in ZEROSHOT_TASKS)
        label = labels.get(row["config"], f"`{Path(row['config']).name}`")
        body.append([label, fmt_bits(row["element_bits"], uniform=row["config"] in FORMAT_NAMES), *cells,
                     f"{100 * average:.2f} ± {100 * spread:.1f}"])
    return markdown_table(["model", "avg element bits", *ZEROSHOT_TASKS.values(), "average"], body)


# ----------------------------------------------------------------------------- the MX implementation survey

SURVEY_ORDER = ("torchao", "gfloat", "compressed-tensors", "brevitas", "quark", "c-example")


def _survey_modes(rec: dict[str, Any]) -> str:
    """The golden modes an implementation was compared in: those it implements, or for a library
    with one scale rule the closest mode per format."""
    fmts = rec["formats"]
    if rec.get("one_scale_rule"):
        closest: dict[str, list[str]] = {}
        for fmt, v in fmts.items():
            if v["closest"]:
                closest.setdefault(v["closest"], []).append(FORMAT_NAMES[fmt].split()[0])
        return "one rule; closest " + "; ".join(f"{m} ({', '.join(sorted(set(f)))})" for m, f in sorted(closest.items()))
    modes = sorted({m for v in fmts.values() for m, t in v["modes"].items() if t["passed"] + t["failed"]})
    supported = [v for v in fmts.values() if v["supported"]]
    matched = sorted(set.intersection(*(set(v["matches"]) for v in supported))) if supported else []
    return ", ".join(modes) + f"; matched by every format: {', '.join(matched) or 'none'}"


def _survey_cell(rec: dict[str, Any], fmt: str) -> str:
    """``pass 604`` / ``fail 12 of 480`` over the compared cases of a format ('—' unsupported)."""
    v = rec["formats"][fmt]
    if not v["supported"]:
        return "—"
    modes = [v["closest"]] if rec.get("one_scale_rule") else list(v["modes"])
    passed = sum(v["modes"][m]["passed"] for m in modes)
    failed = sum(v["modes"][m]["failed"] for m in modes)
    return f"pass {passed}" if not failed else f"fail {failed} of {passed + failed}"


def _survey_causes(rec: dict[str, Any]) -> str:
    """``cause × cases`` per remaining cause, defects marked with their reproducer's file name."""
    parts = []
    for key, c in rec["causes"].items():
        text = f"{key.replace('+', ' + ')} ×{c['cases']}"
        if c.get("reproducer"):
            text += f" ([repro]({c['reproducer']}))"
        parts.append(text)
    return ", ".join(parts) or "none"


def table_survey_causes(root: Path) -> str:
    """Every cause named in the survey's results files: its kind and meaning."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "golden" / "survey" / "results").glob("*.json")):
        for key, c in load_json(path).get("causes", {}).items():
            for part, kind_text in zip(key.split("+"), c["text"].split(" + ")):
                seen.setdefault(part, {"text": kind_text, "kinds": set()})
            if "+" not in key:
                seen[key]["kinds"].add(c["kind"])
    rows = [[f"`{k}`", ", ".join(sorted(v["kinds"])) or "(only with another cause)", v["text"]]
            for k, v in sorted(seen.items())]
    return markdown_table(["cause", "kind", "meaning"], rows)


def table_survey(root: Path) -> str:
    """The MX implementation survey: one row per golden/survey/results/<name>.json."""
    folder = root / "golden" / "survey" / "results"
    recs = {p.stem: load_json(p) for p in folder.glob("*.json")}
    order = [n for n in SURVEY_ORDER if n in recs] + sorted(set(recs) - set(SURVEY_ORDER))
    fmts = list(FORMAT_NAMES)
    body, notes = [], []
    for name in order:
        rec = recs[name]
        if rec["status"] != "surveyed":
            body.append([name, "", "", *(["—"] * len(fmts)), f"not surveyed: {rec['reason']}"])
            continue
        body.append([f"{name} {rec['version']}", rec["declared_policies"] or "none", _survey_modes(rec),
                     *[_survey_cell(rec, f) for f in fmts], _survey_causes(rec)])
    contents = {recs[n]["golden_content_version"] for n in order if "golden_content_version" in recs[n]}
    table = markdown_table(["implementation", "declared policies", "golden modes compared (matched)",
                            *[FORMAT_NAMES[f] for f in fmts], "remaining failures: cause"], body)
    return table + f"\n(golden content {', '.join(map(str, sorted(contents)))}; `python golden/survey/survey.py NAME`)\n"


# ----------------------------------------------------------------------------- benchmarks and the demo


def table_bench_mx_spec(root: Path) -> str:
    """``make bench``'s throughput table (results/bench_mx_spec/results.json, its provenance below it)."""
    doc = load_json(root / "results" / "bench_mx_spec" / "results.json")
    body = []
    for row in doc["rows"]:
        theirs = row["torchao_melem_s"]
        body.append([row["format"], f"{row['mx_spec_melem_s']:.1f}", "n/a" if theirs is None else f"{theirs:.1f}",
                     "n/a" if row["ratio_wall"] is None else f"{row['ratio_wall']:.2f}x", row["bit_exact"]])
    table = markdown_table(["format", "mx_spec (Melem/s)", "torchao (Melem/s)", "ratio", "bit-exact"], body, "lrrrl")
    return table + f"\n({doc['provenance']['note']})\n"


def _run_note(prov: dict[str, Any]) -> str:
    """``commit, date, load average`` of a benchmark's provenance (the keys it has)."""
    parts = [prov.get("commit"), prov.get("date")]
    if "load_average_1min_at_start" in prov:
        parts.append(f"load {prov['load_average_1min_at_start']:.1f} at start")
    elif prov.get("machine"):
        parts.append(prov["machine"])
    return ", ".join(str(p) for p in parts if p)


def table_calibration_step(root: Path) -> str:
    """One dMX calibration step against an unquantised fp32 forward+backward of the same batch,
    per MX backend, one row per results/bench_calibration_step/*.json (the ratios are side by side)."""
    body = []
    for path in sorted((root / "results" / "bench_calibration_step").glob("*.json")):
        doc = load_json(path)
        row = [f"{doc['batch_size']} x {doc['seqlen']}", str(doc["threads"]), f"{doc['baseline_fwd_bwd_s']:.2f} s"]
        for backend in BACKENDS:
            r = doc["backends"].get(backend)
            row.append("" if r is None else f"{r['dmx_step_s']:.2f} s = {r['ratio']:.2f}x")
        faults = doc.get("minor_page_faults_per_step")
        row += [str(doc["repeats"]), "on" if doc.get("thp_mem_alloc_enable") == "1" else "off",
                "" if faults is None else " / ".join(f"{faults[k] / 1e3:.0f} k" for k in ("baseline", *BACKENDS)
                                                      if k in faults),
                _run_note(doc.get("provenance", {})), f"`{path.relative_to(root)}`"]
        body.append(row)
    return markdown_table(["tokens per step", "threads", "unquantised fwd+bwd", *(f"dMX step, {b}" for b in BACKENDS),
                           "repeats (median)", "huge pages", "page faults per step (unquantised / backends)", "run",
                           "file"], body, "lrr" + "r" * len(BACKENDS) + "rlrll")


def table_bridge_throughput(root: Path) -> str:
    """The bridge's throughput per device, backend and operation (results/bench_bridge/*.json),
    each file's shape and run below the table."""
    body, notes = [], []
    for path in sorted((root / "results" / "bench_bridge").glob("*.json")):
        doc = load_json(path)
        for r in doc["rows"]:
            body.append([r["device"], r["backend"], r["op"], f"{r['median_s'] * 1e3:.1f}",
                         f"{r['elements_per_s'] / 1e6:.0f}", f"{r['speedup_vs_numpy']:.2f}x", str(r["threads"])])
        shape = " x ".join(str(v) for v in doc["rows_x_cols"])
        notes.append(f"`{path.relative_to(root)}`: {shape} float32, minifloat at E = {doc['ebits']:g}, "
                     f"M = {doc['mbits']:g}, median of {doc['repeats']}; {_run_note(doc['provenance'])}")
    table = markdown_table(["device", "backend", "operation", "median ms", "Melem/s", "vs numpy", "threads"],
                           body, "lllrrrr")
    return table + "".join(f"\n({note})\n" for note in notes)


def demo_runs(folder: Path) -> list[dict[str, Any]]:
    """Every recorded ``make demo`` run under ``folder``: ``{"run", "assignment", "eval"}`` per
    subfolder holding ``assignment.json`` (dmx calibrate --out) and ``eval.json`` (dmx eval --out)."""
    runs = []
    for run in sorted(p for p in folder.glob("*") if (p / "eval.json").is_file()):
        runs.append({"run": run.name, "assignment": load_json(run / "assignment.json"),
                     "eval": load_json(run / "eval.json")})
    return runs


def _demo_quantities(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one demo run, by README row label (the KL rows when the run evaluated a KL
    assignment beside dMX: ``method`` "kl" in its eval row)."""
    formats = [f for f in run["assignment"]["formats"].values()]
    rows = {}
    for row in run["eval"]["results"]:
        config = row["config"]
        rows[config if config in ("fp", *FORMAT_NAMES) else ("kl" if row.get("method") == "kl" else "dmx")] = row
    ppl = {name: row["ppl"] for name, row in rows.items()}
    low, high = ppl["mxfp4_e2m1"], ppl["mxfp8_e4m3"]
    quantities = {
        "dMX average element bits": run["assignment"]["element_bits"],
        "dMX layers at MXFP8 E4M3": float(sum(f == "mxfp8_e4m3" for f in formats)),
        "ppl full precision": ppl["fp"],
        "ppl uniform MXFP8 E4M3": high,
        "ppl uniform MXFP4 E2M1": low,
        "ppl dMX": ppl["dmx"],
    }
    if "kl" in rows:
        quantities.update({"KL average element bits": rows["kl"]["element_bits"], "ppl KL": ppl["kl"],
                           "ppl dMX − KL": ppl["dmx"] - ppl["kl"]})
    quantities["dMX: share of the MXFP4 → MXFP8 gap closed (%)"] = 100 * (low - ppl["dmx"]) / (low - high)
    return quantities


def table_demo(root: Path, folder: Path | None = None) -> str:
    """``make demo``'s figures over every run recorded in results/demo/<run>/: mean ± sd, range, runs."""
    runs = demo_runs(folder or root / "results" / "demo")
    if not runs:
        return ("(no demo run recorded yet: `make demo DEMO_OUT=results/demo/run-01`, one folder per run, "
                "then `make readme-results`)\n")
    quantities = [_demo_quantities(run) for run in runs]
    body = []
    for name in quantities[0]:
        values = [q[name] for q in quantities]
        digits = 0 if "layers" in name or "%" in name else 2
        body.append([name, mean_spread(values, digits), value_range(values, digits), str(len(values))])
    return markdown_table(["quantity", "mean ± sd", "min – max", "runs"], body, "lrrr")


def table_rotation_block_choice(root: Path) -> str:
    """How the online Hadamard block was chosen: uniform MXFP4 perplexity per block and seed, the
    validation mean (what chose it) and the test ratio to no rotation per seed."""
    doc = load_json(root / "results" / "rotation_block_choice" / "results.json")
    none_test = next(r for r in doc["rows"] if r["block"] is None)["test"][0]

    def seeds(values, fmt="{:.2f}") -> str:
        return " / ".join("–" if v is None else fmt.format(v) for v in values)

    body = []
    for row in doc["rows"]:
        default = row["block"] == doc["default_block"]
        validation = seeds(row["validation"])
        complete = [v for v in row["validation"] if v is not None]
        if len(complete) > 1 and len(complete) == len(row["validation"]):
            mean = f"{statistics.fmean(complete):.2f}"
            validation += f" (**{mean}**)" if default else f" ({mean})"
        ratios = "1" if row["block"] is None else seeds([None if v is None else none_test / v for v in row["test"]],
                                                         "{:.2f}x")
        label = f"**{row['label']}**" if default else row["label"]
        body.append([label, validation, seeds(row["test"]), ratios])
    return markdown_table(["online block", "validation, seeds 0 / 1 / 2 (mean)", "test, seeds 0 / 1 / 2",
                           "test ratio vs none, seeds 0 / 1 / 2"], body)


def transcribed_table(name: str) -> Callable[[Path], str]:
    """A table kept as rows in ``results/transcribed/<name>.json`` (measurements whose own output was
    not kept; the file's provenance says where they come from). Rendered as stored."""
    def table(root: Path) -> str:
        doc = load_json(root / "results" / "transcribed" / f"{name}.json")
        return markdown_table(doc["headers"], doc["rows"])

    table.__doc__ = f"The rows of results/transcribed/{name}.json."
    return table


def compare_demo(run: Path, recorded: Path, *, k: float = 3.0, round_off: float = 0.002) -> tuple[str, bool]:
    """A new ``make demo`` run (folder with assignment.json and eval.json) against the runs recorded
    in ``recorded``: per quantity its value, the recorded mean ± sd, min – max and whether it lies
    within ``k`` standard deviations of the mean (or inside min – max, or within ``round_off`` of
    the mean, relative: a figure the seeds do not move, such as full precision or the recorded KL
    assignment, still differs by float round-off at another thread count). Returns (table, all within)."""
    mine = _demo_quantities({"run": run.name, "assignment": load_json(run / "assignment.json"),
                             "eval": load_json(run / "eval.json")})
    runs = [_demo_quantities(r) for r in demo_runs(recorded)]
    if not runs:
        return f"no demo run recorded in {recorded} to compare with\n", True
    body, ok = [], True
    for name, value in mine.items():
        values = [q[name] for q in runs if name in q]
        if not values:
            body.append([name, f"{value:.2f}", "not recorded", "", "0", "–"])
            continue
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        within = min(values) <= value <= max(values) or abs(value - mean) <= max(k * spread, round_off * abs(mean))
        ok &= within
        body.append([name, f"{value:.2f}", mean_spread(values), value_range(values), str(len(values)),
                     "yes" if within else "**no**"])
    table = markdown_table(["quantity", "this run", "recorded mean ± sd", "min – max", "runs",
                            f"within (range or {k:g} sd)"], body, "lrrrrl")
    return table, ok


# ----------------------------------------------------------------------------- the headline (issue #12)

#: The headline sweeps (benchmarks/headline.sh): rotation label -> folder under results/.
HEADLINE_FOLDERS = {"none": "headline_5bit_w32", "Hadamard-64": "headline_5bit_hadamard_w32"}
HEADLINE_ROWS = [("full precision", "fp", None), ("uniform MXFP4 E2M1", "uniform", "mxfp4_e2m1"),
                 ("uniform MXFP8 E4M3", "uniform", "mxfp8_e4m3"), ("KL heuristic @ 5", "kl", None),
                 ("dMX @ 5 (budget rounding)", "dmx", None), ("random control @ 5", "random", None)]


def _headline_summary(root: Path, folder: str) -> tuple[dict[tuple[str, Any], dict[str, Any]], int]:
    """``{(method, format): summary row}`` (``dmx.llm.sweep.results.summarize_points``) and the test windows of one sweep."""
    doc = load_json(root / "results" / folder / "results.json")
    rows = {(r["method"], r["format"]): r for r in summarize_points(doc["points"])}
    return rows, doc["config"]["max_windows"]


def table_headline(root: Path) -> str:
    """fp, uniform, KL, dMX (seeds) and the random control (draws) at 5 bits, per rotation, with the spread."""
    body = []
    for rotation, folder in HEADLINE_FOLDERS.items():
        rows, windows = _headline_summary(root, folder)
        for label, method, fmt in HEADLINE_ROWS:
            r = rows.get((method, fmt))
            if r is None:
                continue
            several = r["n"] > 1
            body.append([rotation, str(windows), label, fmt_bits(r["avg_bits"], uniform=method == "uniform"),
                         f"{r['perplexity_mean']:.2f} ± {r['perplexity_std']:.2f}" if several else f"{r['perplexity_mean']:.2f}",
                         f"{r['perplexity_min']:.2f} – {r['perplexity_max']:.2f}" if several else "",
                         str(r["n"])])
    return markdown_table(["rotation", "test windows", "method", "bits", "ppl (mean ± sd)", "ppl min – max", "runs"],
                          body, "lrlrrrr")


def table_headline_verdict(root: Path) -> str:
    """dMX's mean against KL and against the random control's mean, per rotation (from the same files)."""
    body = []
    for rotation, folder in HEADLINE_FOLDERS.items():
        rows, windows = _headline_summary(root, folder)
        dmx, kl, rnd = rows.get(("dmx", None)), rows.get(("kl", None)), rows.get(("random", None))
        if dmx is None or kl is None:
            continue
        vs_kl = dmx["perplexity_mean"] - kl["perplexity_mean"]
        below = sum(p < kl["perplexity_mean"] for p in _seed_perplexities(root, folder, "dmx"))
        vs_random = "" if rnd is None else f"{dmx['perplexity_mean'] - rnd['perplexity_mean']:+.2f}"
        body.append([rotation, f"{vs_kl:+.2f}", f"{below} of {dmx['n']}",
                     "yes" if vs_kl < 0 else "no", vs_random])
    return markdown_table(["rotation", "dMX mean − KL (ppl)", "dMX seeds below KL", "dMX mean below KL",
                           "dMX mean − random mean (ppl)"], body, "lrrlr")


def table_headline_threshold_bits(root: Path) -> str:
    """The bits dMX's own threshold rule (|β̂| > 1 -> MXFP8) would have deployed, per seed (provenance)."""
    body = []
    for rotation, folder in HEADLINE_FOLDERS.items():
        points = sorted((p for p in load_sweep(root / "results" / folder).values() if p["method"] == "dmx"),
                        key=lambda p: p["seed"])
        for p in points:
            assignment = load_json(assignment_file(root / "results" / folder, p["key"]))
            bits = assignment["provenance"]["threshold_element_bits"]
            body.append([rotation, str(p["seed"]), f"{p['target']:g}", f"{bits:.2f}", f"{bits - p['target']:+.2f}"])
    return markdown_table(["rotation", "seed", "target", "threshold-rule bits", "over the target"], body, "lrrrr")


#: How many of KL's most sensitive layers (highest one-at-a-time KL score) a seed must keep at MXFP8
#: to count as "caught" in ``table_headline_overlap``.
KL_TOP = 10


def table_headline_overlap(root: Path) -> str:
    """Per rotation and seed: how much of KL's MXFP8 set dMX (and the random control) also keeps
    high at the same bits, how many of KL's ``KL_TOP`` most sensitive layers it keeps, and its
    perplexity: where dMX's ranking and KL's differ, and whether missing KL's top layers goes with
    a worse perplexity. KL's scores come from the KL assignment's provenance."""
    body = []
    for rotation, folder in HEADLINE_FOLDERS.items():
        sweep = load_sweep(root / "results" / folder)
        kl_point = next(p for p in sweep.values() if p["method"] == "kl")
        kl_doc = load_json(assignment_file(root / "results" / folder, kl_point["key"]))
        scores = kl_doc["provenance"]["kl_scores"]
        kl_high = {layer for layer, fmt in kl_doc["formats"].items() if fmt != "mxfp4_e2m1"}
        top = set(sorted(scores, key=scores.get, reverse=True)[:KL_TOP])
        for method in ("dmx", "random"):
            for p in sorted((p for p in sweep.values() if p["method"] == method), key=lambda p: p["seed"]):
                high = {layer for layer, fmt in p["formats"].items() if fmt != "mxfp4_e2m1"}
                body.append([rotation, method, str(p["seed"]), f"{len(high & kl_high)} of {len(kl_high)}",
                             f"{len(high & top)} of {KL_TOP}", f"{p['perplexity']:.2f}"])
        body.append([rotation, "kl", "", f"{len(kl_high)} of {len(kl_high)}", f"{KL_TOP} of {KL_TOP}",
                     f"{kl_point['perplexity']:.2f}"])
    return markdown_table(["rotation", "method", "seed", "MXFP8 layers shared with KL", f"KL's top {KL_TOP} kept at MXFP8",
                           "ppl"], body, "llrrrr")


#: The scale-rule comparison (benchmarks/scale_rule.sh): the same dMX calibration under the
#: project's first rule (emax) beside the headline's dMX under the authors' rule (maxfloat).
SCALE_RULE_FOLDERS = {"Hadamard-64": ("headline_5bit_hadamard", "scale_rule_emax_hadamard")}


def table_scale_rule(root: Path) -> str:
    """dMX at 5 bits (budget rounding) per fractional-scale rule and seed, on the same test windows."""
    body = []
    for rotation, (maxfloat, emax) in SCALE_RULE_FOLDERS.items():
        runs = {"maxfloat (authors', default)": maxfloat, "emax (project's first)": emax}
        seeds = sorted({p["seed"] for p in load_sweep(root / "results" / emax).values() if p["method"] == "dmx"})
        for rule, folder in runs.items():
            doc = load_json(root / "results" / folder / "results.json")
            points = {p["seed"]: p for p in doc["points"] if p["method"] == "dmx" and p["seed"] in seeds}
            ppl = [points[s]["perplexity"] for s in seeds]
            body.append([rotation, str(doc["config"]["max_windows"]), rule, " ".join(map(str, seeds)),
                         " / ".join(f"{v:.2f}" for v in ppl), mean_spread(ppl)])
    return markdown_table(["rotation", "test windows", "fractional scale", "seeds", "ppl per seed", "mean ± sd"],
                          body, "lrllrr")


def table_budget_study(root: Path) -> str:
    """dMX at 5 bits per calibration budget (``results/budget_study/budget.json``, written by
    ``benchmarks/budget_study.py``) beside KL and the random control on the same test windows."""
    doc = load_json(root / "results" / "budget_study" / "budget.json")
    body = []
    for r in doc["budgets"]:
        points = {p["seed"]: p["perplexity"] for p in load_sweep(root / r["folder"]).values()
                  if p["method"] == "dmx" and p.get("target") == doc["target_bits"]}
        body.append([f"dMX, {r['steps']} steps x {r['windows_per_step']} windows", f"{r['tokens']:,}", str(r["test_windows"]),
                     " ".join(map(str, r["seeds"])), " / ".join(f"{points[seed]:.2f}" for seed in r["seeds"]),
                     f"{r['perplexity_mean']:.2f}"])
    labels = {"kl": "KL heuristic", "random": "random control"}
    windows = doc["budgets"][0]["test_windows"] if doc["budgets"] else ""
    for method, r in doc["references"].items():
        body.append([labels[method], "", str(windows), " ".join("" if x is None else str(x) for x in r["seeds"]),
                     "", f"{r['perplexity_mean']:.2f}"])
    return markdown_table(["at 5 bits (budget rounding, no rotation)", "calibration tokens", "test windows", "seeds",
                           "ppl per seed", "ppl (mean)"], body, "lrrlrr")


def _seed_perplexities(root: Path, folder: str, method: str) -> list[float]:
    return [p["perplexity"] for p in load_sweep(root / "results" / folder).values()
            if p["method"] == method and p.get("perplexity") is not None]


EXPORT_CT = Path("results") / "export_ct" / "results.json"


def table_export_ct_perplexity(root: Path) -> str:
    """Perplexity of compressed-tensors exports under the runtime's activation rule vs the project's."""
    data = load_json(root / EXPORT_CT)
    rows = [[f"`{r['assignment']}`", fmt_bits(r["element_bits"]), r["rotation"], fmt_ppl(r["project_floor"]),
             fmt_ppl(r["runtime"]), fmt_ppl(r["project_even"]), fmt_ppl(r["project_weights_only"]),
             fmt_ppl(r["runtime_weights_only"])] for r in data["perplexity"]]
    return markdown_table(["assignment", "bits", "rotation", "dmx eval (floor, OCP)", "export, runtime rule",
                           "dmx, `even` rule", "dmx, weights only", "export, weights only"], rows, "lrlrrrrr")


def table_export_ct_conformance(root: Path) -> str:
    """mx-spec verify of compressed-tensors' activation quantiser claiming each scale mode."""
    rows = []
    for r in load_json(root / EXPORT_CT)["conformance"]["rows"]:
        causes = r["failed_by_cause"]
        rows.append([FORMAT_NAMES[r["format"]], r["scale_mode"], str(r["passed"]), str(r["failed"]),
                     str(causes.get("rule", 0)), str(causes.get("signed_zero", 0)), str(causes.get("range", 0)),
                     ", ".join(r["rule_failure_groups"])])
    return markdown_table(["format", "claimed mode", "passed", "failed", "by the scale/element rule",
                           "only -0 written as +0", "NaN/Inf block or scale outside float16", "groups failing by the rule"],
                          rows, "llrrrrrl")


#: Generated sections: marker name -> function of the repository root returning markdown.
TABLES: dict[str, Callable[[Path], str]] = {
    "claims": table_claims,
    "pareto_verdicts": table_pareto_verdicts,
    "zeroshot_verdicts": table_zeroshot_verdicts,
    "gradient_probe": table_gradient_probe,
    "rotation_default": table_rotation_default,
    "headline": table_headline,
    "headline_verdict": table_headline_verdict,
    "headline_threshold_bits": table_headline_threshold_bits,
    "headline_overlap": table_headline_overlap,
    "scale_rule": table_scale_rule,
    "budget_study": table_budget_study,
    "bench_mx_spec": table_bench_mx_spec,
    "survey": table_survey,
    "survey_causes": table_survey_causes,
    "calibration_step": table_calibration_step,
    "bridge_throughput": table_bridge_throughput,
    "demo": table_demo,
    "sweep_rotations": table_sweep_rotations,
    "hadamard_block": table_hadamard_block,
    "fp6_fp4": table_fp6_fp4,
    "kl_dmx_overlap": table_kl_dmx_overlap,
    "rotation_block_choice": table_rotation_block_choice,
    "rotation_short_windows": transcribed_table("rotation_short_windows"),
    "rotation_step_cost": transcribed_table("rotation_step_cost"),
    "speed": transcribed_table("speed"),
    "zeroshot": table_zeroshot,
    "zeroshot_stderr": table_zeroshot_stderr,
    "export_ct_perplexity": table_export_ct_perplexity,
    "export_ct_conformance": table_export_ct_conformance,
}


# ----------------------------------------------------------------------------- the pages

#: A markdown link or image: ``[text](target)`` / ``![alt](target)``.
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def section_names(text: str) -> list[str]:
    """Names of the generated sections in ``text``, in order."""
    return [m.group("name") for m in SECTION.finditer(text)]


def relink(markdown: str, prefix: str) -> str:
    """``markdown`` with its relative link targets (written relative to the repository root)
    prefixed by ``prefix``, the way from a page's folder back to the root (``"../"`` under docs/)."""
    if not prefix:
        return markdown

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", target):
            return m.group(0)
        return m.group(1) + prefix + target + m.group(3)

    return LINK.sub(fix, markdown)


def page_prefix(page: Path | None, root: Path = REPO) -> str:
    """The relative way from ``page``'s folder to ``root`` (``""`` for a page at the root or outside it)."""
    if page is None:
        return ""
    try:
        depth = len(Path(page).resolve().parent.relative_to(Path(root).resolve()).parts)
    except ValueError:
        return ""
    return "../" * depth


def render(text: str, root: Path = REPO, tables: dict[str, Callable[[Path], str]] = TABLES, *,
           page: Path | None = None) -> str:
    """``text`` with the body of every ``results:NAME`` section replaced by ``tables[NAME](root)``;
    ``page``, the file ``text`` is (under ``root``), sets how the tables' links are written."""
    unknown = [name for name in section_names(text) if name not in tables]
    if unknown:
        raise ValueError(f"sections {unknown} have no table in tools/readme_results.py TABLES "
                         f"(known: {sorted(tables)})")
    prefix = page_prefix(page, root)
    return SECTION.sub(lambda m: m.group(1) + relink(tables[m.group("name")](root), prefix) + m.group(4), text)


def check_homes(texts: dict[Path, str], tables: dict[str, Callable[[Path], str]] = TABLES) -> list[str]:
    """Problems with where the tables live: a table of ``tables`` in no page, or in more than one."""
    homes: dict[str, list[str]] = {}
    for path, text in texts.items():
        for name in section_names(text):
            homes.setdefault(name, []).append(path.name)
    problems = [f"no page holds the section of {name}" for name in sorted(set(tables) - set(homes))]
    problems += [f"section {name} appears {len(where)} times ({', '.join(where)}): a table has one home"
                 for name, where in sorted(homes.items()) if len(where) > 1]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a page is stale")
    parser.add_argument("--readme", "--page", dest="pages", type=Path, action="append", default=None,
                        help="a page to rewrite (repeatable; default: README.md and every docs/*.md)")
    parser.add_argument("--root", type=Path, default=REPO, help="the folder holding results/")
    parser.add_argument("--compare-demo", type=Path, default=None, metavar="RUN_DIR",
                        help="instead: compare a `make demo` output folder with the recorded demo runs "
                             "(exit 1 when a figure is outside their spread)")
    args = parser.parse_args(argv)
    if args.compare_demo is not None:
        table, ok = compare_demo(args.compare_demo, args.root / "results" / "demo")
        print(table, end="")
        return 0 if ok else 1
    paths = args.pages or pages(args.root)
    texts = {path: path.read_text(encoding="utf-8") for path in paths}
    if args.pages is None:
        for problem in check_homes(texts):
            print(f"warning: {problem}", file=sys.stderr)
    stale = False
    for path, text in texts.items():
        fresh = render(text, args.root, page=path)
        if fresh == text:
            continue
        if args.check:
            stale = True
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True),
                                                       f"{path.name} (committed)", f"{path.name} (from results/)"))
        else:
            path.write_text(fresh, encoding="utf-8")
            print(f"rewrote {len(section_names(text))} results sections of {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
