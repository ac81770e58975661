"""Run the conformance kit against the MX implementations people use (issue #25) and write one
small results file per implementation (``golden/survey/results/<name>.json``); the survey
table of docs/VERIFY.md is generated from those files (``tools/readme_results.py``, section ``survey``).

Usage (each implementation in an environment where its library imports)::

    python golden/survey/survey.py torchao gfloat compressed-tensors c-example   # the project venv
    /tmp/venv-x/bin/python golden/survey/survey.py brevitas quark                # a scratch venv

Each implementation is run through its adapter (``adapters/``, written from the library's
public API) over the whole golden set with the policies it declares.  A library with one scale
rule ignores ``scale_mode``, so its outputs are compared with every golden mode and the report
says which mode it matches.  Every remaining failing case is put in a *cause* by the traits of
its mismatches (an exception, -0 encoded as +0, mismatches only in scale-code-0 blocks, a scale
one high / low, ...), and each cause is named in :data:`CAUSES` as a library defect (with a
reproducer under ``reproducers/``), a convention that differs from the golden set's, or an
unsupported feature.  A library that does not install or has no MX quantiser in its public API
gets a results file saying so, with the reason.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any


HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE / "adapters"))  # the adapters' shared exact conversions (survey_codes)
from mx_spec.formats import MX_FORMATS, get_format  # noqa: E402
from mx_spec.conformance.golden import ALL_MODES, GoldenCase, load_golden  # noqa: E402
from mx_spec.conformance.golden_export import export_flat  # noqa: E402
from mx_spec.conformance.golden_gen import CONTENT_VERSION  # noqa: E402
from mx_spec.conformance.hints import _block_is_zero  # noqa: E402  (the verifier's own all-zero block test)
from mx_spec.conformance.verify import verify_quantizer, verify_results  # noqa: E402

RESULTS = HERE / "results"

#: cause key -> (kind, text). Kinds: defect (a reproducer exists), convention (a rule that
#: differs from the golden set's, not a bug), unsupported (the library does not do it).
CAUSES: dict[str, tuple[str, str]] = {
    "scale_code_0": ("defect", "blocks with scale code 0 (X = -127) quantised at another scale (2^-126, or 1.0 "
                               "in rceil): elements halved or flushed"),
    "float64_scale_one_high": ("defect", "float64 input: scale one high, amax just below a power of two taken as "
                                         "that power (a float64 log2 that rounds up, or a float32 detour)"),
    "negative_zero": ("convention", "-0 encoded as +0 (the golden set keeps the sign of zero)"),
    "zero_block_scale": ("convention", "all-zero block gets a scale other than 0x00"),
    "raised_nan_element": ("unsupported", "NaN/Inf input: NaN element values the element format cannot encode "
                                         "(no NaN scale)"),
    "raised_inf_scale": ("defect", "the scale is Inf (from an Inf input, a scale held in float16 from 2^16 up, or a "
                                   "huge amax) instead of an E8M0 value (0xFF for Inf/NaN blocks, else at most 2^127)"),
    "raised_scale_not_pow2": ("defect", "the scale of a tiny block is not a power of two (a minimum scale "
                                        "clamp instead of an E8M0 value)"),
    "raised_scale_out_of_range": ("defect", "scale below 2^-127 (X not clamped to the E8M0 range)"),
    "raised_inf_element": ("defect", "an Inf element value for a finite input (no saturation)"),
    "unclassified": ("unclassified", "mismatches no named cause explains"),
    "scale_lower": ("convention", "scale lower than the golden mode's in every mismatching block, by more than one "
                                  "in some (a different scale rule)"),
    "scale_higher": ("convention", "scale higher than the golden mode's in every mismatching block, by more than one "
                                   "in some (a different scale rule)"),
    "scale_one_high": ("convention", "scale one high in some blocks (a different scale rule)"),
    "scale_one_low": ("convention", "scale one low in some blocks (a different scale rule)"),
}


#: (implementation, cause trait) -> a minimal script a user could send upstream (nothing is filed).
REPRODUCERS: dict[tuple[str, str], str] = {
    ("torchao", "scale_code_0"): "golden/survey/reproducers/torchao_scale_code_0.py",
    ("gfloat", "float64_scale_one_high"): "golden/survey/reproducers/gfloat_float64_log2.py",
    ("compressed-tensors", "raised_inf_scale"): "golden/survey/reproducers/compressed_tensors_inf_scale.py",
    ("brevitas", "raised_scale_not_pow2"): "golden/survey/reproducers/brevitas_min_scale.py",
    ("quark", "raised_scale_out_of_range"): "golden/survey/reproducers/quark_unclamped_scale.py",
}


# --------------------------------------------------------------------------- adapters
def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: name -> (adapter file, its quantizer function, the policies the library declares, one scale rule?)
ADAPTERS: dict[str, tuple[str, str, str, bool]] = {
    "torchao": ("benchmarks/torchao_mx_adapter.py", "torchao_quantize", "inf=saturate,rceil=float32", False),
    "gfloat": ("golden/survey/adapters/gfloat_adapter.py", "gfloat_quantize", "inf=saturate,int8=full-range", False),
    "compressed-tensors": ("golden/survey/adapters/compressed_tensors_adapter.py", "ct_quantize", "", True),
    "brevitas": ("golden/survey/adapters/brevitas_adapter.py", "brevitas_quantize", "", True),
    "quark": ("golden/survey/adapters/quark_adapter.py", "quark_quantize", "", False),
}


def load_adapter(name: str) -> dict[str, Any]:
    """The adapter of ``name``: its function, the library's version and API, what it declares."""
    path, fn, policies, one_rule = ADAPTERS[name]
    m = _load(REPO / path, path.rsplit("/", 1)[-1][:-3])
    if name == "torchao":  # the benchmark's adapter predates the survey: version and API from here
        import torchao

        version, api = torchao.__version__, "torchao.prototype.mx_formats.mx_tensor.to_mx (four ScaleCalculationModes)"
    else:
        version, api = m.VERSION, m.API
    return {"fn": getattr(m, fn), "version": version, "policies": policies, "api": api, "adapter": path,
            "one_rule": one_rule}


# --------------------------------------------------------------------------- causes
def _block_index(case: GoldenCase, index: tuple[int, ...]) -> tuple[int, ...]:
    """The scales index of the block holding element ``index``."""
    axis = case.axis % case.x.ndim
    return tuple(i // case.block_size if d == axis else i for d, i in enumerate(index))


def _traits(case: GoldenCase, mismatches: list) -> str:
    """The cause key of one failing case from its mismatches alone: its traits joined by '+'
    ('unclassified' for mismatches no trait explains)."""
    if any(m.field == "exception" for m in mismatches):
        text = mismatches[0].actual
        if "not on the" in text and "nan" in text.lower():
            return "raised_nan_element"
        if "outside the E8M0 range" in text:
            return "raised_inf_scale" if "inf" in text else "raised_scale_out_of_range"
        if "not a power of two" in text:
            return "raised_scale_not_pow2"
        if "not on the" in text and "inf" in text:
            return "raised_inf_element"
        return "raised: " + re.sub(r"[-+]?\d[\d.e+-]*", "N", text)[:80]
    sign = 1 << (get_format(case.fmt).element.bits - 1)
    traits = []
    rest = [m for m in mismatches if not (m.field == "elements" and m.expected_code == sign and m.actual_code == 0)]
    if len(rest) < len(mismatches):
        traits.append("negative_zero")
    els = [m for m in rest if m.field == "elements"]
    scs = [m for m in rest if m.field == "scales"]
    offsets = {m.actual_code - m.expected_code for m in scs if 0xFF not in (m.actual_code, m.expected_code)}
    if not rest:
        pass
    elif scs and all(_block_is_zero(case, m.index) for m in scs) and all(
            _block_is_zero(case, _block_index(case, m.index)) for m in els):
        traits.append("zero_block_scale")
    elif not scs and els and all("scale 0x00," in m.detail for m in els):
        traits.append("scale_code_0")
    elif scs and offsets == {1}:
        traits.append("float64_scale_one_high" if case.input_dtype == "float64" else "scale_one_high")
    elif scs and offsets == {-1}:
        traits.append("scale_one_low")
    elif scs and offsets and all(o < 0 for o in offsets):
        traits.append("scale_lower")
    elif scs and offsets and all(o > 0 for o in offsets):
        traits.append("scale_higher")
    else:
        traits.append("unclassified")
    return "+".join(traits)


def _describe(key: str) -> dict[str, str]:
    """Kind and text of a cause key (traits joined by '+'); unknown traits are 'unclassified'."""
    parts = [CAUSES.get(k, ("unclassified", k.replace("_", " "))) for k in key.split("+")]
    kinds = [k for k, _ in parts]
    kind = "defect" if "defect" in kinds else "unclassified" if "unclassified" in kinds else kinds[0]
    return {"kind": kind, "text": " + ".join(t for _, t in parts)}


def classify(report, modes: dict[str, list[str]] | None = None, name: str = "") -> dict[str, dict[str, Any]]:
    """{cause key: {"cases": n, "example": first case id}} of the report's failing cases (only
    those of ``modes[format]``, the modes a one-rule library is compared in, when given)."""
    by_case: dict[str, list] = {}
    for m in report.mismatches:
        by_case.setdefault(m.case_id, []).append(m)
    cases = {c.id: c for g in load_golden().values() for c in g.cases}
    out: dict[str, dict[str, Any]] = {}
    for cid in report.failed_cases:
        case = cases[cid]
        if modes is not None and _mode_key((case.scale_mode, case.rounding)) not in modes.get(case.fmt, []):
            continue
        key = _traits(case, by_case.get(cid, []))
        entry = out.setdefault(key, {"cases": 0, "example": cid, **_describe(key)})
        repro = [REPRODUCERS[(name, t)] for t in key.split("+") if (name, t) in REPRODUCERS]
        if repro:
            entry["reproducer"] = repro[0]
        entry["cases"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["cases"]))


# --------------------------------------------------------------------------- one implementation
def _mode_key(mode: tuple[str, str]) -> str:
    return f"{mode[0]}/{mode[1]}"


def summarise(report, one_rule: bool) -> dict[str, Any]:
    """Per format: tallies per mode, the golden modes matched (compared, none failed) or the closest."""
    formats: dict[str, Any] = {}
    for fmt in MX_FORMATS:
        modes = {}
        for mode in ALL_MODES:
            t = report.tallies.get((fmt, *mode))
            if t is not None:
                modes[_mode_key(mode)] = {"passed": t.passed, "failed": t.failed, "skipped": t.skipped}
        compared = {k: v for k, v in modes.items() if v["passed"] + v["failed"]}
        matched = [k for k, v in compared.items() if v["failed"] == 0]
        rate = {k: v["failed"] / (v["passed"] + v["failed"]) for k, v in compared.items()}
        closest = min(compared, key=lambda k: (rate[k], k)) if compared else None
        formats[fmt] = {"supported": bool(compared), "modes": modes, "matches": matched,
                        "closest": closest if one_rule else None}
    return formats


def run_adapter(name: str) -> dict[str, Any]:
    spec = load_adapter(name)
    report = verify_quantizer(spec["fn"], policies=spec["policies"] or None)
    formats = summarise(report, spec["one_rule"])
    # a one-rule library is judged in the golden mode it comes closest to, per format
    modes = {f: [v["closest"]] for f, v in formats.items() if v["closest"]} if spec["one_rule"] else None
    return {"implementation": name, "status": "surveyed", "version": spec["version"], "api": spec["api"],
            "adapter": spec["adapter"], "declared_policies": spec["policies"], "one_scale_rule": spec["one_rule"],
            "verdict": report.verdict, "passed": report.n_passed, "failed": report.n_failed,
            "skipped": report.n_skipped, "formats": formats, "causes": classify(report, modes, name)}


def run_c_example() -> dict[str, Any]:
    """The project's from-scratch C quantizer, through the flat export and a results directory."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return not_surveyed("c-example", "no C compiler on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = work / "mx_quant"
        subprocess.run([cc, "-std=c99", "-O2", "-o", str(exe), str(HERE.parent / "c_example" / "mx_quant.c"), "-lm"],
                       check=True)
        (work / "results").mkdir()
        for flat in export_flat(work, formats=list(MX_FORMATS)):
            fmt = flat.name.split(".")[0]
            subprocess.run([str(exe), str(flat), str(work / "results" / f"{fmt}.json")], check=True, timeout=300)
        report = verify_results(work / "results")
    return {"implementation": "c-example", "status": "surveyed", "version": f"golden content {CONTENT_VERSION}",
            "api": "golden/c_example/mx_quant.c (floor scale, rne/away)", "adapter": "golden/c_example/mx_quant.c",
            "declared_policies": "", "one_scale_rule": False, "verdict": report.verdict, "passed": report.n_passed,
            "failed": report.n_failed, "skipped": report.n_skipped, "formats": summarise(report, False),
            "causes": classify(report)}


def not_surveyed(name: str, reason: str) -> dict[str, Any]:
    return {"implementation": name, "status": "not surveyed", "reason": reason}


def survey(name: str) -> dict[str, Any]:
    if name == "c-example":
        return run_c_example()
    if name in NOT_SURVEYABLE:
        return not_surveyed(name, NOT_SURVEYABLE[name])
    try:
        return run_adapter(name)
    except ImportError as exc:
        return not_surveyed(name, f"does not import here: {exc}")


#: Libraries whose public API exposes no MX quantiser the kit can call, with the reason.
NOT_SURVEYABLE: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help=f"implementations: {sorted(ADAPTERS) + ['c-example']} "
                        f"{sorted(NOT_SURVEYABLE)}")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default golden/survey/results)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        record = survey(name)
        record["golden_content_version"] = CONTENT_VERSION
        path = out / f"{name}.json"
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        causes = Counter({k: v["cases"] for k, v in record.get("causes", {}).items()})
        print(f"{name}: {record['status']} {record.get('verdict', record.get('reason'))} {dict(causes)} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
