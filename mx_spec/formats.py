"""The one table of OCP MX v1.0 format parameters.

Every number the rest of ``mx_spec`` uses (bias, emax, emin, max normal, min normal, min subnormal,
special codes, code widths) is derived here from the four primary facts of each element type
(kind, exponent bits, mantissa bits, which special values it reserves), in the style of gfloat's
``FormatInfo`` table.

Element types (OCP MX v1.0 §5, Table 1 and the element-type subsections; FP8 encodings from the
OCP 8-bit floating point spec OFP8 v1.0):

====== ===== ===== ==== ==== ===== ========== ========== ============== ======================
name   ebits mbits bias emax emin  max normal min normal min subnormal  specials
====== ===== ===== ==== ==== ===== ========== ========== ============== ======================
e4m3   4     3     7    8    -6    448        2^-6       2^-9           NaN = S.1111.111 only
e5m2   5     2     15   15   -14   57344      2^-14      2^-16          Inf = S.11111.00, NaN
e3m2   3     2     3    4    -2    28         2^-2       2^-4           none
e2m3   2     3     1    2    0     7.5        1          2^-3           none
e2m1   2     1     1    2    0     6          1          2^-1           none
int8   -     6     -    0    0     127/64     -          2^-6           none (0x80 = -2)
====== ===== ===== ==== ==== ===== ========== ========== ============== ======================

``int8`` is MXINT8's element (OCP MX v1.0 §5): an 8-bit two's complement integer with an implicit
scale of 2^-6, i.e. a fixed-point value code/64 in [-2, 127/64]. It is modelled on the same grid
as a float with ``emin = emax = 0`` and ``mbits = 6`` (step 2^-6 everywhere below 2), which lets
one rounding primitive serve all six element types.

The scale type is E8M0 (§5.4.1): unsigned exponent, bias 127, code 0xFF = NaN, no zero and no
sign; see :mod:`mx_spec.scale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

__all__ = [
    "ElementFormat",
    "MXFormat",
    "ELEMENT_FORMATS",
    "MX_FORMATS",
    "FLOAT_FORMATS",
    "get_element",
    "get_format",
    "DEFAULT_BLOCK_SIZE",
]

#: OCP MX v1.0 §5 fixes k = 32 for every concrete format.
DEFAULT_BLOCK_SIZE = 32
_Entry = TypeVar("_Entry")


@dataclass(frozen=True)
class ElementFormat:
    """One MX element type; all fields after ``has_nan`` are derived in ``__post_init__``.

    Attributes:
        name: short name ("e4m3", ..., "int8").
        kind: "fp" (sign-magnitude minifloat) or "int" (two's complement fixed point).
        ebits: exponent field width (0 for "int").
        mbits: mantissa field width; for "int" the number of fraction bits (6 for MXINT8).
        has_inf: the all-ones exponent with zero mantissa encodes ±Inf (E5M2 only).
        has_nan: the format reserves NaN codes (E4M3: S.1111.111; E5M2: S.11111.{01,10,11}).
        bits: code width in bits (1 + ebits + mbits for "fp", 8 for "int").
        bias: exponent bias 2^(ebits-1) - 1 (0 for "int").
        emin: exponent of the smallest normal, 1 - bias (0 for "int").
        emax: exponent of the largest normal (OCP Table 1 "emax_elem").
        max_normal: largest finite magnitude.
        min_normal: smallest normal magnitude 2^emin (for "int": the grid has no normals; 1.0
            is reported as 2^emin for uniformity).
        min_subnormal: smallest positive magnitude 2^(emin - mbits).
        max_code: largest magnitude code (sign bit clear) that encodes a finite value; for "int"
            the largest positive two's complement code 0x7F.
        nan_code: positive-sign NaN code, or None.
        inf_code: positive-sign Inf code, or None.
        sign_bit: the mask of the sign bit in a code (for "int": 0x80, the two's complement MSB).
        code_mask: (1 << bits) - 1.
    """

    name: str
    kind: Literal["fp", "int"]
    ebits: int
    mbits: int
    has_inf: bool
    has_nan: bool
    bits: int = field(init=False)
    bias: int = field(init=False)
    emin: int = field(init=False)
    emax: int = field(init=False)
    max_normal: float = field(init=False)
    min_normal: float = field(init=False)
    min_subnormal: float = field(init=False)
    max_code: int = field(init=False)
    nan_code: int | None = field(init=False)
    inf_code: int | None = field(init=False)
    sign_bit: int = field(init=False)
    code_mask: int = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        if self.kind == "int":
            bits, bias, emin, emax = 8, 0, 0, 0
            max_code = (1 << (bits - 1)) - 1  # 0x7F; 0x80 (-2.0) is never produced
            max_normal = max_code * 2.0 ** -self.mbits
            nan_code = inf_code = None
        else:
            bits = 1 + self.ebits + self.mbits
            bias = (1 << (self.ebits - 1)) - 1
            emin = 1 - bias
            top_exp_field = (1 << self.ebits) - 1
            mant_all = (1 << self.mbits) - 1
            if self.has_inf:  # IEEE-like: whole top binade reserved for Inf/NaN
                top_exp_field -= 1
                max_mant = mant_all
                inf_code = ((top_exp_field + 1) << self.mbits) | 0
                nan_code = ((top_exp_field + 1) << self.mbits) | mant_all
            elif self.has_nan:  # E4M3: only S.1111.111 is NaN
                max_mant = mant_all - 1
                inf_code = None
                nan_code = (top_exp_field << self.mbits) | mant_all
            else:
                max_mant = mant_all
                inf_code = nan_code = None
            emax = top_exp_field - bias
            max_code = (top_exp_field << self.mbits) | max_mant
            max_normal = (1.0 + max_mant / (1 << self.mbits)) * 2.0**emax
        set_(self, "bits", bits)
        set_(self, "bias", bias)
        set_(self, "emin", emin)
        set_(self, "emax", emax)
        set_(self, "max_normal", float(max_normal))
        set_(self, "min_normal", float(2.0**emin))
        set_(self, "min_subnormal", float(2.0 ** (emin - self.mbits)))
        set_(self, "max_code", max_code)
        set_(self, "nan_code", nan_code)
        set_(self, "inf_code", inf_code)
        set_(self, "sign_bit", 1 << (bits - 1))
        set_(self, "code_mask", (1 << bits) - 1)

    @property
    def n_codes(self) -> int:
        """Number of distinct codes, 2^bits."""
        return 1 << self.bits


@dataclass(frozen=True)
class MXFormat:
    """A concrete MX format (OCP MX v1.0 §5, Table 1): element type + E8M0 scale + block size."""

    name: str
    element: ElementFormat
    block_size: int = DEFAULT_BLOCK_SIZE

    @property
    def scale_bits(self) -> int:
        """Width of the shared scale (E8M0): 8."""
        return 8

    @property
    def bits_per_element(self) -> float:
        """Storage cost per element including the amortised scale: bits + 8 / block_size."""
        return self.element.bits + self.scale_bits / self.block_size


ELEMENT_FORMATS: dict[str, ElementFormat] = {
    e.name: e
    for e in (
        ElementFormat("e4m3", "fp", ebits=4, mbits=3, has_inf=False, has_nan=True),
        ElementFormat("e5m2", "fp", ebits=5, mbits=2, has_inf=True, has_nan=True),
        ElementFormat("e3m2", "fp", ebits=3, mbits=2, has_inf=False, has_nan=False),
        ElementFormat("e2m3", "fp", ebits=2, mbits=3, has_inf=False, has_nan=False),
        ElementFormat("e2m1", "fp", ebits=2, mbits=1, has_inf=False, has_nan=False),
        ElementFormat("int8", "int", ebits=0, mbits=6, has_inf=False, has_nan=False),
    )
}

MX_FORMATS: dict[str, MXFormat] = {
    f.name: f
    for f in (
        MXFormat("mxfp8_e4m3", ELEMENT_FORMATS["e4m3"]),
        MXFormat("mxfp8_e5m2", ELEMENT_FORMATS["e5m2"]),
        MXFormat("mxfp6_e3m2", ELEMENT_FORMATS["e3m2"]),
        MXFormat("mxfp6_e2m3", ELEMENT_FORMATS["e2m3"]),
        MXFormat("mxfp4_e2m1", ELEMENT_FORMATS["e2m1"]),
        MXFormat("mxint8", ELEMENT_FORMATS["int8"]),
    )
}


#: The MX float formats (every format but MXINT8), narrowest element first; equal widths with the
#: fewer exponent bits first: mxfp4_e2m1, mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2.
FLOAT_FORMATS: tuple[str, ...] = tuple(
    sorted((n for n, f in MX_FORMATS.items() if f.element.kind == "fp"),
           key=lambda n: (MX_FORMATS[n].element.bits, MX_FORMATS[n].element.ebits))
)


def _lookup(table: Mapping[str, _Entry], key: str | _Entry, cls: type[_Entry], kind: str) -> _Entry:
    """``key`` itself if it is a ``cls``, else ``table[key]``; a bad key names the valid choices.

    ``kind`` is how messages call the entries (``"element type"``, ``"MX format"``).
    """
    if isinstance(key, cls):
        return key
    if not isinstance(key, str):
        raise TypeError(
            f"{kind} must be a name or an {cls.__name__}, got {type(key).__name__}; "
            f"valid names: {', '.join(table)}"
        )
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {kind} {key!r}; valid names: {', '.join(table)}") from None


def get_element(elem: str | ElementFormat) -> ElementFormat:
    """Return the element type named ``elem`` (an :class:`ElementFormat` passes through).

    Raises:
        ValueError: unknown name; the message lists the valid names.
        TypeError: ``elem`` is neither a string nor an ElementFormat.
    """
    return _lookup(ELEMENT_FORMATS, elem, ElementFormat, "element type")


def get_format(fmt: str | MXFormat) -> MXFormat:
    """Return the MX format named ``fmt`` (an :class:`MXFormat` passes through).

    Raises:
        ValueError: unknown name; the message lists the valid names.
        TypeError: ``fmt`` is neither a string nor an MXFormat.
    """
    return _lookup(MX_FORMATS, fmt, MXFormat, "MX format")
