"""The verifier: mx_spec passes its golden vectors, and injected faults are caught and located."""
from __future__ import annotations

import json

import numpy as np
import pytest

import mx_spec
from mx_spec.conformance.golden import array_to_hex, load_golden
from mx_spec.conformance.compare import compare_case
from mx_spec.conformance.results_files import load_results
from mx_spec.conformance.verify import verify_quantizer, verify_results


@pytest.fixture(scope="module")
def golden():
    return load_golden()


def test_mx_spec_passes_every_golden_case():
    report = verify_quantizer(mx_spec.quantize)
    assert report.ok, report.summary()
    assert report.n_skipped == 0
    assert report.n_passed == sum(len(g.cases) for g in load_golden().values())


def test_full_outputs_pass_including_packed_and_decoded(golden):
    """Packed bytes and float32/float64 decodes of mx_spec match the golden ones too."""
    def full(x, fmt, **kw):
        mx = mx_spec.quantize(x, fmt, **kw)
        return {"scales": mx.scales, "elements": mx.elements,
                "packed": np.frombuffer(bytes(mx_spec.pack(mx)), dtype=np.uint8),
                "decoded_f32": mx_spec.dequantize(mx, dtype=np.float32),
                "decoded_f64": mx_spec.dequantize(mx, dtype=np.float64)}

    report = verify_quantizer(full, formats=["mxfp6_e3m2", "mxfp4_e2m1"])
    assert report.ok, report.summary()


def test_flipped_element_bit_is_reported_with_bits(golden):
    case = next(c for c in golden["mxfp4_e2m1"].cases if c.group == "ties" and c.scale_mode == "floor"
                and c.rounding == "rne")
    expected = int(case.elements.reshape(-1)[5])
    actual = {"scales": case.scales, "elements": case.elements.copy()}
    actual["elements"].reshape(-1)[5] ^= np.uint8(0b0100)
    mism = compare_case(case, actual)
    assert len(mism) == 1
    m = mism[0]
    assert m.field == "elements" and m.index == (0, 5)
    assert m.expected == f"0x{expected:x} (0b{expected:04b})"
    assert m.actual == f"0x{expected ^ 4:x} (0b{expected ^ 4:04b})"
    assert "block 0" in m.detail and "scale 0x7f" in m.detail


def test_wrong_scale_is_reported(golden):
    case = next(c for c in golden["mxfp8_e4m3"].cases if c.group == "random")
    scales = case.scales.copy()
    scales[3] += 1
    mism = compare_case(case, {"scales": scales, "elements": case.elements})
    assert [(m.field, m.index) for m in mism] == [("scales", (3, 0))]
    assert "0b" in mism[0].expected


def test_nan_scale_block_elements_are_dont_care(golden):
    case = next(c for c in golden["mxfp6_e2m3"].cases if c.group == "nan_inf" and c.x.shape == (1, 96))
    assert case.scales.tolist()[:2] == [0xFF, 0xFF] and case.scales[2] != 0xFF
    el = case.elements.copy()
    el[0, :64] = 0x15  # anything in the two NaN-scale blocks
    assert compare_case(case, {"scales": case.scales, "elements": el}) == []
    el[0, 70] ^= 1  # but block 2 is checked
    assert [m.index for m in compare_case(case, {"scales": case.scales, "elements": el})] == [(0, 70)]
    dec = case.decoded_f32.copy()
    dec[0, :64] = np.float32(np.nan)
    assert compare_case(case, {"decoded_f32": dec}) == []
    dec[0, 64] = -dec[0, 64] if dec[0, 64] != 0 else np.float32(1.0)
    assert [m.field for m in compare_case(case, {"decoded_f32": dec})] == ["decoded_f32"]


def test_quantizer_skips_and_errors():
    def only_fp4(x, fmt, **kw):
        if fmt != "mxfp4_e2m1":
            raise NotImplementedError("fp4 only")
        return mx_spec.quantize(x, fmt, **kw)

    report = verify_quantizer(only_fp4, formats=["mxfp4_e2m1", "mxint8"], modes=[("floor", "rne")])
    assert report.verdict == "PARTIAL" and not report.ok and report.exit_code == 3
    assert report.n_skipped > 0 and report.n_passed > 0 and report.n_failed == 0
    assert all(r == "fp4 only" for r in report.skip_reasons.values())
    with pytest.raises(ValueError, match="valid"):
        verify_quantizer(mx_spec.quantize, modes=[("floor", "nearest")])
    with pytest.raises(ValueError, match="valid names"):
        verify_quantizer(mx_spec.quantize, formats=["mxfp5"])
    with pytest.raises(TypeError, match="must return"):
        verify_quantizer(lambda x, fmt, **kw: 3, formats=["mxint8"], modes=[("floor", "rne")])


def _results_for(golden, fmt, corrupt_id=None):
    cases = []
    for c in golden[fmt].cases:
        mx = mx_spec.quantize(c.x, fmt, block_size=c.block_size, axis=c.axis, scale_mode=c.scale_mode,
                              rounding=c.rounding)
        el = mx.elements.copy()
        if c.id == corrupt_id:
            el.reshape(-1)[0] ^= np.uint8(1)
        cases.append({"id": c.id, "scales": array_to_hex(mx.scales), "elements": array_to_hex(el)})
    return {"cases": cases}


def test_verify_results_json_and_npz(golden, tmp_path):
    fmt = "mxfp8_e5m2"
    doc = _results_for(golden, fmt)
    (tmp_path / "ok.json").write_text(json.dumps(doc))
    report = verify_results(tmp_path / "ok.json")
    assert report.verdict == "PARTIAL" and report.n_passed == len(golden[fmt].cases)  # one format of six
    assert report.files_read == [str(tmp_path / "ok.json")]
    assert verify_results(tmp_path / "ok.json", require=fmt).ok

    arrays = {}
    for rec in doc["cases"]:
        arrays[rec["id"] + "/scales"] = np.frombuffer(bytes.fromhex(rec["scales"]), dtype=np.uint8)
        arrays[rec["id"] + "/elements"] = np.frombuffer(bytes.fromhex(rec["elements"]), dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", **arrays)
    assert set(load_results(tmp_path / "ok.npz")) == {r["id"] for r in doc["cases"]}
    assert verify_results(tmp_path / "ok.npz", require=fmt).ok
    # bare case-id keys = element codes only
    np.savez(tmp_path / "codes.npz", **{k[: -len("/elements")]: v for k, v in arrays.items() if k.endswith("/elements")})
    report = verify_results(tmp_path / "codes.npz")
    assert report.verdict == "PARTIAL" and report.n_passed == len(golden[fmt].cases) and report.n_failed == 0

    bad_id = next(c.id for c in golden[fmt].cases if c.group == "grid" and c.scale_mode == "ceil")
    (tmp_path / "bad.json").write_text(json.dumps(_results_for(golden, fmt, corrupt_id=bad_id)))
    report = verify_results(tmp_path / "bad.json")
    assert report.verdict == "FAIL" and list(report.failed_cases) == [bad_id]

    with pytest.raises(ValueError, match="not golden case ids"):
        verify_results({"mxfp8_e5m2/floor/rne/nope/0000": {}})
    with pytest.raises(FileNotFoundError):
        verify_results(tmp_path / "missing.json")
