"""Long work survives SIGTERM and a corrupt checkpoint, says where it resumes, and writes files
that follow the umask (issue #16, points 5 and 7).

SIGTERM is sent by the process to itself from inside the work (a wrapped function counts its
calls), so the moment is exact; each such run is a subprocess because without a handler SIGTERM
ends the process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dmx.calibrate import CalibrationConfig, calibrate
from dmx.checkpoint import checkpoint_path
from dmx.files import atomic_write_text
from dmx.cli import main
from dmx.llm.models import tiny_model
from dmx.llm.pipeline import quantize_model

REPO = Path(__file__).resolve().parents[2]
EXIT_TERMINATED = 128 + signal.SIGTERM  # the shell's convention for a process stopped by SIGTERM

#: argv: module, function name, call number at which SIGTERM is sent (0: never), then dmx's argv
DRIVER = """
import importlib, os, signal, sys
module, name, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = importlib.import_module(module)
original = getattr(target, name)
calls = [0]
def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)
setattr(target, name, wrapped)
from dmx.cli import main
sys.exit(main(sys.argv[4:]))
"""


def run_dmx(argv, *, sigterm_at=0, module="dmx.calibrate", name="objective") -> subprocess.CompletedProcess:
    """``dmx <argv>`` in a fresh interpreter, SIGTERM-ed at call ``sigterm_at`` of ``module.name``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", DRIVER, module, name, str(sigterm_at), *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(" ".join(f"Row {i} holds the value {i * 7 % 13} and the word {w}." for i, w in
                             enumerate(["alpha", "beta", "gamma"] * 30)))
    return path


def _calibrate_argv(tiny_dir, text_file, out, ckpt):
    return ["calibrate", "--rotation", "none", "--model", tiny_dir, "--text-file", text_file, "--seqlen", 32, "--n-windows", 4,
            "--batch-size", 1, "--steps", 6, "--lr", 3, "--checkpoint-every", 100, "--checkpoint-dir", ckpt,
            "--out", out, "--no-progress", "--threads", 1]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_says_from_which_step(tiny_dir, text_file, tmp_path):
    argv = _calibrate_argv(tiny_dir, text_file, tmp_path / "a.json", tmp_path / "ckpt")
    stopped = run_dmx(argv, sigterm_at=3)  # during step 3: steps 1-2 are done, no periodic checkpoint yet
    assert stopped.returncode == EXIT_TERMINATED, stopped.stderr
    assert "interrupted after step 2" in stopped.stderr and "terminated (SIGTERM)" in stopped.stderr
    assert torch.load(checkpoint_path(tmp_path / "ckpt"), weights_only=True)["step"] == 2
    resumed = run_dmx([*argv, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step 2 of 6" in resumed.stderr
    # the same result as a run that was never interrupted
    assert main([str(a) for a in _calibrate_argv(tiny_dir, text_file, tmp_path / "b.json", tmp_path / "ckpt-b")]) == 0
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert first["formats"] == second["formats"]
    assert first["provenance"]["final_metrics"] == second["provenance"]["final_metrics"]


@pytest.mark.slow
def test_sigterm_keeps_the_kl_scores_and_the_rerun_scores_only_the_rest(tiny_dir, text_file, tmp_path):
    argv = ["kl", "--rotation", "none", "--model", tiny_dir, "--text-file", text_file, "--seqlen", 32, "--n-windows", 2,
            "--target-bits", 6, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "kl.json", "--no-progress"]
    stopped = run_dmx(argv, sigterm_at=4, module="dmx.llm.kl_baseline", name="kl_to_reference")
    assert stopped.returncode == EXIT_TERMINATED, stopped.stderr
    [cache] = (tmp_path / "cache").glob("kl_scores-*.json")
    assert len(json.loads(cache.read_text())["scores"]) == 3
    resumed = run_dmx(argv)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the KL scoring: 3 of 14 layers already scored" in resumed.stderr


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_the_rerun_resumes_points_and_calibration(tiny_dir, text_file, tmp_path):
    argv = ["sweep", "--rotation", "none", "--model", tiny_dir, "--text-file", text_file, "--calib-text-file", text_file, "--seqlen", 64,
            "--max-windows", 1, "--methods", "fp", "uniform", "dmx", "--uniform-formats", "mxfp4_e2m1",
            "--targets", 6, "--calib-windows", 4, "--calib-seqlen", 32, "--steps", 4, "--batch-size", 1,
            "--checkpoint-every", 100, "--out", tmp_path / "sweep", "--no-progress"]
    stopped = run_dmx(argv, sigterm_at=3)
    assert stopped.returncode == EXIT_TERMINATED, stopped.stderr
    points = json.loads((tmp_path / "sweep" / "results.json").read_text())["points"]
    assert [p["key"] for p in points] == ["fp", "uniform:mxfp4_e2m1"]
    resumed = run_dmx(argv)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the sweep" in resumed.stderr and "2 of 3 points already measured" in resumed.stderr
    assert "resuming from step 2 of 4" in resumed.stderr


# ----------------------------------------------------------------------------- a corrupt latest file

WINDOWS = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
CFG = CalibrationConfig(steps=5, batch_size=1, target_bits=5.0, checkpoint_every=1, seed=3)


def _fresh():
    model = tiny_model("llama", seed=0)
    return model, quantize_model(model)


class _StopAt:
    def __init__(self, step):
        self.step = step

    def __call__(self, step, metrics):
        if step == self.step:
            raise RuntimeError("simulated crash")


def test_a_corrupt_latest_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    expected = calibrate(*_fresh(), WINDOWS, CFG, progress=False)
    with pytest.raises(RuntimeError):
        calibrate(*_fresh(), WINDOWS, CFG, checkpoint_dir=tmp_path, progress=False, on_step=_StopAt(3))
    latest = checkpoint_path(tmp_path)
    previous = latest.with_name(latest.name + ".prev")
    assert torch.load(previous, weights_only=True)["step"] == 2 and torch.load(latest, weights_only=True)["step"] == 3
    latest.write_bytes(latest.read_bytes()[:100])  # a torn / damaged file
    capsys.readouterr()
    resumed = calibrate(*_fresh(), WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "is unusable" in err and "using the previous version" in err and "resuming from step 2 of 5" in err
    assert resumed.formats == expected.formats


def test_a_missing_latest_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    with pytest.raises(RuntimeError):
        calibrate(*_fresh(), WINDOWS, CFG, checkpoint_dir=tmp_path, progress=False, on_step=_StopAt(2))
    checkpoint_path(tmp_path).unlink()  # a crash between the two renames of a save
    calibrate(*_fresh(), WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert "resuming from step 1 of 5" in capsys.readouterr().err


def test_a_corrupt_sweep_result_file_falls_back_to_the_previous_one(tmp_path, capsys):
    from dmx.llm.sweep.results import ResultStore

    store = ResultStore.open(tmp_path, {"model": "a"})
    store.add({"key": "fp", "method": "fp", "label": "fp", "perplexity": 3.0})
    store.add({"key": "uniform:mxfp4_e2m1", "method": "uniform", "label": "uniform:mxfp4_e2m1", "perplexity": 9.0})
    (tmp_path / "results.json").write_text('{"schema": "dmx.sweep/1", "points": [')
    reopened = ResultStore.open(tmp_path, {"model": "a"})
    assert [p["key"] for p in reopened.points] == ["fp"]  # one point lost, not the sweep
    assert "using the previous version results.json.prev" in capsys.readouterr().err


def test_a_corrupt_kl_cache_falls_back_to_the_previous_one(tmp_path):
    from dmx.llm.kl_baseline import open_cache

    key = {"model": "m", "layers": ["a", "b"]}
    cache = open_cache(tmp_path, key)
    cache.scores["a"] = 0.5
    cache.save()
    cache.scores["b"] = 0.25
    cache.save()
    cache.path.write_text("{")
    assert open_cache(tmp_path, key).scores == {"a": 0.5}


# ----------------------------------------------------------------------------- permissions


@pytest.fixture
def umask():
    """Set a umask for one test, restoring the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_written_files_follow_the_umask(tmp_path, umask, mask):
    from dmx.assignment import Assignment
    from dmx.llm.sweep.results import ResultStore

    umask(mask)
    expected = 0o666 & ~mask
    text = atomic_write_text(tmp_path / "plain.json", "{}")
    assignment = Assignment.from_formats({"l0": "mxfp4_e2m1"}, block_size=32).to_json(tmp_path / "assignment.json")
    ResultStore.open(tmp_path / "sweep", {"model": "a"}).add({"key": "fp", "method": "fp", "label": "fp"})
    for path in (text, assignment, tmp_path / "sweep" / "results.json", tmp_path / "sweep" / "results.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_sigterm_handler_is_restored_after_a_command(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    main(["eval", "--format", "mxfp5"])  # fails fast; the handler must not leak into the caller
    assert signal.getsignal(signal.SIGTERM) is before
