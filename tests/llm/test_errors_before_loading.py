"""Bad input is reported before the model is loaded (issue #16, point 2): loading takes 30 s to
2 minutes, so a wrong --seqlen, data directory or checkpoint must not wait for it.

``dmx.llm.pipeline.load_model`` (where every command loads) is replaced by a function that fails the test if it is reached.
"""

from __future__ import annotations

import pytest

import dmx.llm.pipeline
from dmx.cli import main


@pytest.fixture(autouse=True)
def no_loading(monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(dmx.llm.pipeline, "load_model", load_model)  # where every command loads


def _run(argv, capsys) -> str:
    code = main([str(a) for a in argv] + ["--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    return err


COMMANDS = {
    "calibrate": ["calibrate", "--steps", "1"],
    "eval": ["eval", "--format", "mxfp4_e2m1"],
    "kl": ["kl"],
    "sweep": ["sweep", "--methods", "fp", "kl"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_seqlen_above_the_context(command, tiny_dir, data_dir, tmp_path, capsys):
    err = _run([*COMMANDS[command], "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 4096,
                *(["--out", tmp_path / "out"] if command == "sweep" else [])], capsys)
    assert "--seqlen 4096 exceeds the context length 256" in err and "--seqlen 256 or less" in err


def test_the_embedded_models_context_is_known_without_loading(capsys):
    from dmx.llm.models import EMBEDDED_MODEL

    err = _run(["calibrate", "--seqlen", EMBEDDED_MODEL.context_length + 1], capsys)
    assert f"exceeds the context length {EMBEDDED_MODEL.context_length} of model 'smollm2-135m'" in err


@pytest.mark.parametrize("flag", ["--kl-seqlen", "--calib-seqlen"])
def test_sweep_calibration_window_above_the_context(flag, tiny_dir, data_dir, tmp_path, capsys):
    err = _run(["sweep", "--rotation", "none", "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 64, "--kl-seqlen", 32,
                "--calib-seqlen", 32, flag, 512,
                "--out", tmp_path / "out"], capsys)
    assert f"{flag} 512 exceeds the context length 256" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_empty_data_dir(command, tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _run([*COMMANDS[command], "--model", tiny_dir, "--data-dir", empty, "--seqlen", 32,
                *(["--out", tmp_path / "out"] if command == "sweep" else [])], capsys)
    assert f"expected {empty}/wikitext-2-" in err and "missing" in err and "--data-dir" in err


def test_missing_data_dir(tiny_dir, tmp_path, capsys):
    err = _run(["eval", "--model", tiny_dir, "--data-dir", tmp_path / "nowhere"], capsys)
    assert "does not exist" in err


def test_missing_text_file(tiny_dir, tmp_path, capsys):
    err = _run(["calibrate", "--model", tiny_dir, "--text-file", tmp_path / "absent.txt", "--seqlen", 32], capsys)
    assert "absent.txt" in err and "does not exist" in err


def test_resume_without_a_checkpoint(tiny_dir, data_dir, tmp_path, capsys):
    err = _run(["calibrate", "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 32, "--resume",
                "--checkpoint-dir", tmp_path / "ckpt", "--out", tmp_path / "a.json"], capsys)
    assert "no checkpoint at" in err and "run without --resume" in err


def test_resume_with_a_corrupt_checkpoint(tiny_dir, data_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "calibration_state.pt").write_bytes(b"not a checkpoint")
    err = _run(["calibrate", "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 32, "--resume",
                "--checkpoint-dir", ckpt, "--out", tmp_path / "a.json"], capsys)
    assert "corrupt" in err


def test_resume_with_other_settings(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    import torch

    from dmx.calibrate import CalibrationConfig
    from dmx.checkpoint import save_checkpoint

    state = {"version": 1, "step": 1, "beta_hat": {}, "optimizer": {}, "rng": {"torch": torch.get_rng_state()},
             "config": {**CalibrationConfig().__dict__, "lam": 1.0}, "layers": []}
    save_checkpoint(tmp_path / "ckpt", state)
    err = _run(["calibrate", "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 32, "--resume",
                "--checkpoint-dir", tmp_path / "ckpt", "--out", tmp_path / "a.json"], capsys)
    assert "settings differ from the checkpoint" in err and "lam: checkpoint 1.0 vs now 5.0" in err


def test_an_earlier_runs_checkpoint_is_not_overwritten(tiny_dir, data_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "calibration_state.pt").write_bytes(b"an earlier run")
    err = _run(["calibrate", "--model", tiny_dir, "--data-dir", data_dir, "--seqlen", 32,
                "--checkpoint-dir", ckpt, "--out", tmp_path / "a.json"], capsys)
    assert "exists from an earlier run" in err and "--resume" in err


def test_sweep_with_a_corrupt_calibration_checkpoint(tiny_dir, tmp_path, capsys):
    from dmx.commands.sweep import config_from_args
    from dmx.llm.sweep.methods import checkpoint_dir

    text = tmp_path / "text.txt"
    text.write_text("some calibration text " * 50)
    argv = ["sweep", "--rotation", "none", "--model", tiny_dir, "--text-file", text, "--calib-text-file", text, "--seqlen", 32,
            "--calib-seqlen", 32, "--methods", "dmx", "--targets", 6, "--out", tmp_path / "sweep"]
    from dmx.cli import build_parser

    cfg = config_from_args(build_parser().parse_args([str(a) for a in argv]))
    ckpt = checkpoint_dir(tmp_path / "sweep", "dmx@6", cfg.method_settings("dmx", cfg.plan.seed_values()[0]))
    ckpt.mkdir(parents=True)
    (ckpt / "calibration_state.pt").write_bytes(b"torn")
    err = _run(argv, capsys)
    assert "corrupt" in err and str(ckpt) in err


@pytest.mark.parametrize("command", ["eval", "sweep"])
def test_zero_shot_data_missing(command, tiny_dir, data_dir, tmp_path, capsys):
    """The offline zero-shot tasks' files are looked for before loading (the test split is there)."""
    partial = tmp_path / "data"
    (partial / "wikitext-2-raw-v1").mkdir(parents=True)
    (partial / "wikitext-2-raw-v1" / "test.jsonl").write_text((data_dir / "wikitext-2-raw-v1" / "test.jsonl").read_text())
    argv = {"eval": ["eval", "--format", "fp"], "sweep": ["sweep", "--methods", "fp", "--out", tmp_path / "out"]}
    err = _run([*argv[command], "--model", tiny_dir, "--data-dir", partial, "--seqlen", 32, "--tasks", "arc_easy"],
               capsys)
    assert "offline task 'arc_easy' not found" in err and "zeroshot" in err
