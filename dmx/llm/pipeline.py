"""The one pipeline every command, the sweep, the benchmarks and the tutorials run:
load -> rotate -> quantize, then each runs, records (:mod:`dmx.provenance`) and writes its own.

:class:`ModelSpec` is the frozen description of the model side (which model, how it is loaded,
rotated and quantised; the commands build it from their flags, ``dmx.commands.model_spec_from_args``);
:func:`load_rotated_model` loads and rotates it, :func:`quantize` wraps its decoder linears.

Quantizing (:func:`quantize_model`): every ``nn.Linear`` inside the decoder blocks (q/k/v/o and
gate/up/down for Llama-style models) is replaced in place by a :class:`dmx.linear.DMXLinear`:
weight and input activation are MX fake-quantised (OCP MX v1.0 §6: blocks of 32 along the
reduction dimension, shared E8M0 scale), each layer with its own learnable offset ``beta_hat``.
Embeddings and the output head stay in full precision unless ``include_lm_head=True``. All
original model weights are frozen; only the offsets are trainable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dmx.family import DEFAULT_FAMILY
from dmx.llm.models import EMBEDDED_MODEL, SHORT_NAMES, EmbeddedModel, decoder_linear_names, load_model
from dmx.llm.rotation import RotationSpec, apply_rotation
from dmx.wrap import wrap_linears
from mx_spec.formats import DEFAULT_BLOCK_SIZE

__all__ = ["ModelSpec", "load_rotated_model", "quantize", "quantize_model", "idle_cpus",
           "thread_count"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model, and how it is loaded, rotated and quantised.

    ``model``: a short name, local directory or hub id (:func:`dmx.llm.models.load_model`);
    ``threads``: torch CPU threads set when the model loads (``None``: torch's setting is left
    alone; the CLI fills in :func:`thread_count`); ``family``/``block_size``/``include_lm_head``/
    ``backend``: how :func:`quantize` wraps it; ``rotation``: the rotation request applied right
    after loading.
    """

    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    family: str = DEFAULT_FAMILY
    block_size: int = DEFAULT_BLOCK_SIZE
    include_lm_head: bool = False
    backend: str | None = None
    rotation: RotationSpec = field(default_factory=RotationSpec)

    @property
    def model_note(self) -> str | None:
        """What the embedded model is (recorded beside its short name); None for any other model."""
        return EMBEDDED_MODEL.description if SHORT_NAMES.get(self.model) is EMBEDDED_MODEL else None


def idle_cpus() -> int:
    """CPUs this process may use minus the 1-minute load average, at least 1: a thread count that
    does not oversubscribe a machine other jobs keep busy (torch's default, every core, made a
    calibration step 7-20x slower on a loaded 2-core machine)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        busy = 0.0
    return max(1, min(available, round(available - busy)))


def thread_count(threads: int | None) -> int:
    """``threads`` when given (``ValueError`` below 1), else :func:`idle_cpus`."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got threads={threads}")
    return idle_cpus() if threads is None else threads


def load_rotated_model(spec: ModelSpec, *, trainable: bool = False):
    """``(model, tokenizer)`` of ``spec``, rotated right after loading.

    ``trainable`` (a calibration): a learned rotation without a file starts from its
    initialisation and is trained; elsewhere it needs its file (``ValueError`` before loading).
    The embedded model is read with HF offline mode set (it never needs the network).
    """
    spec.rotation.check_buildable(trainable=trainable, include_lm_head=spec.include_lm_head)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    if isinstance(SHORT_NAMES.get(spec.model), EmbeddedModel):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_model(spec.model, dtype=spec.dtype, device=spec.device, device_map=spec.device_map,
                                  trust_remote_code=spec.trust_remote_code)
    apply_rotation(model, spec.rotation)
    return model, tokenizer


def quantize(model: nn.Module, spec: ModelSpec) -> dict[str, nn.Module]:
    """Wrap ``model``'s decoder linears as ``spec`` says (:func:`quantize_model`)."""
    return quantize_model(model, spec.family, include_lm_head=spec.include_lm_head, block_size=spec.block_size,
                          backend=spec.backend)


# ------------------------------------------------------------------------------------------------
# quantize: a causal LM's decoder linears become DMXLinear
# ------------------------------------------------------------------------------------------------
def quantize_model(
    model: nn.Module,
    family: str = DEFAULT_FAMILY,
    *,
    include_lm_head: bool = False,
    names: Iterable[str] | None = None,
    **dmx_kwargs: Any,
) -> dict[str, Any]:
    """Wrap the decoder linears of ``model`` in place; returns ``{qualified name: DMXLinear}``.

    ``family``: a dmx core format family (``fp8_fp4`` | ``fp6_fp4``). ``names``: the subset of
    decoder linears to wrap (default: all of them, see ``dmx.llm.models.decoder_linear_names``; the
    output head counts only with ``include_lm_head=True``); a name outside that set raises
    ``ValueError`` listing valid ones. ``predicate`` goes to ``dmx.wrap_linears``, the remaining
    ``dmx_kwargs`` are ``dmx.linear.DMXLinearConfig`` settings (``block_size``, ``tie``, ...). Model weights
    get ``requires_grad=False``. ``ValueError`` when the model has no decoder linears.
    """

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
            f"see dmx.llm.models.decoder_linear_names(model)){hint}"
        )
    if not wanted:
        raise ValueError("names is empty; pass at least one decoder linear, or names=None for all of them")
    return [n for n in valid if n in wanted]
