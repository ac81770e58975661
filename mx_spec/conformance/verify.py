"""Verify another MX implementation against the golden vectors.

Two entry points:

* :func:`verify_results` checks outputs that another implementation already wrote (files read by
  :mod:`mx_spec.conformance.results_files`: golden-schema ``.json`` / ``.json.gz`` or ``.npz``).
* :func:`verify_quantizer` runs a candidate quantizer callable over the golden inputs.

Each case is compared by :func:`mx_spec.conformance.compare.compare_case` (the comparison rules) and booked
in a :class:`mx_spec.conformance.report.VerifyReport` (tallies, verdict, rendering).  Nothing is counted as
passed that was not compared.  What a run is *asked* to cover: by default every case of the
whole golden set (all six formats, all 8 modes) with scales and elements checked; a requirement
(``require`` / ``strict``) replaces that with its formats, modes and fields, always over the
whole golden set (not only what the results happen to hold); ``verify_quantizer``'s
``formats=`` / ``modes=`` narrow what is run and the report says so.  A shortfall is PARTIAL
(exit 3) without a requirement and FAIL with one; only PASS (exit 0) means full coverage.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from mx_spec.conformance.compare import Mismatch, check_field_names, checked_fields, compare_case, undeclared_policy_match
from mx_spec.elements import ROUNDINGS
from mx_spec.formats import MX_FORMATS
from mx_spec.conformance.golden import ALL_MODES, CODE_FIELDS, OUTPUT_FIELDS, GoldenCase, golden_path, load_golden
from mx_spec.layouts import parse_layouts
from mx_spec.policies import parse_policies
from mx_spec.conformance.report import VerifyReport
from mx_spec.conformance.policy_hints import evaluate_policy_hints
from mx_spec.conformance.results_files import read_results
from mx_spec.scale import SCALE_MODES

__all__ = ["Requirement", "parse_requirement", "check_requirement", "verify_quantizer", "verify_results"]


@dataclass(frozen=True)
class Requirement:
    """What a run must cover: every case of these formats and modes, with these fields checked."""

    formats: frozenset[str]
    modes: frozenset[tuple[str, str]]
    fields: frozenset[str]
    formats_named: bool = True  # False: no format token, so "every format of the golden set"


# --------------------------------------------------------------------------- selection
def _check_modes(modes: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    wanted = {tuple(m) for m in modes}
    bad = wanted - set(ALL_MODES)
    if bad:
        raise ValueError(f"unknown mode(s) {sorted(bad)}; valid (scale_mode, rounding) pairs: {list(ALL_MODES)}")
    return wanted


def _record(report: VerifyReport, case: GoldenCase, actual: dict[str, Any]) -> None:
    """Compare one case and book it: skipped (nothing to compare), passed or failed."""
    fields = checked_fields(actual)
    check_field_names(actual, f"outputs of case {case.id}")
    tally = report._tally(case)
    if not fields:
        tally.skipped += 1
        report.skip_reasons[case.id] = "no output field given (nothing to compare)"
        return
    mismatches = compare_case(case, actual, report.policies, report.layouts)
    report.field_cases.update(fields)
    report._checked[case.id] = fields
    report.policy_cases.update(report.policies & set(case.policies))
    if set(case.policies) - report.policies:
        # kept to test an undeclared policy on every case it touches, passing ones included
        report._policy_cases[case.id] = (case, actual, not mismatches)
    if not mismatches:
        tally.passed += 1
        if case.input_dtype == "float64":
            report._float64_passed.append(case)  # evidence against a float32-detour hint
        return
    tally.failed += 1
    report._cases[case.id] = case
    report._actuals[case.id] = actual
    report.notes[case.id] = case.note
    report.mismatches.extend(mismatches)
    report.group_field_failures.update((case.group, f) for f in sorted({m.field for m in mismatches}))
    report.failed_cases[case.id] = mismatches[0].describe()
    match = undeclared_policy_match(case, actual, report.policies, report.layouts) if case.policies else None
    if match:
        report._case_policy_match[case.id] = match


def _skip(report: VerifyReport, case: GoldenCase, reason: str) -> None:
    report._tally(case).skipped += 1
    report.skip_reasons[case.id] = reason


# --------------------------------------------------------------------------- requirements
def parse_requirement(text: str | Iterable[str] | None, strict: bool = False) -> Requirement | None:
    """A :class:`Requirement` from ``require`` tokens (formats, modes, fields), or None.

    Tokens (comma separated, any order): MX format names (``mxfp4_e2m1``), scale modes
    (``floor``), roundings (``rne``), ``scale/rounding`` pairs (``floor/rne``) and field names
    (``packed``).  Unnamed kinds default to the whole golden set: all six formats, every mode,
    the fields ``scales`` and ``elements``.  ``strict`` requires all six formats, all 8 modes,
    scales and elements, plus whatever field the tokens add (format and mode tokens cannot
    narrow it: combining them is an error).
    """
    tokens = ([t.strip() for t in text.split(",")] if isinstance(text, str) else list(text or ()))
    tokens = [t for t in tokens if t]
    if not tokens and not strict:
        return None
    formats, scale_modes, roundings, pairs, fields = set(), set(), set(), set(), set()
    for t in tokens:
        if t in MX_FORMATS:
            formats.add(t)
        elif t in SCALE_MODES:
            scale_modes.add(t)
        elif t in ROUNDINGS:
            roundings.add(t)
        elif t in OUTPUT_FIELDS:
            fields.add(t)
        elif "/" in t and tuple(t.split("/", 1)) in ALL_MODES:
            pairs.add(tuple(t.split("/", 1)))
        else:
            raise ValueError(f"require: unknown token {t!r}; valid: MX formats {list(MX_FORMATS)}, scale modes "
                             f"{list(SCALE_MODES)}, roundings {list(ROUNDINGS)}, pairs like 'floor/rne', "
                             f"fields {list(OUTPUT_FIELDS)}")
    if strict and (formats or scale_modes or roundings or pairs):
        raise ValueError(f"strict requires every format and mode; it cannot be combined with the format/mode "
                         f"tokens of require {sorted(t for t in tokens if t not in OUTPUT_FIELDS)} "
                         "(drop strict, or drop those tokens)")
    named = bool(formats) or strict
    formats = formats or set(MX_FORMATS)
    if scale_modes or roundings:
        pairs |= {m for m in ALL_MODES if (not scale_modes or m[0] in scale_modes)
                  and (not roundings or m[1] in roundings)}
    modes = frozenset(pairs) if pairs and not strict else frozenset(ALL_MODES)
    return Requirement(frozenset(formats), modes, frozenset(fields | set(CODE_FIELDS)), named)


def check_requirement(report: VerifyReport, cases: Sequence[GoldenCase], req: Requirement) -> list[str]:
    """Descriptions of every way the run falls short of ``req`` (empty when it is met)."""
    unmet = []
    for fmt in sorted(req.formats):
        for mode in sorted(req.modes):
            mine = [c for c in cases if c.fmt == fmt and (c.scale_mode, c.rounding) == mode]
            compared = [c for c in mine if c.id in report._checked]
            label = f"{fmt} {mode[0]}/{mode[1]}"
            if len(compared) < len(mine):
                unmet.append(f"{label}: {len(mine) - len(compared)} of {len(mine)} cases not compared")
            for f in sorted(req.fields):
                n = sum(f in report._checked[c.id] for c in compared)
                if n < len(compared):
                    unmet.append(f"{label}: {f} checked in {n} of {len(compared)} compared cases")
    return unmet


# --------------------------------------------------------------------------- entry points
QuantizerFn = Callable[..., Any]


def _outputs_of(result: Any) -> dict[str, Any]:
    """Normalise a quantizer's return value to a field dict (unknown dict keys are an error)."""
    if isinstance(result, dict):
        check_field_names(result, "quantizer output")
        return dict(result)
    if isinstance(result, tuple) and len(result) == 2:
        return {"scales": result[0], "elements": result[1]}
    if hasattr(result, "scales") and hasattr(result, "elements"):
        return {"scales": result.scales, "elements": result.elements}
    raise TypeError("a quantizer must return an object with .scales and .elements, a (scales, elements) "
                    f"tuple or a dict of fields {OUTPUT_FIELDS}; got {type(result).__name__}")


def _asked_text(formats: Sequence[str], modes: Iterable[tuple[str, str]], fields: Iterable[str]) -> str:
    """'all 6 formats x all 8 modes, fields scales, elements' or the narrowed lists."""
    fmts = f"all {len(MX_FORMATS)} formats" if set(formats) == set(MX_FORMATS) else ", ".join(formats)
    mode_set = set(modes)
    mds = (f"all {len(ALL_MODES)} modes" if mode_set == set(ALL_MODES)
           else ", ".join(f"{m[0]}/{m[1]}" for m in ALL_MODES if m in mode_set))
    return f"{fmts} x {mds}; fields {', '.join(f for f in OUTPUT_FIELDS if f in set(fields))}"


def _ask(report: VerifyReport, cases: Sequence[GoldenCase], req: Requirement | None, how: str,
         formats: Sequence[str], modes: Iterable[tuple[str, str]]) -> None:
    """Book what the run is asked to cover: the requirement's cases, else ``formats`` x ``modes``."""
    if req is not None:
        formats, modes, fields = sorted(req.formats), req.modes, req.fields
        how = "required (require/strict, over the whole golden set)"
    else:
        fields = CODE_FIELDS
    wanted = set(modes)
    report.asked = {c.id for c in cases if c.fmt in set(formats) and (c.scale_mode, c.rounding) in wanted}
    report.asked_fields = frozenset(fields)
    report.asked_text = f"{how}: {_asked_text(formats, modes, fields)} ({len(report.asked)} golden cases)"


def _finish(report: VerifyReport, cases: Sequence[GoldenCase], req: Requirement | None) -> VerifyReport:
    if req is not None:
        report.unmet = check_requirement(report, cases, req)
    evaluate_policy_hints(report)
    return report


def verify_quantizer(fn: QuantizerFn, formats: Sequence[str] | None = None,
                     modes: Iterable[tuple[str, str]] | None = None,
                     golden_dir: str | os.PathLike | None = None, progress: bool = False,
                     policies: str | Iterable[str] | None = None,
                     require: str | Iterable[str] | None = None, strict: bool = False,
                     layouts: str | Iterable[str] | None = None) -> VerifyReport:
    """Run ``fn`` over the golden inputs and compare its outputs with the golden ones.

    The function contract (docs/VERIFY.md, "From Python: verify_quantizer"):
    ``fn(x, fmt, *, block_size, axis, scale_mode, rounding)`` receives the input as a numpy
    array of its golden dtype (float32, float64, float16 or ml_dtypes.bfloat16) and returns an
    object with ``.scales`` and ``.elements``, a ``(scales, elements)`` tuple, or a dict of any of
    the fields in ``OUTPUT_FIELDS``: integer codes (scales as ``mx_spec.quantize`` lays them out,
    element codes shaped like ``x``, packed bytes) and float32 / float64 decodes; nothing is
    coerced (a float code or a float64 ``decoded_f32`` fails the case).  It raises
    ``NotImplementedError`` for inputs it does not support (those cases are skipped: PARTIAL);
    any other exception is that case's failure.

    ``formats`` (default all six) and ``modes`` (default every (scale_mode, rounding) pair)
    narrow what is run; the report says so.  ``require``/``strict`` (as for ``mx-spec verify``)
    always apply to the whole golden set: a case they need that ``formats``/``modes`` left out
    counts as not compared, so the requirement fails.  ``policies`` (e.g. ``"inf=saturate"``)
    and ``layouts`` (e.g. ``"fp4=high-first"``) declare where the implementation differs.
    """
    req = parse_requirement(require, strict)
    report = VerifyReport(policies=parse_policies(policies), layouts=parse_layouts(layouts))
    run_formats = list(formats) if formats is not None else list(MX_FORMATS)
    run_modes = _check_modes(modes) if modes is not None else set(ALL_MODES)
    needed = set(run_formats) | (req.formats if req is not None else set())
    golden = load_golden(golden_dir, [f for f in MX_FORMATS if f in needed] + sorted(needed - set(MX_FORMATS)))
    every = [c for g in golden.values() for c in g.cases]
    cases = [c for c in every if c.fmt in run_formats and (c.scale_mode, c.rounding) in run_modes]
    narrowed = formats is not None or modes is not None
    _ask(report, cases, None, "asked (narrowed by formats=/modes=)" if narrowed else "asked (the whole golden set)",
         run_formats, run_modes)
    if req is not None:
        _ask(report, every, req, "", run_formats, run_modes)
        if narrowed:
            report.asked_text += f"; the run was narrowed by formats=/modes= to {_asked_text(run_formats, run_modes, ())}"
    for case in tqdm(cases, desc="verify", unit="case", disable=not progress):
        try:
            # the golden inputs hold NaN/Inf on purpose: keep numpy's warnings about them quiet
            with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
                result = fn(case.x.copy(), case.fmt, block_size=case.block_size, axis=case.axis,
                            scale_mode=case.scale_mode, rounding=case.rounding)
        except NotImplementedError as exc:
            _skip(report, case, str(exc) or "NotImplementedError")
            continue
        except Exception as exc:  # noqa: BLE001 - a crashing case is that case's failure, not the run's
            _record_crash(report, case, exc)
            continue
        _record(report, case, _outputs_of(result))
    return _finish(report, every, req)


def _record_crash(report: VerifyReport, case: GoldenCase, exc: Exception) -> None:
    """Book a case whose quantizer call raised: a failure naming the exception."""
    report._tally(case).failed += 1
    report.notes[case.id] = case.note
    text = f"{type(exc).__name__}: {exc}"
    report.mismatches.append(Mismatch(case.id, "exception", (), "outputs", text, group=case.group))
    report.group_field_failures[(case.group, "exception")] += 1
    report.failed_cases[case.id] = f"{case.id}: raised {text}"


def _formats_held(golden_dir: str | os.PathLike | None, named: Sequence[str]) -> list[str]:
    """The formats of the golden set: all six in the default directory (a missing file is an error),
    else those whose files a given directory holds, which must include every format ``named``."""
    if golden_dir is None:
        return list(MX_FORMATS)
    held = [f for f in MX_FORMATS if golden_path(golden_dir, f).is_file()]
    missing = [f for f in named if f not in held]
    if missing or not held:
        raise FileNotFoundError(f"golden directory {golden_dir} holds no golden file for {missing or list(MX_FORMATS)}; "
                                "generate them with `mx-spec golden --out DIR`")
    return held


def verify_results(results: str | os.PathLike | dict[str, dict[str, Any]],
                   golden_dir: str | os.PathLike | None = None,
                   policies: str | Iterable[str] | None = None,
                   require: str | Iterable[str] | None = None, strict: bool = False,
                   layouts: str | Iterable[str] | None = None) -> VerifyReport:
    """Compare already-computed outputs (path or {case id: fields}) with the golden vectors.

    Asked: every case of the whole golden set with scales and elements, or what ``require`` /
    ``strict`` name (over the whole golden set).  Golden cases without results are skipped
    (PARTIAL, or FAIL under a requirement).  The report lists the files read and ignored.
    """
    if isinstance(results, dict):
        res, files_read, files_ignored = results, [], []
    else:
        read = read_results(results)
        res, files_read, files_ignored = read.results, read.files_read, read.files_ignored
    for cid, fields in res.items():
        check_field_names(fields, f"results for case {cid!r}")
    named = sorted({cid.split("/", 1)[0] for cid in res})
    unknown = [f for f in named if f not in MX_FORMATS]
    if unknown:
        raise ValueError(f"results mention unknown format(s) {unknown} in case ids; valid: {sorted(MX_FORMATS)}")
    req = parse_requirement(require, strict)
    report = VerifyReport(policies=parse_policies(policies), layouts=parse_layouts(layouts))
    report.files_read, report.files_ignored = files_read, files_ignored
    held = _formats_held(golden_dir, named)
    cases = [c for g in load_golden(golden_dir, held).values() for c in g.cases]
    stray = sorted(set(res) - {c.id for c in cases})
    if stray:
        raise ValueError(f"{len(stray)} result id(s) are not golden case ids, e.g. {stray[0]!r}; "
                         "ids look like 'mxfp4_e2m1/floor/rne/ties/0000'")
    whole = "the whole golden set" if golden_dir is None else f"the whole golden set in {golden_dir}"
    if req is not None and not req.formats_named:
        req = replace(req, formats=frozenset(held))
    _ask(report, cases, req, f"asked ({whole})", held, ALL_MODES)
    if req is not None:
        absent = sorted(req.formats - set(held))
        if absent:
            raise ValueError(f"the requirement names format(s) {absent} that the golden directory {golden_dir} "
                             "does not hold; generate them or drop them from require")
    for case in cases:
        if case.id not in res:
            _skip(report, case, "no results for this case")
            continue
        _record(report, case, res[case.id])
    return _finish(report, cases, req)
