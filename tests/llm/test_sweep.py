"""The sweep: result files, resume after an interruption, figures; on a tiny saved Llama."""

import csv
import io
import json
import pytest

import dmx.llm.sweep.methods as methods
import dmx.llm.sweep.run as sweep
from dataclasses import replace

from dmx.calibrate import CalibrationConfig
from dmx.llm.pipeline import ModelSpec
from dmx.llm.sweep.config import CalibrationData, EvaluationSpec, SweepConfig, SweepPlan, point_label
from dmx.llm.sweep.results import ResultStore, points_to_csv, summarize_points
from dmx.llm.sweep.run import run_sweep

def test_point_labels():
    assert point_label("fp") == "fp"
    assert point_label("uniform", fmt="mxfp4_e2m1") == "uniform:mxfp4_e2m1"
    assert point_label("kl", target=5.0) == "kl@5" and point_label("dmx", target=5.25) == "dmx@5.25"
    with pytest.raises(ValueError, match="fp, uniform, kl, dmx"):
        point_label("gptq", target=5)
    with pytest.raises(ValueError, match="target"):
        point_label("kl")


def test_csv_has_one_row_per_point_and_task_columns():
    pts = [
        {"method": "fp", "label": "fp", "perplexity": 12.5, "accuracy": {}},
        {"method": "kl", "label": "kl@5", "target": 5.0, "avg_bits": 4.98, "perplexity": 20.0,
         "accuracy": {"piqa": 0.6, "arc_easy": 0.4}, "avg_accuracy": 0.5, "formats": {"a": "mxfp4_e2m1"}},
    ]
    rows = list(csv.DictReader(io.StringIO(points_to_csv(pts))))
    assert [r["label"] for r in rows] == ["fp", "kl@5"]
    assert rows[1]["acc_piqa"] == "0.6" and rows[0]["acc_piqa"] == "" and rows[1]["avg_bits"] == "4.98"
    assert "formats" not in rows[0]


def test_store_refuses_other_settings(tmp_path):
    store = ResultStore.open(tmp_path, {"model": "a", "seqlen": 64})
    store.add({"key": "fp", "method": "fp", "label": "fp", "perplexity": 3.0})
    assert ResultStore.open(tmp_path, {"model": "a", "seqlen": 64}).get("fp")["perplexity"] == 3.0
    with pytest.raises(ValueError, match="differs in: seqlen"):
        ResultStore.open(tmp_path, {"model": "a", "seqlen": 128})
    assert SweepConfig(calibration_data=CalibrationData(windows=3)).identity() == SweepConfig(
        calibration_data=CalibrationData(windows=4)).identity()
    assert SweepConfig(evaluation=EvaluationSpec(max_windows=3)).identity() != SweepConfig(
        evaluation=EvaluationSpec(max_windows=4)).identity()


def test_two_stores_on_one_folder_keep_each_others_points(tmp_path):
    # two sweeps of one study writing into one folder (KL in one process, dMX in another)
    kl = ResultStore.open(tmp_path, {"model": "a"})
    dmx = ResultStore.open(tmp_path, {"model": "a"})
    kl.add({"key": "kl@5", "method": "kl", "label": "kl@5", "perplexity": 4.0})
    dmx.add({"key": "dmx@5", "method": "dmx", "label": "dmx@5", "perplexity": 3.0})
    kl.add({"key": "kl@5:s1", "method": "kl", "label": "kl@5:s1", "perplexity": 5.0})
    dmx.add({"key": "dmx@5", "method": "dmx", "label": "dmx@5", "perplexity": 2.5})  # a re-measured point
    stored = ResultStore.open(tmp_path, {"model": "a"})
    assert [p["key"] for p in stored.points] == ["kl@5", "dmx@5", "kl@5:s1"]
    assert stored.get("dmx@5")["perplexity"] == 2.5
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [r["label"] for r in rows] == ["kl@5", "dmx@5", "kl@5:s1"]


def test_two_stores_updating_finished_points_keep_each_others_updates(tmp_path):
    """Two sweeps that both opened a finished folder and each add accuracy to other points (one the
    KL draws, one the dMX seeds): every update survives, where a store's stale copies from when it
    opened used to overwrite the other's (the dMX accuracy of the first zero-shot run was lost so)."""
    first = ResultStore.open(tmp_path, {"model": "a"})
    for key in ("kl@5", "dmx@5"):
        first.add({"key": key, "method": key[:-2], "label": key, "perplexity": 3.0})
    kl = ResultStore.open(tmp_path, {"model": "a"})
    dmx = ResultStore.open(tmp_path, {"model": "a"})
    dmx.add({**dmx.get("dmx@5"), "avg_accuracy": 0.45})
    kl.add({**kl.get("kl@5"), "avg_accuracy": 0.44})
    stored = ResultStore.open(tmp_path, {"model": "a"})
    assert [(p["key"], p.get("avg_accuracy")) for p in stored.points] == [("kl@5", 0.44), ("dmx@5", 0.45)]


def test_store_refuses_a_corrupt_results_file(tmp_path):
    (tmp_path / "results.json").write_text('{"schema": "dmx.sweep/1", "points": [')
    with pytest.raises(ValueError, match=r"sweep result file .*results.json is corrupt, not valid JSON .*move it away"):
        ResultStore.open(tmp_path, {"model": "a"})


def test_sweep_end_to_end_interrupt_and_resume(tiny_dir, tmp_path, monkeypatch):
    # Small local text files keep tokenisation cheap (the WikiText-2 path is the same code).
    text = " ".join(f"The {w} of row {i} is {i * 7 % 13}." for i, w in enumerate(["value", "sum", "mean"] * 40))
    (tmp_path / "eval.txt").write_text(text)
    (tmp_path / "calib.txt").write_text(text[::-1])
    cfg = SweepConfig(
        model=ModelSpec(model=str(tiny_dir)), out_dir=str(tmp_path / "sweep"),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "eval.txt"), seqlen=64, max_windows=1),
        calibration_data=CalibrationData(text_file=str(tmp_path / "calib.txt"), windows=2, seqlen=32, kl_windows=1,
                                         kl_seqlen=32),
        calibration=CalibrationConfig(steps=2, batch_size=1, checkpoint_every=1), progress=False,
        plan=SweepPlan(targets=(6.0,), uniform=("mxfp4_e2m1", "mxfp8_e4m3"), methods=("fp", "uniform", "kl", "dmx")),
    )
    calls = {"eval": 0, "reference": 0}
    real_eval, real_ref = methods._perplexity_metrics, __import__("dmx.llm.kl_baseline").llm.kl_baseline.reference_logits

    def counting_eval(*args, **kwargs):
        calls["eval"] += 1
        if calls["eval"] == 3:
            raise KeyboardInterrupt  # dies while evaluating the second uniform format
        return real_eval(*args, **kwargs)

    def counting_ref(*args, **kwargs):
        calls["reference"] += 1
        return real_ref(*args, **kwargs)

    monkeypatch.setattr(methods, "_perplexity_metrics", counting_eval)
    monkeypatch.setattr("dmx.llm.kl_baseline.reference_logits", counting_ref)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg)
    done = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert [p["key"] for p in done["points"]] == ["fp", "uniform:mxfp4_e2m1"]

    points = run_sweep(cfg)  # resumes: fp and the first uniform point are not re-evaluated
    assert calls["eval"] == 3 + 3
    by_key = {p["key"]: p for p in points}
    assert list(by_key) == ["fp", "uniform:mxfp4_e2m1", "uniform:mxfp8_e4m3", "kl@6", "dmx@6"]
    assert by_key["uniform:mxfp4_e2m1"]["avg_bits"] == 4.0 and by_key["uniform:mxfp8_e4m3"]["avg_bits"] == 8.0
    assert by_key["kl@6"]["avg_bits"] <= 6.0 and len(by_key["kl@6"]["formats"]) == 14
    assert 4.0 <= by_key["dmx@6"]["avg_bits"] <= 8.0
    for p in points:
        assert p["perplexity"] > 1.0
    # Perplexity of the 4-bit model differs from the 8-bit one: the formats really were applied.
    assert by_key["uniform:mxfp4_e2m1"]["perplexity"] != by_key["uniform:mxfp8_e4m3"]["perplexity"]
    out = tmp_path / "sweep"
    for name in ("results.csv", "pareto.png", "assignment_heatmap.png", "assignments/kl_at_6.json",
                 "assignments/dmx_at_6.json"):
        assert (out / name).is_file(), name
    kl_file = json.loads((out / "assignments" / "kl_at_6.json").read_text())
    assert kl_file["formats"] == by_key["kl@6"]["formats"]
    assert calls["reference"] == 2  # interrupted run + resumed run; KL scores are cached from here

    # A second target and other dMX settings: the new target's two points run, dmx@6 is
    # recomputed (in a fresh checkpoint directory), KL reuses the cached scores.
    more = replace(cfg, plan=replace(cfg.plan, targets=(6.0, 5.0)), calibration=replace(cfg.calibration, steps=3))
    points = run_sweep(more)
    assert calls["eval"] == 6 + 3 and calls["reference"] == 2 and len(points) == 7
    kl5 = next(p for p in points if p["key"] == "kl@5")
    assert kl5["avg_bits"] <= 5.0
    assert {p["key"]: p["settings"]["calibration"]["steps"] for p in points if p["method"] == "dmx"} == {
        "dmx@6": 3, "dmx@5": 3}
    assert next(p for p in points if p["key"] == "kl@6")["seconds"] == by_key["kl@6"]["seconds"]  # kept
    assert len(list((out / "checkpoints").iterdir())) == 3

    # The other final rounding: the dMX points are deployed again from their finished
    # checkpoints (no calibration step, no new checkpoint folder) and meet the budget.
    def no_step(*args, **kwargs):
        raise AssertionError("a calibration step ran again")

    monkeypatch.setattr("dmx.calibrate.objective", no_step)
    budget = replace(more, calibration=replace(more.calibration, final_rounding="budget"))
    points = {p["key"]: p for p in run_sweep(budget)}
    assert calls["eval"] == 9 + 2 and len(list((out / "checkpoints").iterdir())) == 3
    for t in (5.0, 6.0):
        assert t - 4 / 14 < points[f"dmx@{t:g}"]["avg_bits"] <= t
        assert points[f"dmx@{t:g}"]["settings"]["calibration"]["final_rounding"] == "budget"


def test_kl_draws_and_held_out_windows_store_per_window_nlls(tiny_dir, tmp_path):
    """--seeds repeats the KL heuristic over calibration draws (scored and cached per draw); a sweep
    with first_window scores the later windows, and every point stores the per-window NLLs its
    perplexity is made of, equal to scoring those windows directly."""
    from dmx.llm.models import load_model
    from dmx.llm.data import test_token_ids
    from dmx.llm.perplexity import perplexity_of, window_nlls

    text = " ".join(f"The {w} of row {i} is {i * 7 % 13}." for i, w in enumerate(["value", "sum", "mean"] * 40))
    (tmp_path / "eval.txt").write_text(text)
    cfg = SweepConfig(
        model=ModelSpec(model=str(tiny_dir)), out_dir=str(tmp_path / "sweep"), progress=False,
        plan=SweepPlan(targets=(5.0,), methods=("fp", "kl"), seed=3, seeds=2),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "eval.txt"), seqlen=64, max_windows=3, first_window=2),
        calibration_data=CalibrationData(text_file=str(tmp_path / "eval.txt"), kl_windows=2, kl_seqlen=32),
    )
    assert cfg.identity()["first_window"] == 2 and "first_window" not in SweepConfig().identity()
    assert cfg.figure_title().endswith("eval.txt, windows 2-4 of 64 tokens")  # the scored windows, by number
    points = {p["key"]: p for p in run_sweep(cfg)}
    assert list(points) == ["fp", "kl@5", "kl@5:s1"]
    assert [points[k]["seed"] for k in ("kl@5", "kl@5:s1")] == [3, 4]
    assert [points[k]["settings"]["seed"] for k in ("kl@5", "kl@5:s1")] == [3, 4]
    caches = sorted((tmp_path / "sweep" / "kl_cache").glob("*.json"))
    assert len(caches) == 2  # one score cache per calibration draw
    for p in points.values():
        assert p["first_window"] == 2 and len(p["window_nlls"]) == 3
        assert p["perplexity"] == pytest.approx(perplexity_of(p["window_nlls"], 64), rel=1e-12)
    model, tokenizer = load_model(str(tiny_dir))
    ids = test_token_ids(tokenizer, None, text_file=str(tmp_path / "eval.txt"))
    every = window_nlls(model, ids, seqlen=64, progress=False)
    assert points["fp"]["window_nlls"] == pytest.approx(every[2:5].tolist(), rel=1e-12)
    with pytest.raises(ValueError, match="first_window must be"):
        run_sweep(replace(cfg, evaluation=replace(cfg.evaluation, first_window=-1)))


def test_seeds_repeat_dmx_and_the_random_control_and_are_summarised(tiny_dir, tmp_path):
    text = " ".join(f"The {w} of row {i} is {i * 7 % 13}." for i, w in enumerate(["value", "sum", "mean"] * 40))
    (tmp_path / "eval.txt").write_text(text)
    cfg = SweepConfig(
        model=ModelSpec(model=str(tiny_dir)), out_dir=str(tmp_path / "sweep"), progress=False,
        plan=SweepPlan(targets=(5.0,), methods=("dmx", "random"), seed=3, seeds=3),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "eval.txt"), seqlen=64, max_windows=1),
        calibration_data=CalibrationData(text_file=str(tmp_path / "eval.txt"), windows=2, seqlen=32),
        calibration=CalibrationConfig(steps=2, batch_size=1, final_rounding="budget"),
    )
    points = {p["key"]: p for p in run_sweep(cfg)}
    assert list(points) == ["dmx@5", "dmx@5:s1", "dmx@5:s2", "random@5", "random@5:s1", "random@5:s2"]
    assert [points[k]["seed"] for k in points] == [3, 4, 5, 3, 4, 5]
    for p in points.values():  # every point fills the budget exactly (14 layers: 4/14-bit steps)
        assert 5.0 - 4 / 14 < p["avg_bits"] <= 5.0
    randoms = [frozenset(n for n, f in points[k]["formats"].items() if f == "mxfp8_e4m3")
               for k in ("random@5", "random@5:s1", "random@5:s2")]
    assert len(set(randoms)) > 1  # the seeds draw different layers
    summary = {(r["method"], r["target"]): r for r in summarize_points(list(points.values()))}
    for method in ("dmx", "random"):
        row = summary[(method, 5.0)]
        ppl = [p["perplexity"] for p in points.values() if p["method"] == method]
        assert row["n"] == 3 and row["seeds"] == [3, 4, 5]
        assert row["perplexity_mean"] == pytest.approx(sum(ppl) / 3)
        assert row["perplexity_min"] == min(ppl) and row["perplexity_max"] == max(ppl)
    assert (tmp_path / "sweep" / "summary.csv").read_text().splitlines()[0].startswith("method,target,format,n,seeds")
    # a rerun with fewer seeds keeps the finished points and computes nothing
    again = run_sweep(replace(cfg, plan=replace(cfg.plan, seeds=2)))
    assert [p["perplexity"] for p in again] == [p["perplexity"] for p in points.values()]


def _save_byte_lm(root):
    """A tiny byte-level Llama saved in ``root/lm`` and a text file ``root/t.txt``; returns its tokenizer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "zeroshot"))
    from tiny_byte_lm import tiny_byte_lm  # a tokenizer with an EOS token, as lm-eval needs

    model, tokenizer = tiny_byte_lm(seed=1)
    model.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    (root / "t.txt").write_text(" ".join(f"Row {i} holds {i * 3 % 7}." for i in range(200)))
    return tokenizer


@pytest.mark.slow
def test_rerun_with_tasks_adds_accuracy_without_recomputing(tmp_path, monkeypatch, data_dir):
    """A finished sweep rerun with zero-shot tasks gets accuracy on every point (and the second
    Pareto panel) while perplexities, KL scores and calibrations are reused; a third run with the
    same tasks does nothing, other tasks measure again."""
    _save_byte_lm(tmp_path)
    plain = SweepConfig(
        model=ModelSpec(model=str(tmp_path / "lm")), out_dir=str(tmp_path / "sweep"), data_dir=str(data_dir),
        plan=SweepPlan(targets=(6.0,), uniform=("mxfp4_e2m1",)),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "t.txt"), seqlen=64, max_windows=1),
        calibration_data=CalibrationData(text_file=str(tmp_path / "t.txt"), windows=2, seqlen=32, kl_windows=1,
                                         kl_seqlen=32),
        calibration=CalibrationConfig(steps=1, batch_size=1, checkpoint_every=1), progress=False,
    )
    first = {p["key"]: p for p in run_sweep(plain)}
    assert all(p["avg_accuracy"] is None for p in first.values())

    def no_perplexity(*args, **kwargs):
        raise AssertionError("a finished point's perplexity was recomputed")

    monkeypatch.setattr(methods, "_perplexity_metrics", no_perplexity)
    monkeypatch.setattr(methods, "calibrate", no_perplexity)
    monkeypatch.setattr(sweep, "test_token_ids", no_perplexity)  # accuracy only: the test split stays untouched
    scored = []
    real = methods._zeroshot_metrics

    def spy(model, tokenizer, cfg, checkpoint):
        res = real(model, tokenizer, cfg, checkpoint)
        scored.append(res["avg_accuracy"])
        return res

    monkeypatch.setattr(methods, "_zeroshot_metrics", spy)
    with_tasks = replace(plain, evaluation=replace(plain.evaluation, tasks=("piqa",), limit=8))
    second = {p["key"]: p for p in run_sweep(with_tasks)}
    assert list(second) == list(first) and len(scored) == len(first)  # same points, same order
    for key, p in second.items():
        assert p["perplexity"] == first[key]["perplexity"] and p["formats"] == first[key]["formats"]
        assert 0.0 <= p["avg_accuracy"] <= 1.0 and set(p["accuracy"]) == {"piqa"}
        assert p["accuracy_settings"] == {"tasks": ["piqa"], "limit": 8, "online": False}
        # per document, in document order: their mean is the task's accuracy (a paired comparison reads them)
        docs = p["accuracy_documents"]["piqa"]
        assert len(docs) == 8 and set(docs) <= {0, 1} and sum(docs) / 8 == pytest.approx(p["accuracy"]["piqa"])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "sweep" / "results.csv").read_text())))
    assert all(r["acc_piqa"] != "" for r in rows)
    run_sweep(with_tasks)
    assert len(scored) == len(first)  # nothing left to measure
    run_sweep(replace(plain, evaluation=replace(plain.evaluation, tasks=("piqa",), limit=4)))
    assert len(scored) == 2 * len(first)


def test_an_interrupted_zero_shot_run_resumes_at_the_task_it_was_answering(tmp_path, monkeypatch, data_dir,
                                                                           lm_eval_runs):
    """A point's perplexity is stored before it answers the zero-shot tasks, and each finished task
    is checkpointed: a sweep interrupted in a point's second task reruns that task alone, with the
    answers an uninterrupted sweep gives, and the checkpoint is gone once the point is stored."""
    _save_byte_lm(tmp_path)
    cfg = SweepConfig(
        model=ModelSpec(model=str(tmp_path / "lm")), out_dir=str(tmp_path / "sweep"), data_dir=str(data_dir),
        plan=SweepPlan(targets=(6.0,), methods=("fp", "uniform"), uniform=("mxfp4_e2m1",)),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "t.txt"), seqlen=64, max_windows=1,
                                  tasks=("piqa", "winogrande"), limit=4),
        progress=False,
    )
    lm_eval_runs.cut_at = 4  # full precision's two tasks, then the uniform point's second
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg)
    stored = {p["key"]: p for p in json.loads((tmp_path / "sweep" / "results.json").read_text())["points"]}
    assert stored["fp"]["avg_accuracy"] is not None and stored["uniform:mxfp4_e2m1"]["avg_accuracy"] is None
    assert stored["uniform:mxfp4_e2m1"]["perplexity"] > 1.0  # kept though its zero-shot run died
    checkpoints = list((tmp_path / "sweep" / "zeroshot_checkpoints").iterdir())
    assert [c.name for c in checkpoints] == [methods.zeroshot_checkpoint(
        tmp_path / "sweep", stored["uniform:mxfp4_e2m1"], cfg).name]

    lm_eval_runs.restart()
    monkeypatch.setattr(methods, "_perplexity_metrics", lambda *a, **k: pytest.fail("perplexity recomputed"))
    resumed = {p["key"]: p for p in run_sweep(cfg)}
    assert lm_eval_runs.tasks == ["dmx_winogrande"]  # piqa came from the checkpoint
    assert not (tmp_path / "sweep" / "zeroshot_checkpoints").exists()

    monkeypatch.undo()
    whole = {p["key"]: p for p in run_sweep(replace(cfg, out_dir=str(tmp_path / "whole")))}
    for key, point in whole.items():
        assert resumed[key]["accuracy_documents"] == point["accuracy_documents"]
        assert resumed[key]["window_nlls"] == point["window_nlls"]
        assert resumed[key]["accuracy_seconds"] > 0


def test_points_from_answers_other_questions_in_a_new_folder(tmp_path, monkeypatch, data_dir, capsys):
    """``dmx sweep --points-from A --out B`` copies A's finished points of B's plan (assignments
    included, accuracy not) and only answers B's questions: perplexities equal A's, A keeps its
    own accuracy, a rerun copies nothing and measures nothing; a folder of other settings stops
    before anything is copied."""
    import os

    from dmx.cli import main

    _save_byte_lm(tmp_path)
    flags = ["sweep", "--model", str(tmp_path / "lm"), "--rotation", "none", "--data-dir", str(data_dir),
             "--text-file", str(tmp_path / "t.txt"), "--seqlen", "64", "--max-windows", "1", "--targets", "6",
             "--uniform-formats", "mxfp4_e2m1", "--no-progress", "--tasks", "piqa"]
    a, b = tmp_path / "first", tmp_path / "every"
    assert main([*flags, "--methods", "fp", "uniform", "random", "--limit", "4", "--out", str(a)]) == 0
    before = (a / "results.json").read_text()
    measured = {p["key"]: p for p in json.loads(before)["points"]}
    monkeypatch.setattr(methods, "_perplexity_metrics", lambda *a, **k: pytest.fail("perplexity recomputed"))
    umask = os.umask(0o077)  # the copies follow the user's umask, not the source files' modes
    try:
        assert main([*flags, "--methods", "uniform", "random", "--limit", "6", "--points-from", str(a),
                     "--out", str(b)]) == 0
    finally:
        os.umask(umask)
    assert (b / "assignments" / "random_at_6.json").stat().st_mode & 0o777 == 0o600
    assert "copied 2 finished points" in capsys.readouterr().err
    copied = {p["key"]: p for p in json.loads((b / "results.json").read_text())["points"]}
    assert list(copied) == ["uniform:mxfp4_e2m1", "random@6"]
    for key, point in copied.items():
        assert point["window_nlls"] == measured[key]["window_nlls"] and point["formats"] == measured[key]["formats"]
        assert len(point["accuracy_documents"]["piqa"]) == 6 and point["accuracy_settings"]["limit"] == 6
    assert (b / "assignments" / "random_at_6.json").read_text() == (a / "assignments" / "random_at_6.json").read_text()
    assert (a / "results.json").read_text() == before  # the source keeps its first-4 accuracy

    monkeypatch.setattr(methods, "_zeroshot_metrics", lambda *a, **k: pytest.fail("answered again"))
    assert main([*flags, "--methods", "uniform", "random", "--limit", "6", "--points-from", str(a),
                 "--out", str(b)]) == 0
    assert "copied 0 finished points" in capsys.readouterr().err
    other = list(flags)
    other[other.index("--seqlen") + 1] = "32"
    assert main([*other, "--methods", "uniform", "--points-from", str(a), "--out", str(tmp_path / "other")]) != 0
    assert f"--points-from {a}: its points were measured with other settings" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert main([*flags, "--methods", "uniform", "--points-from", str(tmp_path / "none"), "--out", str(b)]) != 0
    assert f"--points-from {tmp_path / 'none'} holds no sweep results" in capsys.readouterr().err


@pytest.mark.slow
def test_rerun_with_tasks_scores_learned_rotation_points_on_their_own_rotation(tmp_path, monkeypatch, data_dir):
    """Under a learned rotation, zero-shot accuracy joins dMX's and kl_learned_rotation's finished
    points on the rotation each dMX seed learned: the model that answers the questions is the one
    that gave the point its perplexity (the same per-window NLLs, recomputed here); with that
    rotation file gone the rerun stops before the model loads, naming the file."""
    from dmx.llm.data import test_token_ids
    from dmx.llm.perplexity import window_nlls
    from dmx.llm.rotation import RotationSpec

    tokenizer = _save_byte_lm(tmp_path)
    cfg = SweepConfig(
        model=ModelSpec(model=str(tmp_path / "lm"), rotation=RotationSpec("learned", seed=1)),
        out_dir=str(tmp_path / "sweep"), data_dir=str(data_dir),
        plan=SweepPlan(targets=(6.0,), methods=("dmx", "kl_learned_rotation")),
        evaluation=EvaluationSpec(text_file=str(tmp_path / "t.txt"), seqlen=64, max_windows=2),
        calibration_data=CalibrationData(text_file=str(tmp_path / "t.txt"), windows=2, seqlen=32, kl_windows=1,
                                         kl_seqlen=32),
        calibration=CalibrationConfig(steps=2, batch_size=1, rotation_lr=1.0), progress=False,
    )
    first = {p["key"]: p for p in run_sweep(cfg)}
    assert list(first) == ["dmx@6", "kl_learned_rotation@6"]
    ids = test_token_ids(tokenizer, text_file=tmp_path / "t.txt")
    answered = []  # the per-window NLLs of each model that answers, in the order the points are scored
    real = methods._zeroshot_metrics

    def spy(model, tokenizer, cfg, checkpoint):
        answered.append(window_nlls(model, ids, seqlen=64, max_windows=2, progress=False).tolist())
        return real(model, tokenizer, cfg, checkpoint)

    monkeypatch.setattr(methods, "_zeroshot_metrics", spy)
    with_tasks = replace(cfg, evaluation=replace(cfg.evaluation, tasks=("piqa",), limit=8))
    second = {p["key"]: p for p in run_sweep(with_tasks)}
    assert answered == [first[key]["window_nlls"] for key in first]
    assert all(p["accuracy_settings"]["limit"] == 8 and len(p["accuracy_documents"]["piqa"]) == 8
               for p in second.values())
    rotation = json.loads((tmp_path / "sweep" / "assignments" / "dmx_at_6.json").read_text())["provenance"]
    (tmp_path / "sweep" / "assignments" / rotation["rotation_file"]).unlink()
    monkeypatch.setattr(sweep, "_load", lambda *a: pytest.fail("the model loaded before the missing file was named"))
    with pytest.raises(ValueError, match=rotation["rotation_file"].replace(".", r"\.")):
        run_sweep(replace(cfg, evaluation=replace(cfg.evaluation, tasks=("piqa",), limit=4)))


def test_sweep_rejects_bad_settings_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"\[4, 8\]"):
        run_sweep(SweepConfig(model=ModelSpec(model="no/such-model"), out_dir=str(tmp_path),
                              plan=SweepPlan(targets=(9.0,))))
    with pytest.raises(ValueError, match="valid choices: fp, uniform, kl, dmx"):
        run_sweep(SweepConfig(model=ModelSpec(model="no/such-model"), out_dir=str(tmp_path),
                              plan=SweepPlan(methods=("fp", "gptq"))))
    with pytest.raises(ValueError, match="unknown MX format"):
        run_sweep(SweepConfig(model=ModelSpec(model="no/such-model"), out_dir=str(tmp_path),
                              plan=SweepPlan(uniform=("mxfp5",))))
    with pytest.raises(ValueError, match="calibration's family 'fp8_fp4' differs from the model's 'fp6_fp4'"):
        SweepConfig(model=ModelSpec(family="fp6_fp4"))


def test_cli_flags_map_to_the_config():
    from dmx.cli import build_parser
    from dmx.commands.sweep import config_from_args

    args = build_parser().parse_args(
        ["sweep", "--targets", "4.5", "6", "--methods", "kl", "dmx", "--steps", "7", "--lam", "2",
         "--tasks", "piqa", "--limit", "10", "--max-windows", "3", "--out", "x", "--final-rounding", "budget"]
    )
    cfg = config_from_args(args)
    assert cfg.plan.targets == (4.5, 6.0) and cfg.plan.methods == ("kl", "dmx") and cfg.evaluation.max_windows == 3
    assert cfg.calibration == CalibrationConfig(steps=7, lam=2.0, final_rounding="budget")
    # the dMX settings record what differs from CalibrationConfig's defaults, plus those always recorded
    assert cfg.method_settings("dmx")["calibration"] == {
        "batch_size": 2, "beta_init": 0.0, "checkpoint_every": 5, "clip_grad_norm": 1.0, "final_rounding": "budget",
        "fractional_scale": "maxfloat", "lam": 2.0, "steps": 7, "weighting": "mean"}
    # a flag given at its default value records what the flag left unset records
    lam5 = config_from_args(build_parser().parse_args(["sweep", "--lam", "5"]))
    assert lam5.method_settings("dmx") == config_from_args(build_parser().parse_args(["sweep"])).method_settings("dmx")
    assert cfg.evaluation.tasks == ("piqa",) and cfg.evaluation.limit == 10 and cfg.out_dir == "x"
    spelled = config_from_args(build_parser().parse_args(["sweep", "--tasks", "default"]))
    assert spelled.evaluation.tasks == ("arc_easy", "arc_challenge", "winogrande", "piqa")  # the stored settings name them
    with pytest.raises(ValueError, match="unknown zero-shot task 'boolq'"):
        config_from_args(build_parser().parse_args(["sweep", "--tasks", "boolq"]))


@pytest.mark.results
def test_committed_headline_sweep_is_finished_under_its_flags():
    """The points under results/ were calibrated with --steps 40 --batch-size 2 --checkpoint-every 5
    (benchmarks/headline.sh): with those flags a rerun finds every point done, nothing recomputed
    (only the KL draws that --seeds asks for since issue #23 are new)."""
    from pathlib import Path

    from dmx.cli import build_parser
    from dmx.commands.sweep import config_from_args
    from dmx.llm.sweep.run import is_done, planned_keys

    out = Path(__file__).resolve().parents[2] / "results" / "headline_5bit"
    argv = ["sweep", "--model", "smollm2-135m", "--family", "fp8_fp4", "--targets", "5", "--seqlen", "2048",
            "--max-windows", "8", "--kl-windows", "2", "--kl-seqlen", "256", "--calib-windows", "64",
            "--calib-seqlen", "256", "--steps", "40", "--batch-size", "2", "--checkpoint-every", "5",
            "--methods", "kl", "dmx", "random", "fp", "uniform", "--uniform-formats", "mxfp4_e2m1", "mxfp8_e4m3",
            "--seeds", "3", "--final-rounding", "budget", "--rotation", "none", "--out", str(out)]
    cfg = config_from_args(build_parser().parse_args(argv))
    store = ResultStore.open(out, cfg.identity())
    # every committed point stays finished; --seeds now also repeats the KL draw (issue #23), so a
    # rerun adds only KL's two further calibration draws
    assert [k for k in planned_keys(cfg) if not is_done(store.get(k), cfg)] == ["kl@5:s1", "kl@5:s2"]
    # the same defaults without the flags: CalibrationConfig's, so the same points
    bare = config_from_args(build_parser().parse_args(argv[:argv.index("--steps")] + argv[argv.index("--methods"):]))
    assert bare.method_settings("dmx") == cfg.method_settings("dmx")


# ----------------------------------------------------------------------------- committed sweeps resume
# The scripts under benchmarks/ are run with $PY replaced by a recorder, so the command lines the
# committed folders were made with come from the scripts themselves; each is parsed by the CLI and
# must reproduce, byte for byte, the folder's stored identity, every stored point's settings and
# the names of its committed calibration checkpoints (issue #27: the refactor of SweepConfig keeps
# every committed folder resuming).

#: (script, its environment, committed folders it writes relative to results/, methods whose
#: committed points predate the recipe's recorded defaults and are recomputed by design).
COMMITTED_SWEEPS = [
    ("pareto_study.sh", {}, ["pareto_fp8_fp4_hadamard", "pareto_fp8_fp4_hadamard_threshold"], ()),
    ("pareto_study.sh", {"FAMILY": "fp6_fp4", "TARGETS": "5 4.5", "UNIFORM": "mxfp4_e2m1 mxfp6_e2m3",
                         "OUT": "pareto_fp6_fp4_hadamard"},
     ["pareto_fp6_fp4_hadamard", "pareto_fp6_fp4_hadamard_threshold"], ()),
    ("pareto_study.sh", {"ROTATION": "learned", "OUT": "pareto_fp8_fp4_learned"},
     ["pareto_fp8_fp4_learned", "pareto_fp8_fp4_learned_threshold"], ()),
    ("pareto_study.sh", {"ROTATION": "learned", "QUESTIONS": "all", "OUT": "pareto_fp8_fp4_learned"},
     ["pareto_fp8_fp4_learned_every_question"], ()),
    ("pareto_study.sh", {"ROTATION": "none", "TARGETS": "5", "OUT": "pareto_fp8_fp4_none"},
     ["pareto_fp8_fp4_none", "pareto_fp8_fp4_none_threshold"], ()),
    ("headline.sh", {}, ["headline_5bit"], ()),
    ("headline.sh", {"ROTATION": "hadamard", "MAX_WINDOWS": "16", "OUT": "headline_5bit_hadamard"},
     ["headline_5bit_hadamard"], ()),
    ("headline.sh", {"MAX_WINDOWS": "32", "OUT": "headline_5bit_w32"}, ["headline_5bit_w32"], ()),
    ("headline.sh", {"ROTATION": "hadamard", "MAX_WINDOWS": "32", "OUT": "headline_5bit_hadamard_w32"},
     ["headline_5bit_hadamard_w32"], ()),
    ("scale_rule.sh", {"SEEDS": "3"}, ["scale_rule_emax_hadamard"], ()),
    ("run_sweep.sh", {}, ["sweep_smollm2"], ("dmx",)),
    ("run_sweep.sh", {"FINAL_ROUNDING": "budget", "OUT": "sweep_smollm2_budget"}, ["sweep_smollm2_budget"], ("dmx",)),
    ("run_sweep.sh", {"ROTATION": "hadamard", "OUT": "sweep_smollm2_hadamard"}, ["sweep_smollm2_hadamard"], ("dmx",)),
    ("run_sweep.sh", {"ROTATION": "hadamard", "FINAL_ROUNDING": "budget", "OUT": "sweep_smollm2_hadamard_budget"},
     ["sweep_smollm2_hadamard_budget"], ("dmx",)),
    ("run_sweep.sh", {"ROTATION": "learned", "OUT": "sweep_smollm2_learned"}, ["sweep_smollm2_learned"], ("dmx",)),
    ("run_sweep.sh", {"ROTATION": "learned", "FINAL_ROUNDING": "budget", "OUT": "sweep_smollm2_learned_budget"},
     ["sweep_smollm2_learned_budget"], ("dmx",)),
    ("budget_study.sh", {}, ["budget_study/steps120_batch2", "budget_study/steps400_batch2",
                             "budget_study/steps40_batch8"], ()),
]


def _script_sweeps(script, env, tmp_path):
    """The ``dmx sweep`` argument lists ``benchmarks/<script>`` runs (``--out`` relative to results/)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "argv.jsonl"
    recorder = tmp_path / "record"
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    recorder.chmod(0o755)
    fake = tmp_path / "results"  # the scripts' mkdir / ln -s land here, never in results/
    default_out = {"pareto_study.sh": "pareto_fp8_fp4_hadamard", "headline.sh": "headline_5bit",
                   "scale_rule.sh": "scale_rule_emax_hadamard", "budget_study.sh": "budget_study",
                   "run_sweep.sh": "sweep_smollm2"}[script]
    env = {**os.environ, "PY": str(recorder), **env}
    env["OUT"] = str(fake / env.get("OUT", default_out))
    subprocess.run(["bash", str(root / "benchmarks" / script)], env=env, check=True, capture_output=True)
    runs = []
    for line in log.read_text().splitlines():
        argv = json.loads(line)
        if argv[:2] != ["-m", "dmx.cli"]:
            continue  # e.g. budget_study.py drawing its figure
        argv = argv[2:]
        out = argv.index("--out") + 1
        argv[out] = str(Path(argv[out]).relative_to(fake))
        runs.append(argv)
    assert runs, f"{script} ran no dmx sweep"
    return runs


@pytest.mark.results
@pytest.mark.parametrize("script,env,folders,stale", COMMITTED_SWEEPS,
                         ids=[f"{s}:{fs[0]}" for s, _, fs, _ in COMMITTED_SWEEPS])
def test_committed_sweeps_keep_resuming(script, env, folders, stale, tmp_path):
    """Identity, point settings and checkpoint folder names of the committed sweeps, recomputed
    from their scripts' command lines, equal what is stored (byte-identical JSON)."""
    import re
    from pathlib import Path

    from dmx.cli import build_parser
    from dmx.commands.sweep import config_from_args
    from dmx.llm.sweep.run import planned_keys

    results = Path(__file__).resolve().parents[2] / "results"
    runs = _script_sweeps(script, env, tmp_path)
    checked = 0
    for folder in folders:
        out = results / folder
        cfgs = []
        for argv in runs:
            if argv[argv.index("--out") + 1] == folder:
                argv = list(argv)
                argv[argv.index("--out") + 1] = str(out)
                cfgs.append(config_from_args(build_parser().parse_args(argv)))
        assert cfgs, f"{script} writes no sweep into results/{folder}"
        doc = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
        if doc is not None:
            for cfg in cfgs:
                assert json.dumps(cfg.identity(), sort_keys=True) == json.dumps(doc["config"], sort_keys=True)
                ResultStore.open(out, cfg.identity())  # reopens: the resume check itself
            for point in doc["points"]:
                planning = [c for c in cfgs if point["key"] in planned_keys(c)]
                assert planning, f"no command line of {script} plans {folder}'s point {point['key']}"
                for cfg in planning:
                    if point["method"] in stale:
                        assert not sweep.is_done(point, cfg), (folder, point["key"])
                        continue
                    seed = point["settings"].get("seed") if point["method"] in sweep.SEEDED_METHODS else None
                    assert json.dumps(json.loads(json.dumps(cfg.method_settings(point["method"], seed)))) \
                        == json.dumps(point["settings"]), (folder, point["key"])
                    assert sweep.is_done(point, cfg)
                checked += 1
        ckpts = out / "checkpoints"
        for ckpt in sorted(ckpts.iterdir()) if ckpts.is_dir() else []:
            m = re.fullmatch(r"dmx_at_([0-9.]+)(?:_s(\d+))?-[0-9a-f]{8}", ckpt.name)
            assert m, ckpt
            index = int(m.group(2) or 0)
            key = point_label("dmx", target=float(m.group(1)), seed_index=index)
            planning = [c for c in cfgs if key in planned_keys(c)]
            assert planning, f"no command line of {script} plans {folder}'s checkpoint {ckpt.name}"
            for cfg in planning:
                settings = cfg.method_settings("dmx", cfg.plan.seed_values()[index])
                assert methods.checkpoint_dir(out, key, settings) == ckpts / ckpt.name
            checked += 1
    assert checked, f"nothing committed checked for {script}"
