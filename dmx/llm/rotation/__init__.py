"""Orthogonal rotations of a Llama-style decoder that leave its full-precision function unchanged.

QuaRot (fixed, ``kind="hadamard"``) and SpinQuant (learned, ``kind="learned"``) rotations for
the architectures whose decoder layers are ``RMSNorm -> q/k/v -> attention -> o`` and
``RMSNorm -> gate/up -> act * up -> down`` with a residual stream around both (HF ``llama``
incl. SmolLM2, ``qwen3``, ``qwen2``, ``mistral``). Row-vector convention: a linear computes
``y = x W^T + b``, a rotation ``R`` acts as ``x -> x R``. A :class:`RotationSpec` says which
rotation; :func:`apply_rotation` applies it.

Modules: ``spec`` (the request, its recorded description), ``choice`` (flags and recorded
assignments -> one request), ``apply`` (rotating a model), ``fold`` (folding norms and matrices
into weights), ``online`` (the online Hadamard and its hooks), ``learned`` (trainable
parametrisations, baking), ``state`` (what a rotated model carries), ``files`` (safetensors
files, provenance, cache keys), ``hadamard`` (Hadamard constructions, fast transform),
``cayley`` (Cayley SGD).

Two layouts for the fixed kind (``placement``):

* ``online`` (default): every decoder linear gets its own randomized Hadamard ``Q`` on its
  input (forward pre-hook) and ``W <- W Q``; norms, embeddings and the residual stream are left
  alone. ``Q`` is block-diagonal with 64 x 64 Hadamards by default (``block =
  DEFAULT_ROTATION_BLOCK``: each rotation mixes two neighbouring 32-element MX blocks), or one
  Hadamard of the full input width (``block=None``). dMX quantises exactly the linear
  inputs and weights, so this rotates every quantised operand without folding RMSNorm scales
  into weights (measured better on SmolLM2-135M).

  Why 64: chosen on WikiText-2 *validation* text (not the test split the results report), uniform
  MXFP4 perplexity of SmolLM2-135M over 4 x 2048 tokens, mean of rotation seeds 0-2: no rotation
  65.8, size 32 38.8, size 64 33.5, size 96 36.8, size 192 35.4 (seed 0); full width was worse
  than size 32 on test windows (docs/ROTATIONS.md). Rotating inside one MX block (32) only reshapes the MX
  block's own distribution; 64 also spreads an outlier over two MX blocks' scales, and wider
  rotations raise the scale of more MX blocks than they help. 64 divides the linear input widths
  of every model in ``dmx.llm.models``.
* ``folded``: the QuaRot layout below; ``learned`` always uses it (SpinQuant).

What is folded into the weights in the ``folded`` layout (exactly, in float64, then cast back):

1. RMSNorm scales: ``RMSNorm(x) = x / rms(x) * g`` becomes ``x / rms(x)`` and ``g`` moves into
   the columns of the linears that read it (``W <- W diag(g)``: q/k/v, gate/up, lm_head). A
   tied ``lm_head`` is untied first (its weight would otherwise be the rotated embedding).
2. ``R1`` (hidden x hidden) on the residual stream: ``rms(x R1) = rms(x)`` for orthogonal ``R1``,
   so the scale-free norm commutes with it. Embedding ``E <- E R1``; readers of the stream
   (q/k/v, gate/up, lm_head) ``W <- W R1``; writers (o, down) ``W <- R1^T W``, ``b <- b R1``.
3. ``R2`` (head_dim x head_dim) per decoder layer on the V/O pair, head by head:
   ``W_v <- (I ⊗ R2)^T W_v`` (and its bias), ``W_o <- W_o (I ⊗ R2)``. The same ``R2`` for every
   head keeps GQA exact. q/k (and Qwen3's per-head ``q_norm``/``k_norm``, RoPE) are untouched: a
   residual rotation is absorbed by the q/k input side, so the per-head q/k vectors never change.

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
``torch.nn.utils.parametrize`` (weights stay frozen). Optimise :func:`rotation_parameters` with
:class:`CayleySGD`, then call :func:`bake_rotation` to fold the final matrices into the weights.
"""

from dmx.llm.rotation.apply import apply_rotation, apply_rotation_description, attach_online_rotations
from dmx.llm.rotation.cayley import CayleySGD
from dmx.llm.rotation.choice import recorded_rotation, resolve_rotation
from dmx.llm.rotation.files import load_rotation, rotated_model_id, rotation_provenance, save_rotation, save_rotation_beside
from dmx.llm.rotation.fold import fold_rmsnorm_scales, untie_word_embeddings
from dmx.llm.rotation.learned import bake_rotation, rotation_parameters, shared_rotated_weights
from dmx.llm.rotation.online import OnlineHadamard, derived_seed
from dmx.llm.rotation.spec import (CALIBRATION_ROTATION, DEFAULT_ROTATION_BLOCK, DESCRIPTION_VERSION, ONLINE_SITES, PLACEMENTS, ROTATION_KINDS,
                               SUPPORTED_MODEL_TYPES, RotationSpec, check_learned_lm_head)
from dmx.llm.rotation.state import RotationState, rotation_state

__all__ = [
    "CALIBRATION_ROTATION",
    "DEFAULT_ROTATION_BLOCK",
    "DESCRIPTION_VERSION",
    "ROTATION_KINDS",
    "ONLINE_SITES",
    "PLACEMENTS",
    "SUPPORTED_MODEL_TYPES",
    "RotationSpec",
    "RotationState",
    "OnlineHadamard",
    "CayleySGD",
    "apply_rotation",
    "apply_rotation_description",
    "recorded_rotation",
    "resolve_rotation",
    "rotation_parameters",
    "shared_rotated_weights",
    "bake_rotation",
    "attach_online_rotations",
    "rotation_state",
    "untie_word_embeddings",
    "fold_rmsnorm_scales",
    "save_rotation",
    "load_rotation",
    "save_rotation_beside",
    "rotation_provenance",
    "rotated_model_id",
    "derived_seed",
    "check_learned_lm_head",
]
