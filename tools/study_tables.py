"""The generated tables of issue #23: the Pareto study's verdicts, the gradient probe and the claims table.

Registered in :data:`tools.readme_results.TABLES` (``make readme-results`` writes them into the
README and docs/RESULTS.md, and ``tests/project/test_readme_results.py`` keeps the pages equal to them).
Every figure is read from a committed results folder: the Pareto study's sweeps
(``benchmarks/pareto_study.sh``, one folder per rotation and family, with a ``_threshold`` twin),
the gradient probe
(``benchmarks/gradient_probe.py``) and the headline sweeps. A folder not yet run, or a target
whose points are not all finished, is shown as such; nothing is filled in by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dmx.family import get_family
from dmx.llm.sweep.paired import (PairedInterval, paired_accuracy_difference, paired_difference, seed_documents,
                                  seed_nlls, verdict)
from tools.results_io import load_json, markdown_table

#: The Pareto study's folders under results/ (benchmarks/pareto_study.sh's OUT): label -> folder.
STUDY_FOLDERS = {
    "FP8/FP4, learned rotation": "pareto_fp8_fp4_learned",
    "FP8/FP4, Hadamard-64": "pareto_fp8_fp4_hadamard",
    "FP8/FP4, no rotation": "pareto_fp8_fp4_none",
    "FP6/FP4, Hadamard-64": "pareto_fp6_fp4_hadamard",
}
STUDY_TARGETS = (4.5, 5.0, 6.0, 7.0)
#: Studies where each dMX point learns its own rotation while KL, uniform and random use the learned
#: kind's fixed start (the folded randomized Hadamard, QuaRot layout: dmx.llm.sweep): there dMX − KL
#: mixes the rotation dMX learned with its ranking of the layers, so these studies compare the two
#: pipelines and are read in their own claim row, not as evidence on the ranking claims.
JOINT_ROTATION_STUDIES = ("FP8/FP4, learned rotation",)
#: The strongest KL pipeline a joint-rotation study is also held against: KL on the fixed rotation
#: that is this project's default, in the study of the same family, on the same held-out windows.
PIPELINE_BASELINE = {"FP8/FP4, learned rotation": "FP8/FP4, Hadamard-64"}
#: The ranking comparison inside a joint-rotation study: its ``kl_learned_rotation`` points (KL draw i
#: on the rotation dMX seed i learned) against its dMX seeds, both on one rotation, so it counts among
#: the ranking claims like the fixed-rotation studies. Joint-rotation label -> the row's label.
LEARNED_RANKING = {"FP8/FP4, learned rotation": "FP8/FP4, learned rotation, KL on each seed's rotation"}
#: The suffix of a study folder's twin where the points its zero-shot verdicts read (dMX's seeds and
#: the KL draws they are ranked against) answer every question of the tasks, not the first N of each
#: (``QUESTIONS=all benchmarks/pareto_study.sh``); where its row is finished it is the one the
#: zero-shot claim reads at that target, and the first-N row stays in the table beside it.
EVERY_QUESTION = "_every_question"
#: The two families compared at equal bits by the "MXFP6/MXFP4 more efficient" claim: (FP6/FP4, FP8/FP4).
FAMILY_PAIR = ("FP6/FP4, Hadamard-64", "FP8/FP4, Hadamard-64")
#: What a target of the study needs before its verdict is read: the seeds of each method.
STUDY_SEEDS = 3
SEQLEN = 2048
#: The family-wise error rate a claim holds its targets to: a claim read over N finished targets
#: reads each target's interval at level 1 - FAMILYWISE_ALPHA / N (Bonferroni): one 95 % interval
#: excludes zero by chance once in 20 tries, one of six about once in four, so a single marginal win
#: among several targets is not read as the claim holding. The verdict table shows each target's
#: own 95 % interval.
FAMILYWISE_ALPHA = 0.05
#: What study_rows returns: (set-up label, row of one target, or None for a folder not run yet).
StudyRows = Sequence[tuple[str, dict[str, Any] | None]]
FORMAT_LABELS = {"mxfp4_e2m1": "MXFP4", "mxfp6_e2m3": "MXFP6 E2M3", "mxfp6_e3m2": "MXFP6 E3M2", "mxfp8_e4m3": "MXFP8"}


def _points(folder: Path) -> list[dict[str, Any]] | None:
    path = folder / "results.json"
    return load_json(path)["points"] if path.is_file() else None


def _spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _at(points: Sequence[Mapping[str, Any]], method: str, target: float) -> list[Mapping[str, Any]]:
    return [p for p in points if p["method"] == method and p.get("target") == target]


def study_row(points: Sequence[Mapping[str, Any]], threshold: Sequence[Mapping[str, Any]] | None,
              target: float, seeds: int = STUDY_SEEDS, kl_method: str = "kl") -> dict[str, Any]:
    """What the study says at one target: each method's perplexities, the paired interval of
    dMX − KL and the verdict, or ``pending`` naming what is missing. ``kl_method``: the KL points
    dMX is held against (``kl_learned_rotation``: KL on each dMX seed's learned rotation)."""
    kl, dmx, rnd = (_at(points, m, target) for m in (kl_method, "dmx", "random"))
    row: dict[str, Any] = {"target": target, "kl": [p["perplexity"] for p in kl],
                           "dmx": [p["perplexity"] for p in dmx], "random": [p["perplexity"] for p in rnd],
                           "kl_bits": [p["avg_bits"] for p in kl], "dmx_bits": [p["avg_bits"] for p in dmx]}
    uniform = [p for p in points if p["method"] == "uniform" and p.get("avg_bits") is not None]
    row["uniform"] = [(p["format"], p["perplexity"]) for p in uniform if p["avg_bits"] == target]
    # a uniform format with no more bits and a lower perplexity than every dMX seed: dMX is off the front there
    row["dominated_by"] = [(p["format"], p["avg_bits"], p["perplexity"]) for p in uniform
                           if len(dmx) >= seeds and p["avg_bits"] <= target
                           and p["perplexity"] < min(row["dmx"])]
    thr = _at(threshold or [], "dmx", target)
    row["threshold"] = [(p["avg_bits"], p["perplexity"]) for p in thr]
    missing = [f"{m} {len(v)}/{seeds}" for m, v in (("KL", kl), ("dMX", dmx)) if len(v) < seeds]
    if missing:
        row["pending"] = ", ".join(missing)
        return row
    row["nlls"] = (seed_nlls(dmx, "dmx", target), seed_nlls(kl, kl_method, target))
    row["interval"] = paired_difference(*row["nlls"], seqlen=SEQLEN)
    row["verdict"] = verdict(row["interval"])
    return row


def familywise_level(n: int) -> float:
    """The level of each of ``n`` intervals that together hold a claim to FAMILYWISE_ALPHA."""
    return 1 - FAMILYWISE_ALPHA / max(n, 1)


ClaimVerdicts = dict[tuple[str, float], tuple[dict[str, Any], PairedInterval, str]]


def _claim_verdicts(rows: StudyRows, labels: Sequence[str]) -> ClaimVerdicts:
    """Per finished target among ``labels``, keyed by (label, target): its row, its dMX − KL interval
    at the family-wise level over those targets, and the verdict that interval allows."""
    finished = [(label, row) for label, row in rows if label in labels and row and "verdict" in row]
    level = familywise_level(len(finished))
    out = {}
    for label, row in finished:
        ci = paired_difference(*row["nlls"], seqlen=SEQLEN, level=level)
        out[(label, row["target"])] = (row, ci, verdict(ci))
    return out


def study_rows(root: Path) -> StudyRows:
    """(label, row) per study folder and target; row None when the folder is not run yet. A
    joint-rotation study adds its ranking rows (:data:`LEARNED_RANKING`) at the targets where
    its ``kl_learned_rotation`` points have started, else one row not run yet."""
    out = []
    for label, folder in STUDY_FOLDERS.items():
        points = _points(root / "results" / folder)
        if points is None:
            out.append((label, None))
            continue
        threshold = _points(root / "results" / f"{folder}_threshold")
        targets = [t for t in STUDY_TARGETS if any(p.get("target") == t for p in points)]
        out.extend((label, study_row(points, threshold, t)) for t in targets)
        if label in LEARNED_RANKING:
            ranked = [t for t in targets if _at(points, "kl_learned_rotation", t)]
            out.extend((LEARNED_RANKING[label], study_row(points, threshold, t, kl_method="kl_learned_rotation"))
                       for t in ranked)
            if not ranked:
                out.append((LEARNED_RANKING[label], None))
    return out


def table_pareto_verdicts(root: Path) -> str:
    """Per study folder and target: KL (3 calibration draws), dMX (3 seeds, budget rounding) and the
    random control on held-out windows 32-63, the paired 95 % interval of dMX − KL and the verdict."""
    body = []
    for label, row in study_rows(root):
        if row is None:
            body.append([label, "", "not run yet", "", "", "", "", "", "", ""])
            continue
        thr = "; ".join(f"{b:.2f} b: {p:.2f}" for b, p in row["threshold"]) or "–"
        uniform = _uniform_cell(row["uniform"])
        cells = [label, f"{row['target']:g}", _spread(row["kl"]) if row["kl"] else "–",
                 _spread(row["dmx"]) if row["dmx"] else "–", _spread(row["random"]) if row["random"] else "–"]
        if "pending" in row:
            body.append(cells + ["", f"pending ({row['pending']})", thr, uniform, ""])
            continue
        ci = row["interval"]
        seeds_below = sum(p < statistics.fmean(row["kl"]) for p in row["dmx"])
        body.append(cells + [f"{ci.difference:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]", f"**{row['verdict']}**", thr,
                             uniform, f"{seeds_below} of {len(row['dmx'])}"])
    return markdown_table(["set-up", "target", "KL (draws)", "dMX (seeds, budget)", "random (draws)",
                           "dMX − KL [95 % CI]", "verdict", "dMX threshold rule: bits: ppl", "uniform at these bits",
                           "dMX seeds below KL mean"], body, "lrrrrrllll")


def table_gradient_probe(root: Path) -> str:
    """The split-half probe of the offsets' gradient at the start point, per rotation."""
    path = root / "results" / "gradient_probe" / "results.json"
    if not path.is_file():
        return "(not run yet: `python benchmarks/gradient_probe.py --out results/gradient_probe/results.json`)\n"
    doc = load_json(path)
    rows = [("reliability: split-half Spearman of the per-layer gradient", "reliability_split_half", "{:.2f}"),
            ("validity: Spearman of the demand for bits with KL's scores", "validity_vs_kl", "{:.2f}"),
            ("  weight part alone", "validity_vs_kl_weight_part", "{:.2f}"),
            ("  input part alone", "validity_vs_kl_input_part", "{:.2f}"),
            ("concentration: top-5 layers' share of the squared norm", "top5_share_of_squared_norm", "{:.0%}"),
            ("tying: input part's share of the squared norm", "input_share_of_squared_norm", "{:.0%}"),
            ("tying: Spearman of weight and input parts", "weight_input_correlation", "{:.2f}"),
            ("layers whose gradient asks for more bits", "layers_demanding_bits", "{}"),
            ("offsets' gradient norm (the clip at 1.0 binds above 1)", "offset_norm_mean", "{:.3f}"),
            ("offsets' share of the joint (clipped) gradient norm", "offsets_share_of_joint_norm", "{:.2%}"),
            ("joint gradient norm (clipped to 1.0)", "joint_norm_mean", "{:.1f}")]
    labels = list(doc["rotations"])
    body = []
    summaries = {r: {**doc["rotations"][r]["summary"],
                     "offset_norm_mean": statistics.fmean(doc["rotations"][r]["raw"]["offset_norm"])} for r in labels}
    for name, key, fmt in rows:
        values = [summaries[r].get(key) for r in labels]
        if all(v is None for v in values):
            continue
        body.append([name, *("–" if v is None else fmt.format(v) for v in values)])
    return markdown_table(["at β̂ = 0, T = 0.4 " + f"({doc['batches']} batches of {doc['batch_size']} × 256 tokens)",
                           *labels], body, "l" + "r" * len(labels))


# ----------------------------------------------------------------------------- the paper's claims

#: The headline sweeps (benchmarks/headline.sh, 5 bits, windows 0-31): label -> folder.
HEADLINE = {"no rotation": "headline_5bit_w32", "Hadamard-64": "headline_5bit_hadamard_w32"}


def _headline_counts(root: Path) -> dict[str, tuple[int, int, float, float]]:
    """Per headline rotation: (dMX seeds below KL, seeds, dMX mean, KL mean)."""
    out = {}
    for label, folder in HEADLINE.items():
        points = _points(root / "results" / folder) or []
        dmx = [p["perplexity"] for p in points if p["method"] == "dmx"]
        kl = [p["perplexity"] for p in points if p["method"] == "kl"]
        if dmx and kl:
            out[label] = (sum(p < statistics.fmean(kl) for p in dmx), len(dmx), statistics.fmean(dmx),
                          statistics.fmean(kl))
    return out


def _verdicts(rows: StudyRows, labels: Sequence[str]) -> list[str]:
    """The claim verdicts (family-wise over the finished targets among ``labels``)."""
    return [v for _, _, v in _claim_verdicts(rows, labels).values()]


PARETO_LINK = "[Pareto study](docs/RESULTS.md#the-pareto-study)"
ZEROSHOT_LINK = "[zero-shot](docs/RESULTS.md#zero-shot-accuracy-in-the-pareto-study)"


def _verdict_status(verdicts: Sequence[str], what: str, win: str = "dMX better",
                    unit: str = "targets", link: str = PARETO_LINK) -> tuple[str, str]:
    """Status and summary of a claim from the family-wise verdicts of its finished ``unit``."""
    if not verdicts:
        return "not yet measured", f"{what}: none of its {unit} finished yet ({link})"
    wins = verdicts.count(win)
    status = "reproduced" if wins == len(verdicts) else "partly" if wins else "not reproduced"
    return status, (f"{what}: {win} at {wins} of {len(verdicts)} finished {unit} (paired intervals at "
                    f"{_percent(familywise_level(len(verdicts)))} each: {_percent(1 - FAMILYWISE_ALPHA)} "
                    f"family-wise, {link})")


def _percent(level: float) -> str:
    return f"{level * 100:.3g} %"


def _high_share(root: Path, folder: str, kinds: Sequence[str]) -> tuple[float, float] | None:
    """Share of the ``kinds`` layers (e.g. down_proj) kept at the high format by the dMX seeds of a
    sweep, and the share of all layers."""
    points = [p for p in (_points(root / "results" / folder) or []) if p["method"] == "dmx" and p.get("formats")]
    if not points:
        return None
    chosen = [(name, fmt) for p in points for name, fmt in p["formats"].items()]
    high = {fmt for _, fmt in chosen if fmt.startswith("mxfp8")}
    of_kind = [fmt in high for name, fmt in chosen if any(name.endswith(k) for k in kinds)]
    return statistics.fmean(of_kind), statistics.fmean(fmt in high for _, fmt in chosen)


def zeroshot_rows(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(set-up label, row) per study folder and target where a method's points carry zero-shot
    accuracy: each method's average accuracy per seed and, once every KL draw and dMX seed holds
    per-document scores on the same questions, the paired interval of dMX − KL (question by
    question, documents drawn within each task) and its verdict; else ``pending``. A joint-rotation
    study also gives its ranking rows (:data:`LEARNED_RANKING`: dMX against KL on each seed's
    rotation) where those KL points carry accuracy, as :func:`study_rows` does for perplexity. A
    target whose points answered every question too (the folder's :data:`EVERY_QUESTION` twin) gives
    the ranking comparison a second row after the first."""
    out = []
    for label, folder in STUDY_FOLDERS.items():
        points = _points(root / "results" / folder) or []
        every = _points(root / "results" / (folder + EVERY_QUESTION)) or []
        comparisons = [(label, "kl")]
        if label in LEARNED_RANKING:
            comparisons.append((LEARNED_RANKING[label], "kl_learned_rotation"))
        for target in STUDY_TARGETS:
            for row_label, kl_method in comparisons:
                row = zeroshot_row(points, target, kl_method)
                if row is not None and (kl_method == "kl" or row["kl"]):
                    out.append((row_label, row))
            row_label, kl_method = comparisons[-1]  # the ranking: what the twin answers
            row = zeroshot_row(every, target, kl_method)
            if row is not None:
                out.append((row_label, row))
    return out


def _read_zeroshot_rows(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The finished rows a zero-shot claim reads: per set-up and target the one on the most questions
    (every question supersedes the first N of each task: the same points on a superset of questions)."""
    finished = [(label, row) for label, row in rows if "interval" in row]
    most = {}
    for label, row in finished:
        key = (label, row["target"])
        most[key] = max(most.get(key, 0), sum(row["sizes"]))
    return [(label, row) for label, row in finished if sum(row["sizes"]) == most[(label, row["target"])]]


def zeroshot_row(points: Sequence[Mapping[str, Any]], target: float, kl_method: str = "kl") -> dict[str, Any] | None:
    """One target's zero-shot row (see :func:`zeroshot_rows`) against the ``kl_method`` points; None
    when no KL, dMX or random point there carries accuracy."""
    at = {m: [p for p in _at(points, method, target) if p.get("avg_accuracy") is not None]
          for m, method in (("kl", kl_method), ("dmx", "dmx"), ("random", "random"))}
    if not any(at.values()):
        return None
    fp = [p for p in points if p["method"] == "fp" and p.get("avg_accuracy") is not None]
    uniform = [p for p in points if p["method"] == "uniform" and p.get("avg_accuracy") is not None
               and p.get("avg_bits") == target]
    row: dict[str, Any] = {"target": target, **{m: [p["avg_accuracy"] for p in v] for m, v in at.items()},
                           "fp": [p["avg_accuracy"] for p in fp],
                           "uniform": [(p["format"], p["avg_accuracy"]) for p in uniform],
                           "settings": next(p["accuracy_settings"] for v in at.values() for p in v)}
    missing = [f"{name} {len(at[m])}/{STUDY_SEEDS}" if len(at[m]) < STUDY_SEEDS
               else f"{name}: no per-question scores (measured before they were stored)"
               for m, name in (("kl", "KL"), ("dmx", "dMX"))
               if len(at[m]) < STUDY_SEEDS or not all(p.get("accuracy_documents") for p in at[m])]
    if missing:
        row["pending"] = ", ".join(missing)
        return row
    (dmx, tasks, sizes), (kl, kl_tasks, kl_sizes) = (seed_documents(at[m], method, target)
                                                    for m, method in (("dmx", "dmx"), ("kl", kl_method)))
    settings = {str(p["accuracy_settings"]) for p in at["dmx"] + at["kl"]}
    if (tasks, sizes) != (kl_tasks, kl_sizes) or settings != {str(row["settings"])}:
        raise ValueError(f"{kl_method} at {target:g} bits: dMX and KL answered different zero-shot questions "
                         f"(tasks {tasks} x {sizes} vs {kl_tasks} x {kl_sizes}): no paired comparison")
    row.update(tasks=tasks, sizes=sizes, documents=(dmx, kl))
    row["interval"] = paired_accuracy_difference(dmx, kl, task_sizes=sizes)
    row["verdict"] = verdict(row["interval"])
    return row


def _uniform_cell(pairs: Sequence[tuple[str, float]], scale: float = 1.0) -> str:
    """Uniform formats at a target's bits, ``MXFP6 E2M3: 20.99``; "–" for none."""
    return "; ".join(f"{FORMAT_LABELS.get(f, f)}: {scale * v:.2f}" for f, v in pairs) or "–"


def _accuracy_spread(values: Sequence[float]) -> str:
    """Accuracies (fractions) as percent: one value, or mean ± standard deviation."""
    return _spread([100 * v for v in values]) if values else "–"


def _documents(settings: Mapping[str, Any]) -> str:
    limit = settings.get("limit")
    return f"first {limit} of each task" if limit else "every document"


def table_zeroshot_verdicts(root: Path) -> str:
    """Per study folder and target with zero-shot accuracy: full precision, KL (3 draws), dMX (3
    seeds), the random control and a uniform format at the target's bits, the average accuracy over
    the tasks in percent, and the paired 95 % interval of dMX − KL over the same questions with its
    verdict."""
    body = []
    for label, row in zeroshot_rows(root):
        uniform = _uniform_cell(row["uniform"], scale=100)  # accuracy in percent
        cells = [label, f"{row['target']:g}", ", ".join(row["settings"]["tasks"]), _documents(row["settings"]),
                 _accuracy_spread(row["fp"]), _accuracy_spread(row["kl"]), _accuracy_spread(row["dmx"]),
                 _accuracy_spread(row["random"]), uniform]
        if "pending" in row:
            body.append(cells + ["", f"pending ({row['pending']})"])
            continue
        ci = row["interval"]
        body.append(cells + [f"{100 * ci.difference:+.2f} [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]",
                             f"**{row['verdict']}**"])
    if not body:
        return ("(no study point has zero-shot accuracy yet: `TASKS=default TARGETS=\"5 6\" "
                "benchmarks/pareto_study.sh`, or `benchmarks/gpu_study.sh` on a GPU)\n")
    return markdown_table(["set-up", "target", "tasks", "documents", "full precision", "KL (draws)", "dMX (seeds)",
                           "random (draws)", "uniform at these bits", "dMX − KL, points [95 % CI]", "verdict"],
                          body, "lrllrrrrlrl")


def _zeroshot_status(root: Path, labels: Sequence[str]) -> tuple[str, str]:
    """Does dMX improve over KL on zero-shot accuracy? The paired verdicts over the same questions,
    family-wise over the finished (set-up, target) pairs among ``labels``."""
    rows = [(label, row) for label, row in zeroshot_rows(root) if label in labels]
    finished = _read_zeroshot_rows(rows)
    level = familywise_level(len(finished))
    verdicts, parts = [], []
    for label, row in finished:
        ci = paired_accuracy_difference(*row["documents"], task_sizes=row["sizes"], level=level)
        verdicts.append(verdict(ci))
        parts.append(f"{label} at {row['target']:g} bits ({_documents(row['settings'])}: {sum(row['sizes'])} "
                     f"questions): dMX {_accuracy_spread(row['dmx'])} % vs KL {_accuracy_spread(row['kl'])} %, "
                     f"dMX − KL {100 * ci.difference:+.2f} points, {_percent(level)} CI "
                     f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}], {verdicts[-1]}")
    parts += [f"{label} at {row['target']:g} bits ({_documents(row['settings'])}) pending ({row['pending']})"
              for label, row in rows if "pending" in row]
    if not verdicts:
        return "not yet measured", ("perplexity: the row above; zero-shot under the current recipe: "
                                    + ("; ".join(parts) or "not measured yet") + f" (`TASKS=default`, {ZEROSHOT_LINK})")
    status, summary = _verdict_status(verdicts, "zero-shot accuracy, paired by question", unit="points",
                                      link=ZEROSHOT_LINK)
    return status, f"perplexity: the row above; {summary}; " + "; ".join(parts)


def _pareto_status(rows: StudyRows, labels: Sequence[str]) -> tuple[str, str]:
    """Is dMX on the Pareto front of its sweeps? Off the front at a target where a uniform format
    with no more bits beats every dMX seed, or where KL's verdict is better; on it where the
    paired verdict (family-wise over the finished targets) says dMX better than KL and no uniform
    point dominates it."""
    claimed = _claim_verdicts(rows, labels)
    on, off, open_ = [], [], []
    for label, row in rows:
        if label not in labels or not row:
            continue
        at = f"{label} at {row['target']:g} bits"
        if "pending" in row and not row.get("dominated_by"):
            open_.append(f"{at} pending ({row['pending']})")
        for fmt, bits, ppl in row.get("dominated_by", []):
            off.append(f"{at}: uniform {FORMAT_LABELS.get(fmt, fmt)} ({bits:g} b) {ppl:.2f} below every dMX seed "
                       f"({min(row['dmx']):.2f}-{max(row['dmx']):.2f})")
        if (label, row["target"]) not in claimed:
            continue
        _, ci, verdict_ = claimed[(label, row["target"])]
        if verdict_ == "KL better":
            off.append(f"{at}: KL better ({_interval(row, ci)})")
        elif verdict_ == "dMX better" and not row.get("dominated_by"):
            on.append(f"{at}: dMX better than KL and no uniform point dominates it ({_interval(row, ci)})")
        elif verdict_ == "no difference shown" and not row.get("dominated_by"):
            open_.append(f"{at}: no difference from KL shown ({_interval(row, ci)})")
    link = f" ({PARETO_LINK})"
    if not on and not off:
        return "not yet measured", "; ".join(open_ or ["learned and fixed Hadamard rotations: no target finished yet"]) + link
    status = "partly" if on and off else "reproduced" if on else "not reproduced"
    return status, "; ".join(off + on + open_) + link


def _interval(row: Mapping[str, Any], claim: PairedInterval) -> str:
    """dMX − KL with the row's own 95 % interval and the claim's family-wise one."""
    own = row["interval"]
    return (f"dMX − KL {own.difference:+.2f}, 95 % CI [{own.low:+.2f}, {own.high:+.2f}], "
            f"family-wise {_percent(claim.level)} CI [{claim.low:+.2f}, {claim.high:+.2f}]")


def _family_status(root: Path) -> tuple[str, str]:
    """Are MXFP6/MXFP4 mixes better than MXFP8/MXFP4 mixes at equal bits? At every target where
    the FP8/FP4 Hadamard-64 folder holds all dMX seeds and the FP6/FP4 one a deployment: the paired
    interval (the same held-out windows) of FP6/FP4 against dMX's FP8/FP4 seeds, and its verdict.
    The FP6/FP4 side is dMX's seeds, or at the family's top (6 bits), where every method deploys
    every layer at MXFP6 E2M3, the uniform MXFP6 E2M3 point."""
    six, eight = (_points(root / "results" / STUDY_FOLDERS[label]) or [] for label in FAMILY_PAIR)
    family = get_family("fp6_fp4")
    compared = []  # (target, FP6/FP4 side's name, its points, FP8/FP4 dMX points)
    for target in STUDY_TARGETS:
        if len(_at(eight, "dmx", target)) < STUDY_SEEDS:
            continue
        if target == family.bits_range[1]:
            side = f"uniform {FORMAT_LABELS[family.high_format]}"
            chosen = [p for p in six if p["method"] == "uniform" and p.get("format") == family.high_format]
        elif len(_at(six, "dmx", target)) >= STUDY_SEEDS:
            side, chosen = "dMX's FP6/FP4 seeds", _at(six, "dmx", target)
        else:
            continue
        if chosen:
            compared.append((target, side, chosen, _at(eight, "dmx", target)))
    verdicts, parts = [], []
    for target, side, chosen, other in compared:
        ci = paired_difference(seed_nlls(chosen, chosen[0]["method"]), seed_nlls(other, "dmx", target), seqlen=SEQLEN,
                               level=familywise_level(len(compared)))
        verdicts.append(verdict(ci, "FP6/FP4", "FP8/FP4"))
        bits = (statistics.fmean(p["avg_bits"] for p in points) for points in (chosen, other))
        parts.append(f"at {target:g} bits {side} {_range(ci.per_seed_a)} vs dMX's FP8/FP4 seeds "
                     f"{_range(ci.per_seed_b)} ({' vs '.join(f'{b:.2f}' for b in bits)} b), difference "
                     f"{ci.difference:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]: {verdicts[-1]}")
    if not verdicts:
        return "not yet measured", ("the FP6/FP4 study (`FAMILY=fp6_fp4 benchmarks/pareto_study.sh`) has no target "
                                    "whose dMX seeds are all finished yet")
    status, evidence = _verdict_status(verdicts, f"Hadamard-64, {STUDY_SEEDS} dMX seeds per family",
                                       win="FP6/FP4 better")
    return status, f"{evidence}; " + "; ".join(parts)


def _learned_status(root: Path, label: str) -> tuple[list[str], list[str], list[str]]:
    """The joint-rotation study ``label`` against the two KL pipelines, at every target where its dMX
    seeds and the KL draws are all finished: KL on the learned kind's fixed start (its own folder)
    and KL on the fixed default rotation (``PIPELINE_BASELINE``), each a paired interval on the same
    held-out windows, all read family-wise together. Returns (verdicts, evidence, running)."""
    own = _points(root / "results" / STUDY_FOLDERS[label]) or []
    base_label = PIPELINE_BASELINE[label]
    base = _points(root / "results" / STUDY_FOLDERS[base_label]) or []
    compared, running = [], []  # (target, KL's set-up, KL points, dMX points)
    for target in STUDY_TARGETS:
        dmx = _at(own, "dmx", target)
        if not any(p.get("target") == target for p in own):
            continue
        for kl_label, kl in (("KL on the learned kind's fixed start", _at(own, "kl", target)),
                             (f"KL on {base_label.split(', ')[1]}", _at(base, "kl", target))):
            if len(dmx) >= STUDY_SEEDS and len(kl) >= STUDY_SEEDS:
                windows = {p.get("first_window") for p in dmx + kl}
                if len(windows) != 1:
                    raise ValueError(f"{label} and {base_label} at {target:g} bits were scored on different test "
                                     f"windows (first windows {sorted(windows, key=str)}): no paired comparison")
                compared.append((target, kl_label, kl, dmx))
            else:
                running.append(f"{target:g} bits against {kl_label}: KL {min(len(kl), STUDY_SEEDS)}/{STUDY_SEEDS}, "
                               f"dMX {min(len(dmx), STUDY_SEEDS)}/{STUDY_SEEDS}")
    verdicts, parts = [], []
    for target, kl_label, kl, dmx in compared:
        ci = paired_difference(seed_nlls(dmx, "dmx", target), seed_nlls(kl, "kl", target), seqlen=SEQLEN,
                               level=familywise_level(len(compared)))
        verdicts.append(verdict(ci))
        parts.append(f"at {target:g} bits dMX seeds {_range(ci.per_seed_a)} vs {kl_label} {_range(ci.per_seed_b)}: "
                     f"dMX − KL {ci.difference:+.2f}, {_percent(ci.level)} CI [{ci.low:+.2f}, {ci.high:+.2f}], "
                     f"{verdicts[-1]}")
    return verdicts, parts, running


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.2f}" if len(values) == 1 else f"{min(values):.2f}-{max(values):.2f}"


def _pending_study(rows: StudyRows, labels: Sequence[str]) -> list[str]:
    """The held-out study's targets whose dMX seeds are finished but whose KL draws are not, as they stand."""
    out = []
    for label, row in rows:
        if label in labels and row and row["kl"] and len(row["dmx"]) >= STUDY_SEEDS and "pending" in row:
            out.append(f"held-out study so far, {label} at {row['target']:g} bits: KL "
                       f"{', '.join(f'{k:.2f}' for k in row['kl'])} ({len(row['kl'])} of {STUDY_SEEDS} draws of "
                       f"8 × 512 tokens) vs dMX seeds {min(row['dmx']):.2f}-{max(row['dmx']):.2f}")
    return out


def ranking_labels() -> list[str]:
    """The set-ups where KL and dMX rank layers on one rotation, which the ranking claims read: the
    fixed-rotation studies and the joint-rotation studies' ranking rows (:data:`LEARNED_RANKING`)."""
    return [label for label in STUDY_FOLDERS if label not in JOINT_ROTATION_STUDIES] + list(LEARNED_RANKING.values())


def claims(root: Path) -> list[tuple[str, str, str]]:
    """(claim of the paper, status, evidence) for the claims table (the README's headline), from the results files."""
    rows = []
    per_target = study_rows(root)  # read and bootstrapped once; every claim below reads these rows
    authors = list(JOINT_ROTATION_STUDIES)
    equal_rotation = ranking_labels()
    rotated = [label for label in equal_rotation if label != "FP8/FP4, no rotation"]  # the paper's set-up: always rotated
    status, evidence = _pareto_status(per_target, rotated)
    rows.append(("dMX \"consistently yields Pareto-dominating models\" (abstract)", status, evidence))
    head = _headline_counts(root)
    parts = [f"{label}: {below} of {n} dMX seeds below KL ({d:.2f} vs {k:.2f}; 5 bits, windows 0-31, one KL "
             "draw of 2 × 256 tokens)"
             for label, (below, n, d, k) in head.items()]
    wins = [below == n for below, n, _, _ in head.values()]
    status = "reproduced" if wins and all(wins) else "partly" if any(wins) else "not reproduced"
    every_setup = equal_rotation
    claimed = _claim_verdicts(per_target, every_setup)
    if claimed:  # the held-out study, with KL's draws, decides over the headline's windows 0-31
        status, summary = _verdict_status([v for _, _, v in claimed.values()], "Pareto study on held-out windows")
        own = [row["verdict"] for row, _, _ in claimed.values()]
        finished = [f"{label} at {target:g} bits: {v} ({_interval(row, ci)}, {STUDY_SEEDS} KL draws of 8 × 512 "
                    f"tokens, {STUDY_SEEDS} dMX seeds, windows 32-63)"
                    for (label, target), (row, ci, v) in claimed.items()]
        parts[:0] = [f"{summary}; dMX better at {own.count('dMX better')} of {len(own)} on its own 95 % interval",
                     *finished]
    else:
        parts.extend(_pending_study(per_target, every_setup)
                     or ["Pareto study on held-out windows: not finished yet"])
    rows.append(("\"improves over KL divergence-based layer-selection heuristics\"", status, "; ".join(parts)))
    rows.append(("... on perplexity **and** zero-shot accuracy", *_zeroshot_status(root, every_setup)))
    rows.append(("... on Llama, Qwen3 and SmolLM2 (1-1.7 B)", "not testable here",
                 "the machine reaches no model hub; the one local model is SmolLM2-135M-Instruct from a Q4_1 GGUF "
                 "(docs/FIDELITY.md row 19); `--model org/name --online` runs them elsewhere"))
    rows.append(("MXFP6/MXFP4 mixtures are more efficient than MXFP8/MXFP4", *_family_status(root)))
    share = _high_share(root, HEADLINE["Hadamard-64"], ("down_proj", "v_proj"))
    if share is None:
        rows.append(("dMX keeps down_proj and v_proj at high precision", "not yet measured", ""))
    else:
        kept, overall = share
        rows.append(("dMX keeps down_proj and v_proj at high precision",
                     "reproduced" if kept > overall else "not reproduced",
                     f"Hadamard-64 headline, 3 seeds: {kept:.0%} of down_proj/v_proj layers at MXFP8 against "
                     f"{overall:.0%} of all layers"))
    for label in authors:
        learned, compared, running = _learned_status(root, label)
        ran = any(l == label and row for l, row in per_target)
        progress = ("; ".join(compared + [f"running: {r}" for r in running]) if ran
                    else f"the study (`ROTATION=learned benchmarks/pareto_study.sh`) has not run yet")
        status, summary = _verdict_status(learned, f"{label}, dMX with the rotation it learns against two KL pipelines",
                                          unit="comparisons")
        rows.append(("rotations learned jointly with the offsets (the authors' set-up)", status,
                     f"{summary}; {progress}. Each dMX seed learns its own rotation while KL uses a fixed one, so "
                     "these compare the pipelines, not the rankings (the rows above read only the ranking, "
                     f"\"{LEARNED_RANKING[label]}\": KL on the rotation each dMX seed learned); the fixed "
                     "Hadamard is the default here (docs/FIDELITY.md row 16)"))
    return rows


def table_claims(root: Path) -> str:
    """Every claim of the paper's abstract and tables against this project's evidence."""
    return markdown_table(["claim", "here", "evidence"], [list(r) for r in claims(root)], "lll")


def table_rotation_default(root: Path) -> str:
    """The demo's calibration under each rotation (benchmarks/rotation_default.py): time, memory,
    the threshold rule's bits and how far the offsets moved from β̂ = 0."""
    path = root / "results" / "rotation_default" / "results.json"
    if not path.is_file():
        return "(not run yet: `python benchmarks/rotation_default.py --out results/rotation_default/results.json`)\n"
    doc = load_json(path)
    body = [[r["rotation"], f"{r['cpu_seconds'] / 60:.1f} min", f"{r['wall_seconds'] / 60:.1f} min",
             f"{r['peak_rss_gib']:.1f} GiB",
             f"{r['threshold_bits']:.2f}", f"{r['budget_bits']:.2f}",
             f"{r['offsets_over_threshold']} of {r['offsets']}", f"{r['offset_max']:.3f}", f"{r['offset_median']:.3f}"]
            for r in doc["rows"]]
    return markdown_table(["rotation", "calibration CPU time", "wall (shared machine)", "peak RSS", "threshold-rule bits", "budget bits",
                           "offsets with \\|β̂\\| > 1", "largest \\|β̂\\|", "median \\|β̂\\|"], body, "lrrrrrrrr")
