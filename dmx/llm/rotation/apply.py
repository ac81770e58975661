"""Rotating a model as a :class:`~dmx.llm.rotation.spec.RotationSpec` says, and rebuilding a recorded rotation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dmx.llm.models import decoder_linear_names
from dmx.llm.rotation.files import load_rotation
from dmx.llm.rotation.fold import (ModelShape, decoder_layers, dense_matrix, fold_matrices, fold_online_hadamards,
                               fold_rmsnorm_scales, lm_head, model_shape, o_proj_hadamards, untie_word_embeddings,
                               weight_holder)
from dmx.llm.rotation.hadamard import supports_hadamard
from dmx.llm.rotation.learned import register_learned_rotation
from dmx.llm.rotation.online import OnlineHadamard, has_pre_hook, remove_hooks
from dmx.llm.rotation.spec import DESCRIPTION_VERSION, RotationSpec, check_learned_lm_head
from dmx.llm.rotation.state import RotationState, rotation_state

__all__ = ["apply_rotation", "apply_rotation_description", "attach_online_rotations"]


class _EnsureOnlineHooks:
    """Model-level forward pre-hook: re-attach online rotations to the modules now at each path."""

    def __call__(self, model: nn.Module, args: tuple) -> None:
        attach_online_rotations(model)


def attach_online_rotations(model: nn.Module) -> None:
    """(Re)attach the online rotations to whatever module sits at each recorded path. Idempotent.

    Needed after modules are replaced (``wrap_linears`` swaps ``nn.Linear`` for ``DMXLinear``);
    runs automatically before every forward of a rotated model. For learned, unbaked rotations
    it also checks that ``lm_head`` was not wrapped (its ``R1^T`` input hook would then feed the
    quantiser an unrotated activation): ``ValueError`` naming the fix.
    """
    state = rotation_state(model)
    if state is None:
        return
    for path, hook in state.online.items():
        module = model.get_submodule(path)
        if not has_pre_hook(module, hook):
            remove_hooks(module, (OnlineHadamard,))
            module.register_forward_pre_hook(hook)
    check_learned_lm_head(learning=state.learning, lm_head_quantised=not isinstance(lm_head(model), nn.Linear))


def _install(model: nn.Module, state: RotationState) -> RotationState:
    model.dmx_rotation = state
    model.register_forward_pre_hook(_EnsureOnlineHooks())
    attach_online_rotations(model)
    return state


def _rotate_every_linear_input(model: nn.Module, spec: RotationSpec, shape: ModelShape) -> RotationState:
    """The ``online`` layout: a randomized Hadamard on the input of every decoder linear, ``W <- W Q``."""
    state = RotationState(spec=spec, hidden=shape.hidden, head_dim=shape.head_dim)
    size = spec.block
    for path in decoder_linear_names(model):
        width = weight_holder(model.get_submodule(path)).in_features
        if not supports_hadamard(width):
            raise ValueError(f"no Hadamard construction for the input size {width} of {path} (see dmx.llm.rotation.hadamard); "
                             "use kind='none'")
        if size is not None and width % size:
            raise ValueError(f"block={size} does not divide the input size {width} of {path}; use a divisor "
                             "or block=None (full size)")
        state.online[path] = OnlineHadamard.seeded(width, spec.seed, path, hadamard_size=size)
    fold_online_hadamards(model, state.online)
    return _install(model, state)


def _check_folded_sizes(shape: ModelShape, online_sites: tuple[str, ...]) -> None:
    sizes = {"hidden_size": shape.hidden, "head_dim": shape.head_dim}
    if "o_proj" in online_sites:
        sizes["heads*head_dim (o_proj input)"] = shape.heads * shape.head_dim
    if "down_proj" in online_sites:
        sizes["intermediate_size (down_proj input)"] = shape.intermediate
    bad = {k: v for k, v in sizes.items() if not supports_hadamard(v)}
    if bad:
        raise ValueError(
            f"no Hadamard construction for {bad}; sizes must be 2^k times a Paley order "
            f"(see dmx.llm.rotation.hadamard). Use rotation kind 'none' or drop the online site from online_sites"
        )


def _folded_online_hadamards(model: nn.Module, shape: ModelShape, spec: RotationSpec) -> dict[str, OnlineHadamard]:
    widths = {"o_proj": shape.heads * shape.head_dim, "down_proj": shape.intermediate}
    parents = {"o_proj": "self_attn", "down_proj": "mlp"}
    prefix = next(name for name, mod in model.named_modules() if mod is decoder_layers(model))
    return {f"{prefix}.{i}.{parents[site]}.{site}": OnlineHadamard.seeded(widths[site], spec.seed, f"{site}.{i}")
            for i in range(shape.n_layers) for site in spec.online_sites}


def _checked_matrices(matrices: dict[str, Any], shape: ModelShape) -> tuple[torch.Tensor, list[torch.Tensor]]:
    r1 = matrices["r1"].to(torch.float64)
    r2 = [m.to(torch.float64) for m in matrices["r2"]]
    if r1.shape != (shape.hidden, shape.hidden) or len(r2) != shape.n_layers or any(
        m.shape != (shape.head_dim, shape.head_dim) for m in r2
    ):
        raise ValueError(
            f"rotation matrices do not fit this model (need r1 {shape.hidden}x{shape.hidden} and "
            f"{shape.n_layers} r2 of {shape.head_dim}x{shape.head_dim}); were they saved for another model?"
        )
    return r1, r2


def _rotate_folded(model: nn.Module, spec: RotationSpec, shape: ModelShape, matrices: dict[str, Any] | None) -> RotationState:
    """QuaRot's folded layout (fixed or learned; ``matrices``: an exported learned rotation, folded)."""
    _check_folded_sizes(shape, spec.online_sites)
    untie_word_embeddings(model)
    fold_rmsnorm_scales(model)
    if matrices is not None:
        r1, r2 = _checked_matrices(matrices, shape)
    else:  # randomized Hadamards as sign vectors: applied by the fast transform
        r1 = OnlineHadamard.seeded(shape.hidden, spec.seed, "r1")
        r2 = [OnlineHadamard.seeded(shape.head_dim, spec.seed, f"r2.{i}") for i in range(shape.n_layers)]
    state = RotationState(spec=spec, hidden=shape.hidden, head_dim=shape.head_dim,
                          online=_folded_online_hadamards(model, shape, spec))
    device = model.get_input_embeddings().weight.device
    # down_proj's Q sits right of R1^T: fold it now. o_proj's Q sits right of (I ⊗ R2): folded with R2.
    fold_online_hadamards(model, {p: h for p, h in state.online.items() if p.endswith(".down_proj")})
    if spec.kind == "learned" and matrices is None:
        state.r1 = nn.Parameter(dense_matrix(r1).to(device=device, dtype=torch.float32))
        state.r2 = [nn.Parameter(dense_matrix(m).to(device=device, dtype=torch.float32)) for m in r2]
        state.baked = False
        register_learned_rotation(model, state)
    else:
        fold_matrices(model, r1, r2, online_o=o_proj_hadamards(state.online))
        state.r1 = dense_matrix(r1).to(torch.float32)
        state.r2 = [dense_matrix(m).to(torch.float32) for m in r2]
    return _install(model, state)


def apply_rotation(model: nn.Module, spec: RotationSpec, *, matrices: dict[str, Any] | None = None) -> RotationState | None:
    """Rotate ``model`` in place (function preserved in full precision); returns the state (None for 'none').

    ``spec.kind``: ``none`` | ``hadamard`` (QuaRot: randomized Hadamards) | ``learned``
    (SpinQuant: ``R1``/``R2`` trainable, initialised to the same Hadamards; optimise
    :func:`dmx.llm.rotation.rotation_parameters`, then :func:`dmx.llm.rotation.bake_rotation`).
    ``spec.placement`` (``hadamard``): ``online`` gives every decoder linear its own randomized
    Hadamard on its input (block-diagonal of order ``spec.block``; None: the whole input
    width), ``W <- W Q``, RMSNorm scales left in the norms and the residual stream unrotated;
    ``folded`` is the QuaRot layout (norm scales folded, ``R1``/``R2`` folded, online Hadamards
    only at ``spec.online_sites``). ``spec.file``: a rotation file that rebuilds the rotation
    exactly (:func:`apply_rotation_description`). ``matrices``: ``{"r1": Tensor, "r2": [Tensor,
    ...]}`` from :func:`dmx.llm.rotation.load_rotation` to rebuild an exported learned rotation
    (folded, not trainable).
    Call after loading and before or after ``quantize_model`` (both orders give the same model).
    Raises ``ValueError`` for an unsupported architecture or size, or a model already rotated.
    """
    if spec.kind == "none":
        return None
    if spec.file and matrices is None:
        return apply_rotation_description(model, *load_rotation(spec.file))
    if rotation_state(model) is not None:
        raise ValueError("model is already rotated (model.dmx_rotation is set); load a fresh model")
    shape = model_shape(model)
    if spec.placement == "online":
        return _rotate_every_linear_input(model, spec, shape)
    return _rotate_folded(model, spec, shape, matrices)


def apply_rotation_description(
    model: nn.Module, description: dict[str, Any] | None, matrices: dict[str, Any] | None = None
) -> RotationState | None:
    """Rebuild a recorded rotation on a freshly loaded model (None or kind 'none': nothing to do)."""
    if description is None or description.get("kind", "none") == "none":
        return None
    if description.get("version") != DESCRIPTION_VERSION:
        raise ValueError(f"rotation description version {description.get('version')!r} is not {DESCRIPTION_VERSION}")
    if description["kind"] == "learned" and matrices is None:
        raise ValueError("a learned rotation needs its matrices: pass load_rotation(path)[1]")
    shape = model_shape(model)
    recorded = (description.get("hidden_size"), description.get("head_dim"))
    if recorded != (shape.hidden, shape.head_dim):
        raise ValueError(
            f"the rotation was made for a model with hidden_size {recorded[0]} and head_dim {recorded[1]}, "
            f"this one has {shape.hidden} and {shape.head_dim}; use the rotation file of this model"
        )
    return apply_rotation(model, RotationSpec.from_description(description), matrices=matrices)
