"""`dmx calibrate` / `dmx eval` end to end on a tiny local model directory with the real tokenizer."""

from __future__ import annotations

import json

import pytest

from dmx.cli import build_parser, main
from dmx.llm.models import tiny_model


@pytest.fixture(scope="module")
def tiny_real_tokenizer_dir(tmp_path_factory, embedded_tokenizer):
    """A tiny random Llama saved as a local checkpoint directory, paired with SmolLM2's tokenizer
    (unlike conftest's ``tiny_dir``, whose tokenizer is byte-level) and without loading SmolLM2."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", seed=0, vocab_size=len(embedded_tokenizer)).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


def _subparser(name):
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_help_explains_every_flag(command):
    sub = _subparser(command)
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help text"
        for flag in action.option_strings:
            assert flag == "-h" or flag.startswith("--") and "_" not in flag  # kebab-case


def test_calibrate_then_eval_with_yaml_config(tmp_path, tiny_real_tokenizer_dir, data_dir, capsys):
    config = tmp_path / "calib.yaml"
    config.write_text("steps: 3\nseqlen: 32\nn-windows: 4\nbatch_size: 2\ntarget-bits: 6.0\nno-progress: true\n")
    out = tmp_path / "assignment.json"
    code = main(["calibrate", "--rotation", "none", "--config", str(config), "--model", str(tiny_real_tokenizer_dir), "--data-dir", str(data_dir),
                 "--out", str(out), "--steps", "2"])
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["provenance"]["settings"]["steps"] == 2          # flag overrides the file
    assert saved["provenance"]["settings"]["target_bits"] == 6.0  # file overrides the default
    assert saved["provenance"]["calibration_windows"]["seqlen"] == 32
    assert len(saved["formats"]) == 14
    assert "average element bits" in capsys.readouterr().out
    assert not (tmp_path / "assignment.ckpt").exists()  # the finished run leaves no checkpoint folder
    code = main(["eval", "--model", str(tiny_real_tokenizer_dir), "--device-map", "cpu", "--data-dir", str(data_dir), "--seqlen", "64",
                 "--max-windows", "1", "--format", "fp", "mxfp4_e2m1", "--assignment", str(out),
                 "--no-progress", "--out", str(tmp_path / "eval.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mxfp4_e2m1" in printed and "assignment.json" in printed and "ppl" in printed
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["threads"] >= 1  # the run-to-run spread depends on it
    results = written["results"]
    assert [r["config"] for r in results] == ["fp", "mxfp4_e2m1", str(out)]
    assert results[1]["element_bits"] == 4.0 and all(r["ppl"] > 1 for r in results)


def test_eval_resumes_zero_shot_at_the_task_it_was_answering(tmp_path, tiny_real_tokenizer_dir, data_dir,
                                                             lm_eval_runs):
    """With --zeroshot-checkpoint-dir an interrupted `dmx eval --tasks` keeps each configuration's
    finished tasks: the rerun answers only the task that was cut off, and gives what an
    uninterrupted run gives."""
    argv = ["eval", "--model", str(tiny_real_tokenizer_dir), "--data-dir", str(data_dir), "--no-ppl",
            "--format", "fp", "mxfp4_e2m1", "--tasks", "piqa", "winogrande", "--limit", "3", "--no-progress"]
    checkpoints = ["--zeroshot-checkpoint-dir", str(tmp_path / "answers")]
    lm_eval_runs.cut_at = 4  # full precision's two tasks, then MXFP4's second
    assert main([*argv, *checkpoints, "--out", str(tmp_path / "cut.json")]) == 130
    assert len(list((tmp_path / "answers").iterdir())) == 2  # full precision's, MXFP4's first task
    lm_eval_runs.restart()
    assert main([*argv, *checkpoints, "--out", str(tmp_path / "resumed.json")]) == 0
    assert lm_eval_runs.tasks == ["dmx_winogrande"]
    assert main([*argv, "--out", str(tmp_path / "whole.json")]) == 0
    resumed, whole = (json.loads((tmp_path / f"{name}.json").read_text())["results"] for name in ("resumed", "whole"))
    assert [{t: r["zeroshot"]["tasks"][t]["acc"] for t in ("piqa", "winogrande")} for r in resumed] == \
        [{t: r["zeroshot"]["tasks"][t]["acc"] for t in ("piqa", "winogrande")} for r in whole]


def test_calibrate_flags_map_to_the_config():
    from dmx.commands.calibrate import config_from_args

    args = build_parser().parse_args(["calibrate", "--final-rounding", "budget", "--momentum", "0.5"])
    cfg = config_from_args(args)
    assert cfg.final_rounding == "budget" and cfg.momentum == 0.5
    assert config_from_args(build_parser().parse_args(["calibrate"])).final_rounding == "threshold"


@pytest.mark.parametrize("command", ["calibrate", "sweep"])
def test_recipe_flags_round_trip_through_the_yaml_config(command, tmp_path):
    from dmx.cli import config_defaults

    config = tmp_path / "recipe.yaml"
    config.write_text("beta-init: 1.0\nclip-grad-norm: 0\nfractional-scale: emax\ncalib-source: fineweb\n")
    sub = _subparser(command)
    sub.set_defaults(**config_defaults(config, sub))
    args = sub.parse_args([])
    if command == "calibrate":
        from dmx.commands.calibrate import config_from_args

        cfg = config_from_args(args)
        assert (cfg.beta_init, cfg.clip_grad_norm, cfg.fractional_scale) == (1.0, 0.0, "emax")
    else:
        from dmx.commands.sweep import config_from_args

        cfg = config_from_args(args)
        assert cfg.calibration.beta_init == 1.0 and cfg.calibration.clip_grad_norm == 0.0
        assert cfg.calibration.fractional_scale == "emax"
    assert args.calib_source == "fineweb"
    # and the command line still wins over the file
    assert sub.parse_args(["--beta-init", "0.25"]).beta_init == 0.25
    bad = tmp_path / "bad.yaml"
    bad.write_text("fractional-scale: mid\n")
    with pytest.raises(SystemExit, match="choose one of"):
        config_defaults(bad, sub)


def test_calibrate_defaults_are_the_authors_recipe():
    from dmx.calibrate import CalibrationConfig
    from dmx.commands.calibrate import config_from_args

    cfg = config_from_args(build_parser().parse_args(["calibrate"]))
    assert (cfg.beta_init, cfg.clip_grad_norm, cfg.fractional_scale) == (0.0, 1.0, "maxfloat")
    assert (cfg.beta_init, cfg.clip_grad_norm, cfg.fractional_scale) == (
        CalibrationConfig.beta_init, CalibrationConfig.clip_grad_norm, CalibrationConfig.fractional_scale)


def test_fineweb_without_online_is_refused_before_loading(capsys):
    # a model path that does not exist: the data check must come first
    assert main(["calibrate", "--calib-source", "fineweb", "--model", "/nonexistent/model"]) == 2
    assert "pass --online" in capsys.readouterr().err


def test_a_named_checkpoint_dir_is_kept_and_redeployed_with_budget_rounding(tmp_path, tiny_real_tokenizer_dir, data_dir):
    ckpt, out = tmp_path / "ckpt", tmp_path / "a.json"
    common = ["calibrate", "--rotation", "none", "--model", str(tiny_real_tokenizer_dir), "--data-dir", str(data_dir), "--seqlen", "32", "--n-windows", "2",
              "--steps", "2", "--batch-size", "1", "--lr", "3", "--target-bits", "5", "--checkpoint-dir", str(ckpt),
              "--no-progress"]
    assert main([*common, "--out", str(out)]) == 0
    assert (ckpt / "calibration_state.pt").is_file()  # named by the user: kept
    assert main([*common, "--out", str(tmp_path / "b.json"), "--resume", "--final-rounding", "budget"]) == 0
    first, budget = json.loads(out.read_text()), json.loads((tmp_path / "b.json").read_text())
    assert budget["provenance"]["threshold_element_bits"] == first["element_bits"]
    assert 5 - 4 / 14 < budget["element_bits"] <= 5 and budget["provenance"]["settings"]["final_rounding"] == "budget"


def test_resume_with_corrupt_checkpoint_fails_clearly(tmp_path, tiny_real_tokenizer_dir, data_dir, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "calibration_state.pt").write_bytes(b"not a checkpoint")
    code = main(["calibrate", "--rotation", "none", "--model", str(tiny_real_tokenizer_dir), "--data-dir", str(data_dir), "--seqlen", "32",
                 "--n-windows", "2", "--steps", "1", "--checkpoint-dir", str(ckpt), "--resume", "--no-progress",
                 "--out", str(tmp_path / "a.json")])
    assert code == 2
    assert "corrupt" in capsys.readouterr().err
    assert (ckpt / "calibration_state.pt").read_bytes() == b"not a checkpoint"  # nothing overwritten


@pytest.mark.parametrize("argv,message", [
    (["calibrate", "--target-bits", "9"], "outside the range"),
    (["calibrate", "--family", "fp16"], "valid families"),
    (["eval", "--format", "mxfp5"], "valid names"),
    (["eval", "--model", "no-such-model"], "Short names"),
])
def test_bad_input_fails_before_any_work(argv, message, capsys):
    assert main(argv + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_seqlen_above_context_is_rejected(tiny_real_tokenizer_dir, data_dir, capsys):
    code = main(["calibrate", "--model", str(tiny_real_tokenizer_dir), "--data-dir", str(data_dir), "--seqlen", "4096", "--no-progress"])
    assert code == 2 and "context length 256" in capsys.readouterr().err


def test_unknown_config_key_lists_valid_keys(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("stepz: 3\n")
    with pytest.raises(SystemExit, match="valid keys.*target-bits"):
        main(["calibrate", "--config", str(config)])


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).parents[2].glob("configs/*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_parses_for_its_command(path):
    from dmx.cli import config_defaults

    command = path.name.split("_")[0]  # calibrate_*.yaml, eval_*.yaml
    sub = _subparser(command)
    sub.set_defaults(**config_defaults(path, sub))
    args = sub.parse_args([])
    if command == "calibrate":
        from dmx.commands.calibrate import config_from_args

        config_from_args(args).validate()
    if hasattr(args, "rotation"):
        from dmx.llm.rotation import resolve_rotation

        resolve_rotation(args).check_buildable(trainable=command == "calibrate", include_lm_head=args.include_lm_head)


@pytest.mark.slow
def test_calibrate_with_device_map_auto_and_either_backend_gives_the_same_assignment(tmp_path, tiny_real_tokenizer_dir, data_dir):
    """Model parallel (--device-map auto; all on the CPU here) with the torch, numpy and compiled MX
    backends (compiled: the same bits, its width gradients equal to float rounding)."""
    saved = {}
    for backend in ("torch", "numpy", "compiled"):
        out = tmp_path / f"{backend}.json"
        code = main(["calibrate", "--rotation", "none", "--model", str(tiny_real_tokenizer_dir), "--device-map", "auto", "--backend", backend,
                     "--data-dir", str(data_dir), "--steps", "2", "--seqlen", "32", "--n-windows", "4",
                     "--batch-size", "2", "--no-progress", "--out", str(out)])
        assert code == 0
        saved[backend] = json.loads(out.read_text())
        assert saved[backend]["provenance"]["settings"]["backend"] == backend
    assert saved["torch"]["formats"] == saved["numpy"]["formats"] == saved["compiled"]["formats"]
    assert saved["torch"]["provenance"]["final_metrics"] == saved["numpy"]["provenance"]["final_metrics"]
    for key, value in saved["torch"]["provenance"]["final_metrics"].items():
        assert saved["compiled"]["provenance"]["final_metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_calibrate_and_sweep_without_flags_calibrate_identically():
    """Both commands take their calibration defaults from CalibrationConfig (issue #14: `dmx sweep`
    without --steps silently calibrated 60 steps of 1 window while `dmx calibrate` did 40 of 2)."""
    import dataclasses

    from dmx.calibrate import CalibrationConfig
    from dmx.commands.calibrate import config_from_args as calibrate_config
    from dmx.commands.sweep import config_from_args as sweep_config

    calibrate_args, sweep_args = build_parser().parse_args(["calibrate"]), build_parser().parse_args(["sweep"])
    calibrate = calibrate_config(calibrate_args)
    sweep = sweep_config(sweep_args)
    # the same calibration data too: window count and length
    assert (sweep.calibration_data.windows, sweep.calibration_data.seqlen) == (calibrate_args.n_windows,
                                                                               calibrate_args.seqlen)
    point = sweep.calibration_config(sweep.plan.targets[0], sweep.plan.seed)
    assert dataclasses.asdict(point) == dataclasses.asdict(calibrate)
    assert (calibrate.steps, calibrate.batch_size, calibrate.checkpoint_every) == (40, 2, 5)  # the demo's
    assert calibrate == CalibrationConfig()


def test_new_calibrations_are_rotated_by_default_and_plain_mx_is_one_flag_away():
    """`dmx calibrate`, `dmx kl` and `dmx sweep` without rotation flags rotate with the fixed
    Hadamard (issue #23: the authors always rotate); `--rotation none` is plain MX; a detail flag
    alone keeps the default kind; `dmx eval` without an assignment stays unrotated."""
    from dmx.commands.sweep import config_from_args as sweep_config
    from dmx.llm.rotation import CALIBRATION_ROTATION, RotationSpec, resolve_rotation

    assert (CALIBRATION_ROTATION.kind, CALIBRATION_ROTATION.block) == ("hadamard", 64)
    for command in ("calibrate", "kl"):
        args = build_parser().parse_args([command])
        assert resolve_rotation(args, default=CALIBRATION_ROTATION) == CALIBRATION_ROTATION
        none = build_parser().parse_args([command, "--rotation", "none"])
        assert resolve_rotation(none, default=CALIBRATION_ROTATION).kind == "none"
        block = resolve_rotation(build_parser().parse_args([command, "--rotation-block", "32"]),
                                 default=CALIBRATION_ROTATION)
        assert (block.kind, block.block) == ("hadamard", 32)
    sweep = sweep_config(build_parser().parse_args(["sweep"]))
    assert sweep.model.rotation == CALIBRATION_ROTATION
    assert not sweep_config(build_parser().parse_args(["sweep", "--rotation", "none"])).model.rotation.rotates
    assert resolve_rotation(build_parser().parse_args(["eval"])) == RotationSpec()
