"""The verifier's exit status is something a CI job can rely on (issue #25): exit 0 only on full
coverage of what was asked, nothing coerced, no file ignored without a word.

Each test here is one false-PASS route of the issue; each fails on the verifier before #25.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import mx_spec
from mx_spec.conformance.cli import main
from mx_spec.conformance.golden import array_to_hex, default_golden_dir, load_golden
from mx_spec.layouts import parse_layouts
from mx_spec.policies import parse_policies
from mx_spec.conformance.verify import verify_quantizer, verify_results

FMT = "mxint8"
SPEC = [("floor", "rne")]


@pytest.fixture(scope="module")
def golden():
    return load_golden()


def _codes(case):
    mx = mx_spec.quantize(case.x, case.fmt, block_size=case.block_size, axis=case.axis,
                          scale_mode=case.scale_mode, rounding=case.rounding)
    return mx.scales, mx.elements


def _write(path, cases):
    recs = []
    for c in cases:
        s, e = _codes(c)
        recs.append({"id": c.id, "scales": array_to_hex(s), "elements": array_to_hex(e)})
    path.write_text(json.dumps({"cases": recs}))
    return path


def test_one_format_of_six_is_partial_with_its_own_exit_status(golden, tmp_path, capsys):
    """A correct results file for one format of six: PARTIAL (exit 3), never PASS / exit 0."""
    path = _write(tmp_path / "fp4.json", golden["mxfp4_e2m1"].cases)
    report = verify_results(path)
    assert report.n_failed == 0 and report.n_passed == len(golden["mxfp4_e2m1"].cases)
    assert report.verdict == "PARTIAL" and not report.ok and report.exit_code == 3
    assert main(["verify", str(path)]) == 3
    out = capsys.readouterr().out
    assert "PARTIAL:" in out and "not covered: 3020 asked case(s)" in out
    assert "asked (the whole golden set): all 6 formats x all 8 modes" in out


def test_require_applies_to_the_whole_golden_set(golden, tmp_path):
    """--require floor/rne asks floor/rne of every format, not only of the formats present."""
    path = _write(tmp_path / "fp4.json", [c for c in golden["mxfp4_e2m1"].cases if c.scale_mode == "floor"
                                          and c.rounding == "rne"])
    report = verify_results(path, require="floor/rne")
    assert report.verdict == "FAIL" and report.exit_code == 1
    assert {u.split()[0] for u in report.unmet} == {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxint8"}
    assert main(["verify", str(path), "--require", "floor/rne,elements"]) == 1
    assert main(["verify", str(path), "--require", "mxfp4_e2m1,floor/rne"]) == 0


def test_python_modes_with_strict_or_require_never_drops_them():
    """modes= narrows the run; strict / require still apply to the whole golden set."""
    narrow = verify_quantizer(mx_spec.quantize, formats=[FMT], modes=SPEC)
    assert narrow.verdict == "PASS" and "narrowed by formats=/modes=" in narrow.summary()
    strict = verify_quantizer(mx_spec.quantize, modes=SPEC, strict=True)
    assert strict.verdict == "FAIL" and strict.n_failed == 0
    assert any("ceil/rne" in u and "not compared" in u for u in strict.unmet)
    ceil = verify_quantizer(mx_spec.quantize, formats=[FMT], modes=SPEC, require="ceil")
    assert ceil.verdict == "FAIL" and any(u.startswith(f"{FMT} ceil/") for u in ceil.unmet)
    assert "the run was narrowed by formats=/modes=" in ceil.summary()


@pytest.mark.parametrize("bad", [0.5, 0.7])
def test_non_integer_float_codes_fail(bad):
    def fractional(x, fmt, **kw):
        mx = mx_spec.quantize(x, fmt, **kw)
        return {"scales": mx.scales, "elements": mx.elements.astype(np.float64) + bad}

    report = verify_quantizer(fractional, formats=[FMT], modes=SPEC)
    assert report.verdict == "FAIL" and report.n_passed == 0
    msg = next(iter(report.failed_cases.values()))
    assert "expected integer codes in 0..255" in msg and "float64 array" in msg and "truncated" in msg


@pytest.mark.parametrize("offset", [256, -256])
def test_out_of_range_integer_codes_fail(offset, golden, tmp_path):
    cases = [c for c in golden[FMT].cases if c.scale_mode == "floor" and c.rounding == "rne" and c.x.size]
    arrays = {}
    for c in cases:
        s, e = _codes(c)
        arrays[c.id + "/scales"] = s.astype(np.int64)
        arrays[c.id + "/elements"] = e.astype(np.int64) + offset
    np.savez(tmp_path / "wrap.npz", **arrays)
    report = verify_results(tmp_path / "wrap.npz", require=f"{FMT},floor/rne")
    assert report.verdict == "FAIL" and report.n_failed == len(cases)
    assert all("out of range" in m and "not wrapped" in m for m in report.failed_cases.values())


def test_int8_codes_are_read_as_their_bits():
    """An int8 array holds the two's complement bytes themselves: no value changes, so it is read."""
    def signed(x, fmt, **kw):
        mx = mx_spec.quantize(x, fmt, **kw)
        return {"scales": mx.scales, "elements": mx.elements.view(np.int8)}

    assert verify_quantizer(signed, formats=[FMT], modes=SPEC).verdict == "PASS"


def test_decodes_in_another_precision_fail(golden):
    """A float64 decode off by 1e-12 given as decoded_f32 must not be rounded into a pass, and a
    float32 decode given as decoded_f64 must not be widened into one."""
    case = next(c for c in golden["mxfp8_e4m3"].cases if c.group == "float64" and c.scale_mode == "floor")
    wrong = case.decoded_f64 * (1 + 1e-12)
    report = verify_results({case.id: {"scales": case.scales, "elements": case.elements, "decoded_f32": wrong}})
    assert report.verdict == "FAIL" and "decoded_f32 must be decoded in float32" in report.summary()
    report = verify_results({case.id: {"scales": case.scales, "elements": case.elements,
                                       "decoded_f64": case.decoded_f64.astype(np.float32)}})
    assert report.verdict == "FAIL" and "decoded_f64 must be decoded in float64" in report.summary()


def test_duplicate_key_in_a_json_record_is_an_error(golden, tmp_path, capsys):
    c = next(c for c in golden[FMT].cases if c.group == "grid")
    s, e = _codes(c)
    wrong = array_to_hex(s + 1)
    text = f'{{"cases": [{{"id": "{c.id}", "scales": "{wrong}", "elements": "{array_to_hex(e)}", ' \
           f'"scales": "{array_to_hex(s)}"}}]}}'
    path = tmp_path / "dup.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"key 'scales' appears twice in the record of case '{c.id}'"):
        verify_results(path)
    assert main(["verify", str(path)]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_results_directory_lists_files_read_and_ignored(golden, tmp_path, capsys):
    d = tmp_path / "res"
    d.mkdir()
    cases = golden["mxfp4_e2m1"].cases
    _write(d / "a.json", cases[:10])
    _write(d / "b.JSON", cases[10:20])
    (d / "c.results").write_text("{}")
    report = verify_results(d)
    assert report.files_read == [str(d / "a.json")]
    ignored = dict(report.files_ignored)
    assert "case-sensitive" in ignored[str(d / "b.JSON")]
    assert "not a results file type" in ignored[str(d / "c.results")]
    main(["verify", str(d)])
    out = capsys.readouterr().out
    assert f"files read (1): {d / 'a.json'}" in out and f"file ignored: {d / 'b.JSON'}" in out


def test_golden_files_given_as_results_are_refused(capsys):
    gold = default_golden_dir()
    with pytest.raises(ValueError, match="is a golden file .* not an implementation's results"):
        verify_results(gold / "mxint8.json")
    assert main(["verify", str(gold), "--strict"]) == 2
    assert "is a golden file" in capsys.readouterr().err


def test_conflicting_declarations_are_an_error():
    with pytest.raises(ValueError, match="conflicting policy declarations inf=nan and inf=saturate"):
        parse_policies("inf=nan,inf=saturate")
    with pytest.raises(ValueError, match="conflicting layout declarations"):
        parse_layouts("fp4=high-first,fp4=low-first")
    with pytest.raises(ValueError, match="strict requires every format and mode"):
        verify_quantizer(mx_spec.quantize, require="floor", strict=True)


def test_a_golden_directory_with_some_formats_is_the_whole_set(tmp_path, golden):
    """`--golden DIR` holding one format: that is the golden set asked for; --strict still asks all six."""
    from mx_spec.conformance.golden_gen import write_golden

    write_golden(tmp_path / "g", formats=["mxint8"], progress=False)
    path = _write(tmp_path / "r.json", golden[FMT].cases)
    assert verify_results(path, golden_dir=tmp_path / "g").verdict == "PASS"
    assert verify_results(path, golden_dir=tmp_path / "g", require="floor/rne").verdict == "PASS"
    with pytest.raises(ValueError, match="does not hold"):
        verify_results(path, golden_dir=tmp_path / "g", strict=True)
