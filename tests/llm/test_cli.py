"""The ``mx-spec`` console script: demo, golden and verify, exit codes and messages."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import mx_spec
from mx_spec.conformance.cli import main
from mx_spec.conformance.golden import array_to_hex, load_golden


def test_demo_prints_codes_and_verifies(capsys):
    assert main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "== mxfp4_e2m1" in out and "== mxfp8_e4m3" in out
    assert "scales (E8M0 codes)" in out and "packed:" in out
    assert "PASS:" in out and "0 failed" in out


def test_golden_subset(tmp_path):
    assert main(["golden", "--out", str(tmp_path), "--formats", "mxfp4_e2m1", "--scale-modes", "floor",
                 "--roundings", "away", "--quiet"]) == 0
    doc = json.loads((tmp_path / "mxfp4_e2m1.json").read_text())
    assert {(c["scale_mode"], c["rounding"]) for c in doc["cases"]} == {("floor", "away")}
    assert doc["modes"] == [["floor", "away"]]


def test_verify_exit_codes_and_report(tmp_path, capsys):
    golden = load_golden(formats=["mxint8"])
    cases = []
    for c in golden["mxint8"].cases:
        if c.group != "ties":
            continue
        mx = mx_spec.quantize(c.x, "mxint8", block_size=c.block_size, axis=c.axis, scale_mode=c.scale_mode,
                              rounding=c.rounding)
        cases.append({"id": c.id, "scales": array_to_hex(mx.scales), "elements": array_to_hex(mx.elements)})
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"cases": cases}))
    assert main(["verify", str(path)]) == 3
    out = capsys.readouterr().out
    assert "PARTIAL: 8 cases passed, 0 failed" in out  # only the ties cases: never a plain PASS, never exit 0
    assert "scales in 8, elements in 8, packed in 0" in out
    assert main(["verify", str(path), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "mxint8 floor/rne:" in out and "not compared" in out
    assert main(["verify", str(path), "--require", "mxint8,floor/rne"]) == 1
    assert main(["verify", str(path), "--require", "mxint8,floor/rne,bogus"]) == 2
    assert "mx-spec verify: error: --require: unknown token 'bogus'" in capsys.readouterr().err  # the door's flag

    el = bytearray.fromhex(cases[0]["elements"])
    el[3] ^= 0x80
    cases[0]["elements"] = el.hex()
    path.write_text(json.dumps({"cases": cases}))
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert cases[0]["id"] in out and "FAIL" in out and "0b" in out

    assert main(["verify", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bad_arguments_name_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--formats", "mxfp5"])
    assert exc.value.code == 2
    assert "mxfp4_e2m1" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "mx_spec.conformance.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "golden" in out.stdout and "verify" in out.stdout


def test_golden_gzip_export_flat_and_layout_flags(tmp_path, capsys):
    assert main(["golden", "--out", str(tmp_path / "gz"), "--formats", "mxfp4_e2m1", "--gzip", "--quiet"]) == 0
    assert (tmp_path / "gz" / "mxfp4_e2m1.json.gz").is_file()
    assert "mxfp4_e2m1.json.gz" in (tmp_path / "gz" / "MANIFEST.sha256").read_text()
    assert main(["export-flat", "--out", str(tmp_path / "flat"), "--formats", "mxfp4_e2m1", "--readmemh"]) == 0
    assert (tmp_path / "flat" / "mxfp4_e2m1.flat.txt").is_file()
    assert (tmp_path / "flat" / "mxfp4_e2m1" / "floor_rne.elements.memh").is_file()
    golden = load_golden(formats=["mxfp4_e2m1"])
    cases = []
    for c in golden["mxfp4_e2m1"].cases:
        mx = mx_spec.quantize(c.x, "mxfp4_e2m1", block_size=c.block_size, axis=c.axis, scale_mode=c.scale_mode,
                              rounding=c.rounding)
        low_first = np.asarray(mx_spec.pack(mx))
        cases.append({"id": c.id, "scales": array_to_hex(mx.scales), "elements": array_to_hex(mx.elements),
                      "packed": array_to_hex((low_first << 4) | (low_first >> 4))})
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"cases": cases}))
    capsys.readouterr()
    assert main(["verify", str(path)]) == 1
    assert "nibble swaps" in capsys.readouterr().out
    assert main(["verify", str(path), "--layout", "fp4=high-first", "--golden", str(tmp_path / "gz")]) == 0
    out = capsys.readouterr().out
    assert "PASS:" in out and "declared packed layouts: fp4=high-first" in out
    assert main(["verify", str(path), "--policy", "inf=maybe"]) == 2
    assert "unknown policy 'inf=maybe'" in capsys.readouterr().err
