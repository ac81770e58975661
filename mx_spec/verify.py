"""Verify another MX implementation against the golden vectors.

Two entry points:

* :func:`verify_results` checks outputs that another implementation already wrote (files read by
  :mod:`mx_spec.results_files`: golden-schema ``.json`` / ``.json.gz`` or ``.npz``).
* :func:`verify_quantizer` runs a candidate quantizer callable over the golden inputs.

Each case is compared by :func:`mx_spec.compare.compare_case` (the comparison rules) and booked
in a :class:`mx_spec.report.VerifyReport` (tallies, verdict, rendering).  Nothing is counted as
passed that was not compared: a case with no output field is skipped, an unknown field name is
an error, a run that skipped cases or left scales/elements unchecked says PARTIAL, and
requirements (``--require`` / ``--strict``) turn missing coverage into a failure.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mx_spec.compare import Mismatch, check_field_names, checked_fields, compare_case, undeclared_policy_match
from mx_spec.elements import ROUNDINGS
from mx_spec.formats import MX_FORMATS
from mx_spec.golden import ALL_MODES, CODE_FIELDS, OUTPUT_FIELDS, GoldenCase, GoldenFile, load_golden
from mx_spec.layouts import parse_layouts
from mx_spec.policies import parse_policies
from mx_spec.report import VerifyReport
from mx_spec.results_files import load_results
from mx_spec.scale import SCALE_MODES

__all__ = ["Requirement", "parse_requirement", "check_requirement", "verify_quantizer", "verify_results"]


@dataclass(frozen=True)
class Requirement:
    """What a run must cover: every case of these formats and modes, with these fields checked."""

    formats: frozenset[str]
    modes: frozenset[tuple[str, str]]
    fields: frozenset[str]


# --------------------------------------------------------------------------- selection
def _check_modes(modes: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    wanted = {tuple(m) for m in modes}
    bad = wanted - set(ALL_MODES)
    if bad:
        raise ValueError(f"unknown mode(s) {sorted(bad)}; valid (scale_mode, rounding) pairs: {list(ALL_MODES)}")
    return wanted


def _select(golden: dict[str, GoldenFile], modes: Iterable[tuple[str, str]] | None) -> list[GoldenCase]:
    wanted = None if modes is None else _check_modes(modes)
    return [c for g in golden.values() for c in g.cases
            if wanted is None or (c.scale_mode, c.rounding) in wanted]


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
    if not mismatches:
        tally.passed += 1
        return
    tally.failed += 1
    report._cases[case.id] = case
    report.notes[case.id] = case.note
    report.mismatches.extend(mismatches)
    report.group_field_failures.update((case.group, f) for f in sorted({m.field for m in mismatches}))
    message = mismatches[0].describe()
    match = undeclared_policy_match(case, actual, report.policies, report.layouts) if case.policies else None
    if match:
        report.policy_matches[match] += 1
        message += f"  [passes under --policy {match}]"
    report.failed_cases[case.id] = message


def _skip(report: VerifyReport, case: GoldenCase, reason: str) -> None:
    report._tally(case).skipped += 1
    report.skip_reasons[case.id] = reason


# --------------------------------------------------------------------------- requirements
def parse_requirement(text: str | Iterable[str] | None, strict: bool = False) -> Requirement | None:
    """A :class:`Requirement` from ``--require`` tokens (formats, modes, fields), or None.

    Tokens (comma separated, any order): MX format names (``mxfp4_e2m1``), scale modes
    (``floor``), roundings (``rne``), ``scale/rounding`` pairs (``floor/rne``) and field names
    (``packed``).  Unnamed kinds default to: every format of the results, every mode, the fields
    ``scales`` and ``elements``.  ``strict`` requires all six formats, all 8 modes, scales and
    elements, plus whatever the tokens add.
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
            raise ValueError(f"--require: unknown token {t!r}; valid: MX formats {list(MX_FORMATS)}, scale modes "
                             f"{list(SCALE_MODES)}, roundings {list(ROUNDINGS)}, pairs like 'floor/rne', "
                             f"fields {list(OUTPUT_FIELDS)}")
    if strict:
        formats |= set(MX_FORMATS)
    if scale_modes or roundings:
        pairs |= {m for m in ALL_MODES if (not scale_modes or m[0] in scale_modes)
                  and (not roundings or m[1] in roundings)}
    modes = frozenset(pairs) if pairs and not strict else frozenset(ALL_MODES)
    return Requirement(frozenset(formats), modes, frozenset(fields | set(CODE_FIELDS)))


def check_requirement(report: VerifyReport, cases: Sequence[GoldenCase], req: Requirement) -> list[str]:
    """Descriptions of every way the run falls short of ``req`` (empty when it is met)."""
    unmet = []
    formats = req.formats or {c.fmt for c in cases}
    for fmt in sorted(formats):
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


def _golden_for(formats: Iterable[str] | None, req: Requirement | None,
                golden_dir: str | os.PathLike | None) -> dict[str, GoldenFile]:
    names = set(formats) if formats is not None else set(MX_FORMATS)
    if req is not None:
        names |= req.formats
    return load_golden(golden_dir, [f for f in MX_FORMATS if f in names] + sorted(names - set(MX_FORMATS)))


def verify_quantizer(fn: QuantizerFn, formats: Sequence[str] | None = None,
                     modes: Iterable[tuple[str, str]] | None = None,
                     golden_dir: str | os.PathLike | None = None, progress: bool = False,
                     policies: str | Iterable[str] | None = None,
                     require: str | Iterable[str] | None = None, strict: bool = False,
                     layouts: str | Iterable[str] | None = None) -> VerifyReport:
    """Run ``fn`` over the golden inputs and compare its outputs with the golden ones.

    ``fn(x, fmt, *, block_size, axis, scale_mode, rounding)`` receives the input as a numpy
    array of its golden dtype (float32, float64, float16 or ml_dtypes.bfloat16) and returns an
    object with ``.scales`` and ``.elements`` (uint8 codes as ``mx_spec.quantize`` lays them out),
    a ``(scales, elements)`` tuple, or a dict of any of the fields in ``OUTPUT_FIELDS``.  It raises
    ``NotImplementedError`` for inputs it does not support (those cases are skipped); any other
    exception is that case's failure.  ``formats`` defaults to all six MX formats, ``modes`` to
    every (scale_mode, rounding) pair; ``policies`` (e.g. ``"inf=saturate"``), ``layouts`` (e.g.
    ``"fp4=high-first"``) and ``require``/``strict`` as for ``mx-spec verify``.
    """
    req = parse_requirement(require, strict)
    cases = _select(_golden_for(formats, req, golden_dir), modes)
    report = VerifyReport(policies=parse_policies(policies), layouts=parse_layouts(layouts))
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
    if req is not None:
        report.unmet = check_requirement(report, cases, req)
    return report


def _record_crash(report: VerifyReport, case: GoldenCase, exc: Exception) -> None:
    """Book a case whose quantizer call raised: a failure naming the exception."""
    report._tally(case).failed += 1
    report.notes[case.id] = case.note
    text = f"{type(exc).__name__}: {exc}"
    report.mismatches.append(Mismatch(case.id, "exception", (), "outputs", text, group=case.group))
    report.group_field_failures[(case.group, "exception")] += 1
    report.failed_cases[case.id] = f"{case.id}: raised {text}"


def verify_results(results: str | os.PathLike | dict[str, dict[str, Any]],
                   golden_dir: str | os.PathLike | None = None,
                   policies: str | Iterable[str] | None = None,
                   require: str | Iterable[str] | None = None, strict: bool = False,
                   layouts: str | Iterable[str] | None = None) -> VerifyReport:
    """Compare already-computed outputs (path or {case id: fields}) with the golden vectors.

    The formats that the results mention (and those a requirement names) are loaded; golden
    cases without results are counted as skipped.
    """
    res = load_results(results) if not isinstance(results, dict) else results
    for cid, fields in res.items():
        check_field_names(fields, f"results for case {cid!r}")
    formats = sorted({cid.split("/", 1)[0] for cid in res})
    unknown = [f for f in formats if f not in MX_FORMATS]
    if unknown:
        raise ValueError(f"results mention unknown format(s) {unknown} in case ids; valid: {sorted(MX_FORMATS)}")
    req = parse_requirement(require, strict)
    cases = _select(_golden_for(formats, req, golden_dir), None)
    known = {c.id for c in cases}
    stray = sorted(set(res) - known)
    if stray:
        raise ValueError(f"{len(stray)} result id(s) are not golden case ids, e.g. {stray[0]!r}; "
                         "ids look like 'mxfp4_e2m1/floor/rne/ties/0000'")
    report = VerifyReport(policies=parse_policies(policies), layouts=parse_layouts(layouts))
    for case in cases:
        if case.id not in res:
            _skip(report, case, "no results for this case")
            continue
        _record(report, case, res[case.id])
    if req is not None:
        report.unmet = check_requirement(report, cases, req)
    return report
