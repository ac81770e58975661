"""The comparison engine of the verifier: one golden case against an implementation's outputs.

Comparison rules (``golden/README.md``, "Semantics" and "Comparison rules"):

* Scale codes and element codes are compared bit for bit.
* In a block whose expected scale is the E8M0 NaN code 0xFF the element codes and the packed
  bits that hold them are don't-care (``mx_spec`` writes 0), but its decoded values must be NaN:
  a NaN scale X makes every value of its block NaN (OCP MX v1.0).
* Decoded values are compared as bit patterns, except that any NaN matches any NaN.
* Declared policies (:mod:`mx_spec.policies`) replace the expected outputs of the cases that
  depend on them; declared packed layouts (:mod:`mx_spec.layouts`) the expected packed bytes.

Every difference is a :class:`Mismatch` carrying what a reader (and :mod:`mx_spec.conformance.hints`) needs
to locate its cause.  Running a whole verification and booking its outcome is
:mod:`mx_spec.conformance.verify`; the report is :mod:`mx_spec.conformance.report`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from mx_spec.blocks import scales_shape
from mx_spec.formats import get_format
from mx_spec.conformance.golden import FLOAT_FIELDS, OUTPUT_FIELDS, GoldenCase, array_to_hex
from mx_spec.layouts import element_bit_offsets, pack_stream
from mx_spec.policies import INF_SATURATE, min_inf_block_exponent, outputs_of, policy_key, quantize_under_policies
from mx_spec.scale import E8M0_BIAS, E8M0_NAN

#: Mismatching items kept per case (enough for the hints; the count is exact regardless).
MAX_ITEMS_PER_CASE = 256


@dataclass(frozen=True)
class Mismatch:
    """One differing item of one case, with what a reader needs to locate the cause."""

    case_id: str
    field: str
    index: tuple[int, ...]
    expected: str
    actual: str
    detail: str = ""
    group: str = ""
    expected_code: int | None = None
    actual_code: int | None = None
    input_value: float | None = None
    scaled_value: float | None = None
    held: tuple[tuple[int, ...], ...] = ()

    def describe(self) -> str:
        where = f"{self.field}[{', '.join(map(str, self.index))}]" if self.index else self.field
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{self.case_id}: {where}: expected {self.expected}, got {self.actual}{extra}"


# --------------------------------------------------------------------------- field names
def check_field_names(names: Iterable[str], where: str) -> None:
    """Unknown output field names are an error (a misspelt field would otherwise check nothing)."""
    unknown = sorted(set(names) - set(OUTPUT_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown output field(s) {unknown}; valid field names: {list(OUTPUT_FIELDS)}")


# --------------------------------------------------------------------------- layout helpers
def _code_text(code: int, bits: int) -> str:
    return f"0x{code:0{(bits + 3) // 4}x} (0b{code:0{bits}b})"


def _exponent_text(code: int) -> str:
    """The shared exponent X of an E8M0 code, 'NaN' for 0xFF."""
    return "NaN" if int(code) == E8M0_NAN else str(int(code) - E8M0_BIAS)


def _element_bits(fmt_name: str) -> int:
    return int(get_format(fmt_name).element.bits)


def _scales_shape(case: GoldenCase) -> tuple[int, ...]:
    return scales_shape(case.x.shape, case.axis % case.x.ndim, case.block_size)


def scale_per_element(case: GoldenCase, scales: np.ndarray | None = None) -> np.ndarray:
    """The (expected) scale code of each element's block, shaped like the input."""
    axis = case.axis % case.x.ndim if case.x.ndim else 0
    n = case.x.shape[axis] if case.x.ndim else 0
    sc = (case.scales if scales is None else scales).reshape(_scales_shape(case))
    return np.take(sc, np.arange(n) // case.block_size, axis=axis)


def _packed_order_index(case: GoldenCase) -> np.ndarray:
    """For each position of the packed element stream, the element's flat C-order index."""
    axis = case.axis % case.x.ndim
    flat = np.arange(case.x.size).reshape(case.x.shape)
    return np.moveaxis(flat, axis, -1).reshape(-1)


def _held_elements(case: GoldenCase, byte: int, layouts: frozenset[str]) -> tuple[tuple[int, ...], ...]:
    """Indices (in the input's shape) of the elements whose bits byte ``byte`` of ``packed`` holds."""
    bits = _element_bits(case.fmt)
    order = _packed_order_index(case)
    start = element_bit_offsets(order.size, get_format(case.fmt).element, layouts)
    inside = (start <= 8 * byte + 7) & (start + bits - 1 >= 8 * byte)
    return tuple(tuple(int(i) for i in np.unravel_index(order[k], case.x.shape)) for k in np.flatnonzero(inside))


def _stream(case: GoldenCase, elements: np.ndarray) -> np.ndarray:
    """Element codes in packing order: the block axis moved last, C order."""
    return np.moveaxis(elements, case.axis % case.x.ndim, -1).reshape(-1)


def _packed_bytes(case: GoldenCase, elements: np.ndarray, layouts: frozenset[str]) -> np.ndarray:
    """The packed bytes of ``elements`` in the case's stream order under the declared layouts."""
    return pack_stream(_stream(case, elements), get_format(case.fmt).element, layouts)


def _packed_care(case: GoldenCase, scales: np.ndarray, layouts: frozenset[str]) -> np.ndarray | None:
    """Mask of packed bytes that must match, or None when no block has a NaN scale."""
    nan_elems = scale_per_element(case, scales) == E8M0_NAN
    if not nan_elems.any():
        return None
    # Bytes that hold any don't-care element bit are don't-care: find them by packing a
    # marker array that sets only the bits of NaN-scale elements.
    marker = np.where(nan_elems, np.uint8((1 << _element_bits(case.fmt)) - 1), np.uint8(0))
    return _packed_bytes(case, marker, layouts) == 0


# --------------------------------------------------------------------------- expected outputs
def expected_outputs(case: GoldenCase, policies: frozenset[str] = frozenset(),
                     actual: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The case's expected fields under the declared ``policies`` (the golden ones when none applies).

    Fixed-output policies read the outputs stored in the golden file; ``inf=saturate`` takes the
    scale of each ±Inf block from ``actual["scales"]`` when that is a finite code at least the
    block's finite-value scale, else expects that finite-value scale.
    """
    base = {"scales": case.scales, "elements": case.elements, "packed": np.frombuffer(case.packed, np.uint8),
            "decoded_f32": case.decoded_f32, "decoded_f64": case.decoded_f64}
    applied = policies & set(case.policies)
    if not applied:
        return base
    if INF_SATURATE not in applied:
        stored = dict(case.policy_outputs.get(policy_key(applied), {}))
        if "packed" in stored:
            stored["packed"] = np.frombuffer(stored["packed"], np.uint8)
        return {**base, **stored}
    kw = dict(block_size=case.block_size, axis=case.axis, scale_mode=case.scale_mode)
    lowest = min_inf_block_exponent(case.x, case.fmt, policies=applied, **kw) + E8M0_BIAS
    given = None if actual is None or "scales" not in actual else np.asarray(actual["scales"]).reshape(-1)
    if given is None or given.size != lowest.size:
        chosen = lowest
    else:
        ok = (given != E8M0_NAN) & (given.astype(np.float64) >= lowest.reshape(-1))
        chosen = np.where(ok, given, lowest.reshape(-1))
    with np.errstate(invalid="ignore", over="ignore"):
        mx = quantize_under_policies(case.x, case.fmt, rounding=case.rounding, policies=applied,
                                     inf_scales=chosen.astype(np.uint8), **kw)
        return outputs_of(mx)


# --------------------------------------------------------------------------- comparisons
def _compare_codes(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray, bits: int,
                   care: np.ndarray | None, exp_scales: np.ndarray,
                   layouts: frozenset[str] = frozenset()) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}", group=case.group)]
    differ = expected != actual
    if care is not None:
        differ &= care
    out = []
    per_elem_scale = scale_per_element(case, exp_scales) if name == "elements" else None
    for idx in list(zip(*np.nonzero(differ)))[:MAX_ITEMS_PER_CASE]:
        idx = tuple(int(i) for i in idx)
        detail, value, scaled, held = "", None, None, ()
        if per_elem_scale is not None:
            axis = case.axis % case.x.ndim
            sc = int(per_elem_scale[idx])
            value = float(case.x[idx])
            scaled = value * 2.0 ** (E8M0_BIAS - sc) if sc != E8M0_NAN else float("nan")
            detail = (f"block {idx[axis] // case.block_size} along axis {case.axis}, scale 0x{sc:02x}, input "
                      f"{array_to_hex(case.x[idx], case.input_dtype)} = {value!r}, x/2^X = {scaled!r}")
        elif name == "packed":
            held = _held_elements(case, idx[0], layouts)
            detail = "holds element(s) " + ", ".join(str(list(h)) for h in held)
        elif name == "scales":
            detail = f"block {list(idx)}: X expected {_exponent_text(expected[idx])}, got {_exponent_text(actual[idx])}"
        out.append(Mismatch(case.id, name, idx, _code_text(int(expected[idx]), bits),
                            _code_text(int(actual[idx]), bits), detail, case.group,
                            int(expected[idx]), int(actual[idx]), value, scaled, held))
    return out


def _compare_floats(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}", group=case.group)]
    width = FLOAT_FIELDS[name]
    bits_dtype = np.uint32 if width == "float32" else np.uint64
    both_nan = np.isnan(expected) & np.isnan(actual)
    differ = (expected.view(bits_dtype) != actual.view(bits_dtype)) & ~both_nan
    return [Mismatch(case.id, name, tuple(int(i) for i in idx),
                     f"{array_to_hex(expected[idx], width)} ({float(expected[idx])!r})",
                     f"{array_to_hex(actual[idx], width)} ({float(actual[idx])!r})",
                     f"input {float(case.x[idx])!r}", case.group, input_value=float(case.x[idx]))
            for idx in list(zip(*np.nonzero(differ)))[:MAX_ITEMS_PER_CASE]]


def _as_codes(case: GoldenCase, name: str, value: Any, bits: int) -> tuple[np.ndarray | None, Mismatch | None]:
    """``value`` as uint8 codes of ``bits`` bits, or a Mismatch saying what was given instead.

    Nothing is coerced: codes must be an integer array (or ``bytes``) with every item in
    0 .. 2^bits - 1; an ``int8`` array is read as its two's complement bytes (the same bits).
    A float array (even of whole numbers), a negative or too large item fails the case.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(value), dtype=np.uint8), None
    arr = np.asarray(value)
    top = (1 << bits) - 1
    want = f"integer codes in 0..{top} ({bits}-bit {name} codes)"
    if arr.dtype == np.int8:
        return arr.view(np.uint8), None
    if arr.dtype.kind not in "ui":
        flat = arr.reshape(-1)
        example = f", e.g. {flat[0]!r}" if flat.size else ""
        return None, Mismatch(case.id, name, (), want, f"a {arr.dtype} array{example}",
                              "codes must be integers; nothing was rounded or truncated", case.group)
    bad = np.flatnonzero((arr.reshape(-1) < 0) | (arr.reshape(-1) > top))
    if bad.size:
        idx = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape)) if arr.ndim else ()
        return None, Mismatch(case.id, name, idx, want, f"{int(arr.reshape(-1)[bad[0]])} ({bad.size} item(s) out "
                              "of range)", "codes outside the field's range are not wrapped", case.group)
    return arr.astype(np.uint8), None


def _as_floats(case: GoldenCase, name: str, value: Any) -> tuple[np.ndarray | None, Mismatch | None]:
    """``value`` as the field's float dtype, or a Mismatch when it was given in another precision."""
    width = FLOAT_FIELDS[name]
    arr = np.asarray(value)
    if arr.dtype != np.dtype(width):
        return None, Mismatch(case.id, name, (), f"{width} values", f"a {arr.dtype} array",
                              f"{name} must be decoded in {width}: values in another precision are not "
                              "converted (a rounding could hide a wrong decode)", case.group)
    return arr, None


def compare_case(case: GoldenCase, actual: dict[str, Any], policies: frozenset[str] = frozenset(),
                 layouts: frozenset[str] = frozenset()) -> list[Mismatch]:
    """Mismatches between a golden case (under the declared ``policies``) and an implementation's outputs.

    ``actual`` maps field names (any of ``OUTPUT_FIELDS``) to arrays: integer codes for
    ``scales``/``elements``/``packed`` (in range, never coerced), float32 / float64 arrays for
    ``decoded_f32`` / ``decoded_f64``.  Missing fields are not checked (:func:`checked_fields`
    says which were); unknown names raise ValueError.
    """
    check_field_names(actual, f"outputs of case {case.id}")
    exp = expected_outputs(case, policies, actual)
    out: list[Mismatch] = []
    care = scale_per_element(case, exp["scales"]) != E8M0_NAN
    if "scales" in actual:
        got, bad = _as_codes(case, "scales", actual["scales"], 8)
        if bad is not None:
            out.append(bad)
        elif got.size != exp["scales"].size:
            out.append(Mismatch(case.id, "scales", (), f"{exp['scales'].size} scale codes", f"shape {got.shape}",
                                group=case.group))
        else:
            shape = _scales_shape(case)
            out += _compare_codes(case, "scales", exp["scales"].reshape(shape), got.reshape(shape),
                                  8, None, exp["scales"])
    if "elements" in actual:
        got, bad = _as_codes(case, "elements", actual["elements"], _element_bits(case.fmt))
        if bad is not None:
            out.append(bad)
        else:
            if got.size == case.elements.size:
                got = got.reshape(case.elements.shape)
            out += _compare_codes(case, "elements", exp["elements"], got, _element_bits(case.fmt), care,
                                  exp["scales"])
    if "packed" in actual:
        got, bad = _as_codes(case, "packed", actual["packed"], 8)
        want = _packed_bytes(case, exp["elements"], layouts) if layouts else exp["packed"]
        if bad is not None:
            out.append(bad)
        elif got.size != want.size:
            out.append(Mismatch(case.id, "packed", (), f"{want.size} bytes", f"{got.size} bytes", group=case.group))
        else:
            out += _compare_codes(case, "packed", want, got.reshape(-1), 8, _packed_care(case, exp["scales"], layouts),
                                  exp["scales"], layouts)
    for name in FLOAT_FIELDS:
        if name in actual:
            ref = exp[name]
            got, bad = _as_floats(case, name, actual[name])
            if bad is not None:
                out.append(bad)
                continue
            if got.size == ref.size:
                got = got.reshape(ref.shape)
            out += _compare_floats(case, name, ref, got)
    return out


def checked_fields(actual: dict[str, Any]) -> frozenset[str]:
    """The fields of ``actual`` that :func:`compare_case` compares."""
    return frozenset(f for f in OUTPUT_FIELDS if f in actual)


def undeclared_policy_match(case: GoldenCase, actual: dict[str, Any], policies: frozenset[str],
                             layouts: frozenset[str]) -> str | None:
    """The smallest set of undeclared policies under which a failing case would pass, if any."""
    candidates = [p for p in case.policies if p not in policies]
    for r in range(1, len(candidates) + 1):
        for combo in combinations(candidates, r):
            if not compare_case(case, actual, policies | set(combo), layouts):
                return ",".join(sorted(combo))
    return None

