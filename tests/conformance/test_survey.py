"""The MX implementation survey (issue #25): its committed results files are well formed, every
defect has a reproducer, the cause classifier names planted defects right, and the results of
the implementations that run here are reproduced by ``golden/survey/survey.py``."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mx_spec
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden_gen import CONTENT_VERSION
from mx_spec.conformance.verify import verify_quantizer

REPO = Path(__file__).resolve().parents[2]
SURVEY = REPO / "golden" / "survey"
IMPLEMENTATIONS = ("torchao", "gfloat", "compressed-tensors", "brevitas", "quark", "c-example")


def _survey_module():
    spec = importlib.util.spec_from_file_location("survey", SURVEY / "survey.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


survey = _survey_module()


def _record(name: str) -> dict:
    return json.loads((SURVEY / "results" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_results_file_is_complete(name):
    rec = _record(name)
    assert rec["implementation"] == name and rec["golden_content_version"] == CONTENT_VERSION
    if rec["status"] != "surveyed":
        assert rec["reason"], "a library that was not surveyed says why"
        return
    assert set(rec["formats"]) == set(MX_FORMATS)
    assert rec["passed"] + rec["failed"] > 0
    failing = sum(t["failed"] for v in rec["formats"].values() for t in v["modes"].values())
    assert failing == rec["failed"]
    for key, cause in rec["causes"].items():
        assert cause["kind"] in ("defect", "convention", "unsupported", "unclassified"), key
        assert cause["cases"] > 0 and cause["example"].split("/")[0] in MX_FORMATS
        if cause.get("reproducer"):
            assert (REPO / cause["reproducer"]).is_file() and cause["kind"] == "defect"


def test_every_implementation_the_issue_names_has_an_entry():
    assert {p.stem for p in (SURVEY / "results").glob("*.json")} == set(IMPLEMENTATIONS)


def test_each_reproducer_is_listed_by_a_cause():
    listed = {c["reproducer"] for n in IMPLEMENTATIONS for c in _record(n).get("causes", {}).values()
              if c.get("reproducer")}
    assert listed == {str(p.relative_to(REPO)) for p in (SURVEY / "reproducers").glob("*.py")}


def _planted_scale_code_0(x, fmt, **kw):
    """torchao's defect planted in mx_spec: scale-code-0 blocks divided by 2^-126."""
    mx = mx_spec.quantize(x, fmt, **kw)
    if x.size == 0:
        return mx
    per = np.take(mx.scales, np.arange(x.shape[mx.axis]) // mx.block_size, axis=mx.axis)
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.where(per == 0, np.asarray(x, np.float64) * 2.0**126, 0.0)
    halved = mx_spec.encode_elements(np.clip(np.where(np.isnan(y), 0, y), -448.0, 448.0), mx.fmt.element, mx.rounding)
    return {"scales": mx.scales, "elements": np.where(per == 0, halved, mx.elements).astype(np.uint8)}


def _planted_negative_zero(x, fmt, **kw):
    mx = mx_spec.quantize(x, fmt, **kw)
    sign = np.uint8(1 << (mx.fmt.element.bits - 1))
    return {"scales": mx.scales, "elements": np.where(mx.elements == sign, np.uint8(0), mx.elements)}


@pytest.mark.parametrize("fn,cause", [(_planted_scale_code_0, "scale_code_0"),
                                      (_planted_negative_zero, "negative_zero")])
def test_classifier_names_a_planted_defect(fn, cause):
    report = verify_quantizer(fn, formats=["mxfp8_e4m3"], modes=[("floor", "rne")])
    causes = survey.classify(report)
    assert report.n_failed > 0 and set(causes) == {cause}, causes
    assert sum(c["cases"] for c in causes.values()) == report.n_failed


def _rerun(name: str, tmp_path: Path) -> dict:
    assert survey.main([name, "--out", str(tmp_path)]) == 0
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["gfloat", "torchao", "compressed-tensors"])
def test_committed_results_are_reproduced(name, tmp_path):
    fresh, committed = _rerun(name, tmp_path), _record(name)
    for key in ("verdict", "passed", "failed", "skipped", "formats", "causes", "version"):
        assert fresh[key] == committed[key], key


def test_c_example_result_is_reproduced(tmp_path):
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler")
    fresh, committed = _rerun("c-example", tmp_path), _record("c-example")
    assert fresh["formats"] == committed["formats"] and fresh["failed"] == 0

