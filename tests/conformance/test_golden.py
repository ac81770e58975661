"""The committed golden vectors: reproducible, complete, and right on hand-derived spec facts."""
from __future__ import annotations

import gzip
import hashlib
import json

import ml_dtypes
import numpy as np
import pytest

from mx_spec.conformance.cli import main as cli_main
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import (ALL_MODES, INPUT_DTYPES, MANIFEST_NAME, SCHEMA_NAME, SCHEMA_VERSION, SPEC_MODE,
                            array_to_hex, default_golden_dir, hex_to_array, load_golden)
from mx_spec.conformance.golden_gen import CONTENT_VERSION, GENERATOR_VERSION, write_golden
from mx_spec.conformance.golden_inputs import RANDOM_BLOCKS_SPEC_MODE, REQUIRED_GROUPS, random_blocks

GOLDEN_DIR = default_golden_dir()
ML_DTYPES = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e3m2": ml_dtypes.float6_e3m2fn,
             "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn}


@pytest.fixture(scope="module")
def golden():
    return load_golden(GOLDEN_DIR)


def test_files_present_versioned_and_small():
    total = 0
    for name in MX_FORMATS:
        path = GOLDEN_DIR / f"{name}.json"
        with open(path, encoding="utf-8") as fh:
            head = json.load(fh)
        assert head["schema"] == SCHEMA_NAME and head["version"] == SCHEMA_VERSION
        assert head["format"] == name
        total += path.stat().st_size
    assert total < 15 * 2**20, f"golden files total {total} bytes (limit 15 MiB)"
    assert (GOLDEN_DIR / "README.md").is_file()


def test_regenerate_byte_identical(tmp_path):
    """`mx-spec golden --out DIR` rebuilds every committed file byte for byte."""
    assert cli_main(["golden", "--out", str(tmp_path), "--quiet"]) == 0
    for name in [f"{n}.json" for n in MX_FORMATS] + [MANIFEST_NAME]:
        fresh = (tmp_path / name).read_bytes()
        committed = (GOLDEN_DIR / name).read_bytes()
        assert fresh == committed, f"{name} differs from a fresh `mx-spec golden` run; regenerate it"


def test_manifest_lists_every_file_with_its_sha256():
    lines = (GOLDEN_DIR / MANIFEST_NAME).read_text().splitlines()
    names = []
    for line in lines:
        digest, name = line.split("  ")
        assert hashlib.sha256((GOLDEN_DIR / name).read_bytes()).hexdigest() == digest, name
        names.append(name)
    assert names == [f"{n}.json" for n in MX_FORMATS]


def test_headers_carry_versions_and_the_format_table(golden):
    for name in MX_FORMATS:
        with open(GOLDEN_DIR / f"{name}.json", encoding="utf-8") as fh:
            head = json.load(fh)
        assert head["content_version"] == CONTENT_VERSION and head["generator_version"] == GENERATOR_VERSION
        elem = MX_FORMATS[name].element
        params = head["element_params"]
        for key in ("ebits", "mbits", "bias", "emax", "emin", "max_normal", "min_normal", "min_subnormal"):
            assert params[key] == getattr(elem, key), (name, key)
    assert json.load(open(GOLDEN_DIR / "mxfp8_e4m3.json"))["element_params"]["max_normal"] == 448.0


def test_gzip_copies_are_deterministic_and_read_directly(tmp_path):
    import mx_spec
    from mx_spec.conformance.verify import verify_quantizer

    a, b = tmp_path / "a", tmp_path / "b"
    write_golden(a, formats=["mxfp4_e2m1"], compress=True, progress=False)
    write_golden(b, formats=["mxfp4_e2m1"], compress=True, progress=False)
    data = (a / "mxfp4_e2m1.json.gz").read_bytes()
    assert data == (b / "mxfp4_e2m1.json.gz").read_bytes()
    assert gzip.decompress(data) == (GOLDEN_DIR / "mxfp4_e2m1.json").read_bytes()
    assert not (a / "mxfp4_e2m1.json").exists()
    assert verify_quantizer(mx_spec.quantize, formats=["mxfp4_e2m1"], golden_dir=a).verdict == "PASS"


def test_ids_never_renumber_when_a_case_is_added(monkeypatch):
    """New cases are appended to their group: every existing id keeps its record."""
    import mx_spec.conformance.golden_gen as golden_mod
    import mx_spec.conformance.golden_inputs as inputs_mod

    before = {r["id"]: r for r in golden_mod.iter_cases("mxfp4_e2m1", [("floor", "rne")])}
    original = inputs_mod.edge_inputs

    def with_new_cases(fmt_name):
        extra = [inputs_mod.CaseInput("ties", "a new tie case", np.full((1, 32), 0.75, np.float32)),
                 inputs_mod.CaseInput("grid", "a new grid case", np.ones((1, 32), np.float32))]
        return original(fmt_name) + extra

    monkeypatch.setattr(inputs_mod, "edge_inputs", with_new_cases)
    after = {r["id"]: r for r in golden_mod.iter_cases("mxfp4_e2m1", [("floor", "rne")])}
    assert set(after) - set(before) == {"mxfp4_e2m1/floor/rne/ties/0001", "mxfp4_e2m1/floor/rne/grid/0001"}
    assert all(after[i] == r for i, r in before.items())


def test_every_format_and_mode_covers_every_group(golden):
    for name, gfile in golden.items():
        seen: dict[tuple[str, str], set[str]] = {}
        random_blocks_seen: dict[tuple[str, str], int] = {}
        for case in gfile.cases:
            mode = (case.scale_mode, case.rounding)
            seen.setdefault(mode, set()).add(case.group)
            if case.group == "random":
                random_blocks_seen[mode] = random_blocks_seen.get(mode, 0) + case.scales.size
        assert set(seen) == set(ALL_MODES), name
        for mode, groups in seen.items():
            missing = set(REQUIRED_GROUPS) - groups
            assert not missing, f"{name} {mode} lacks groups {missing}"
        assert random_blocks_seen[SPEC_MODE] >= RANDOM_BLOCKS_SPEC_MODE
        assert min(random_blocks_seen.values()) >= 50
        dtypes = {c.input_dtype for c in gfile.cases}
        assert dtypes == set(INPUT_DTYPES)


def test_ids_unique(golden):
    ids = [c.id for g in golden.values() for c in g.cases]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("fmt", list(MX_FORMATS))
def test_decode_table_matches_ml_dtypes(golden, fmt):
    """The exhaustive decode table agrees with ml_dtypes (FP) / two's complement * 2^-6 (INT8)."""
    g = golden[fmt]
    elem = MX_FORMATS[fmt].element
    assert g.decode_codes.tolist() == list(range(1 << elem.bits))
    if elem.kind == "int":
        ref = g.decode_codes.view(np.int8).astype(np.float64) / 64.0
    else:
        ref = g.decode_codes.view(ML_DTYPES[elem.name]).astype(np.float64)
    nan = np.isnan(ref)
    assert np.array_equal(nan, np.isnan(g.decode_f64))
    assert np.array_equal(ref[~nan].view(np.uint64), g.decode_f64[~nan].view(np.uint64))  # -0 included
    assert np.array_equal(ref.astype(np.float32)[~nan].view(np.uint32), g.decode_f32[~nan].view(np.uint32))


def _find(golden, fmt, mode, group, value, dtype=np.float32):
    """(scale code, element code) of the first element equal to ``value`` in a group's cases."""
    for case in golden[fmt].cases:
        if (case.scale_mode, case.rounding) != mode or case.group != group or case.x.dtype != dtype:
            continue
        hit = np.flatnonzero(np.asarray(case.x, dtype=np.float64).reshape(-1) == value)
        if hit.size:
            from mx_spec.conformance.compare import scale_per_element

            i = hit[0]
            return int(scale_per_element(case).reshape(-1)[i]), int(case.elements.reshape(-1)[i])
    raise AssertionError(f"{value!r} not found in {fmt} {mode} {group}")


# Facts derived by hand from OCP MX v1.0 / OCP FP8 v1.0 tables (not from mx_spec):
SPEC_FACTS = [
    # fmt, mode, group, input, scale code, element code
    ("mxfp8_e4m3", ("floor", "rne"), "saturation", 464.0, 0x7F, 0x7E),   # tie 448|480 -> clamp 448
    ("mxfp8_e4m3", ("floor", "rne"), "saturation", -464.0, 0x7F, 0xFE),
    ("mxfp8_e4m3", ("floor", "rne"), "saturation", 480.0, 0x7F, 0x7E),
    ("mxfp8_e4m3", ("floor", "rne"), "ties", 2.0**-10, 0x7F, 0x00),      # half min subnormal -> +0
    ("mxfp8_e4m3", ("floor", "away"), "ties", 2.0**-10, 0x7F, 0x01),     # ties away -> 2^-9
    ("mxfp8_e4m3", ("floor", "rne"), "ties", 3 * 2.0**-10, 0x7F, 0x02),  # 1.5 * 2^-9 -> even 2^-8
    ("mxfp8_e5m2", ("floor", "rne"), "saturation", 61440.0, 0x7F, 0x7B),  # tie 57344|65536 -> 57344
    ("mxfp4_e2m1", ("floor", "rne"), "ties", 0.25, 0x7F, 0x0),
    ("mxfp4_e2m1", ("floor", "away"), "ties", 0.25, 0x7F, 0x1),
    ("mxfp4_e2m1", ("floor", "rne"), "ties", 2.5, 0x7F, 0x4),             # 2.5 -> 2 (even)
    ("mxfp4_e2m1", ("floor", "away"), "ties", 2.5, 0x7F, 0x5),            # 2.5 -> 3
    ("mxfp4_e2m1", ("floor", "rne"), "ties", -5.0, 0x7F, 0xE),            # -5 -> -4 (even)
    ("mxfp4_e2m1", ("floor", "rne"), "saturation", 7.0, 0x7F, 0x7),       # 7 -> clamp 6
    ("mxfp6_e2m3", ("floor", "rne"), "saturation", 7.75, 0x7F, 0x1F),     # tie 7.5|8 -> 7.5
    ("mxfp6_e3m2", ("floor", "rne"), "saturation", 30.0, 0x7F, 0x1F),     # tie 28|32 -> 28
    ("mxint8", ("floor", "rne"), "ties", 1.0 / 128, 0x7F, 0x00),          # 0.5 LSB -> 0 (even)
    ("mxint8", ("floor", "rne"), "ties", 3.0 / 128, 0x7F, 0x02),          # 1.5 LSB -> 2
    ("mxint8", ("floor", "away"), "ties", 1.0 / 128, 0x7F, 0x01),
]


@pytest.mark.parametrize("fmt,mode,group,value,scale,code", SPEC_FACTS)
def test_golden_spec_facts(golden, fmt, mode, group, value, scale, code):
    assert _find(golden, fmt, mode, group, value) == (scale, code)


def test_special_blocks_follow_the_decisions(golden):
    """All-zero block -> scale code 0 (2^-127) and +0 elements; NaN/Inf block -> scale 0xFF;
    a block whose exponent would be < -127 clamps to code 0."""
    for name, g in golden.items():
        for case in g.cases:
            if case.group == "all_zero" and case.note.startswith("all "):
                assert (case.scales == 0).all(), case.id
                if "+0" in case.note:
                    assert (case.elements == 0).all(), case.id
            if case.group == "nan_inf" and case.x.ndim == 2 and case.x.shape[0] == 1:
                assert case.scales[0] == 0xFF, case.id
            if case.group == "scale_clamp" and "5e-324" in case.note:
                assert case.scales[0] == 0, case.id


def test_hex_codec_roundtrip_bits():
    bits32 = np.array([0x7F800001, 0xFFC00000, 0x80000000, 0x00000001, 0x3F800000], dtype=np.uint32)
    x = bits32.view(np.float32)
    text = array_to_hex(x, "float32")
    assert text == "".join(f"{b:08x}" for b in bits32)
    assert np.array_equal(hex_to_array(text, "float32").view(np.uint32), bits32)
    for name, (dtype, _) in INPUT_DTYPES.items():
        v = np.array([1.5, -0.0, 2.0**-14, -3.0], dtype=np.float64).astype(dtype)
        back = hex_to_array(array_to_hex(v, name), name, (2, 2))
        assert back.dtype == dtype and back.shape == (2, 2)
        assert back.reshape(-1).tobytes() == v.tobytes()
    assert array_to_hex(np.array([1.0], dtype=ml_dtypes.bfloat16), "bfloat16") == "3f80"
    assert array_to_hex(np.array([1.0], dtype=np.float16), "float16") == "3c00"
    assert array_to_hex(np.array([1.0]), "float64") == "3ff0000000000000"
    with pytest.raises(ValueError, match="valid"):
        hex_to_array("00", "float8")


def test_random_blocks_deterministic_and_varied():
    a = random_blocks(123, 64)
    assert np.array_equal(a.view(np.uint64), random_blocks(123, 64).view(np.uint64))
    assert not np.array_equal(a, random_blocks(124, 64))
    exps = np.frexp(a[a != 0])[1]
    assert exps.max() - exps.min() > 60  # mixed magnitudes
    assert (a == 0).any() and (a < 0).any() and np.isfinite(a).all()
