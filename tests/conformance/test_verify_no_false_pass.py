"""The verifier never says PASS for what it did not compare (issue #13 defects 1-3)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import mx_spec
from mx_spec.conformance.cli import main
from mx_spec.conformance.golden import array_to_hex, load_golden
from mx_spec.conformance.compare import compare_case
from mx_spec.conformance.verify import verify_quantizer, verify_results

FMT = "mxfp8_e5m2"


@pytest.fixture(scope="module")
def golden():
    return load_golden(formats=[FMT, "mxfp6_e2m3", "mxfp4_e2m1"])


def _codes(case):
    mx = mx_spec.quantize(case.x, case.fmt, block_size=case.block_size, axis=case.axis,
                          scale_mode=case.scale_mode, rounding=case.rounding)
    return mx.scales, mx.elements


def test_ids_only_results_compare_nothing_and_fail(golden, tmp_path, capsys):
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"cases": [{"id": c.id} for c in golden[FMT].cases[:50]]}))
    report = verify_results(path)
    assert not report.ok and report.n_passed == 0 and report.verdict == "NO CASES COMPARED"
    assert main(["verify", str(path)]) == 4
    assert "NO CASES COMPARED: 0 cases passed" in capsys.readouterr().out


def test_misspelt_field_names_are_an_error(golden, tmp_path, capsys):
    """A buggy implementation's output under "scale"/"element" must not pass every case."""
    recs = []
    for c in golden[FMT].cases:
        s, e = _codes(c)
        recs.append({"id": c.id, "scale": array_to_hex(s + 1), "element": array_to_hex(e)})
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"cases": recs}))
    with pytest.raises(ValueError, match=r"unknown output field\(s\) \['element', 'scale'\]; valid field names"):
        verify_results(path)
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'scales'" in err
    with pytest.raises(ValueError, match="unknown output field"):
        verify_quantizer(lambda x, fmt, **kw: {"scale": 0}, formats=["mxint8"], modes=[("floor", "rne")])


def test_empty_dict_quantizer_is_not_ok():
    report = verify_quantizer(lambda x, fmt, **kw: {}, formats=["mxint8"], modes=[("floor", "rne")])
    assert not report.ok and report.n_passed == 0 and report.n_skipped > 0
    assert "NO CASES COMPARED" in report.summary()


def test_bare_npz_keys_check_elements_only_and_say_partial(golden, tmp_path):
    arrays = {c.id: _codes(c)[1] for c in golden[FMT].cases}
    np.savez(tmp_path / "codes.npz", **arrays)
    report = verify_results(tmp_path / "codes.npz", require=f"{FMT},elements")
    assert report.n_failed == 0 and report.n_skipped == sum(len(g.cases) for g in load_golden().values()) - len(arrays)
    assert report.verdict == "FAIL"  # scales were never checked
    report = verify_results(tmp_path / "codes.npz")
    assert report.verdict == "PARTIAL" and report.exit_code == 3
    assert f"scales in 0, elements in {len(arrays)}, packed in 0" in report.summary()
    strict = verify_results(tmp_path / "codes.npz", require=FMT)
    assert strict.verdict == "FAIL" and not strict.ok
    assert any("scales checked in 0 of" in u for u in strict.unmet)


def test_subset_of_cases_is_partial_and_require_fails_it(golden):
    res = {}
    for c in golden[FMT].cases:
        if c.scale_mode == "floor" and c.rounding == "rne":
            s, e = _codes(c)
            res[c.id] = {"scales": s, "elements": e}
    report = verify_results(dict(res))
    assert not report.ok and report.verdict == "PARTIAL" and report.n_skipped > 0 and report.exit_code == 3
    met = verify_results(dict(res), require=f"{FMT},floor/rne")
    assert met.ok and not met.unmet and met.verdict == "PASS"  # exactly what was asked: other modes not asked
    assert "required (require/strict, over the whole golden set): mxfp8_e5m2 x floor/rne" in met.summary()
    whole = verify_results(dict(res), require="floor/rne")  # over the whole golden set: five formats missing
    assert whole.verdict == "FAIL" and any(u.startswith("mxint8 floor/rne") for u in whole.unmet)
    assert verify_results(dict(res), require=f"{FMT},floor/rne,packed").verdict == "FAIL"
    failed = verify_results(dict(res), require=f"{FMT},ceil")
    assert failed.verdict == "FAIL" and any("ceil/rne" in u and "not compared" in u for u in failed.unmet)
    strict = verify_results(dict(res), strict=True)
    assert strict.verdict == "FAIL" and any(u.startswith("mxint8 ") for u in strict.unmet)


def test_duplicate_result_ids_are_an_error(golden, tmp_path):
    c = golden[FMT].cases[0]
    s, e = _codes(c)
    rec = {"id": c.id, "scales": array_to_hex(s), "elements": array_to_hex(e)}
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"cases": [rec, rec]}))
    with pytest.raises(ValueError, match=f"duplicate result id '{c.id}'"):
        verify_results(path)
    # the same field of one case in two files of a results directory
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.json").write_text(json.dumps({"cases": [rec]}))
    (d / "b.json").write_text(json.dumps({"cases": [rec]}))
    with pytest.raises(ValueError, match="already given by another file"):
        verify_results(d)


def test_nan_scale_blocks_must_decode_to_nan(golden):
    """A dequantizer that ignores scale 0xFF fails (docs/MX.md: such a block decodes to NaN)."""
    case = next(c for c in golden["mxfp6_e2m3"].cases if c.group == "nan_inf" and c.x.shape == (1, 96))
    assert case.scales.tolist()[:2] == [0xFF, 0xFF]
    dec = case.decoded_f32.copy()
    dec[0, :64] = np.float32(0.0)  # element code 0 times any scale, ignoring the NaN
    mism = compare_case(case, {"decoded_f32": dec})
    assert {m.field for m in mism} == {"decoded_f32"} and len(mism) == 64
    dec64 = case.decoded_f64.copy()
    dec64[0, 3] = 0.0
    assert [m.index for m in compare_case(case, {"decoded_f64": dec64})] == [(0, 3)]
    # element codes and packed bits of those blocks stay don't-care
    el = case.elements.copy()
    el[0, :64] = 0x15
    assert compare_case(case, {"scales": case.scales, "elements": el}) == []


def test_decoded_f64_is_checked_where_the_file_omits_it(golden):
    """decoded_f64 absent from a record = the float32 decode widened: still compared."""
    case = next(c for c in golden[FMT].cases if c.group == "grid")
    wrong = case.decoded_f32.astype(np.float64)
    wrong[0, 1] = -wrong[0, 1] if wrong[0, 1] else 1.0
    assert [m.field for m in compare_case(case, {"decoded_f64": wrong})] == ["decoded_f64"]


def test_raising_quantizer_fails_that_case_and_goes_on():
    """gfloat raises ValueError on NaN input for FP4: that case fails, the others are compared."""
    def nan_hater(x, fmt, **kw):
        if np.isnan(np.asarray(x, dtype=np.float64)).any():
            raise ValueError("NaN input not supported")
        return mx_spec.quantize(x, fmt, **kw)

    report = verify_quantizer(nan_hater, formats=["mxfp4_e2m1"], modes=[("floor", "rne")])
    assert report.n_failed > 0 and report.n_passed > 100 and not report.ok
    assert all("raised ValueError: NaN input not supported" in m for m in report.failed_cases.values())
    assert all("/nan_inf/" in cid for cid in report.failed_cases)
    assert any("raised an exception" in h for h in report.hints())


def test_summary_shows_input_scaled_value_note_and_group_table(golden):
    case = next(c for c in golden["mxfp4_e2m1"].cases if c.group == "ties" and c.scale_mode == "floor")
    el = case.elements.copy()
    el[0, 5] ^= np.uint8(1)
    report = verify_results({case.id: {"scales": case.scales, "elements": el}})
    text = report.summary()
    assert case.note in text and "x/2^X = " in text
    assert "| ties | 0 | 1 | 0 | 0 | 0 |" in text
    pk = np.frombuffer(case.packed, np.uint8).copy()
    pk[2] ^= 0x10
    m = compare_case(case, {"packed": pk})
    assert len(m) == 1 and m[0].held == ((0, 4), (0, 5)) and "holds element(s) [0, 4], [0, 5]" in m[0].detail
