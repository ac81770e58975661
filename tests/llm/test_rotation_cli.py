"""Rotations wired into the commands: calibrate -> eval / export rebuild the same model, the
recorded rotation is applied automatically, contradictions and bad input are refused, and the
sweep rotates every method alike. Tiny random Llama with a byte-level tokenizer, local text files."""

from __future__ import annotations

import json

import pytest
import torch

from dmx.cli import main
from tiny_checkpoint import save_tiny_byte_llama

TEXT = " ".join(f"The {w} of row {i} is {i * 7 % 13}." for i, w in enumerate(["value", "sum", "mean"] * 40))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A tiny random Llama saved with a 256-token byte-level tokenizer, plus eval/calibration texts."""
    root = tmp_path_factory.mktemp("rotcli")
    save_tiny_byte_llama(root / "llama")
    (root / "eval.txt").write_text(TEXT)
    (root / "calib.txt").write_text(TEXT[::-1])
    return root


def _common(root):
    return ["--model", str(root / "llama"), "--no-progress"]


def _eval(root, tmp_path, name, *extra):
    out = tmp_path / f"eval-{name}.json"
    code = main(["eval", *_common(root), "--text-file", str(root / "eval.txt"), "--seqlen", "64", "--max-windows", "2",
                 "--out", str(out), *extra])
    return code, (json.loads(out.read_text()) if code == 0 else None)


def _calibrate(root, out, *extra):
    return main(["calibrate", *_common(root), "--text-file", str(root / "calib.txt"), "--seqlen", "32",
                 "--n-windows", "2", "--steps", "2", "--batch-size", "1", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def learned(tiny_root, tmp_path_factory):
    """`dmx calibrate --rotation learned`; keeps the calibrated in-memory model for comparison."""
    import dmx.commands.calibrate

    captured = {}
    real = dmx.commands.calibrate.calibrate

    def keep_model(model, layers, *args, **kwargs):
        captured["model"] = model
        return real(model, layers, *args, **kwargs)

    out = tmp_path_factory.mktemp("learned") / "assignment.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dmx.commands.calibrate, "calibrate", keep_model)  # as the command calls it
        assert _calibrate(tiny_root, out, "--rotation", "learned", "--rotation-lr", "1.0") == 0
    return out, captured["model"]


def _ppl(model, root, seqlen=64, windows=2):
    from transformers import AutoTokenizer

    from dmx.llm.data import test_token_ids
    from dmx.llm.perplexity import perplexity

    ids = test_token_ids(AutoTokenizer.from_pretrained(root / "llama"), text_file=root / "eval.txt")
    return perplexity(model, ids, seqlen=seqlen, max_windows=windows, progress=False)


def test_calibrate_learned_records_the_rotation_and_eval_rebuilds_it(learned, tiny_root, tmp_path, capsys):
    out, calibrated = learned
    saved = json.loads(out.read_text())["provenance"]
    assert saved["rotation"]["kind"] == "learned" and saved["settings"]["rotation_lr"] == 1.0
    assert saved["rotation_file"] == "assignment.rotation.safetensors"
    assert (out.parent / saved["rotation_file"]).is_file()
    # no rotation flag: the recorded learned rotation is applied, and the assignment row equals the
    # perplexity of the calibrated model itself (bit-identical rebuild from the rotation file)
    code, result = _eval(tiny_root, tmp_path, "auto", "--format", "fp", "--assignment", str(out))
    assert code == 0 and result["rotation"] == f"--rotation-file {out.parent / saved['rotation_file']}"
    assert result["results"][1]["ppl"] == _ppl(calibrated, tiny_root)
    # the rotated full-precision model computes the same function as the unrotated one
    code, plain = _eval(tiny_root, tmp_path, "plain", "--format", "fp")
    assert code == 0 and plain["rotation"] == "--rotation none"
    assert result["results"][0]["ppl"] == pytest.approx(plain["results"][0]["ppl"], rel=1e-4)
    # passing the same rotation explicitly is fine and gives the same numbers
    code, explicit = _eval(tiny_root, tmp_path, "explicit", "--assignment", str(out),
                           "--rotation-file", str(out.parent / saved["rotation_file"]))
    assert code == 0 and explicit["results"][0]["ppl"] == result["results"][1]["ppl"]


@pytest.mark.parametrize("flags", [["--rotation", "none"], ["--rotation", "hadamard"]])
def test_flags_that_contradict_the_assignment_are_refused(learned, tiny_root, tmp_path, capsys, flags):
    out, _ = learned
    code, _ = _eval(tiny_root, tmp_path, "bad", "--assignment", str(out), *flags)
    err = capsys.readouterr().err
    assert code == 2 and "drop the rotation flags" in err and "--rotation-file" in err


def test_export_of_a_learned_assignment_loads_to_identical_logits(learned, tiny_root, tmp_path):
    from dmx.llm.export import load_exported, read_manifest

    out, calibrated = learned
    folder = tmp_path / "export"
    assert main(["export", *_common(tiny_root)[:2], "--assignment", str(out), "--out", str(folder)]) == 0
    manifest = read_manifest(folder)
    assert manifest["rotation"]["kind"] == "learned" and manifest["rotation_file"] == "rotation.safetensors"
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_exported(folder)(ids).logits, calibrated(ids).logits)


def test_moved_or_missing_rotation_file(learned, tiny_root, tmp_path, capsys):
    out, _ = learned
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / out.name).write_bytes(out.read_bytes())
    code, _ = _eval(tiny_root, tmp_path, "missing", "--assignment", str(moved / out.name))
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code, _ = _eval(tiny_root, tmp_path, "seed", "--assignment", str(out), "--rotation-seed", "1")
    assert code == 2 and "do not apply to the learned rotation" in capsys.readouterr().err
    rotation = out.with_name("assignment.rotation.safetensors")
    (moved / rotation.name).write_bytes(rotation.read_bytes())  # moved together: found again
    code, result = _eval(tiny_root, tmp_path, "moved", "--assignment", str(moved / out.name))
    assert code == 0 and result["rotation"] == f"--rotation-file {moved / rotation.name}"


def test_kl_records_its_rotation_and_mixed_rotations_are_refused(tiny_root, tmp_path, capsys):
    kl = tmp_path / "kl.json"
    assert main(["kl", *_common(tiny_root), "--text-file", str(tiny_root / "calib.txt"), "--seqlen", "32",
                 "--n-windows", "1", "--target-bits", "6", "--cache-dir", str(tmp_path / "cache"), "--out", str(kl),
                 "--rotation", "hadamard", "--rotation-seed", "3"]) == 0
    recorded = json.loads(kl.read_text())["provenance"]["rotation"]
    assert (recorded["kind"], recorded["seed"], recorded["placement"], recorded["block"]) == ("hadamard", 3, "online", 64)
    code, result = _eval(tiny_root, tmp_path, "kl", "--assignment", str(kl))
    assert code == 0
    assert result["rotation"] == "--rotation hadamard --rotation-seed 3 --rotation-placement online --rotation-block 64"
    code, same = _eval(tiny_root, tmp_path, "kl-flags", "--assignment", str(kl), "--rotation", "hadamard")
    assert code == 0 and same["results"] == result["results"]  # unset seed/block come from the assignment
    code, _ = _eval(tiny_root, tmp_path, "kl-seed", "--assignment", str(kl), "--rotation-seed", "4")
    assert code == 2 and "--rotation-seed 3" in capsys.readouterr().err
    # an unrotated assignment next to it: one run cannot evaluate both
    plain = tmp_path / "plain.json"
    assert _calibrate(tiny_root, plain, "--rotation", "none") == 0
    assert json.loads(plain.read_text())["provenance"]["rotation"] is None
    assert not plain.with_name("plain.rotation.safetensors").exists()
    capsys.readouterr()
    code, _ = _eval(tiny_root, tmp_path, "mixed", "--assignment", str(kl), str(plain))
    err = capsys.readouterr().err
    assert code == 2 and "different rotations" in err and "separate runs" in err


def _other_model_rotation(path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dmx.llm.rotation import RotationSpec, apply_rotation, bake_rotation, save_rotation

    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=256)
    other = AutoModelForCausalLM.from_config(config)
    state = apply_rotation(other, RotationSpec("learned"))
    bake_rotation(other)
    return save_rotation(state, path)


def test_bad_rotation_requests_fail_clearly(tiny_root, tmp_path, capsys):
    cases = [
        (["--rotation", "learned"], "--rotation-file PATH"),
        (["--rotation-file", str(_other_model_rotation(tmp_path / "other.safetensors"))], "hidden_size 128"),
        (["--rotation-file", str(tmp_path / "nope.safetensors")], "does not exist"),
        (["--rotation-seed", "2"], "add --rotation hadamard"),
        (["--rotation-file", str(tiny_root / "eval.txt")], "not a safetensors rotation file"),
        (["--rotation", "hadamard", "--rotation-placement", "folded", "--rotation-block", "16"],
         "only applies to --rotation-placement online"),
    ]
    for flags, message in cases:
        code, _ = _eval(tiny_root, tmp_path, "bad", "--format", "fp", *flags)
        assert code == 2, flags
        assert message in capsys.readouterr().err, flags
    for command in ("eval", "kl", "calibrate", "export", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--rotation", "random"])
        assert "invalid choice: 'random'" in capsys.readouterr().err
    assert main(["sweep", "--rotation-file", "x.safetensors", "--out", str(tmp_path / "s")]) == 2
    assert "takes no --rotation-file" in capsys.readouterr().err
    # refused before the (here unloadable) model is loaded
    assert main(["calibrate", "--model", "no/such-model", "--rotation", "learned", "--include-lm-head"]) == 2
    assert "quantised lm_head" in capsys.readouterr().err
    assert main(["sweep", "--model", "no/such-model", "--rotation", "learned", "--include-lm-head"]) == 2
    assert "quantised lm_head" in capsys.readouterr().err
    assert main(["sweep", "--model", "no/such-model", "--methods", "dmx", "kl_learned_rotation"]) == 2
    assert "set --rotation learned" in capsys.readouterr().err  # the library's rotation='learned', as a flag


def test_sweep_with_learned_rotation(tiny_root, tmp_path, capsys):
    """fp/uniform/KL on the learned kind's fixed start; dMX learns its own rotation, saved with its
    assignment, and `dmx eval` of that assignment reproduces the sweep's perplexity exactly."""
    from dataclasses import replace

    from dmx.calibrate import CalibrationConfig
    from dmx.llm.pipeline import ModelSpec
    from dmx.llm.rotation import RotationSpec
    from dmx.llm.sweep.config import CalibrationData, EvaluationSpec, SweepConfig, SweepPlan
    from dmx.llm.sweep.run import run_sweep

    cfg = SweepConfig(
        model=ModelSpec(model=str(tiny_root / "llama"), rotation=RotationSpec("learned", seed=1)),
        out_dir=str(tmp_path / "sweep"), plan=SweepPlan(targets=(6.0,), uniform=("mxfp4_e2m1",)),
        evaluation=EvaluationSpec(text_file=str(tiny_root / "eval.txt"), seqlen=64, max_windows=2),
        calibration_data=CalibrationData(text_file=str(tiny_root / "calib.txt"), windows=2, seqlen=32, kl_windows=1,
                                         kl_seqlen=32),
        calibration=CalibrationConfig(steps=2, batch_size=1, rotation_lr=1.0), progress=False,
    )
    hadamard = replace(cfg, model=replace(cfg.model, rotation=RotationSpec("hadamard", seed=1)))
    assert cfg.identity() != hadamard.identity()
    plain = SweepConfig(model=ModelSpec())
    assert plain.identity() == {k: v for k, v in cfg.identity().items() if k != "rotation"} | {
        "model": "smollm2-135m", "text_file": None, "seqlen": 2048, "max_windows": None}
    points = {p["key"]: p for p in run_sweep(cfg)}
    assert list(points) == ["fp", "uniform:mxfp4_e2m1", "kl@6", "dmx@6", "random@6"]
    assignments = tmp_path / "sweep" / "assignments"
    kl = json.loads((assignments / "kl_at_6.json").read_text())["provenance"]["rotation"]
    assert (kl["kind"], kl["placement"], kl["seed"]) == ("hadamard", "folded", 1)
    dmx = json.loads((assignments / "dmx_at_6.json").read_text())["provenance"]
    assert dmx["rotation"]["kind"] == "learned" and (assignments / dmx["rotation_file"]).is_file()
    code, result = _eval(tiny_root, tmp_path, "sweep-dmx", "--assignment", str(assignments / "dmx_at_6.json"))
    assert code == 0 and result["results"][0]["ppl"] == points["dmx@6"]["perplexity"]
    code, result = _eval(tiny_root, tmp_path, "sweep-kl", "--assignment", str(assignments / "kl_at_6.json"))
    assert code == 0 and result["results"][0]["ppl"] == points["kl@6"]["perplexity"]


def test_kl_learned_rotation_ranks_kl_on_each_dmx_seeds_own_rotation(tiny_root, tmp_path):
    """kl_learned_rotation's i-th point is KL draw i scored on the rotation dMX seed i learned: the
    same assignment `dmx kl --rotation-file <that rotation>` makes from the same windows, deployed
    on that rotation (`dmx eval` of it reproduces its perplexity); a sweep asking for it without a
    learned rotation, or before its dMX points exist, is refused before any model loads."""
    from dataclasses import replace

    from dmx.calibrate import CalibrationConfig
    from dmx.llm.pipeline import ModelSpec
    from dmx.llm.rotation import RotationSpec
    from dmx.llm.sweep.config import CalibrationData, EvaluationSpec, SweepConfig, SweepPlan
    from dmx.llm.sweep.run import run_sweep

    cfg = SweepConfig(
        model=ModelSpec(model=str(tiny_root / "llama"), rotation=RotationSpec("learned", seed=1)),
        out_dir=str(tmp_path / "sweep"), plan=SweepPlan(targets=(5.0,), methods=("kl_learned_rotation",), seeds=2),
        evaluation=EvaluationSpec(text_file=str(tiny_root / "eval.txt"), seqlen=64, max_windows=2),
        calibration_data=CalibrationData(text_file=str(tiny_root / "calib.txt"), windows=2, seqlen=32, kl_windows=1,
                                         kl_seqlen=32),
        calibration=CalibrationConfig(steps=2, batch_size=1, rotation_lr=1.0), progress=False,
    )
    with pytest.raises(ValueError, match=r"dmx_at_5|dmx@5.*run dmx first"):
        run_sweep(cfg)
    fixed = replace(cfg, model=replace(cfg.model, rotation=RotationSpec("hadamard", seed=1)),
                    calibration=replace(cfg.calibration, rotation_lr=CalibrationConfig.rotation_lr))
    with pytest.raises(ValueError, match="needs rotation='learned'"):
        run_sweep(fixed)
    assert not (tmp_path / "sweep" / "results.json").exists()
    cfg = replace(cfg, plan=replace(cfg.plan, methods=("dmx", "kl", "kl_learned_rotation")))
    points = {p["key"]: p for p in run_sweep(cfg)}
    assert list(points) == ["dmx@5", "dmx@5:s1", "kl@5", "kl@5:s1", "kl_learned_rotation@5",
                            "kl_learned_rotation@5:s1"]
    assignments = tmp_path / "sweep" / "assignments"
    for suffix, seed in (("", 0), ("_s1", 1)):
        ours = json.loads((assignments / f"kl_learned_rotation_at_5{suffix}.json").read_text())
        dmx = json.loads((assignments / f"dmx_at_5{suffix}.json").read_text())
        assert ours["provenance"]["rotation"]["kind"] == "learned"
        assert ours["provenance"]["rotation_sha256"] == dmx["provenance"]["rotation_sha256"]
        assert points[f"kl_learned_rotation@5{'' if not seed else ':s1'}"]["seed"] == seed
        # the same KL, made by the kl command from dMX's rotation file and the draw's windows
        alone = tmp_path / f"alone{suffix}.json"
        assert main(["kl", *_common(tiny_root), "--text-file", str(tiny_root / "calib.txt"), "--seqlen", "32",
                     "--n-windows", "1", "--seed", str(seed), "--target-bits", "5", "--cache-dir",
                     str(tmp_path / f"cache{suffix}"), "--out", str(alone),
                     "--rotation-file", str(assignments / dmx["provenance"]["rotation_file"])]) == 0
        assert json.loads(alone.read_text())["formats"] == ours["formats"]
        code, result = _eval(tiny_root, tmp_path, f"klr{suffix}", "--assignment",
                             str(assignments / f"kl_learned_rotation_at_5{suffix}.json"))
        key = "kl_learned_rotation@5" + (":s1" if seed else "")
        assert code == 0 and result["results"][0]["ppl"] == points[key]["perplexity"]
    # the two seeds learned two rotations: two score caches beside the fixed start's two draws
    assert len(list((tmp_path / "sweep" / "kl_cache").glob("*.json"))) == 4
    again = run_sweep(cfg)  # finished: nothing is recomputed
    assert [p["perplexity"] for p in again] == [p["perplexity"] for p in points.values()]


def test_sweep_sets_threads_and_maps_rotation_flags(monkeypatch):
    import dmx.commands.sweep
    from dmx.cli import build_parser
    from dmx.commands.sweep import config_from_args

    seen = {}

    def fake_sweep(cfg):
        seen["threads"], seen["cfg"] = cfg.model.threads, cfg  # set by load_rotated_model, as for every command
        return []

    before = torch.get_num_threads()
    monkeypatch.setattr(dmx.commands.sweep, "run_sweep", fake_sweep)
    try:
        target = 1 if before != 1 else 2
        assert main(["sweep", "--threads", str(target), "--rotation", "hadamard", "--rotation-block", "0"]) == 0
        assert seen["threads"] == target
    finally:
        torch.set_num_threads(before)
    cfg = seen["cfg"]
    rotation = cfg.model.rotation
    assert (rotation.kind, rotation.seed, rotation.placement, rotation.block) == ("hadamard", 0, "online", None)
    assert "rotation_lr" not in cfg.method_settings("dmx")["calibration"]  # fixed rotations keep their dMX settings
    learned = config_from_args(build_parser().parse_args(["sweep", "--rotation", "learned", "--rotation-lr", "0.5"]))
    assert learned.calibration.rotation_lr == 0.5 and learned.method_settings("dmx")["calibration"]["rotation_lr"] == 0.5


def test_eval_scores_held_out_windows_and_writes_their_nlls(tiny_root, tmp_path):
    """`dmx eval --first-window` skips windows; --out holds the per-window NLLs its perplexity is
    made of and the method of each assignment; a negative value is refused before loading."""
    from dmx.llm.perplexity import perplexity_of

    _, every = _eval(tiny_root, tmp_path, "all", "--format", "fp", "mxfp4_e2m1", "--max-windows", "3")
    code, later = _eval(tiny_root, tmp_path, "later", "--format", "fp", "mxfp4_e2m1", "--first-window", "1",
                        "--max-windows", "2")
    assert code == 0 and later["first_window"] == 1
    for full, part in zip(every["results"], later["results"]):
        assert part["window_nlls"] == pytest.approx(full["window_nlls"][1:3], rel=1e-12)
        assert part["ppl"] == pytest.approx(perplexity_of(part["window_nlls"], 64), rel=1e-12)
    assert main(["eval", *_common(tiny_root), "--first-window", "-1"]) == 2
