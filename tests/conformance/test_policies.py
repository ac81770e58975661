"""Declared policies: parsing, the policy model against the golden files, and hand-derived facts.

The peer tests (test_peers_gfloat.py, test_peers_torchao.py) show that gfloat and torchao pass
once they declare their policies; here a microxcaling-style FTZ quantizer does the same.
"""
from __future__ import annotations

import numpy as np
import pytest

import mx_spec
from mx_spec.conformance.golden import load_golden
from mx_spec.policies import NON_DEFAULT_POLICIES, parse_policies, quantize_under_policies, rceil_float32_exponent
from mx_spec.conformance.compare import compare_case, expected_outputs
from mx_spec.conformance.verify import verify_quantizer


@pytest.fixture(scope="module")
def golden():
    return load_golden()


def test_parse_policies():
    assert parse_policies("inf=saturate, int8=full-range") == {"inf=saturate", "int8=full-range"}
    assert parse_policies("inf=nan,ftz=off") == frozenset()  # defaults are dropped
    assert parse_policies(None) == frozenset()
    with pytest.raises(ValueError, match=r"unknown policy 'inf=clamp'; valid: inf=nan\|saturate, int8="):
        parse_policies("inf=clamp")
    with pytest.raises(ValueError, match="unknown policy 'nan=zero'"):
        parse_policies("nan=zero")
    assert set(NON_DEFAULT_POLICIES) == {"inf=saturate", "int8=full-range", "rceil=float32", "ftz=inputs"}


def test_policy_model_without_policies_is_mx_spec(golden):
    """The verifier's policy model (element rounding at a given X) reproduces every golden case."""
    n = 0
    for g in golden.values():
        for c in g.cases:
            with np.errstate(invalid="ignore", over="ignore"):
                mx = quantize_under_policies(c.x, c.fmt, block_size=c.block_size, axis=c.axis,
                                             scale_mode=c.scale_mode, rounding=c.rounding, policies=frozenset())
            assert np.array_equal(mx.scales.reshape(-1), c.scales), c.id
            assert np.array_equal(mx.elements, c.elements), c.id
            n += 1
    assert n == sum(len(g.cases) for g in golden.values())


def test_stored_variants_name_only_tagged_policies(golden):
    seen = set()
    for g in golden.values():
        for c in g.cases:
            for key in c.policy_outputs:
                assert set(key.split("+")) <= set(c.policies), c.id
                seen.update(key.split("+"))
    assert seen == {"int8=full-range", "rceil=float32", "ftz=inputs"}


def test_int8_full_range_hand_facts(golden):
    """MXINT8 at X = 0: -127.5/64 is the tie between -127 (odd) and -128 (even) -> 0x80 under
    both tie rules with full range; 0x81 symmetric.  -127.25/64 rounds to -127 either way."""
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [1.5, -127.5 / 64, -127.25 / 64, -127.9 / 64]
    for rounding in ("rne", "away"):
        sym = quantize_under_policies(x, "mxint8", block_size=32, axis=-1, scale_mode="floor", rounding=rounding,
                                      policies=frozenset())
        full = quantize_under_policies(x, "mxint8", block_size=32, axis=-1, scale_mode="floor", rounding=rounding,
                                       policies=frozenset({"int8=full-range"}))
        assert int(sym.scales[0, 0]) == int(full.scales[0, 0]) == 127
        assert sym.elements[0, :4].tolist() == [0x60, 0x81, 0x81, 0x81]
        assert full.elements[0, :4].tolist() == [0x60, 0x80, 0x81, 0x80]
    case = next(c for c in golden["mxint8"].cases if c.id == "mxint8/floor/rne/saturation/0000")
    exp = expected_outputs(case, frozenset({"int8=full-range"}))
    most_negative = case.x <= -(127.5 / 64)
    assert most_negative.any() and (exp["elements"][most_negative] == 0x80).all()
    assert (exp["decoded_f32"][most_negative] == -2.0).all()


def test_rceil_float32_hand_fact():
    """torchao's pinned case: amax = next float32 above 448 * 2^100.  amax / 448 rounds to
    2^100 (1 + 2^-23) in float32, whose float32 log2 rounds to 100.0: X = 100 (exact rule: 101)."""
    amax = np.nextafter(np.float32(448.0 * 2.0**100), np.float32(np.inf))
    assert rceil_float32_exponent(np.array([amax]), 448.0).tolist() == [100.0]
    assert rceil_float32_exponent(np.array([np.float32(448.0 * 2.0**100)]), 448.0).tolist() == [100.0]
    assert rceil_float32_exponent(np.array([np.float32(449.0)]), 448.0).tolist() == [1.0]
    assert rceil_float32_exponent(np.array([np.float32(0.0)]), 448.0).tolist() == [-127.0]
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = amax
    mx = quantize_under_policies(x, "mxfp8_e4m3", block_size=32, axis=-1, scale_mode="rceil", rounding="rne",
                                 policies=frozenset({"rceil=float32"}))
    assert int(mx.scales[0, 0]) == 127 + 100 and int(mx.elements[0, 0]) == 0x7E  # saturates to 448


def _ftz_quantize(x, fmt, **kw):
    """microxcaling-style: float32/bfloat16 subnormal inputs are flushed before quantizing."""
    if x.dtype.name in ("float32", "bfloat16"):
        wide = x.astype(np.float32)
        tiny = np.abs(wide) < np.float32(2.0**-126)
        x = np.where(tiny, wide * np.float32(0.0), wide).astype(x.dtype)  # keeps the sign of zero
    return mx_spec.quantize(x, fmt, **kw)


def test_microxcaling_style_ftz_passes_when_declared():
    formats = ["mxfp8_e4m3", "mxint8"]
    declared = verify_quantizer(_ftz_quantize, formats=formats, policies="ftz=inputs")
    assert declared.verdict == "PASS" and declared.policy_cases["ftz=inputs"] > 20
    undeclared = verify_quantizer(_ftz_quantize, formats=formats)
    assert not undeclared.ok
    assert any("pass under policy ftz=inputs" in h for h in undeclared.hints())
    assert set(undeclared._case_policy_match.values()) == {"ftz=inputs"}


def test_inf_saturate_rule(golden):
    """inf=saturate: the block's scale is the implementation's, but a finite code at least the
    finite values' scale, and the elements must be rounded at it (±Inf -> ±max normal)."""
    case = next(c for c in golden["mxfp8_e4m3"].cases if c.id == "mxfp8_e4m3/floor/rne/nan_inf/0001")
    policies = frozenset({"inf=saturate"})
    x = case.x.astype(np.float64)
    # the finite values (amax 3) alone would get X = floor(log2 3) - 8 = -7, code 0x78
    for code in (0x78, 0xA0, 0xFE):  # X = -7, 33, 127
        X = code - 127
        with np.errstate(over="ignore", invalid="ignore"):
            el = mx_spec.encode_elements(np.clip(x * 2.0**-X, -448, 448), "e4m3")
        scales = np.array([code], np.uint8)
        assert compare_case(case, {"scales": scales, "elements": el}, policies) == [], code
        bad = el.copy()
        bad[0, 0] ^= 1
        assert [m.index for m in compare_case(case, {"scales": scales, "elements": bad}, policies)] == [(0, 0)]
    with np.errstate(over="ignore", invalid="ignore"):
        low = mx_spec.encode_elements(np.clip(x * 2.0**8, -448, 448), "e4m3")  # X = -8: below -7
    assert [m.field for m in compare_case(case, {"scales": np.array([0x77], np.uint8), "elements": low},
                                          policies)][:1] == ["scales"]
    # the NaN scale is not a saturating choice once inf=saturate is declared
    assert compare_case(case, {"scales": case.scales, "elements": case.elements}, policies)
    assert compare_case(case, {"scales": case.scales, "elements": case.elements}) == []
