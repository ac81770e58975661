"""Put :class:`~dmx.linear.DMXLinear` into a model and drive all its DMX layers at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from dmx.linear import DMXLinear, DMXLinearConfig
from dmx.offset import check_offset_mode, check_temperature

__all__ = ["wrap_linears", "dmx_layers", "set_temperature", "apply_schedule", "set_fixed_format", "set_calibration_mode",
           "input_device"]


def _linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Qualified names of the plain ``nn.Linear`` modules (not those already inside a DMXLinear)."""
    found: dict[str, nn.Linear] = {}
    wrapped_prefixes: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p) for p in wrapped_prefixes):
            continue
        if isinstance(mod, DMXLinear):
            wrapped_prefixes.append(name + ".")
        elif isinstance(mod, nn.Linear):
            found[name] = mod
    return found


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def wrap_linears(
    model: nn.Module,
    config: DMXLinearConfig | Mapping[str, Any] = DMXLinearConfig(),
    *,
    names: Iterable[str] | None = None,
    predicate: Callable[[str, nn.Linear], bool] | None = None,
) -> dict[str, DMXLinear]:
    """Replace ``nn.Linear`` modules of ``model`` in place by ``DMXLinear(linear, config)``.

    ``config``: a :class:`~dmx.linear.DMXLinearConfig`, or its settings as a dict (e.g. from YAML;
    unknown keys raise ``ValueError`` naming the valid ones). ``names``: qualified module names
    to wrap (default: every ``nn.Linear``); ``predicate``: optional ``(name, module) -> bool``
    filter applied on top. Returns ``{name: DMXLinear}`` in module order. Unknown names or names
    of non-Linear modules raise ``ValueError``.
    """
    if model is None or not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module; got {type(model).__name__}")
    if isinstance(config, Mapping):
        config = DMXLinearConfig.from_dict(config)
    linears = _linear_modules(model)
    if names is None:
        selected = list(linears)
    else:
        selected = list(names)
        missing = [n for n in selected if n not in linears]
        if missing:
            raise ValueError(
                f"not plain nn.Linear modules of the model: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}; available: {list(linears)[:8]}"
                f"{' ...' if len(linears) > 8 else ''}"
            )
    if predicate is not None:
        selected = [n for n in selected if predicate(n, linears[n])]
    wrapped: dict[str, DMXLinear] = {}
    for name in selected:
        layer = DMXLinear(linears[name], config)
        _set_submodule(model, name, layer)
        wrapped[name] = layer
    return wrapped


def dmx_layers(model: nn.Module) -> dict[str, DMXLinear]:
    """``{qualified name: DMXLinear}`` of every DMX layer in ``model``, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, DMXLinear)}


def _layers_or_error(model: nn.Module) -> dict[str, DMXLinear]:
    layers = dmx_layers(model)
    if not layers:
        raise ValueError("the model has no DMXLinear layers; call dmx.wrap_linears(model) first")
    return layers


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Set the offset temperature of every DMX layer (``ValueError`` unless finite and > 0)."""
    t = check_temperature(temperature)
    for layer in _layers_or_error(model).values():
        layer.reconfigure(temperature=t)


def apply_schedule(model: nn.Module, schedule, step: int, total_steps: int) -> float:
    """Set every DMX layer's temperature and offset mode from ``schedule`` at ``step``; return T."""
    t = check_temperature(schedule(step, total_steps))
    mode = check_offset_mode(getattr(schedule, "offset_mode", "sigmoid"))
    for layer in _layers_or_error(model).values():
        layer.reconfigure(temperature=t, offset_mode=mode)
    return t


def set_fixed_format(model: nn.Module, name: str | None) -> None:
    """Fix every DMX layer of ``model`` to the standard MX format ``name`` (a uniform baseline);
    ``None`` returns them to their learnable offsets (``DMXLinear.reconfigure(fixed_format=name)``)."""
    for layer in _layers_or_error(model).values():
        layer.reconfigure(fixed_format=name)


def set_calibration_mode(model: nn.Module, layers: Mapping[str, Any], training: bool) -> None:
    """Soft (training) offsets for the dMX layers while the rest of the model stays in eval mode.

    Keeping the base model in eval mode disables dropout, so calibration and evaluation differ
    only in the soft (training) versus hard (eval) offset of each ``DMXLinear``.
    """
    model.eval()
    for layer in layers.values():
        layer.train(training)


def input_device(model: nn.Module) -> torch.device:
    """Device of the input embedding: where token ids must go (also under ``device_map='auto'``)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None:
        return embeddings.weight.device
    return next(model.parameters()).device
