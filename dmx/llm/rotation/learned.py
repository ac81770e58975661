"""Learned (SpinQuant) rotations: weights as differentiable functions of trainable ``R1``, ``R2``.

``R1`` and every ``R2`` are trainable orthogonal ``nn.Parameter`` s (initialised to the randomized
Hadamards of the fixed kind) that the linears read through ``torch.nn.utils.parametrize`` (weights
stay frozen); the embedding gets ``R1`` as an output hook and ``lm_head`` ``R1^T`` as an input hook
(cheaper than re-rotating vocabulary-sized tables each step). Optimise :func:`rotation_parameters`
with :class:`dmx.llm.rotation.cayley.CayleySGD`, then :func:`bake_rotation` folds the final matrices
into the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from dmx.linear import DMXLinear
from dmx.llm.rotation.fold import (decoder_layers, fold_matrices, lm_head, o_proj_hadamards, rotate_heads_left,
                               rotate_heads_right, rotate_right, weight_holder)
from dmx.llm.rotation.online import OnlineHadamard, remove_hooks
from dmx.llm.rotation.state import RotationState, rotation_state

__all__ = ["register_learned_rotation", "rotation_parameters", "shared_rotated_weights", "bake_rotation"]


class _ResidualMap:
    """``x -> x @ R1`` (or ``R1^T``) with ``R1`` read from the state at call time (a hook).

    Holds the state, not a closure, so a deep-copied model's hooks follow the copied state.
    """

    def __init__(self, state: RotationState, transpose: bool) -> None:
        self.state = state
        self.transpose = transpose

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.state.r1.T if self.transpose else self.state.r1
        return x @ m.to(dtype=x.dtype, device=x.device)


class _InputRotation(_ResidualMap):
    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.apply(args[0]), *args[1:])


class _OutputRotation(_ResidualMap):
    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.apply(output)


class _RotatedWeight(nn.Module):
    """Parametrisation ``W -> left(W) @ ...``: the exact fold rules of :mod:`dmx.llm.rotation.fold`.

    ``r1_side``: ``"in"`` (reader, ``W R1``), ``"out"`` (writer, ``R1^T W``) or None;
    ``r2_side``: ``"out"`` (v: ``(I ⊗ R2)^T W``), ``"in"`` (o: ``W (I ⊗ R2)``) or None;
    ``online``: an :class:`OnlineHadamard` applied last on the input side (o_proj).
    Matrices are held as plain attributes (not registered), so they stay shared.
    """

    def __init__(self, state: RotationState, layer: int | None, r1_side: str | None, r2_side: str | None,
                 online: OnlineHadamard | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_state", state)
        self.layer = layer
        self.r1_side = r1_side
        self.r2_side = r2_side
        object.__setattr__(self, "_online", online)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        cache = self._state.step_cache
        if cache is not None and torch.is_grad_enabled():  # inside shared_rotated_weights()
            if id(self) not in cache:
                rotated = self._rotate(w)
                cache[id(self)] = (rotated, rotated.detach().requires_grad_(rotated.requires_grad))
            return cache[id(self)][1]
        return self._rotate(w)

    def _rotate(self, w: torch.Tensor) -> torch.Tensor:
        state = self._state
        if self.r2_side is not None:
            r2 = state.r2[self.layer].to(w.dtype)
            w = rotate_heads_left(w, r2) if self.r2_side == "out" else rotate_heads_right(w, r2)
        if self._online is not None:
            w = rotate_right(w, self._online)
        if self.r1_side == "in":
            w = w @ state.r1.to(w.dtype)
        elif self.r1_side == "out":
            w = state.r1.to(w.dtype).T @ w
        return w


class _RotatedBias(nn.Module):
    """Bias of a writer (``b R1``) or of v (``b (I ⊗ R2)``)."""

    def __init__(self, state: RotationState, layer: int | None, which: str) -> None:
        super().__init__()
        object.__setattr__(self, "_state", state)
        self.layer = layer
        self.which = which

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        if self.which == "r1":
            return b @ self._state.r1.to(b.dtype)
        r2 = self._state.r2[self.layer].to(b.dtype)
        return (b.reshape(-1, r2.shape[0]) @ r2).reshape(b.shape)


def register_learned_rotation(model: nn.Module, state: RotationState) -> None:
    """Make every decoder linear read its weight through ``state``'s ``R1``/``R2``; hook embedding and head."""
    o_online = o_proj_hadamards(state.online)
    for i, layer in enumerate(decoder_layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        sides = [
            (attn.q_proj, "in", None, None), (attn.k_proj, "in", None, None),
            (attn.v_proj, "in", "out", None), (attn.o_proj, "out", "in", o_online.get(i)),
            (mlp.gate_proj, "in", None, None), (mlp.up_proj, "in", None, None),
            (mlp.down_proj, "out", None, None),
        ]
        for module, r1_side, r2_side, online in sides:
            holder = weight_holder(module)
            parametrize.register_parametrization(
                holder, "weight", _RotatedWeight(state, i, r1_side, r2_side, online), unsafe=True
            )
            if holder.bias is not None and (r1_side == "out" or r2_side == "out"):
                which = "r1" if r1_side == "out" else "r2"
                parametrize.register_parametrization(holder, "bias", _RotatedBias(state, i, which), unsafe=True)
    model.get_input_embeddings().register_forward_hook(_OutputRotation(state, transpose=False))
    lm_head(model).register_forward_pre_hook(_InputRotation(state, transpose=True))


def rotation_parameters(state_or_model: RotationState | nn.Module | None) -> list[nn.Parameter]:
    """Trainable rotation matrices ``[R1, R2_0, R2_1, ...]`` (empty unless learning, not yet baked).

    Give them to :class:`dmx.llm.rotation.cayley.CayleySGD`; accepts the state, the model or None.
    """
    state = rotation_state(state_or_model) if isinstance(state_or_model, nn.Module) else state_or_model
    if state is None or not state.learning:
        return []
    return [state.r1, *state.r2]


@contextmanager
def shared_rotated_weights(model: nn.Module) -> Iterator[None]:
    """Compute each learned-rotated weight once for all forward/backward passes inside the ``with``.

    For gradient accumulation: ``R1``/``R2`` only change at the optimiser step, so the rotated
    weights ``W R1`` etc. of every micro-batch are the same. Inside the ``with`` each is built once
    (with its graph) and the micro-batches read a detached leaf copy whose ``.grad`` accumulates;
    on normal exit one backward pushes the summed gradients through the rotation into ``R1``/``R2``
    (``grad R = W^T sum_k G_k`` instead of ``sum_k W^T G_k``: equal up to float summation order).
    Call the optimiser step after the ``with``. No effect without a learned, unbaked rotation.
    Costs one weight-sized gradient buffer per rotated linear while the ``with`` runs.
    """
    state = rotation_state(model)
    if state is None or not state.learning:
        yield
        return
    state.step_cache = cache = {}
    try:
        yield
    finally:
        state.step_cache = None
    pairs = [(rotated, leaf.grad) for rotated, leaf in cache.values() if leaf.grad is not None]
    if pairs:
        torch.autograd.backward([r for r, _ in pairs], [g for _, g in pairs])


@torch.no_grad()
def bake_rotation(model: nn.Module) -> RotationState:
    """Fold the current learned ``R1``/``R2`` into the weights and drop the parametrisations and hooks.

    The fold is the one :func:`dmx.llm.rotation.apply_rotation` does with ``matrices`` (from the
    unrotated weights, in float64), so a model rebuilt from :func:`dmx.llm.rotation.save_rotation`'s
    file has bit-identical weights. Afterwards the model is an ordinary (rotated) model whose
    forward costs only the online Hadamards; the matrices stay in the state (detached) for saving.
    """
    state = rotation_state(model)
    if state is None:
        raise ValueError("model has no rotation to bake; call apply_rotation first")
    if state.baked:
        return state
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    remove_hooks(model.get_input_embeddings(), (_OutputRotation,))
    remove_hooks(lm_head(model), (_InputRotation,))
    fold_matrices(model, state.r1.detach().to(torch.float64), [m.detach().to(torch.float64) for m in state.r2],
                  online_o=o_proj_hadamards(state.online))
    state.r1 = state.r1.detach().clone()
    state.r2 = [m.detach().clone() for m in state.r2]
    state.baked = True
    for module in model.modules():  # the values DMXLinear keeps from its weight: drop them
        if isinstance(module, DMXLinear):
            module.invalidate_caches()
    return state
