"""Declared packed layouts (FP4 high nibble first, FP6 in 32-bit words of five) verify cleanly
when declared and fail, with a hint naming the layout, when not."""
from __future__ import annotations

import numpy as np
import pytest

import mx_spec
from mx_spec.layouts import parse_layouts
from mx_spec.conformance.verify import verify_quantizer

SPEC = [("floor", "rne")]


def _stream(mx):
    return np.moveaxis(mx.elements, mx.axis, -1).reshape(-1)


def fp4_high_first(x, fmt, **kw):
    """Independent packer: element 2i in the high nibble of byte i, 2i+1 in the low one."""
    mx = mx_spec.quantize(x, fmt, **kw)
    c = _stream(mx)
    out = bytearray((c.size + 1) // 2)
    for i, code in enumerate(c.tolist()):
        out[i // 2] |= code << 4 if i % 2 == 0 else code
    return {"scales": mx.scales, "elements": mx.elements, "packed": np.frombuffer(bytes(out), np.uint8)}


def fp6_pad32(x, fmt, **kw):
    """Independent packer: bit by bit, element k of word w in bits 6k..6k+5, 5 per 32-bit LE word."""
    mx = mx_spec.quantize(x, fmt, **kw)
    c = _stream(mx).tolist()
    out = bytearray(4 * ((len(c) + 4) // 5))
    for i, code in enumerate(c):
        word, slot = divmod(i, 5)
        for b in range(6):
            if code >> b & 1:
                bit = 32 * word + 6 * slot + b
                out[bit // 8] |= 1 << (bit % 8)
    return {"scales": mx.scales, "elements": mx.elements, "packed": np.frombuffer(bytes(out), np.uint8)}


def test_parse_layouts():
    assert parse_layouts("fp4=high-first, fp6=stream") == {"fp4=high-first"}
    with pytest.raises(ValueError, match=r"unknown layout 'fp4=swapped'; valid: fp4=low-first\|high-first"):
        parse_layouts("fp4=swapped")


def test_fp4_high_first_passes_when_declared():
    declared = verify_quantizer(fp4_high_first, formats=["mxfp4_e2m1"], modes=SPEC, layouts="fp4=high-first")
    assert declared.verdict == "PASS" and declared.field_cases["packed"] == declared.n_passed
    assert "declared packed layouts: fp4=high-first" in declared.summary()
    undeclared = verify_quantizer(fp4_high_first, formats=["mxfp4_e2m1"], modes=SPEC)
    assert not undeclared.ok and any("the layout fp4=high-first" in h for h in undeclared.hints())


@pytest.mark.parametrize("fmt", ["mxfp6_e3m2", "mxfp6_e2m3"])
def test_fp6_pad32_passes_when_declared(fmt):
    declared = verify_quantizer(fp6_pad32, formats=[fmt], modes=SPEC, layouts="fp6=pad32")
    assert declared.verdict == "PASS", declared.summary()
    assert not verify_quantizer(fp6_pad32, formats=[fmt], modes=SPEC).ok


def test_layouts_leave_other_widths_alone():
    """fp4/fp6 layouts do not change MXFP8/MXINT8 bytes."""
    def full(x, fmt, **kw):
        mx = mx_spec.quantize(x, fmt, **kw)
        return {"scales": mx.scales, "elements": mx.elements, "packed": np.asarray(mx_spec.pack(mx))}

    report = verify_quantizer(full, formats=["mxfp8_e4m3", "mxint8"], modes=SPEC, layouts="fp4=high-first,fp6=pad32")
    assert report.verdict == "PASS"


def test_packed_mismatch_names_the_elements_the_byte_holds_in_the_declared_layout():
    from mx_spec.conformance.golden import load_golden
    from mx_spec.conformance.compare import compare_case

    case = next(c for c in load_golden(formats=["mxfp6_e3m2"])["mxfp6_e3m2"].cases if c.group == "grid")
    out = fp6_pad32(case.x, case.fmt, block_size=case.block_size, axis=case.axis)
    packed = out["packed"].copy()
    packed[7] ^= 0x80  # word 1, bits 24..31: element 5 + 4 = 9 (bits 24..29) and the 2 padding bits
    (m,) = compare_case(case, {"packed": packed}, layouts=frozenset({"fp6=pad32"}))
    assert m.index == (7,) and m.held == ((0, 9),)
    stream = np.asarray(mx_spec.pack(mx_spec.quantize(case.x, case.fmt))).copy()
    stream[7] ^= 0x01  # stream bits 56..63: elements 9 (bits 54..59) and 10 (bits 60..65)
    (m,) = compare_case(case, {"packed": stream})
    assert m.held == ((0, 9), (0, 10))
