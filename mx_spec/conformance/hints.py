"""Cause hints for a failed verification: patterns in the mismatches that point at a known bug.

Each rule looks at every mismatch of one kind and speaks only when all of them (at least one)
fit its pattern AND the cases they belong to are every failing case of the run, so a hint is
evidence, not a guess: "every element mismatch is a tie" means the implementation rounds
correctly everywhere except on ties, and a scale hint is never given where most cases fail on
their elements with a right scale.  Rules work on the report (the mismatches keep the input
value, x/2^X, the codes and the packed byte's elements; failing cases keep their outputs).
Each hint is checked by a test that plants the bug it names and one it must not be given for
(``tests/conformance/test_planted_bugs.py``).  Policy suggestions are :mod:`mx_spec.conformance.policy_hints`'.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mx_spec.elements import decode_table, encode_elements
from mx_spec.formats import get_format
from mx_spec.packing import pack
from mx_spec.quantize import dequantize, quantize
from mx_spec.scale import E8M0_NAN

#: A rule takes a VerifyReport (mx_spec.conformance.report imports this module, so no import back).
Rule = Callable[[Any], "str | None"]


def _items(report, field: str) -> list:
    """Mismatching items of ``field``, or [] unless their cases are every failing case of the run."""
    items = [m for m in report.mismatches
             if m.field == field and (m.expected_code is not None or field.startswith("decoded"))]
    return items if {m.case_id for m in items} == set(report.failed_cases) else []


def _grid(fmt_name: str) -> np.ndarray:
    """Sorted non-negative finite element values of a format (float64)."""
    elem = get_format(fmt_name).element
    values = np.asarray(decode_table(elem, np.dtype(np.float64)))
    return np.unique(np.abs(values[np.isfinite(values)]))


def _fmt(case_id: str) -> str:
    return case_id.split("/", 1)[0]


def hint_ties(report) -> str | None:
    items = [m for m in _items(report, "elements") if m.scaled_value is not None]
    if not items:
        return None
    for m in items:
        grid = _grid(_fmt(m.case_id))
        mids = (grid[:-1] + grid[1:]) / 2
        if not np.isin(abs(m.scaled_value), mids):
            return None
    return ("every element mismatch is a tie (x/2^X exactly halfway between two element values): check the tie "
            "rule: rne rounds ties to the even code, away rounds them away from zero")


def hint_scale_offset(report) -> str | None:
    items = _items(report, "scales")
    offsets = {m.actual_code - m.expected_code if E8M0_NAN not in (m.expected_code, m.actual_code) else None
               for m in items}
    if not items or len(offsets) != 1 or None in offsets:
        return None
    (k,) = offsets
    if k == 1:
        return ("scale one high in every mismatching block (X = ceil instead of floor of log2(amax)? amax rounded "
                "to a narrower float, or a float log2, "
                "that rounds up just below a power of two?)")
    if k == -1:
        text = ("scale one low in every mismatching block (amax, or amax / max normal, rounded to a narrower float "
                "before the scale rule? emax one high?)")
        cases = [report._cases.get(c) for c in report.failed_cases]
        if "rceil=float32" in report.policies and all(c is not None and c.scale_mode == "rceil"
                                                     and c.input_dtype == "float64" for c in cases):
            text += ("; every failing case is rceil on a float64 input: the declared rceil=float32 covers float32, "
                     "bfloat16 and float16 inputs only, float64 stays exact")
        return text
    return f"scale off by {k:+d} in every mismatching block: check the shared-exponent rule and emax"


def _elem(m):
    return get_format(_fmt(m.case_id)).element


def _max_normal_codes(elem) -> set[int]:
    """The codes of +max normal and -max normal."""
    return {int(c) for c in encode_elements(np.array([elem.max_normal, -elem.max_normal]), elem)}


def hint_saturation(report) -> str | None:
    items = [m for m in _items(report, "elements") if m.scaled_value is not None]
    if not items or not all(abs(m.scaled_value) > _elem(m).max_normal for m in items):
        return None
    if not all(m.expected_code in _max_normal_codes(_elem(m)) for m in items):
        return None  # a declared policy expects another code there (int8=full-range: -2.0)
    text = ("every element mismatch has |x/2^X| above the max normal: such values must saturate to ±max normal "
            "(never Inf/NaN codes, never a wrapped code)")
    if any(_elem(m).name == "e4m3" and m.actual_code & 0x7F == _elem(m).nan_code for m in items):
        text += "; the NaN code S.1111.111 was produced: E4M3's max normal is 448, not 480"
    return text


def hint_subnormal_flush(report) -> str | None:
    items = _items(report, "elements")
    if not items:
        return None
    for m in items:
        e = _elem(m)
        if e.kind != "fp":
            return None
        mag_exp, mag_act = m.expected_code & ~e.sign_bit, m.actual_code & ~e.sign_bit
        if not (0 < mag_exp < (1 << e.mbits) and mag_act == 0):
            return None
    return "every element mismatch expects a subnormal element code and got ±0: element subnormals are flushed"


def hint_int8_minus_128(report) -> str | None:
    items = _items(report, "elements")
    if items and all(m.expected_code == 0x81 and m.actual_code == 0x80 for m in items):
        return ("MXINT8 elements saturate to -128 (0x80) where mx_spec saturates symmetrically to -127 (0x81): "
                "declare the policy int8=full-range if that is your implementation's rule")
    return None


def hint_zero_blocks(report) -> str | None:
    items = _items(report, "scales")
    if not items:
        return None
    for m in items:
        case = report._cases.get(m.case_id)
        if case is None or not _block_is_zero(case, m.index):
            return None
    return "every scale mismatch is an all-zero block: its scale must be 0x00 (floor(log2 0) = -inf clamps to X = -127)"


def _block_is_zero(case, block_index: tuple[int, ...]) -> bool:
    axis = case.axis % case.x.ndim
    sl = [slice(i, i + 1) for i in block_index]
    b = block_index[axis]
    sl[axis] = slice(b * case.block_size, (b + 1) * case.block_size)
    return bool(np.all(np.asarray(case.x[tuple(sl)], dtype=np.float64) == 0))


def _float32_detour(case) -> dict[str, np.ndarray]:
    """mx_spec's outputs for the case's input first rounded to float32 (the usual float64 bug)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mx = quantize(case.x.astype(np.float32), case.fmt, block_size=case.block_size, axis=case.axis,
                              scale_mode=case.scale_mode, rounding=case.rounding)
        return {"scales": mx.scales.reshape(-1), "elements": mx.elements,
                "packed": np.asarray(pack(mx), np.uint8),
                "decoded_f32": dequantize(mx, dtype=np.float32),
                "decoded_f64": dequantize(mx, dtype=np.float64)}


def _same_outputs(a: dict, b: dict) -> bool:
    """``b``'s fields equal ``a``'s (codes exactly, floats bit for bit with NaN = NaN)."""
    for name, given in b.items():
        want, got = np.asarray(a[name]).reshape(-1), np.asarray(given).reshape(-1)
        if want.shape != got.shape:
            return False
        if want.dtype.kind == "f":
            if got.dtype != want.dtype or not np.array_equal(want, got, equal_nan=True):
                return False
        elif got.dtype.kind not in "ui" or not np.array_equal(want, got.astype(np.int64)):
            return False
    return True


def hint_float64(report) -> str | None:
    """Only when every failing case has a float64 input, its outputs are exactly a float32
    detour's, and no passing float64 case refutes the detour (it would have failed there): a
    FTZ, decode or log2 bug that happens to touch only float64 cases gets no such hint."""
    ids = list(report.failed_cases)
    if not ids or any(c not in report._cases or c not in report._actuals for c in ids):
        return None
    if not all(report._cases[c].input_dtype == "float64" for c in ids):
        return None
    if not all(_same_outputs(_float32_detour(report._cases[c]), report._actuals[c]) for c in ids):
        return None
    for case in report._float64_passed:
        golden = {"scales": case.scales, "elements": case.elements}
        if not _same_outputs(_float32_detour(case), golden):
            return None
    return ("every failing case has a float64 input and its outputs are exactly those of the input rounded to "
            "float32 first: quantize float64 in float64 (the detour double-rounds near ties and overflows beyond "
            "3.4e38)")


def hint_nibble_swap(report) -> str | None:
    items = _items(report, "packed")
    if not items or not all(((m.expected_code << 4) | (m.expected_code >> 4)) & 0xFF == m.actual_code for m in items):
        return None
    if "fp4=high-first" in report.layouts:
        return ("all packed mismatches are nibble swaps of the declared fp4=high-first layout: your bytes are in "
                "the default low-first layout (the even-index element in the LOW nibble): drop the declared "
                "layout fp4=high-first")
    return ("all packed mismatches are nibble swaps: FP4 puts the even-index element in the LOW nibble of each "
            "byte (declare the layout fp4=high-first if that is your layout)")


def _msb_first_fp6(case) -> np.ndarray:
    """The FP6 element stream of a case packed MSB-first (the usual wrong bit order)."""
    codes = np.moveaxis(case.elements, case.axis % case.x.ndim, -1).reshape(-1)
    bits = ((codes[:, None] >> np.arange(5, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="big")


def hint_fp6_msb_first(report) -> str | None:
    items = _items(report, "packed")
    if not items:
        return None
    msb_first: dict[str, np.ndarray] = {}  # one re-packing per case, not per byte
    for m in items:
        case = report._cases.get(m.case_id)
        if case is None or get_format(case.fmt).element.bits != 6:
            return None
        if m.case_id not in msb_first:
            msb_first[m.case_id] = _msb_first_fp6(case)
        if msb_first[m.case_id][m.index[0]] != m.actual_code:
            return None
    return ("every packed FP6 mismatch matches an MSB-first bit stream: the stream is LSB-first (element i in "
            "stream bits 6i..6i+5, stream bit j = bit j mod 8 of byte j // 8)")


def hint_nan_decode(report) -> str | None:
    items = [m for m in report.mismatches if m.field.startswith("decoded") and "nan" in m.expected
             and "nan" not in m.actual]
    if items and {m.case_id for m in items} == set(report.failed_cases):
        return (f"{len(items)} decoded value(s) of NaN-scale blocks (scale 0xFF) are not NaN: such blocks decode "
                "to NaN whatever their element codes")
    return None


def hint_exceptions(report) -> str | None:
    items = [m for m in report.mismatches if m.field == "exception"]
    if items:
        return f"{len(items)} case(s) raised an exception, e.g. {items[0].case_id}: {items[0].actual}"
    return None


RULES: tuple[Rule, ...] = (hint_ties, hint_scale_offset, hint_saturation, hint_subnormal_flush,
                           hint_int8_minus_128, hint_zero_blocks, hint_float64, hint_nibble_swap,
                           hint_fp6_msb_first, hint_nan_decode, hint_exceptions)


def cause_hints(report) -> list[str]:
    """Every rule's hint that applies to the report's mismatches (empty when nothing failed)."""
    if not report.mismatches:
        return []
    return [h for h in (rule(report) for rule in RULES) if h]
