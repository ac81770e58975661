"""Data-parallel calibration helpers over ``torch.distributed`` (gloo on CPU, nccl on GPUs).

``accelerate launch dmx calibrate ...`` (or ``torchrun``) starts one process per device with
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set; :func:`init_from_env` joins the
process group. :func:`dmx.calibrate.calibrate` then splits every micro-batch of the global batch
across the processes (:func:`shard`), weights each process's loss by its share of the windows,
and sums the offset (and rotation) gradients over processes (:func:`all_reduce_gradients`)
before clipping and the optimiser step, so every process takes the same step as one process on
the whole batch (to float summation order). Only rank 0 writes checkpoints and results
(:func:`is_main`). A checkpoint holds nothing that depends on the process count, so ``--resume``
works with a different number of processes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "world", "is_main", "shard", "all_reduce_gradients", "all_reduce_sum", "barrier"]


def init_from_env(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group described by the launcher's environment; ``(rank, world size)``.

    A no-op returning ``(0, 1)`` when ``WORLD_SIZE`` is unset or 1; gloo for CPU, nccl for CUDA.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and dist.is_available() and not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:  # nccl wants each process on its own GPU before the first collective
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return world()


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return world()[0] == 0


def shard(batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This process's contiguous share of ``batch`` (split along dim 0) and its fraction of the rows.

    ``ValueError`` when the batch has fewer rows than processes (a process would get no window).
    """
    rank, size = world()
    if size == 1:
        return batch, 1.0
    if batch.shape[0] < size:
        raise ValueError(f"the global batch of {batch.shape[0]} windows cannot be split across {size} processes; "
                         f"use batch_size >= {size}")
    part = batch.tensor_split(size)[rank]
    return part, part.shape[0] / batch.shape[0]


def all_reduce_sum(values: list[torch.Tensor]) -> None:
    """Sum each tensor over processes, in place (one flat collective; no-op with one process)."""
    if world()[1] == 1 or not values:
        return
    flat = torch.cat([v.reshape(-1) for v in values])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for v in values:
        v.copy_(flat[offset:offset + v.numel()].view_as(v))
        offset += v.numel()


def all_reduce_gradients(params: list[torch.Tensor]) -> None:
    """Sum ``p.grad`` over processes for every parameter (a missing gradient counts as zero)."""
    if world()[1] == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_sum([p.grad for p in params])


def barrier() -> None:
    """Wait for every process (no-op with one)."""
    if world()[1] > 1:
        dist.barrier()
