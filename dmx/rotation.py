"""Orthogonal rotations of a Llama-style decoder that leave its full-precision function unchanged.

QuaRot (fixed, ``kind="hadamard"``) and SpinQuant (learned, ``kind="learned"``) rotations for
the architectures whose blocks are ``RMSNorm -> q/k/v -> attention -> o`` and
``RMSNorm -> gate/up -> act * up -> down`` with a residual stream around both (HF ``llama``
incl. SmolLM2, ``qwen3``, ``qwen2``, ``mistral``). Row-vector convention: a linear computes
``y = x W^T + b``, a rotation ``R`` acts as ``x -> x R``.

Two layouts for the fixed kind (``placement``):

* ``online`` (default): every decoder linear gets its own randomized Hadamard ``Q`` on its
  input (forward pre-hook) and ``W <- W Q``; norms, embeddings and the residual stream are left
  alone. ``Q`` is block-diagonal with 64 x 64 Hadamard blocks by default
  (``block=DEFAULT_ONLINE_BLOCK``: each rotation mixes two neighbouring 32-element MX blocks),
  or one Hadamard of the full input width (``block=None``). dMX quantises exactly the linear
  inputs and weights, so this rotates every quantised operand without folding RMSNorm scales
  into weights (measured better on SmolLM2-135M).

  Why 64: chosen on WikiText-2 *validation* text (not the test split the README reports), uniform
  MXFP4 perplexity of SmolLM2-135M over 4 x 2048 tokens, mean of rotation seeds 0-2: no rotation
  65.8, block 32 38.8, block 64 33.5, block 96 36.8, block 192 35.4 (seed 0); full width was
  worse than block 32 on test windows (README). Rotating inside one MX block (32) only reshapes
  the block's own distribution; 64 also spreads an outlier over two blocks' scales, and wider
  rotations raise the scale of more blocks than they help. 64 divides the linear input widths of
  every model in ``dmx.models``.
* ``folded``: the QuaRot layout below; ``learned`` always uses it (SpinQuant).

What is folded into the weights in the ``folded`` layout (exactly, in float64, then cast back):

1. RMSNorm scales: ``RMSNorm(x) = x / rms(x) * g`` becomes ``x / rms(x)`` and ``g`` moves into
   the columns of the linears that read it (``W <- W diag(g)``: q/k/v, gate/up, lm_head). A
   tied ``lm_head`` is untied first (its weight would otherwise be the rotated embedding).
2. ``R1`` (hidden x hidden) on the residual stream: ``rms(x R1) = rms(x)`` for orthogonal ``R1``,
   so the scale-free norm commutes with it. Embedding ``E <- E R1``; readers of the stream
   (q/k/v, gate/up, lm_head) ``W <- W R1``; writers (o, down) ``W <- R1^T W``, ``b <- b R1``.
3. ``R2`` (head_dim x head_dim) per layer on the V/O pair, head by head: ``W_v <- (I ⊗ R2)^T W_v``
   (and its bias), ``W_o <- W_o (I ⊗ R2)``. The same ``R2`` for every head keeps GQA exact.
   q/k (and Qwen3's per-head ``q_norm``/``k_norm``, RoPE) are untouched: a residual rotation
   is absorbed by the q/k input side, so the per-head q/k vectors never change.

What is online (cannot be folded: a nonlinearity or a per-token product sits before it): a
randomized Hadamard ``Q = diag(s) H^T / sqrt(n)`` applied to the *input* of ``down_proj``
(``n = intermediate_size``) and of ``o_proj`` (``n = heads * head_dim``, mixing heads), with
``W <- W Q`` folded so that ``(x Q)(W Q)^T = x W^T``. The online rotation is a forward
pre-hook of the module at that path, so it runs BEFORE that module's forward; for a
``dmx.linear.DMXLinear`` this means before its input quantiser (the rotated activation is what
gets MX-quantised, which is the point). ``quantize_model`` replaces the modules after the
rotation was applied; a model-level pre-hook re-attaches the online rotation to whatever module
sits at each path at every forward (and :func:`attach_online_rotations` does it explicitly).

Learned rotations keep ``R1`` and every ``R2`` as trainable orthogonal ``nn.Parameter`` s
(initialised to the randomized Hadamard of the fixed kind) that the linears read through
``torch.nn.utils.parametrize`` (weights stay frozen); the embedding gets ``R1`` as an output hook
and ``lm_head`` ``R1^T`` as an input hook (cheaper than re-rotating vocabulary-sized tables each
step). Optimise :func:`rotation_parameters` with :class:`dmx.cayley.CayleySGD`, then call
:func:`bake_rotation` to fold the final matrices into the weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from dmx.files import sha256_file
from dmx.hadamard import hadamard_transform, random_signs, supports_hadamard

__all__ = [
    "DEFAULT_ONLINE_BLOCK",
    "ROTATION_KINDS",
    "ONLINE_SITES",
    "PLACEMENTS",
    "SUPPORTED_MODEL_TYPES",
    "RotationState",
    "OnlineHadamard",
    "apply_rotation",
    "apply_rotation_description",
    "rotation_parameters",
    "bake_rotation",
    "attach_online_rotations",
    "rotation_state",
    "untie_word_embeddings",
    "fold_rmsnorm_scales",
    "save_rotation",
    "load_rotation",
    "derived_seed",
    "add_rotation_flags",
    "FLAG_DEFAULTS",
    "rotation_provenance",
    "rotated_model_id",
    "save_rotation_beside",
    "shared_rotated_weights",
    "check_learned_lm_head",
]

ROTATION_KINDS = ("none", "hadamard", "learned")
#: Linear inputs that get an online Hadamard rotation (module attribute names inside a block).
ONLINE_SITES = ("o_proj", "down_proj")
#: Where fixed Hadamards go: on every linear input (``online``) or QuaRot's folded layout.
PLACEMENTS = ("online", "folded")
#: Default block of the ``online`` layout's block-diagonal Hadamard (module docstring: why 64).
DEFAULT_ONLINE_BLOCK = 64
SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "qwen2", "mistral")
DESCRIPTION_VERSION = 1


def derived_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for the rotation called ``tag`` (``"r1"``, ``"r2.3"``, ``"down_proj.3"``).

    Hash-derived, so each matrix is a pure function of ``(seed, tag)`` and independent of the
    order in which matrices are built.
    """
    digest = hashlib.sha256(f"dmx-rotation/{int(seed)}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ------------------------------------------------------------------------------------------------
# model structure
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    n_layers: int


def _shape(model: nn.Module) -> _Shape:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"rotations support HF model types {list(SUPPORTED_MODEL_TYPES)} (Llama-style RMSNorm "
            f"decoders); got {model_type!r}. Use rotation kind 'none' for this model"
        )
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return _Shape(
        hidden=config.hidden_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate=config.intermediate_size,
        n_layers=config.num_hidden_layers,
    )


def _blocks(model: nn.Module) -> nn.ModuleList:
    return model.model.layers


def _weight_holder(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` that owns the weight: the module itself or a wrapper's ``.linear``."""
    inner = getattr(module, "linear", None)
    if isinstance(inner, nn.Linear):
        return inner
    if isinstance(module, nn.Linear):
        return module
    raise TypeError(f"expected an nn.Linear or a wrapper with .linear, got {type(module).__name__}")


def _embedding(model: nn.Module) -> nn.Embedding:
    return model.get_input_embeddings()


def _lm_head(model: nn.Module) -> nn.Module:
    return model.lm_head


def _set_weight(linear: nn.Module, value: torch.Tensor, name: str = "weight") -> None:
    param = getattr(linear, name)
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def untie_word_embeddings(model: nn.Module) -> bool:
    """Give ``lm_head`` its own copy of a weight tied to the input embedding; True if it was tied.

    Folding the final-norm scale and ``R1`` into the head must not touch the embedding table.
    ``config.tie_word_embeddings`` is set to False so a saved model is not re-tied on load.
    """
    head = _weight_holder(_lm_head(model))
    embed = _embedding(model)
    tied = head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr()
    if tied:
        head.weight = nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
    for config in {id(model.config): model.config, id(model.config.get_text_config()): model.config.get_text_config()}.values():
        config.tie_word_embeddings = False
    return tied


@torch.no_grad()
def fold_rmsnorm_scales(model: nn.Module) -> None:
    """Move every RMSNorm scale ``g`` of the residual stream into the linears that read the norm.

    ``W <- W diag(g)`` for q/k/v (``input_layernorm``), gate/up (``post_attention_layernorm``)
    and lm_head (final ``norm``); then ``g <- 1``. Call :func:`untie_word_embeddings` first.
    Qwen3's per-head ``q_norm``/``k_norm`` act after q/k projection and are left alone.
    """
    groups = []
    for block in _blocks(model):
        attn, mlp = block.self_attn, block.mlp
        groups.append((block.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]))
        groups.append((block.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]))
    groups.append((model.model.norm, [_lm_head(model)]))
    for norm, readers in groups:
        scale = norm.weight.detach().to(torch.float64)
        for reader in readers:
            holder = _weight_holder(reader)
            _set_weight(holder, holder.weight.to(torch.float64) * scale[None, :])
        norm.weight.fill_(1.0)


# ------------------------------------------------------------------------------------------------
# online rotations
# ------------------------------------------------------------------------------------------------
class OnlineHadamard:
    """``x -> x @ Q`` with ``Q = diag(s) H^T / sqrt(n)`` (:func:`dmx.hadamard.random_hadamard_matrix`).

    With ``block``: ``Q = diag(s) (I ⊗ H_block^T) / sqrt(block)``, a block-diagonal Hadamard that
    mixes channels only inside consecutive groups of ``block`` (block = 32 is the MX block, so
    each MX block is rotated on its own and keeps its own scale). Computed by the fast transform,
    in the input's dtype and device; callable as a forward pre-hook (``hook(module, args) ->
    args``). A plain object (not a registered module) so that the model's ``state_dict`` is
    unchanged; it is deep-copied together with the model.
    """

    def __init__(self, signs: torch.Tensor, block: int | None = None) -> None:
        self.signs = signs.to(torch.float64)
        if block is not None and (self.size % block or not supports_hadamard(block)):
            raise ValueError(f"Hadamard block {block} must divide {self.size} and be a Hadamard order")
        self.block = block

    @property
    def size(self) -> int:
        return int(self.signs.numel())

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Q`` along the last axis."""
        y = x * self.signs.to(device=x.device, dtype=x.dtype)
        if self.block is None or self.block == self.size:
            return hadamard_transform(y)
        return hadamard_transform(y.reshape(*y.shape[:-1], -1, self.block)).reshape(y.shape)

    def matrix(self) -> torch.Tensor:
        """The dense float64 ``Q`` (for folding ``W <- W Q``)."""
        return self.rotate(torch.eye(self.size, dtype=torch.float64))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.rotate(args[0]), *args[1:])


class _LinearMap:
    """``x -> x @ R1`` (or ``R1^T``) with ``R1`` read from the state at call time (a hook).

    Holds the state, not a closure, so a deep-copied model's hooks follow the copied state.
    """

    def __init__(self, state: "RotationState", transpose: bool) -> None:
        self.state = state
        self.transpose = transpose

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.state.r1.T if self.transpose else self.state.r1
        return x @ m.to(dtype=x.dtype, device=x.device)


class _InputRotation(_LinearMap):
    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.apply(args[0]), *args[1:])


class _OutputRotation(_LinearMap):
    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.apply(output)


def _remove_hooks(module: nn.Module, kinds: tuple[type, ...]) -> None:
    for store in (module._forward_pre_hooks, module._forward_hooks):
        for key in [k for k, h in store.items() if isinstance(h, kinds)]:
            del store[key]


def _has_hook(module: nn.Module, hook: Any) -> bool:
    return any(h is hook for h in module._forward_pre_hooks.values())


# ------------------------------------------------------------------------------------------------
# learned rotations: weights as functions of R1, R2
# ------------------------------------------------------------------------------------------------
class _RotatedWeight(nn.Module):
    """Parametrisation ``W -> left(W) @ ...``: the exact fold rules of the module docstring.

    ``r1_side``: ``"in"`` (reader, ``W R1``), ``"out"`` (writer, ``R1^T W``) or None;
    ``r2_side``: ``"out"`` (v: ``(I ⊗ R2)^T W``), ``"in"`` (o: ``W (I ⊗ R2)``) or None;
    ``online``: an :class:`OnlineHadamard` applied last on the input side (o_proj).
    Matrices are held as plain attributes (not registered), so they stay shared.
    """

    def __init__(self, state: "RotationState", layer: int | None, r1_side, r2_side, online=None) -> None:
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
            w = _heads_left(w, r2) if self.r2_side == "out" else _heads_right(w, r2)
        if self._online is not None:
            w = _times(w, self._online)
        if self.r1_side == "in":
            w = w @ state.r1.to(w.dtype)
        elif self.r1_side == "out":
            w = state.r1.to(w.dtype).T @ w
        return w


class _RotatedBias(nn.Module):
    """Bias of a writer (``b R1``) or of v (``b (I ⊗ R2)``)."""

    def __init__(self, state: "RotationState", layer: int | None, which: str) -> None:
        super().__init__()
        object.__setattr__(self, "_state", state)
        self.layer = layer
        self.which = which

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        if self.which == "r1":
            return b @ self._state.r1.to(b.dtype)
        r2 = self._state.r2[self.layer].to(b.dtype)
        return (b.reshape(-1, r2.shape[0]) @ r2).reshape(b.shape)


# ------------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------------
@dataclass
class RotationState:
    """What was done to a model; ``model.dmx_rotation`` holds it.

    ``r1``/``r2``: the residual and per-layer V/O rotations (float32 tensors; ``nn.Parameter``
    while learning), ``online``: ``{module path: OnlineHadamard}``, ``baked``: True once the
    matrices are folded into the weights (always for ``hadamard``; after :func:`bake_rotation`
    for ``learned``).
    """

    kind: str
    seed: int
    online_sites: tuple[str, ...]
    hidden: int = 0
    head_dim: int = 0
    r1: torch.Tensor | None = None
    r2: list[torch.Tensor] = field(default_factory=list)
    online: dict[str, OnlineHadamard] = field(default_factory=dict)
    baked: bool = True
    placement: str = "folded"
    block: int | None = None
    #: set by :func:`shared_rotated_weights` while an optimiser step is running
    step_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (export records it; :func:`apply_rotation_description` rebuilds)."""
        return {
            "version": DESCRIPTION_VERSION,
            "kind": self.kind,
            "seed": int(self.seed),
            "online_sites": list(self.online_sites),
            "hidden_size": int(self.hidden),
            "head_dim": int(self.head_dim),
            "placement": self.placement,
            "block": self.block,
            "matrices_needed": self.kind == "learned",
        }


def rotation_state(model: nn.Module) -> RotationState | None:
    """The :class:`RotationState` of a rotated model, or None."""
    return getattr(model, "dmx_rotation", None)


def rotation_parameters(state_or_model: RotationState | nn.Module | None) -> list[nn.Parameter]:
    """Trainable rotation matrices ``[R1, R2_0, R2_1, ...]`` (empty unless learning, not yet baked).

    Give them to :class:`dmx.cayley.CayleySGD`; accepts the state, the model or None.
    """
    state = rotation_state(state_or_model) if isinstance(state_or_model, nn.Module) else state_or_model
    if state is None or state.baked or state.kind != "learned":
        return []
    return [state.r1, *state.r2]


@contextmanager
def shared_rotated_weights(model: nn.Module) -> Iterator[None]:
    """Compute each learned-rotated weight once for all forward/backward passes inside the block.

    For gradient accumulation: ``R1``/``R2`` only change at the optimiser step, so the rotated
    weights ``W R1`` etc. of every micro-batch are the same. Inside the block each is built once
    (with its graph) and the micro-batches read a detached leaf copy whose ``.grad`` accumulates;
    on normal exit one backward pushes the summed gradients through the rotation into ``R1``/``R2``
    (``grad R = W^T sum_k G_k`` instead of ``sum_k W^T G_k``: equal up to float summation order).
    Call the optimiser step after the block. No effect without a learned, unbaked rotation.
    Costs one weight-sized gradient buffer per rotated linear while the block runs.
    """
    state = rotation_state(model)
    if state is None or state.baked or state.kind != "learned":
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
        if not _has_hook(module, hook):
            _remove_hooks(module, (OnlineHadamard,))
            module.register_forward_pre_hook(hook)
    check_learned_lm_head(learning=not state.baked, lm_head_quantised=not isinstance(_lm_head(model), nn.Linear))


def check_learned_lm_head(*, learning: bool, lm_head_quantised: bool) -> None:
    """``ValueError`` when a learned rotation would be trained with a quantised ``lm_head``.

    The learned layout feeds ``lm_head`` through an ``R1^T`` input hook, which would sit after its
    MX quantiser. The commands and the sweep call this before loading; :func:`attach_online_rotations`
    checks the model itself at every forward.
    """
    if learning and lm_head_quantised:
        raise ValueError(
            "a learned rotation cannot be trained with a quantised lm_head (its R1^T input hook would sit "
            "after the quantiser); drop --include-lm-head (include_lm_head), use --rotation hadamard, or "
            "call dmx.rotation.bake_rotation(model) before wrapping lm_head"
        )


# ------------------------------------------------------------------------------------------------
# applying
# ------------------------------------------------------------------------------------------------
def _check_sizes(shape: _Shape, online_sites: tuple[str, ...]) -> None:
    sizes = {"hidden_size": shape.hidden, "head_dim": shape.head_dim}
    if "o_proj" in online_sites:
        sizes["heads*head_dim (o_proj input)"] = shape.heads * shape.head_dim
    if "down_proj" in online_sites:
        sizes["intermediate_size (down_proj input)"] = shape.intermediate
    bad = {k: v for k, v in sizes.items() if not supports_hadamard(v)}
    if bad:
        raise ValueError(
            f"no Hadamard construction for {bad}; sizes must be 2^k times a Paley order "
            f"(see dmx.hadamard). Use rotation kind 'none' or drop the online site from online_sites"
        )


def _initial_rotations(shape: _Shape, seed: int) -> tuple[OnlineHadamard, list[OnlineHadamard]]:
    """Randomized Hadamard ``R1`` and per-layer ``R2`` (as sign vectors: applied by the fast transform)."""
    r1 = OnlineHadamard(random_signs(shape.hidden, derived_seed(seed, "r1")))
    r2 = [OnlineHadamard(random_signs(shape.head_dim, derived_seed(seed, f"r2.{i}"))) for i in range(shape.n_layers)]
    return r1, r2


def _online_rotations(model: nn.Module, shape: _Shape, seed: int, sites: tuple[str, ...]) -> dict[str, OnlineHadamard]:
    sizes = {"o_proj": shape.heads * shape.head_dim, "down_proj": shape.intermediate}
    parents = {"o_proj": "self_attn", "down_proj": "mlp"}
    prefix = next(name for name, mod in model.named_modules() if mod is _blocks(model))
    online = {}
    for i in range(shape.n_layers):
        for site in sites:
            signs = random_signs(sizes[site], derived_seed(seed, f"{site}.{i}"))
            online[f"{prefix}.{i}.{parents[site]}.{site}"] = OnlineHadamard(signs)
    return online


Rotation = torch.Tensor | OnlineHadamard


def _times(w: torch.Tensor, r: Rotation) -> torch.Tensor:
    """``w @ R`` along the last axis: the fast transform for a Hadamard, a matmul for a dense ``R``."""
    if isinstance(r, OnlineHadamard):
        return r.rotate(w)
    return w @ r.to(device=w.device, dtype=w.dtype)


def _heads_right(w: torch.Tensor, r2: Rotation) -> torch.Tensor:
    """``W (I ⊗ R2)`` for a weight whose input columns are grouped by head."""
    hd = r2.size if isinstance(r2, OnlineHadamard) else r2.shape[0]
    return _times(w.reshape(w.shape[0], -1, hd), r2).reshape(w.shape)


def _heads_left(w: torch.Tensor, r2: Rotation) -> torch.Tensor:
    """``(I ⊗ R2)^T W`` for a weight whose output rows are grouped by head."""
    return _heads_right(w.T, r2).T


@torch.no_grad()
def _fold_online(model: nn.Module, online: dict[str, OnlineHadamard]) -> None:
    for path, hook in online.items():
        holder = _weight_holder(model.get_submodule(path))
        _set_weight(holder, _times(holder.weight.to(torch.float64), hook))


@torch.no_grad()
def _fold_matrices(model: nn.Module, r1: Rotation, r2: list[Rotation], *, online_o: dict[int, OnlineHadamard]) -> None:
    """Fold ``R1`` everywhere and ``R2`` into v/o (float64); ``online_o[i]``: o_proj's Q, folded after R2."""
    f64 = torch.float64
    embed = _embedding(model)
    _set_weight(embed, _times(embed.weight.to(f64), r1))
    head = _weight_holder(_lm_head(model))
    _set_weight(head, _times(head.weight.to(f64), r1))
    for i, block in enumerate(_blocks(model)):
        attn, mlp = block.self_attn, block.mlp
        for reader in (attn.q_proj, attn.k_proj, mlp.gate_proj, mlp.up_proj):
            holder = _weight_holder(reader)
            _set_weight(holder, _times(holder.weight.to(f64), r1))
        v = _weight_holder(attn.v_proj)
        _set_weight(v, _times(_heads_left(v.weight.to(f64), r2[i]), r1))
        if v.bias is not None:
            _set_weight(v, _heads_right(v.bias.to(f64)[None, :], r2[i])[0], "bias")
        o = _weight_holder(attn.o_proj)
        w = _heads_right(o.weight.to(f64), r2[i])
        if i in online_o:
            w = _times(w, online_o[i])
        _set_weight(o, _times(w.T, r1).T)  # R1^T W = (W^T R1)^T
        down = _weight_holder(mlp.down_proj)
        _set_weight(down, _times(down.weight.to(f64).T, r1).T)
        for writer in (o, down):
            if writer.bias is not None:
                _set_weight(writer, _times(writer.bias.to(f64), r1), "bias")


def _dense(r: Rotation) -> torch.Tensor:
    return r.matrix() if isinstance(r, OnlineHadamard) else r


def _o_online_by_layer(state: RotationState) -> dict[int, OnlineHadamard]:
    return {int(path.split(".")[-3]): hook for path, hook in state.online.items() if path.endswith(".o_proj")}


def _register_learned(model: nn.Module, state: RotationState) -> None:
    o_online = _o_online_by_layer(state)
    for i, block in enumerate(_blocks(model)):
        attn, mlp = block.self_attn, block.mlp
        specs = [
            (attn.q_proj, "in", None, None), (attn.k_proj, "in", None, None),
            (attn.v_proj, "in", "out", None), (attn.o_proj, "out", "in", o_online.get(i)),
            (mlp.gate_proj, "in", None, None), (mlp.up_proj, "in", None, None),
            (mlp.down_proj, "out", None, None),
        ]
        for module, r1_side, r2_side, online in specs:
            holder = _weight_holder(module)
            parametrize.register_parametrization(
                holder, "weight", _RotatedWeight(state, i, r1_side, r2_side, online), unsafe=True
            )
            if holder.bias is not None and (r1_side == "out" or r2_side == "out"):
                which = "r1" if r1_side == "out" else "r2"
                parametrize.register_parametrization(holder, "bias", _RotatedBias(state, i, which), unsafe=True)
    _embedding(model).register_forward_hook(_OutputRotation(state, transpose=False))
    _lm_head(model).register_forward_pre_hook(_InputRotation(state, transpose=True))


def _apply_online_everywhere(model: nn.Module, seed: int, block: int | None) -> RotationState:
    """``placement="online"``: a randomized Hadamard on the input of every decoder linear, ``W <- W Q``."""
    from dmx.models import decoder_linear_names

    state = RotationState(kind="hadamard", seed=int(seed), online_sites=("all",), placement="online", block=block)
    state.hidden, state.head_dim = _shape(model).hidden, _shape(model).head_dim
    for path in decoder_linear_names(model):
        size = _weight_holder(model.get_submodule(path)).in_features
        if not supports_hadamard(size):
            raise ValueError(f"no Hadamard construction for the input size {size} of {path} (see dmx.hadamard); use --rotation none")
        if block is not None and size % block:
            raise ValueError(f"--rotation-block {block} does not divide the input size {size} of {path}; use a divisor or 0 (full size)")
        state.online[path] = OnlineHadamard(random_signs(size, derived_seed(seed, path)), block=block)
    _fold_online(model, state.online)
    model.dmx_rotation = state
    model.register_forward_pre_hook(_EnsureOnlineHooks())
    attach_online_rotations(model)
    return state


def apply_rotation(
    model: nn.Module,
    kind: str = "hadamard",
    seed: int = 0,
    *,
    online_sites: tuple[str, ...] | list[str] = ONLINE_SITES,
    matrices: dict[str, Any] | None = None,
    placement: str = "online",
    block: int | None = DEFAULT_ONLINE_BLOCK,
) -> RotationState | None:
    """Rotate ``model`` in place (function preserved in full precision); returns the state (None for 'none').

    ``kind``: ``none`` | ``hadamard`` (QuaRot: randomized Hadamard ``R1``, ``R2`` folded) |
    ``learned`` (SpinQuant: ``R1``/``R2`` trainable, initialised to the same Hadamards; optimise
    :func:`rotation_parameters`, then :func:`bake_rotation`). ``seed`` picks the random signs.
    ``online_sites``: subset of :data:`ONLINE_SITES` that get an online Hadamard.
    ``matrices``: ``{"r1": Tensor, "r2": [Tensor, ...]}`` from :func:`load_rotation` to rebuild an
    exported learned rotation exactly (folded, not trainable).
    ``placement`` (``hadamard`` only): ``online`` (default) gives every decoder linear its own
    randomized Hadamard on its input, ``W <- W Q``, RMSNorm scales left in the norms and the
    residual stream unrotated; ``folded`` is the QuaRot layout of the module docstring (norm
    scales folded, ``R1``/``R2`` folded, online Hadamards only at ``online_sites``). Both
    rotate exactly the operands that dMX quantises; ``online`` avoids folding the RMSNorm scales
    into the weights, which on SmolLM2-135M costs more MXFP4 weight accuracy than ``R1`` wins
    (README "Rotations"). ``learned`` always uses the folded layout (SpinQuant).
    ``block`` (``online`` placement only): size of the block-diagonal Hadamard, default
    :data:`DEFAULT_ONLINE_BLOCK` (64, two MX blocks; why: module docstring); ``None`` rotates the
    whole input width.
    Call after loading and before or after ``quantize_model`` (both orders give the same model).
    Raises ``ValueError`` for an unknown kind/site, an unsupported architecture or size, or a
    model that is already rotated.
    """
    if kind not in ROTATION_KINDS:
        raise ValueError(f"unknown rotation kind {kind!r}; choose one of {list(ROTATION_KINDS)}")
    sites = tuple(online_sites)
    unknown = [s for s in sites if s not in ONLINE_SITES]
    if unknown:
        raise ValueError(f"unknown online sites {unknown}; choose from {list(ONLINE_SITES)}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {list(PLACEMENTS)}")
    if kind == "none":
        return None
    if rotation_state(model) is not None:
        raise ValueError("model is already rotated (model.dmx_rotation is set); load a fresh model")
    shape = _shape(model)
    if kind == "hadamard" and placement == "online":
        if block is not None and (not isinstance(block, int) or block < 1 or not supports_hadamard(block)):
            raise ValueError(f"block must be None or a Hadamard order such as 32 (the MX block), got {block!r}")
        return _apply_online_everywhere(model, seed, block)
    _check_sizes(shape, sites)
    untie_word_embeddings(model)
    fold_rmsnorm_scales(model)
    if matrices is not None:
        r1 = matrices["r1"].to(torch.float64)
        r2 = [m.to(torch.float64) for m in matrices["r2"]]
        if r1.shape != (shape.hidden, shape.hidden) or len(r2) != shape.n_layers or any(
            m.shape != (shape.head_dim, shape.head_dim) for m in r2
        ):
            raise ValueError(
                f"rotation matrices do not fit this model (need r1 {shape.hidden}x{shape.hidden} and "
                f"{shape.n_layers} r2 of {shape.head_dim}x{shape.head_dim}); were they saved for another model?"
            )
    else:
        r1, r2 = _initial_rotations(shape, seed)
    state = RotationState(kind=kind, seed=int(seed), online_sites=sites, hidden=shape.hidden, head_dim=shape.head_dim)
    state.online = _online_rotations(model, shape, seed, sites)
    device = _embedding(model).weight.device
    learning = kind == "learned" and matrices is None
    # down_proj's Q sits right of R1^T: fold it now. o_proj's Q sits right of (I ⊗ R2): folded with R2.
    _fold_online(model, {p: h for p, h in state.online.items() if p.endswith(".down_proj")})
    if learning:
        state.r1 = nn.Parameter(_dense(r1).to(device=device, dtype=torch.float32))
        state.r2 = [nn.Parameter(_dense(m).to(device=device, dtype=torch.float32)) for m in r2]
        state.baked = False
        _register_learned(model, state)
    else:
        _fold_matrices(model, r1, r2, online_o=_o_online_by_layer(state))
        state.r1 = _dense(r1).to(torch.float32)
        state.r2 = [_dense(m).to(torch.float32) for m in r2]
    model.dmx_rotation = state
    model.register_forward_pre_hook(_EnsureOnlineHooks())
    attach_online_rotations(model)
    return state


@torch.no_grad()
def bake_rotation(model: nn.Module) -> RotationState:
    """Fold the current learned ``R1``/``R2`` into the weights and drop the parametrisations and hooks.

    The fold is the one :func:`apply_rotation` does with ``matrices`` (from the unrotated
    weights, in float64), so a model rebuilt from :func:`save_rotation`'s file has bit-identical
    weights. Afterwards the model is an ordinary (rotated) model whose forward costs only the
    online Hadamards; the matrices stay in the state (detached) for :func:`save_rotation`.
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
    _remove_hooks(_embedding(model), (_OutputRotation,))
    _remove_hooks(_lm_head(model), (_InputRotation,))
    _fold_matrices(model, state.r1.detach().to(torch.float64), [m.detach().to(torch.float64) for m in state.r2],
                   online_o=_o_online_by_layer(state))
    state.r1 = state.r1.detach().clone()
    state.r2 = [m.detach().clone() for m in state.r2]
    state.baked = True
    for module in model.modules():  # DMXLinear weight caches are keyed by tensor identity: drop them
        if hasattr(module, "_weight_cache"):
            module._weight_cache = None
    return state


# ------------------------------------------------------------------------------------------------
# serialisation
# ------------------------------------------------------------------------------------------------
def save_rotation(state: RotationState, path: str | Path) -> Path:
    """Write the description and (for ``learned``) the matrices to ``path`` (safetensors, atomic).

    The description is stored in the file's metadata under ``dmx_rotation`` (JSON).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    if state.kind == "learned":
        tensors["r1"] = state.r1.detach().cpu().float().contiguous()
        for i, m in enumerate(state.r2):
            tensors[f"r2.{i}"] = m.detach().cpu().float().contiguous()
    else:  # safetensors needs at least one tensor; the fixed kind is rebuilt from the seed
        tensors["seed"] = torch.tensor([state.seed], dtype=torch.int64)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"dmx_rotation": json.dumps(state.describe())})
    tmp.replace(path)
    return path


def load_rotation(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(description, matrices or None)`` from :func:`save_rotation`'s file."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"rotation file {path} does not exist; `dmx calibrate --rotation ...` and `dmx export` write one")
    try:
        handle_cm = safe_open(str(path), framework="pt")
    except SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors rotation file ({err}); pass the .rotation.safetensors "
                         "written by `dmx calibrate` or `dmx export`") from err
    with handle_cm as handle:
        meta = handle.metadata() or {}
        if "dmx_rotation" not in meta:
            raise ValueError(f"{path} holds no dMX rotation (no 'dmx_rotation' metadata); write it with save_rotation")
        description = json.loads(meta["dmx_rotation"])
        if description.get("kind") != "learned":
            return description, None
        keys = sorted((k for k in handle.keys() if k.startswith("r2.")), key=lambda k: int(k.split(".")[1]))
        matrices = {"r1": handle.get_tensor("r1"), "r2": [handle.get_tensor(k) for k in keys]}
    return description, matrices


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
    shape = _shape(model)
    recorded = (description.get("hidden_size"), description.get("head_dim"))
    if recorded != (shape.hidden, shape.head_dim):
        raise ValueError(
            f"the rotation was made for a model with hidden_size {recorded[0]} and head_dim {recorded[1]}, "
            f"this one has {shape.hidden} and {shape.head_dim}; use the rotation file of this model"
        )
    return apply_rotation(
        model, description["kind"], description["seed"],
        online_sites=tuple(s for s in description["online_sites"] if s in ONLINE_SITES),
        matrices=matrices, placement=description.get("placement", "folded"), block=description.get("block"),
    )


def rotated_model_id(model_id: str, model: nn.Module) -> str:
    """``model_id`` as a cache key of results that depend on the model's rotation (the KL scores).

    Unrotated: ``model_id`` unchanged. Rotated: ``"<model_id>|rotation=<sha256[:16]>"`` of the
    rotation's description and, for a learned rotation, its matrices (two learned runs differ).
    """
    state = rotation_state(model)
    if state is None:
        return model_id
    digest = hashlib.sha256(json.dumps(state.describe(), sort_keys=True).encode())
    if state.kind == "learned":
        for matrix in [state.r1, *state.r2]:
            digest.update(matrix.detach().cpu().float().contiguous().numpy().tobytes())
    return f"{model_id}|rotation={digest.hexdigest()[:16]}"


def save_rotation_beside(model: nn.Module, assignment_path: str | Path, *, learned_only: bool = False) -> tuple[dict[str, Any], Path | None]:
    """Save the model's rotation next to the assignment about to be written at ``assignment_path``.

    The file is ``<assignment stem>.rotation.safetensors`` (:func:`save_rotation`), written before
    the assignment so that an assignment always finds its rotation; ``learned_only``: fixed
    rotations (rebuilt from their description) get no file. Returns ``(provenance keys of
    :func:`rotation_provenance`, the file or None)``.
    """
    path = Path(assignment_path)
    state = rotation_state(model)
    saved = None
    if state is not None and (state.kind == "learned" or not learned_only):
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = save_rotation(state, path.with_name(path.stem + ".rotation.safetensors"))
    return rotation_provenance(state, saved, path.parent), saved


def rotation_provenance(state: RotationState | None, file: str | Path | None, relative_to: str | Path) -> dict[str, Any]:
    """Provenance keys recording the rotation an assignment was made under.

    ``rotation``: ``state.describe()`` or None; when the rotation was saved in ``file``
    (:func:`save_rotation`) also ``rotation_file`` (relative to ``relative_to``, the assignment's
    directory, so the pair can be moved together) and ``rotation_sha256`` of the file.
    """
    import os

    record: dict[str, Any] = {"rotation": None if state is None else state.describe()}
    if state is not None and file is not None:
        record["rotation_file"] = os.path.relpath(Path(file).resolve(), Path(relative_to).resolve())
        record["rotation_sha256"] = sha256_file(file)
    return record


# ------------------------------------------------------------------------------------------------
# command-line flags (shared by calibrate, eval, kl, sweep so every comparison is rotated alike)
# ------------------------------------------------------------------------------------------------
#: Values the rotation flags stand for when they are not given (the flags default to None so a
#: command can tell "not given" from "given": ``dmx eval`` then uses the assignment's recorded rotation).
FLAG_DEFAULTS = {"rotation": "none", "rotation_seed": 0, "rotation_placement": "online",
                 "rotation_block": DEFAULT_ONLINE_BLOCK}


def add_rotation_flags(parser, *, recorded: bool = False) -> None:
    """Add ``--rotation {none,hadamard,learned}``, ``--rotation-seed``, ``--rotation-placement``,
    ``--rotation-file``, ``--rotation-block``, ``--rotation-lr``.

    Kind, seed, placement and block default to None ("not given"); :data:`FLAG_DEFAULTS` holds
    what they mean when nothing else decides (``none``, 0, ``online``, ``DEFAULT_ONLINE_BLOCK``).
    ``recorded``: the command reads assignment files whose recorded rotation applies when the
    flags are not given (``dmx eval``/``export``); the help text says so.
    """
    # each help states what an unset flag means; "%(default).0s" renders as nothing and keeps a
    # defaults-appending formatter (argparse's own; dmx.commands.HelpFormatter appends nothing to a
    # help that speaks of its default) from adding "(default: None)", which would misstate it
    unset = "%(default).0s"
    recorded_or = "as the assignment records, else " if recorded else ""
    group = parser.add_argument_group("rotations")
    group.add_argument("--rotation", choices=ROTATION_KINDS, default=None,
                       help="none | hadamard (fixed QuaRot-style) | learned (SpinQuant-style: trained by "
                            "calibrate and sweep; eval/kl/export read it from --rotation-file or the assignment) "
                            f"(default: {recorded_or}none){unset}")
    group.add_argument("--rotation-seed", type=int, default=None,
                       help=f"seed of the random Hadamard signs (default: {recorded_or}0){unset}")
    group.add_argument("--rotation-placement", choices=PLACEMENTS, default=None,
                       help="hadamard only: online (a Hadamard on every linear input) or folded (QuaRot) "
                            f"(default: {recorded_or}online){unset}")
    group.add_argument("--rotation-file", default=None,
                       help="rotation saved by calibrate/export (.rotation.safetensors); rebuilds it exactly, "
                            f"kind and seed come from the file (default: {recorded_or}none){unset}")
    group.add_argument("--rotation-block", type=int, default=None,
                       help="hadamard/online only: block-diagonal Hadamard size (32 = one MX block, 64 = two; "
                            f"0 = full width) (default: {recorded_or}{DEFAULT_ONLINE_BLOCK}){unset}")
    group.add_argument("--rotation-lr", type=float, default=1.5,
                       help="Cayley SGD learning rate of a learned rotation (calibrate and sweep only)")
