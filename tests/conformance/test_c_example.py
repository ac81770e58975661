"""The C example (golden/c_example/mx_quant.c) is built with the system C compiler, run on the
flat export of every golden file, and its results verified: every floor case of every format
passes on scales, elements and packed bytes."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mx_spec.conformance.cli import main
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import default_golden_dir, load_golden
from mx_spec.conformance.golden_export import export_flat
from mx_spec.conformance.verify import verify_results

C_SOURCE = default_golden_dir() / "c_example" / "mx_quant.c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def c_results(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C example cannot be built here")
    work = tmp_path_factory.mktemp("c_example")
    exe = work / "mx_quant"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(C_SOURCE), "-lm"],
                   check=True, capture_output=True, text=True)
    results = work / "results"
    results.mkdir()
    for flat in export_flat(work, formats=list(MX_FORMATS)):
        fmt = flat.name.split(".")[0]
        subprocess.run([str(exe), str(flat), str(results / f"{fmt}.json")], check=True, capture_output=True, text=True,
                       timeout=120)
    return results


def test_c_example_passes_every_floor_case(c_results):
    report = verify_results(c_results, require="floor,packed")
    assert report.ok and not report.unmet, report.summary()
    floor_cases = sum(c.scale_mode == "floor" for g in load_golden().values() for c in g.cases)
    assert report.n_passed == floor_cases and report.n_failed == 0
    assert report.field_cases["packed"] == floor_cases
    assert report.verdict == "PASS"  # exactly what was asked: every floor case of every format, packed too
    assert verify_results(c_results).verdict == "PARTIAL"  # asked everything: ceil/even/rceil not compared


def test_c_example_results_through_the_cli(c_results, capsys):
    """The documented command: exit 0 with all six result files, 1 when some are missing, 3
    (PARTIAL) without --require (the other scale modes are out of the example's scope)."""
    assert main(["verify", str(c_results), "--require", "floor,packed"]) == 0
    assert "PASS:" in capsys.readouterr().out
    assert main(["verify", str(c_results), "--strict"]) == 1
    assert main(["verify", str(c_results)]) == 3


def test_c_example_command_fails_when_result_files_are_missing(c_results, tmp_path, capsys):
    some = tmp_path / "some"
    some.mkdir()
    for name in ("mxfp4_e2m1.json", "mxint8.json"):
        (some / name).write_bytes((c_results / name).read_bytes())
    assert main(["verify", str(some), "--require", "floor,packed"]) == 1
    out = capsys.readouterr().out
    assert "mxfp8_e4m3 floor/rne: 128 of 128 cases not compared" in out


def test_c_example_rejects_a_non_flat_file(tmp_path):
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    exe = tmp_path / "mx_quant"
    subprocess.run([CC, "-std=c99", "-O2", "-o", str(exe), str(C_SOURCE), "-lm"], check=True)
    bogus = tmp_path / "x.flat.txt"
    bogus.write_text("{}\n")
    out = subprocess.run([str(exe), str(bogus), str(tmp_path / "r.json")], capture_output=True, text=True)
    assert out.returncode == 2 and "mx-spec export-flat" in out.stderr


def test_a_bug_planted_in_the_c_example_is_caught(tmp_path):
    """The same program with ties rounded away under rne must fail, with the tie hint."""
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    source = C_SOURCE.read_text()
    assert source.count("away ? round(q) : rint(q)") == 1
    buggy = tmp_path / "mx_quant_bug.c"
    buggy.write_text(source.replace("away ? round(q) : rint(q)", "round(q)"))
    exe = tmp_path / "mx_quant_bug"
    subprocess.run([CC, "-std=c99", "-O2", "-o", str(exe), str(buggy), "-lm"], check=True)
    (flat,) = export_flat(tmp_path, formats=["mxfp4_e2m1"])
    subprocess.run([str(exe), str(flat), str(tmp_path / "r.json")], check=True)
    report = verify_results(tmp_path / "r.json")
    assert not report.ok and all("/floor/rne/" in cid for cid in report.failed_cases)
    assert any("every element mismatch is a tie" in h for h in report.hints())
