"""Turning a causal LM into a fake-quantised dMX model.

Every ``nn.Linear`` inside the decoder blocks (q/k/v/o and gate/up/down for Llama-style models)
is replaced in place by a ``DMXLinear`` from dmx core: weight and input activation are MX
fake-quantised (OCP MX v1.0 §6: blocks of 32 along the reduction dimension, shared E8M0 scale),
each layer with its own learnable offset ``beta_hat``. Embeddings and the output head stay in
full precision unless ``include_lm_head=True``. All original model weights are frozen; only the
offsets are trainable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from dmx.models import decoder_linear_names

__all__ = ["quantize_model", "set_calibration_mode"]


def quantize_model(
    model: nn.Module,
    family: str = "fp8_fp4",
    *,
    include_lm_head: bool = False,
    names: Iterable[str] | None = None,
    **dmx_kwargs: Any,
) -> dict[str, Any]:
    """Wrap the decoder linears of ``model`` in place; returns ``{qualified name: DMXLinear}``.

    ``family``: a dmx core format family (``fp8_fp4`` | ``fp6_fp4``). ``names``: the subset of
    decoder linears to wrap (default: all of them, see ``dmx.models.decoder_linear_names``; the
    output head counts only with ``include_lm_head=True``); a name outside that set raises
    ``ValueError`` listing valid ones. ``predicate`` goes to ``dmx.wrap_linears``, the remaining
    ``dmx_kwargs`` are ``dmx.linear.DMXLinearConfig`` settings (``block_size``, ``tie``, ...). Model weights
    get ``requires_grad=False``. ``ValueError`` when the model has no decoder linears.
    """
    from dmx.wrap import wrap_linears

    selected = _select_decoder_linears(model, names, include_lm_head=include_lm_head)
    model.requires_grad_(False)
    predicate = dmx_kwargs.pop("predicate", None)
    return wrap_linears(model, {"family": family, **dmx_kwargs}, names=selected, predicate=predicate)


def _select_decoder_linears(model: nn.Module, names: Iterable[str] | None, *, include_lm_head: bool) -> list[str]:
    """The decoder linears to quantise, in model order: all, or the validated subset ``names``."""
    valid = decoder_linear_names(model, include_lm_head=include_lm_head)
    if names is None:
        return valid
    if isinstance(names, str):
        raise TypeError(f"names must be a list of layer names, not the string {names!r}; wrap it: names=[{names!r}]")
    wanted = set(names)
    unknown = sorted(wanted - set(valid))
    if unknown:
        hint = "" if include_lm_head else " (the output head needs include_lm_head=True)"
        raise ValueError(
            f"not decoder linears of this model: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
            f"valid names look like {valid[:3]} ... ({len(valid)} in all, "
            f"see dmx.models.decoder_linear_names(model)){hint}"
        )
    if not wanted:
        raise ValueError("names is empty; pass at least one decoder linear, or names=None for all of them")
    return [n for n in valid if n in wanted]


def set_calibration_mode(model: nn.Module, layers: Mapping[str, Any], training: bool) -> None:
    """Soft (training) offsets for the dMX layers while the rest of the model stays in eval mode.

    Keeping the base model in eval mode disables dropout, so calibration and evaluation differ
    only in the soft (training) versus hard (eval) offset of each ``DMXLinear``.
    """
    model.eval()
    for layer in layers.values():
        layer.train(training)
