"""Format families: one offset β in [0, β_max] moves a layer between two MX element formats.

A family is affine in β: ``E(β) = E0 + dE·β`` and ``M(β) = M0 + dM·β``; the element width is
``b(β) = 1 + E(β) + M(β)`` bits (sign + exponent + mantissa; the E8M0 block scale is counted
separately, see :func:`dmx.regularizer.storage_bits`). The built-in families:

* ``fp8_fp4``: ``E = 2 + β``, ``M = 1 + β``; β=0 MXFP4 E2M1 (4 bits), β=1 MXFP6 E3M2 (6 bits),
  β=2 MXFP8 E4M3 (8 bits).
* ``fp6_fp4``: ``E = 2``, ``M = 1 + β``; β=0 MXFP4 E2M1 (4 bits), β=2 MXFP6 E2M3 (6 bits).

Add a family by constructing :class:`FormatFamily` and registering it in :data:`FAMILIES`.
``E`` and ``M`` accept floats or torch tensors, so the same object drives the differentiable
path (``dmx.autograd``) and the reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from mx_spec.formats import MX_FORMATS
from mx_spec.minifloat import E4M3_MAX_NORMAL

__all__ = ["FormatFamily", "FAMILIES", "DEFAULT_FAMILY", "get_family", "STANDARD_ELEMENT_WIDTHS"]

Num = TypeVar("Num")

#: (ebits, mbits) of the standard MX formats reachable as integer points of a minifloat family:
#: the float formats without Inf (MXFP4 E2M1, MXFP6 E3M2/E2M3, MXFP8 E4M3).  MXFP8 E5M2 is not
#: one: it reserves its top exponent for Inf/NaN, so it is not the point (5, 2) of the
#: generalised minifloat (see ``mx_spec.minifloat``).
STANDARD_ELEMENT_WIDTHS: dict[tuple[int, int], str] = {
    (f.element.ebits, f.element.mbits): name
    for name, f in MX_FORMATS.items()
    if f.element.kind == "fp" and not f.element.has_inf
}


@dataclass(frozen=True)
class FormatFamily:
    """Affine family ``E(β) = ebits0 + ebits_slope·β``, ``M(β) = mbits0 + mbits_slope·β``."""

    name: str
    ebits0: float
    ebits_slope: float
    mbits0: float
    mbits_slope: float
    low_format: str
    high_format: str
    beta_max: float = 2.0
    max_normal_cap: float = E4M3_MAX_NORMAL

    def __post_init__(self) -> None:
        for beta, fmt in ((0.0, self.low_format), (self.beta_max, self.high_format)):
            widths = (self.ebits(beta), self.mbits(beta))
            if STANDARD_ELEMENT_WIDTHS.get((round(widths[0]), round(widths[1]))) != fmt or any(
                w != round(w) for w in widths
            ):
                raise ValueError(
                    f"family {self.name!r}: at beta={beta:g} the widths (E, M) = {widths} are "
                    f"not those of {fmt!r}; the ends must be standard MX formats, one of "
                    f"{sorted(STANDARD_ELEMENT_WIDTHS.values())}"
                )

    def ebits(self, beta: Num) -> Num:
        """Exponent width ``E(β)`` (float or tensor, differentiable)."""
        return self.ebits0 + self.ebits_slope * beta

    def mbits(self, beta: Num) -> Num:
        """Mantissa width ``M(β)`` (float or tensor, differentiable)."""
        return self.mbits0 + self.mbits_slope * beta

    def element_bits(self, beta: Num) -> Num:
        """Element width ``b(β) = 1 + E(β) + M(β)`` bits."""
        return 1.0 + self.ebits(beta) + self.mbits(beta)

    @property
    def bits_range(self) -> tuple[float, float]:
        """``(b(0), b(β_max))``: the element widths of the two ends."""
        return float(self.element_bits(0.0)), float(self.element_bits(self.beta_max))

    def format_at(self, beta: float) -> str:
        """Standard MX format name at an integer point β (``ValueError`` if there is none)."""
        e, m = float(self.ebits(float(beta))), float(self.mbits(float(beta)))
        name = STANDARD_ELEMENT_WIDTHS.get((round(e), round(m)))
        if name is None or e != round(e) or m != round(m):
            raise ValueError(
                f"family {self.name!r} has no standard MX format at beta={beta!r} (E={e:g}, "
                f"M={m:g}); its deployable points are beta=0 ({self.low_format}) and "
                f"beta={self.beta_max:g} ({self.high_format})"
            )
        return name

    def validate_target(self, target_bits: float) -> float:
        """Return ``target_bits`` if it lies within :attr:`bits_range`, else ``ValueError``."""
        lo, hi = self.bits_range
        t = float(target_bits)
        if not (lo <= t <= hi):
            raise ValueError(
                f"target of {target_bits!r} element bits is outside the range of family "
                f"{self.name!r}: [{lo:g}, {hi:g}] ({self.low_format} .. {self.high_format}); "
                f"choose a target in that range or another family ({sorted(FAMILIES)})"
            )
        return t


FAMILIES: dict[str, FormatFamily] = {
    "fp8_fp4": FormatFamily("fp8_fp4", 2.0, 1.0, 1.0, 1.0, "mxfp4_e2m1", "mxfp8_e4m3"),
    "fp6_fp4": FormatFamily("fp6_fp4", 2.0, 0.0, 1.0, 1.0, "mxfp4_e2m1", "mxfp6_e2m3"),
}


#: The family a layer, a calibration or a sweep uses unless told otherwise.
DEFAULT_FAMILY = "fp8_fp4"


def get_family(family: str | FormatFamily) -> FormatFamily:
    """Look up a family by name (a :class:`FormatFamily` passes through)."""
    if isinstance(family, FormatFamily):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown format family {family!r}; valid families: {sorted(FAMILIES)}"
        ) from None
