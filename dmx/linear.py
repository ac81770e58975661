"""``DMXLinear``: an ``nn.Linear`` whose weight and input are MX-quantised in a learnable format.

One learnable scalar ``beta_hat`` per layer selects the format inside a family (``dmx.family``)
through the offset map (``dmx.offset``); it is shared by the weight quantiser and the
input-activation quantiser (``tie=True``, the method's default) or split in two
(``tie=False``: ``beta_hat`` for the weight, ``beta_hat_input`` for the input).

* training mode: soft β, real-width formats, gradients reach ``beta_hat`` (``dmx.autograd``);
* eval mode: hard β (``|β̂| > 1`` -> the family's high format, else the low one), i.e. a real
  standard MX format evaluated with ``mx_spec.quantize_dequantize``;
* ``fixed_format``: any of the six standard MX formats for both operands, no learning
  (uniform baselines, applied assignments); ``None`` returns to learning.

Settings come in one frozen :class:`DMXLinearConfig` (``DMXLinear(linear, config)``;
``DMXLinearConfig.from_dict`` for settings read from YAML/JSON, naming unknown keys). The config is
the layer's whole state besides its parameters: ``layer.config`` (read-only, as are the settings'
shortcuts ``layer.temperature``, ``layer.fixed_format``, ...) changes only by replacement,
``layer.reconfigure(temperature=2.0, fixed_format="mxfp6_e3m2")`` (validated like a new config;
the values kept from the weight are dropped when a setting they were computed under changes).

Any device: the offsets are created on the wrapped weight's device. ``backend`` picks the MX
bridge's forward (``dmx.autograd``): ``"torch"`` (default) runs ``dmx.mx_torch`` on the tensor's
device, ``"compiled"`` the same fused by ``torch.compile``, ``"numpy"`` runs ``mx_spec`` on a host
copy; the bits are the same.

Weights are frozen (``requires_grad=False``) by default; activations get dynamic per-block
scales (computed on every call from the block's own max, OCP MX v1.0 §6.3); blocks run along
the last dimension, the reduction dimension ``in_features`` of both operands. A frozen weight in
a hard format is quantised once and cached until the weight, the format or a setting it was
quantised under changes (``invalidate_caches()`` forgets it, e.g. after weights were rewritten);
in the soft formats its blocks' amax is kept the same way (the widths move every step, the amax
does not).

β̂ initialisation: ``beta_init = 0.0`` by default, as in the authors' code (Brevitas
``BitWidthParameter`` starts the offset at bit width minus base width = 0): every layer starts
near the low format (β ≈ 0.04 at T = 0.4), the budget hinge is silent while the average bits are
under the target, and cross-entropy alone decides which layers climb. ``|β̂|`` has gradient
``sign(β̂)`` with ``sign(0) = +1`` (``dmx.offset.abs_sign_grad``), so an offset at exactly 0
moves. ``dmx.calibrate`` sets the start of every offset from its config
(``CalibrationConfig.beta_init``); the project's first default, 1.0 (the sigmoid's midpoint,
6 bits), is kept reproducible there (``docs/FIDELITY.md``).

Fractional widths take their block scale by ``fractional_scale`` (``mx_spec.minifloat``:
``"maxfloat"``, the authors' rule, by default; ``"emax"``): only the soft (training) path sees it,
the deployed standard formats are the same under both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dmx.autograd import DEFAULT_BACKEND, check_backend, check_tensor, mx_qdq_minifloat, mx_qdq_standard
from dmx.family import DEFAULT_FAMILY, FormatFamily, get_family
from dmx.mx_torch import block_amax_of
from dmx.offset import SIGMOID_SCALE, check_offset_mode, check_temperature, hard_beta, offset_to_beta
from dmx.regularizer import storage_bits
from mx_spec.blocks import check_block_size
from mx_spec.formats import DEFAULT_BLOCK_SIZE, MX_FORMATS, get_format
from mx_spec.elements import ROUNDINGS
from mx_spec.minifloat import FRACTIONAL_SCALES
from mx_spec.scale import SCALE_MODES

__all__ = ["CONSTRUCTION_SETTINGS", "DMXLinear", "DMXLinearConfig", "KEPT_SETTINGS"]


def _check_rule(setting: str, rule: str, valid: tuple[str, ...]) -> str:
    if rule not in valid:
        raise ValueError(f"unknown {setting} {rule!r}; valid rules: {list(valid)}")
    return rule


@dataclass(frozen=True)
class DMXLinearConfig:
    """Settings of a :class:`DMXLinear` (and of every layer :func:`dmx.wrap.wrap_linears` makes).

    ``family``: format family (``dmx.family.FAMILIES`` name or a ``FormatFamily``); ``block_size``:
    MX block length along ``in_features`` (32 in OCP MX); ``beta_init``: the offset β̂ starts at;
    ``tie``: one offset for weight and input (``False``: ``beta_hat_input`` too);
    ``quantize_input``: also quantise the input activation; ``freeze_weight``: the wrapped
    parameters get ``requires_grad=False``; ``temperature``/``offset_mode``/``sigmoid_scale``: the
    offset map (``dmx.offset``); ``scale_mode``/``rounding``: the MX block-scale and element
    rounding rules (``mx_spec``); ``fractional_scale``: the block scale at fractional widths
    (``mx_spec.minifloat.FRACTIONAL_SCALES``); ``backend``: the MX forward
    (``dmx.autograd.BACKENDS``, ``None``: ``torch``); ``fixed_format``: a standard MX format
    (``mx_spec.formats.MX_FORMATS``, e.g. ``mxfp6_e3m2`` or ``mxfp8_e5m2``, which belong to no
    family) for weight and input, no learning; ``None`` learns it. Bad values raise ``ValueError``
    here, before any model is touched. ``beta_init``, ``tie`` and ``freeze_weight`` shape the
    layer's parameters when it is built (:data:`CONSTRUCTION_SETTINGS`); the rest may change
    later through :meth:`DMXLinear.reconfigure`.
    """

    family: str | FormatFamily = DEFAULT_FAMILY
    block_size: int = DEFAULT_BLOCK_SIZE
    beta_init: float = 0.0
    tie: bool = True
    quantize_input: bool = True
    freeze_weight: bool = True
    temperature: float = 0.4
    offset_mode: str = "sigmoid"
    sigmoid_scale: float = SIGMOID_SCALE
    scale_mode: str = "floor"
    rounding: str = "rne"
    fractional_scale: str = FRACTIONAL_SCALES[0]
    backend: str | None = None
    fixed_format: str | None = None

    def __post_init__(self) -> None:
        get_family(self.family)
        check_block_size(self.block_size)
        if not math.isfinite(float(self.beta_init)):
            raise ValueError(f"beta_init must be finite; got {self.beta_init!r}")
        check_temperature(self.temperature)
        check_offset_mode(self.offset_mode)
        _check_rule("fractional_scale", self.fractional_scale, FRACTIONAL_SCALES)
        _check_rule("scale_mode", self.scale_mode, SCALE_MODES)
        _check_rule("rounding", self.rounding, ROUNDINGS)
        if self.backend is not None:
            check_backend(self.backend)
        if self.fixed_format is not None and (not isinstance(self.fixed_format, str)
                                              or self.fixed_format not in MX_FORMATS):
            raise ValueError(f"unknown MX format {self.fixed_format!r}; valid formats: {sorted(MX_FORMATS)} "
                             "(or None to learn the format)")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "DMXLinearConfig":
        """The config of ``settings`` (e.g. read from YAML); ``ValueError`` naming unknown keys."""
        _check_names(settings)
        return cls(**settings)


def _check_names(settings: Mapping[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(DMXLinearConfig)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"unknown DMXLinear setting(s) {unknown}; valid settings: {valid}")


#: Settings a layer takes when it is built: its parameters were made from them.
CONSTRUCTION_SETTINGS = ("beta_init", "tie", "freeze_weight")
#: Settings the values kept from the weight (:meth:`DMXLinear._kept`) were computed under.
KEPT_SETTINGS = ("block_size", "scale_mode", "rounding", "backend")


def _setting(name: str, convert=lambda value: value, doc: str = "") -> property:
    """A read-only view of ``config.<name>`` (change it with :meth:`DMXLinear.reconfigure`)."""
    return property(lambda self: convert(getattr(self._config, name)), doc=doc or f"``config.{name}`` (read-only)")


class DMXLinear(nn.Module):
    """MX-quantised wrapper of ``linear`` with a learnable per-layer format (module docstring)."""

    def __init__(self, linear: nn.Linear, config: DMXLinearConfig = DMXLinearConfig()) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"DMXLinear wraps an nn.Linear; got {type(linear).__name__}")
        if not isinstance(config, DMXLinearConfig):
            raise TypeError(f"DMXLinear takes a DMXLinearConfig; got {type(config).__name__} "
                            "(build one with DMXLinearConfig(...) or DMXLinearConfig.from_dict(settings))")
        check_tensor(linear.weight, "the wrapped weight")
        self.linear = linear
        if config.backend is not None:
            check_backend(config.backend, linear.weight.device.type)
        self._config = config
        init = float(config.beta_init)
        # on the weight's device: a model loaded on a GPU is wrapped in place and not moved again
        device = linear.weight.device
        self.beta_hat = nn.Parameter(torch.tensor(init, dtype=torch.float32, device=device))
        self.beta_hat_input = None if self.tie else nn.Parameter(torch.tensor(init, dtype=torch.float32, device=device))
        # (weight, key, value) kept by _kept: the hard-format weight and the soft path's block amax
        self._weight_cache: tuple[torch.Tensor, tuple, torch.Tensor] | None = None
        self._amax_cache: tuple[torch.Tensor, tuple, torch.Tensor] | None = None
        if config.freeze_weight:
            for p in linear.parameters():
                p.requires_grad_(False)

    # -- the wrapped module's API -------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    # -- settings: the config, changed only by replacement ----------------------------------------
    @property
    def config(self) -> DMXLinearConfig:
        """The layer's settings (frozen; :meth:`reconfigure` replaces it)."""
        return self._config

    def reconfigure(self, **changes: Any) -> DMXLinearConfig:
        """Replace the config by ``dataclasses.replace(config, **changes)`` and return it.

        Validated like a new :class:`DMXLinearConfig` (``ValueError`` naming unknown settings or bad
        values; the backend also against the weight's device), before anything changes. The
        :data:`CONSTRUCTION_SETTINGS` made the parameters and cannot change here (build a new
        layer). The values kept from the weight are dropped when one of :data:`KEPT_SETTINGS` changes.
        """
        _check_names(changes)
        fixed = sorted(k for k in changes if k in CONSTRUCTION_SETTINGS and changes[k] != getattr(self._config, k))
        if fixed:
            raise ValueError(f"DMXLinear setting(s) {fixed} are fixed when the layer is built (its parameters "
                             "were made from them); build a new DMXLinear instead")
        new = dataclasses.replace(self._config, **changes)
        if new.backend is not None:
            check_backend(new.backend, self.linear.weight.device.type)
        old, self._config = self._config, new
        if any(getattr(old, k) != getattr(new, k) for k in KEPT_SETTINGS):
            self.invalidate_caches()
        return new

    family = _setting("family", get_family, "The :class:`~dmx.family.FormatFamily` of ``config.family``.")
    block_size = _setting("block_size")
    tie = _setting("tie", bool)
    quantize_input = _setting("quantize_input", bool)
    sigmoid_scale = _setting("sigmoid_scale", float)
    scale_mode = _setting("scale_mode")
    rounding = _setting("rounding")
    fractional_scale = _setting("fractional_scale")
    backend = _setting("backend", lambda b: DEFAULT_BACKEND if b is None else b,
                       """MX forward implementation, ``"numpy"``, ``"torch"`` or ``"compiled"``
        (``dmx.autograd.BACKENDS``; same bits); ``"compiled"`` is refused where ``torch.compile``
        cannot run on the weight's device.""")
    temperature = _setting("temperature", float)
    offset_mode = _setting("offset_mode")
    fixed_format = _setting("fixed_format", doc="Standard MX format used for weight and input, or None (learned).")

    # -- format and bits -----------------------------------------------------------------------
    def _beta_hat_of(self, operand: str) -> torch.Tensor:
        if operand not in ("weight", "input"):
            raise ValueError(f"operand must be 'weight' or 'input'; got {operand!r}")
        return self.beta_hat if (operand == "weight" or self.tie) else self.beta_hat_input

    def beta(self, operand: str = "weight") -> torch.Tensor:
        """Offset β of ``operand``: soft while training, hard (0 or β_max) in eval mode."""
        return offset_to_beta(
            self._beta_hat_of(operand), self.temperature, self.training, mode=self.offset_mode,
            sigmoid_scale=self.sigmoid_scale, beta_max=self.family.beta_max,
        )

    def format_names(self) -> dict[str, str]:
        """Deployed standard MX format of each operand (fixed format, else the hard β's)."""
        if self.fixed_format is not None:
            return {"weight": self.fixed_format, "input": self.fixed_format}
        return {
            op: self.family.format_at(
                float(hard_beta(self._beta_hat_of(op), self.family.beta_max))
            )
            for op in ("weight", "input")
        }

    def format_name(self) -> str:
        """Deployed (hard) MX format of the weight, e.g. ``'mxfp8_e4m3'``."""
        return self.format_names()["weight"]

    def element_bits(self) -> torch.Tensor:
        """Element bits ``1+E+M`` of the layer (mean of weight and input bits when untied).

        Differentiable in β̂ while training; the hard format's bits in eval mode or when a fixed
        format is set.
        """
        if self.fixed_format is not None:
            return torch.tensor(float(get_format(self.fixed_format).element.bits))
        ops = ("weight",) if self.tie else ("weight", "input")
        bits = [self.family.element_bits(self.beta(op)) for op in ops]
        return bits[0] if len(bits) == 1 else (bits[0] + bits[1]) / 2

    def storage_bits(self) -> torch.Tensor:
        """``element_bits() + 8 / block_size`` (the E8M0 scale shared by each block)."""
        return storage_bits(self.element_bits(), self.block_size)

    def describe(self) -> dict:
        """Current state: format names, bits, β, β̂, temperature, mode."""
        with torch.no_grad():
            return {
                "formats": self.format_names(),
                "fixed_format": self.fixed_format,
                "element_bits": float(self.element_bits()),
                "storage_bits": float(self.storage_bits()),
                "beta": float(self.beta()),
                "beta_hat": float(self.beta_hat),
                "temperature": self.temperature,
                "training": self.training,
                "family": self.family.name,
            }

    # -- forward ---------------------------------------------------------------------------------
    def _standard(self, t: torch.Tensor, fmt: str) -> torch.Tensor:
        return mx_qdq_standard(
            t, fmt, block_size=self.block_size, scale_mode=self.scale_mode, rounding=self.rounding,
            backend=self.backend,
        )

    def _kept(self, slot: str, w: torch.Tensor, settings: tuple, make) -> torch.Tensor:
        """``make(w)`` for a frozen weight, kept in ``slot`` until the weight changes: another
        tensor, other storage (``.data`` replaced, a move or cast), an in-place change (its
        version) or other ``settings`` (the format); :meth:`reconfigure` drops it when a config
        setting it was made under changes. Holding ``w`` keeps its address from being reused by a
        weight that is built on every read (a rotation)."""
        key = (w.data_ptr(), w._version, w.dtype, w.device, settings)
        kept = getattr(self, slot)
        if kept is None or kept[0] is not w or kept[1] != key:
            setattr(self, slot, None)  # free the old value before making the new one
            with torch.no_grad():
                kept = (w, key, make(w))
            setattr(self, slot, kept)
        return kept[2]

    def invalidate_caches(self) -> None:
        """Forget the values kept from the weight (:meth:`_kept`), e.g. after weights were rewritten
        in a way their version counter does not see, or folded (``dmx.llm.rotation``)."""
        self._weight_cache = self._amax_cache = None

    def _hard_weight(self, fmt: str) -> torch.Tensor:
        w = self.linear.weight
        if w.requires_grad:
            return self._standard(w, fmt)
        return self._kept("_weight_cache", w, (fmt,), lambda w: self._standard(w, fmt))

    def _soft_widths(self, operand: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, M) of ``operand`` at the soft β, differentiable in its offset."""
        beta = self.beta(operand)
        return self.family.ebits(beta), self.family.mbits(beta)

    def _soft(self, t: torch.Tensor, widths: tuple[torch.Tensor, torch.Tensor],
              block_amax: torch.Tensor | None = None) -> torch.Tensor:
        return mx_qdq_minifloat(
            t, *widths, block_size=self.block_size,
            scale_mode=self.scale_mode, rounding=self.rounding,
            max_normal_cap=self.family.max_normal_cap, fractional_scale=self.fractional_scale,
            backend=self.backend, block_amax=block_amax,
        )

    def _weight_block_amax(self, w: torch.Tensor) -> torch.Tensor | None:
        """The frozen weight's block amax, kept until the weight changes (every soft step
        re-quantises the weight at new widths; its blocks' amax stays); None for a trained
        weight or the numpy backend (which computes its own). ``w``: the weight as this forward
        reads it (read once: a learned rotation builds it on every read)."""
        if w.requires_grad or self.backend == "numpy":
            return None
        return self._kept("_amax_cache", w, (), lambda w: block_amax_of(w, self.block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "DMXLinear input")
        if self.fixed_format is not None or not self.training:
            fmts = self.format_names()
            wq = self._hard_weight(fmts["weight"])
            xq = self._standard(x, fmts["input"]) if self.quantize_input else x
        else:
            # tied: one β (and its E, M) for both operands, computed once
            widths = self._soft_widths("weight")
            w = self.linear.weight
            wq = self._soft(w, widths, self._weight_block_amax(w))
            if self.quantize_input:
                xq = self._soft(x, widths if self.tie else self._soft_widths("input"))
            else:
                xq = x
        return F.linear(xq, wq.to(xq.dtype), self.linear.bias)

    def extra_repr(self) -> str:
        return (
            f"family={self.family.name}, block_size={self.block_size}, tie={self.tie}, "
            f"fixed_format={self.fixed_format}"
        )
