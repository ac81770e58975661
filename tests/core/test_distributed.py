"""Data-parallel calibration: 2 gloo processes on CPU take the steps of 1 process on the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dmx.calibrate import CalibrationConfig, calibrate
from dmx.llm.models import tiny_model
from dmx.llm.pipeline import quantize_model

STEPS = 4
CFG = dict(steps=STEPS, batch_size=4, grad_accum=2, checkpoint_every=1, lr=0.5, seed=3, t_start=0.4, t_end=2.0)


class _Stop(Exception):
    pass


def _windows() -> torch.Tensor:
    return torch.randint(0, 256, (16, 24), generator=torch.Generator().manual_seed(7))


def _run(ckpt: str | None, *, resume: bool = False, stop_after: int | None = None, backend: str = "torch"):
    """Calibrate the tiny model; the offsets after the run (or after ``stop_after`` steps)."""
    model = tiny_model("llama", seed=0)
    layers = quantize_model(model, "fp8_fp4")

    def on_step(step, metrics):
        if stop_after is not None and step == stop_after:
            raise _Stop

    cfg = CalibrationConfig(**CFG, backend=backend)
    try:
        calibrate(model, layers, _windows(), cfg, checkpoint_dir=ckpt, resume=resume, progress=False, on_step=on_step)
    except _Stop:
        pass
    return {name: float(layer.beta_hat.detach()) for name, layer in layers.items()}


def _worker(rank: int, world: int, port: int, jobs: list[tuple[str, str, int | None, bool]]) -> None:
    """Each job ``(checkpoint dir, out file, stop_after, resume)`` is one 2-process calibration."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for ckpt, out, stop_after, resume in jobs:
            offsets = _run(ckpt, resume=resume, stop_after=stop_after)
            if rank == 0:
                torch.save(offsets, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    single = _run(str(tmp_path / "one"))
    _run(str(tmp_path / "cut1"), stop_after=2)  # a 1-process checkpoint after 2 of 4 steps
    jobs = [(str(tmp_path / "two"), str(tmp_path / "two.pt"), None, False),  # the whole run
            (str(tmp_path / "cut2"), str(tmp_path / "cut2.pt"), 2, False),  # stopped after 2 steps
            (str(tmp_path / "cut1"), str(tmp_path / "cut1.pt"), None, True)]  # resumes the 1-process one
    mp.spawn(_worker, args=(2, _free_port(), jobs), nprocs=2, join=True)
    double, resumed_1_to_2 = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "cut1.pt")
    resumed_2_to_1 = _run(str(tmp_path / "cut2"), resume=True)
    assert single.keys() == double.keys()
    assert any(abs(v) > 1e-3 for v in single.values())  # the offsets moved
    for name in single:
        for got in (double, resumed_1_to_2, resumed_2_to_1):
            assert got[name] == pytest.approx(single[name], rel=1e-5, abs=1e-6), name


def test_checkpoint_resumes_across_backends_with_the_same_offsets(tmp_path):
    """The backends give the same bits, so a numpy-backend checkpoint continues exactly under torch."""
    straight = _run(str(tmp_path / "straight"), backend="torch")
    _run(str(tmp_path / "mixed"), stop_after=2, backend="numpy")
    assert _run(str(tmp_path / "mixed"), resume=True, backend="torch") == straight
