"""Model surgery: fold norms and rotation matrices into the weights of a Llama-style decoder, exactly.

Row-vector convention: a linear computes ``y = x W^T + b``, a rotation ``R`` acts as ``x -> x R``.
Folds run in float64 and cast back to each parameter's dtype. The rules (QuaRot's folded layout)
are listed in the :mod:`dmx.llm.rotation` docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dmx.llm.rotation.online import OnlineHadamard
from dmx.llm.rotation.spec import SUPPORTED_MODEL_TYPES

__all__ = ["ModelShape", "model_shape", "decoder_layers", "weight_holder", "set_weight", "lm_head",
           "untie_word_embeddings", "fold_rmsnorm_scales", "rotate_right", "rotate_heads_right", "rotate_heads_left",
           "dense_matrix", "fold_online_hadamards", "fold_matrices", "o_proj_hadamards"]

#: A rotation as a dense matrix or as a randomized Hadamard applied by the fast transform.
Rotation = torch.Tensor | OnlineHadamard


@dataclass(frozen=True)
class ModelShape:
    """The sizes a rotation of the model depends on."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    n_layers: int


def model_shape(model: nn.Module) -> ModelShape:
    """The sizes of a supported HF decoder (``ValueError`` naming the fix for other architectures)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"rotations support HF model types {list(SUPPORTED_MODEL_TYPES)} (Llama-style RMSNorm "
            f"decoders); got {model_type!r}. Use rotation kind 'none' for this model"
        )
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelShape(
        hidden=config.hidden_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate=config.intermediate_size,
        n_layers=config.num_hidden_layers,
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers (transformer blocks) of the model."""
    return model.model.layers


def weight_holder(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` that owns the weight: the module itself or a wrapper's ``.linear``."""
    inner = getattr(module, "linear", None)
    if isinstance(inner, nn.Linear):
        return inner
    if isinstance(module, nn.Linear):
        return module
    raise TypeError(f"expected an nn.Linear or a wrapper with .linear, got {type(module).__name__}")


def lm_head(model: nn.Module) -> nn.Module:
    """The output head (an ``nn.Linear``, or its wrapper once quantised)."""
    return model.lm_head


def set_weight(linear: nn.Module, value: torch.Tensor, name: str = "weight") -> None:
    """Copy ``value`` into the parameter ``name`` of ``linear``, in the parameter's dtype."""
    param = getattr(linear, name)
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def untie_word_embeddings(model: nn.Module) -> bool:
    """Give ``lm_head`` its own copy of a weight tied to the input embedding; True if it was tied.

    Folding the final-norm scale and ``R1`` into the head must not touch the embedding table.
    ``config.tie_word_embeddings`` is set to False so a saved model is not re-tied on load.
    """
    head = weight_holder(lm_head(model))
    embed = model.get_input_embeddings()
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
    for layer in decoder_layers(model):
        attn, mlp = layer.self_attn, layer.mlp
        groups.append((layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]))
        groups.append((layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]))
    groups.append((model.model.norm, [lm_head(model)]))
    for norm, readers in groups:
        scale = norm.weight.detach().to(torch.float64)
        for reader in readers:
            holder = weight_holder(reader)
            set_weight(holder, holder.weight.to(torch.float64) * scale[None, :])
        norm.weight.fill_(1.0)


def rotate_right(w: torch.Tensor, r: Rotation) -> torch.Tensor:
    """``w @ R`` along the last axis: the fast transform for a Hadamard, a matmul for a dense ``R``."""
    if isinstance(r, OnlineHadamard):
        return r.rotate(w)
    return w @ r.to(device=w.device, dtype=w.dtype)


def rotate_heads_right(w: torch.Tensor, r2: Rotation) -> torch.Tensor:
    """``W (I ⊗ R2)`` for a weight whose input columns are grouped by head."""
    head_dim = r2.width if isinstance(r2, OnlineHadamard) else r2.shape[0]
    return rotate_right(w.reshape(w.shape[0], -1, head_dim), r2).reshape(w.shape)


def rotate_heads_left(w: torch.Tensor, r2: Rotation) -> torch.Tensor:
    """``(I ⊗ R2)^T W`` for a weight whose output rows are grouped by head."""
    return rotate_heads_right(w.T, r2).T


def dense_matrix(r: Rotation) -> torch.Tensor:
    """``R`` as a dense matrix (float64 for a Hadamard)."""
    return r.matrix() if isinstance(r, OnlineHadamard) else r


@torch.no_grad()
def fold_online_hadamards(model: nn.Module, online: dict[str, OnlineHadamard]) -> None:
    """``W <- W Q`` for the module at each path, so that ``(x Q)(W Q)^T = x W^T``."""
    for path, hook in online.items():
        holder = weight_holder(model.get_submodule(path))
        set_weight(holder, rotate_right(holder.weight.to(torch.float64), hook))


def o_proj_hadamards(online: dict[str, OnlineHadamard]) -> dict[int, OnlineHadamard]:
    """``{decoder layer index: the online Hadamard of its o_proj}`` among the paths of ``online``."""
    return {int(path.split(".")[-3]): hook for path, hook in online.items() if path.endswith(".o_proj")}


@torch.no_grad()
def fold_matrices(model: nn.Module, r1: Rotation, r2: list[Rotation], *, online_o: dict[int, OnlineHadamard]) -> None:
    """Fold ``R1`` everywhere and ``R2`` into v/o (float64); ``online_o[i]``: o_proj's Q, folded after R2."""
    f64 = torch.float64
    embed = model.get_input_embeddings()
    set_weight(embed, rotate_right(embed.weight.to(f64), r1))
    head = weight_holder(lm_head(model))
    set_weight(head, rotate_right(head.weight.to(f64), r1))
    for i, layer in enumerate(decoder_layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        for reader in (attn.q_proj, attn.k_proj, mlp.gate_proj, mlp.up_proj):
            holder = weight_holder(reader)
            set_weight(holder, rotate_right(holder.weight.to(f64), r1))
        v = weight_holder(attn.v_proj)
        set_weight(v, rotate_right(rotate_heads_left(v.weight.to(f64), r2[i]), r1))
        if v.bias is not None:
            set_weight(v, rotate_heads_right(v.bias.to(f64)[None, :], r2[i])[0], "bias")
        o = weight_holder(attn.o_proj)
        w = rotate_heads_right(o.weight.to(f64), r2[i])
        if i in online_o:
            w = rotate_right(w, online_o[i])
        set_weight(o, rotate_right(w.T, r1).T)  # R1^T W = (W^T R1)^T
        down = weight_holder(mlp.down_proj)
        set_weight(down, rotate_right(down.weight.to(f64).T, r1).T)
        for writer in (o, down):
            if writer.bias is not None:
                set_weight(writer, rotate_right(writer.bias.to(f64), r1), "bias")
