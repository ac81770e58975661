"""Verify another MX implementation against the golden vectors.

Two entry points:

* :func:`verify_results` checks outputs that another implementation already wrote, either in
  the golden schema (a JSON or ``.json.gz`` file whose ``cases`` list holds objects with ``id``
  and any of ``scales``, ``elements``, ``packed``, ``decoded_f32``, ``decoded_f64`` as hex
  strings) or as an ``.npz`` whose keys are ``"<case id>/<field>"`` (uint8 codes / bytes, float32
  / float64 decodes); a bare ``"<case id>"`` key holds that case's element codes.
* :func:`verify_quantizer` runs a candidate quantizer callable over the golden inputs.

Comparison rules (``golden/README.md``, "Semantics" and "Comparison rules"):

* Scale codes and element codes are compared bit for bit.
* In a block whose expected scale is the E8M0 NaN code 0xFF the element codes and the packed
  bits that hold them are don't-care (``mx_spec`` writes 0), but its decoded values must be NaN:
  a NaN scale X makes every value of its block NaN (OCP MX v1.0).
* Decoded values are compared as bit patterns, except that any NaN matches any NaN.
* Declared policies (:mod:`mx_spec.policies`) replace the expected outputs of the cases that
  depend on them.

Nothing is counted as passed that was not compared: a case with no output field is skipped, an
unknown field name is an error, a run that skipped cases or left scales/elements unchecked says
PARTIAL, and requirements (``--require`` / ``--strict``) turn missing coverage into a failure.
"""
from __future__ import annotations

import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mx_spec.formats import MX_FORMATS, get_format
from mx_spec.golden import (ALL_MODES, ROUNDINGS, SCALE_MODES, GoldenCase, GoldenFile, array_to_hex, hex_to_array,
                            load_golden, read_json_document)
from mx_spec.layouts import element_bit_offsets, pack_stream, parse_layouts
from mx_spec.policies import (INF_SATURATE, min_inf_block_exponent, outputs_of, parse_policies, policy_key,
                              quantize_under_policies)

E8M0_NAN_CODE = 0xFF
CODE_FIELDS: tuple[str, ...] = ("scales", "elements")
ALL_FIELDS: tuple[str, ...] = ("scales", "elements", "packed", "decoded_f32", "decoded_f64")
FLOAT_FIELDS = {"decoded_f32": "float32", "decoded_f64": "float64"}
#: Mismatching items kept per case (enough for the hints; the count is exact regardless).
MAX_ITEMS_PER_CASE = 256
RESULTS_FIX = ('write {"cases": [{"id": "<case id>", "scales": "<hex>", "elements": "<hex>", ...}]} '
               "as described in golden/README.md")
NPZ_KEY_FORM = "'<case id>/<field>', e.g. 'mxfp4_e2m1/floor/rne/ties/0000/scales'"


@dataclass(frozen=True)
class Mismatch:
    """One differing item of one case, with what a reader needs to locate the cause."""

    case_id: str
    field: str
    index: tuple[int, ...]
    expected: str
    actual: str
    detail: str = ""
    group: str = ""
    expected_code: int | None = None
    actual_code: int | None = None
    input_value: float | None = None
    scaled_value: float | None = None
    held: tuple[tuple[int, ...], ...] = ()

    def describe(self) -> str:
        where = f"{self.field}[{', '.join(map(str, self.index))}]" if self.index else self.field
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{self.case_id}: {where}: expected {self.expected}, got {self.actual}{extra}"


@dataclass
class ModeTally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Requirement:
    """What a run must cover: every case of these formats and modes, with these fields checked."""

    formats: frozenset[str]
    modes: frozenset[tuple[str, str]]
    fields: frozenset[str]


@dataclass
class VerifyReport:
    """Outcome of a verification: tallies, coverage, mismatches, policies and requirements."""

    tallies: dict[tuple[str, str, str], ModeTally] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    failed_cases: dict[str, str] = field(default_factory=dict)
    policies: frozenset[str] = frozenset()
    layouts: frozenset[str] = frozenset()
    field_cases: Counter = field(default_factory=Counter)
    group_field_failures: Counter = field(default_factory=Counter)
    policy_cases: Counter = field(default_factory=Counter)
    policy_matches: Counter = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)
    unmet: list[str] = field(default_factory=list)
    _checked: dict[str, frozenset[str]] = field(default_factory=dict)
    _cases: dict[str, GoldenCase] = field(default_factory=dict)

    @property
    def n_passed(self) -> int:
        return sum(t.passed for t in self.tallies.values())

    @property
    def n_failed(self) -> int:
        return sum(t.failed for t in self.tallies.values())

    @property
    def n_skipped(self) -> int:
        return sum(t.skipped for t in self.tallies.values())

    @property
    def n_compared(self) -> int:
        return self.n_passed + self.n_failed

    @property
    def complete(self) -> bool:
        """No case skipped and scales and elements checked in every compared case."""
        return self.n_skipped == 0 and all(self.field_cases[f] == self.n_compared for f in CODE_FIELDS)

    @property
    def verdict(self) -> str:
        """PASS, PARTIAL (nothing failed but coverage is incomplete), FAIL or NO CASES COMPARED."""
        if self.n_failed or self.unmet:
            return "FAIL"
        if self.n_passed == 0:
            return "NO CASES COMPARED"
        return "PASS" if self.complete else "PARTIAL"

    @property
    def ok(self) -> bool:
        """True when at least one case was compared, none failed and every requirement is met."""
        return self.verdict in ("PASS", "PARTIAL")

    def _tally(self, case: GoldenCase) -> ModeTally:
        return self.tallies.setdefault((case.fmt, case.scale_mode, case.rounding), ModeTally())

    def table(self, per_format: bool = False) -> str:
        """Markdown table: one row per (format, scale mode, rounding), or per format."""
        if per_format:
            agg: dict[str, list[int]] = {}
            for (fmt, _, _), t in self.tallies.items():
                a = agg.setdefault(fmt, [0, 0, 0, 0])
                a[0] += 1
                a[1] += t.passed
                a[2] += t.failed
                a[3] += t.skipped
            rows = ["| format | modes | passed | failed | skipped |", "| --- | ---: | ---: | ---: | ---: |"]
            rows += [f"| {f} | {a[0]} | {a[1]} | {a[2]} | {a[3]} |" for f, a in sorted(agg.items())]
            return "\n".join(rows)
        rows = ["| format | scale mode | rounding | passed | failed | skipped |",
                "| --- | --- | --- | ---: | ---: | ---: |"]
        for (fmt, mode, rnd), t in sorted(self.tallies.items()):
            rows.append(f"| {fmt} | {mode} | {rnd} | {t.passed} | {t.failed} | {t.skipped} |")
        return "\n".join(rows)

    def coverage_line(self) -> str:
        """Per-field coverage, e.g. 'fields checked: scales in 50 cases, ..., packed in 0'."""
        parts = [f"{f} in {self.field_cases[f]}" for f in ALL_FIELDS]
        return f"fields checked (of {self.n_compared} compared cases): " + ", ".join(parts)

    def failure_table(self) -> str:
        """Failing cases by group x field (a case counts once per field that differs)."""
        if not self.group_field_failures:
            return ""
        groups = sorted({g for g, _ in self.group_field_failures})
        rows = ["| group | " + " | ".join(ALL_FIELDS) + " |", "| --- |" + " ---: |" * len(ALL_FIELDS)]
        for g in groups:
            rows.append(f"| {g} | " + " | ".join(str(self.group_field_failures[(g, f)]) for f in ALL_FIELDS) + " |")
        return "\n".join(rows)

    def hints(self) -> list[str]:
        from mx_spec.hints import cause_hints

        return cause_hints(self)

    def summary(self, max_mismatches: int = 20, per_format: bool = False) -> str:
        """Table, coverage, failing cases by group, first mismatches, hints and the verdict."""
        lines = [self.table(per_format), "", self.coverage_line()]
        if self.policies:
            applied = ", ".join(f"{p} (applied to {self.policy_cases[p]} cases)" for p in sorted(self.policies))
            lines.append(f"declared policies: {applied}")
        else:
            lines.append("declared policies: none (mx_spec defaults: inf=nan, int8=symmetric, rceil=exact, ftz=off)")
        if self.layouts:
            lines.append("declared packed layouts: " + ", ".join(sorted(self.layouts)))
        if self.group_field_failures:
            lines += ["", "failing cases by group and field:", self.failure_table()]
        shown = self.mismatches[:max_mismatches]
        if shown:
            lines += ["", f"first {len(shown)} of {len(self.mismatches)} mismatching items:"]
            last_case = None
            for m in shown:
                if m.case_id != last_case:
                    lines.append(f"  {m.case_id}  [{self.notes.get(m.case_id, '')}]")
                    last_case = m.case_id
                lines.append("    " + m.describe())
        hints = self.hints()
        if hints:
            lines += ["", "likely causes:"] + [f"  - {h}" for h in hints]
        if self.unmet:
            lines += ["", "unmet requirements:"] + [f"  - {u}" for u in self.unmet]
        lines.append("")
        lines.append(f"{self.verdict}: {self.n_passed} cases passed, {self.n_failed} failed, "
                     f"{self.n_skipped} skipped")
        return "\n".join(lines)


# --------------------------------------------------------------------------- field names
def check_field_names(names: Iterable[str], where: str) -> None:
    """Unknown output field names are an error (a misspelt field would otherwise check nothing)."""
    unknown = sorted(set(names) - set(ALL_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown output field(s) {unknown}; valid field names: {list(ALL_FIELDS)}")


# --------------------------------------------------------------------------- layout helpers
def _code_text(code: int, bits: int) -> str:
    return f"0x{code:0{(bits + 3) // 4}x} (0b{code:0{bits}b})"


def _exponent_text(code: int) -> str:
    """The shared exponent X of an E8M0 code, 'NaN' for 0xFF."""
    return "NaN" if int(code) == E8M0_NAN_CODE else str(int(code) - 127)


def _element_bits(fmt_name: str) -> int:
    return int(get_format(fmt_name).element.bits)


def _scales_shape(case: GoldenCase) -> tuple[int, ...]:
    shape = list(case.x.shape)
    axis = case.axis % len(shape)
    shape[axis] = -(-shape[axis] // case.block_size)
    return tuple(shape)


def _scale_per_element(case: GoldenCase, scales: np.ndarray | None = None) -> np.ndarray:
    """The (expected) scale code of each element's block, shaped like the input."""
    axis = case.axis % case.x.ndim if case.x.ndim else 0
    n = case.x.shape[axis] if case.x.ndim else 0
    sc = (case.scales if scales is None else scales).reshape(_scales_shape(case))
    return np.take(sc, np.arange(n) // case.block_size, axis=axis)


def _packed_order_index(case: GoldenCase) -> np.ndarray:
    """For each position of the packed element stream, the element's flat C-order index."""
    axis = case.axis % case.x.ndim
    flat = np.arange(case.x.size).reshape(case.x.shape)
    return np.moveaxis(flat, axis, -1).reshape(-1)


def _held_elements(case: GoldenCase, byte: int, layouts: frozenset[str]) -> tuple[tuple[int, ...], ...]:
    """Indices (in the input's shape) of the elements whose bits byte ``byte`` of ``packed`` holds."""
    bits = _element_bits(case.fmt)
    order = _packed_order_index(case)
    start = element_bit_offsets(order.size, get_format(case.fmt).element, layouts)
    inside = (start <= 8 * byte + 7) & (start + bits - 1 >= 8 * byte)
    return tuple(tuple(int(i) for i in np.unravel_index(order[k], case.x.shape)) for k in np.flatnonzero(inside))


def _stream(case: GoldenCase, elements: np.ndarray) -> np.ndarray:
    """Element codes in packing order: the block axis moved last, C order."""
    return np.moveaxis(elements, case.axis % case.x.ndim, -1).reshape(-1)


def _packed_bytes(case: GoldenCase, elements: np.ndarray, layouts: frozenset[str]) -> np.ndarray:
    """The packed bytes of ``elements`` in the case's stream order under the declared layouts."""
    return pack_stream(_stream(case, elements), get_format(case.fmt).element, layouts)


def _packed_care(case: GoldenCase, scales: np.ndarray, layouts: frozenset[str]) -> np.ndarray | None:
    """Mask of packed bytes that must match, or None when no block has a NaN scale."""
    nan_elems = _scale_per_element(case, scales) == E8M0_NAN_CODE
    if not nan_elems.any():
        return None
    # Bytes that hold any don't-care element bit are don't-care: find them by packing a
    # marker array that sets only the bits of NaN-scale elements.
    marker = np.where(nan_elems, np.uint8((1 << _element_bits(case.fmt)) - 1), np.uint8(0))
    return _packed_bytes(case, marker, layouts) == 0


# --------------------------------------------------------------------------- expected outputs
def expected_outputs(case: GoldenCase, policies: frozenset[str] = frozenset(),
                     actual: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The case's expected fields under the declared ``policies`` (the golden ones when none applies).

    Fixed-output policies read the outputs stored in the golden file; ``inf=saturate`` takes the
    scale of each ±Inf block from ``actual["scales"]`` when that is a finite code at least the
    block's finite-value scale, else expects that finite-value scale.
    """
    base = {"scales": case.scales, "elements": case.elements, "packed": np.frombuffer(case.packed, np.uint8),
            "decoded_f32": case.decoded_f32, "decoded_f64": case.decoded_f64}
    applied = policies & set(case.policies)
    if not applied:
        return base
    if INF_SATURATE not in applied:
        stored = dict(case.policy_outputs.get(policy_key(applied), {}))
        if "packed" in stored:
            stored["packed"] = np.frombuffer(stored["packed"], np.uint8)
        return {**base, **stored}
    kw = dict(block_size=case.block_size, axis=case.axis, scale_mode=case.scale_mode)
    lowest = min_inf_block_exponent(case.x, case.fmt, policies=applied, **kw) + 127
    given = None if actual is None or "scales" not in actual else np.asarray(actual["scales"]).reshape(-1)
    if given is None or given.size != lowest.size:
        chosen = lowest
    else:
        ok = (given != E8M0_NAN_CODE) & (given.astype(np.float64) >= lowest.reshape(-1))
        chosen = np.where(ok, given, lowest.reshape(-1))
    with np.errstate(invalid="ignore", over="ignore"):
        mx = quantize_under_policies(case.x, case.fmt, rounding=case.rounding, policies=applied,
                                     inf_scales=chosen.astype(np.uint8), **kw)
        return outputs_of(mx)


# --------------------------------------------------------------------------- comparisons
def _compare_codes(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray, bits: int,
                   care: np.ndarray | None, exp_scales: np.ndarray,
                   layouts: frozenset[str] = frozenset()) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}", group=case.group)]
    differ = expected != actual
    if care is not None:
        differ &= care
    out = []
    per_elem_scale = _scale_per_element(case, exp_scales) if name == "elements" else None
    for idx in list(zip(*np.nonzero(differ)))[:MAX_ITEMS_PER_CASE]:
        idx = tuple(int(i) for i in idx)
        detail, value, scaled, held = "", None, None, ()
        if per_elem_scale is not None:
            axis = case.axis % case.x.ndim
            sc = int(per_elem_scale[idx])
            value = float(case.x[idx])
            scaled = value * 2.0 ** (127 - sc) if sc != E8M0_NAN_CODE else float("nan")
            detail = (f"block {idx[axis] // case.block_size} along axis {case.axis}, scale 0x{sc:02x}, input "
                      f"{array_to_hex(case.x[idx], case.input_dtype)} = {value!r}, x/2^X = {scaled!r}")
        elif name == "packed":
            held = _held_elements(case, idx[0], layouts)
            detail = "holds element(s) " + ", ".join(str(list(h)) for h in held)
        elif name == "scales":
            detail = f"block {list(idx)}: X expected {_exponent_text(expected[idx])}, got {_exponent_text(actual[idx])}"
        out.append(Mismatch(case.id, name, idx, _code_text(int(expected[idx]), bits),
                            _code_text(int(actual[idx]), bits), detail, case.group,
                            int(expected[idx]), int(actual[idx]), value, scaled, held))
    return out


def _compare_floats(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}", group=case.group)]
    width = FLOAT_FIELDS[name]
    bits_dtype = np.uint32 if width == "float32" else np.uint64
    both_nan = np.isnan(expected) & np.isnan(actual)
    differ = (expected.view(bits_dtype) != actual.view(bits_dtype)) & ~both_nan
    return [Mismatch(case.id, name, tuple(int(i) for i in idx),
                     f"{array_to_hex(expected[idx], width)} ({float(expected[idx])!r})",
                     f"{array_to_hex(actual[idx], width)} ({float(actual[idx])!r})",
                     f"input {float(case.x[idx])!r}", case.group, input_value=float(case.x[idx]))
            for idx in list(zip(*np.nonzero(differ)))[:MAX_ITEMS_PER_CASE]]


def compare_case(case: GoldenCase, actual: dict[str, Any], policies: frozenset[str] = frozenset(),
                 layouts: frozenset[str] = frozenset()) -> list[Mismatch]:
    """Mismatches between a golden case (under the declared ``policies``) and an implementation's outputs.

    ``actual`` maps field names (any of ``ALL_FIELDS``) to arrays: uint8 codes for
    ``scales``/``elements``/``packed``, floats for ``decoded_*``.  Missing fields are not checked
    (:func:`checked_fields` says which were); unknown names raise ValueError.
    """
    check_field_names(actual, f"outputs of case {case.id}")
    exp = expected_outputs(case, policies, actual)
    out: list[Mismatch] = []
    care = _scale_per_element(case, exp["scales"]) != E8M0_NAN_CODE
    if "scales" in actual:
        got = np.asarray(actual["scales"])
        if got.size != exp["scales"].size:
            out.append(Mismatch(case.id, "scales", (), f"{exp['scales'].size} scale codes", f"shape {got.shape}",
                                group=case.group))
        else:
            shape = _scales_shape(case)
            out += _compare_codes(case, "scales", exp["scales"].reshape(shape), got.astype(np.uint8).reshape(shape),
                                  8, None, exp["scales"])
    if "elements" in actual:
        got = np.asarray(actual["elements"])
        if got.size == case.elements.size:
            got = got.astype(np.uint8).reshape(case.elements.shape)
        out += _compare_codes(case, "elements", exp["elements"], got, _element_bits(case.fmt), care, exp["scales"])
    if "packed" in actual:
        got = np.frombuffer(np.asarray(actual["packed"], dtype=np.uint8).tobytes(), dtype=np.uint8)
        want = _packed_bytes(case, exp["elements"], layouts) if layouts else exp["packed"]
        if got.shape != want.shape:
            out.append(Mismatch(case.id, "packed", (), f"{want.size} bytes", f"{got.size} bytes", group=case.group))
        else:
            out += _compare_codes(case, "packed", want, got, 8, _packed_care(case, exp["scales"], layouts),
                                  exp["scales"], layouts)
    for name in FLOAT_FIELDS:
        if name in actual:
            ref = exp[name]
            got = np.asarray(actual[name], dtype=ref.dtype)
            if got.size == ref.size:
                got = got.reshape(ref.shape)
            out += _compare_floats(case, name, ref, got)
    return out


def checked_fields(actual: dict[str, Any]) -> frozenset[str]:
    """The fields of ``actual`` that :func:`compare_case` compares."""
    return frozenset(f for f in ALL_FIELDS if f in actual)


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


def _undeclared_policy_match(case: GoldenCase, actual: dict[str, Any], policies: frozenset[str],
                             layouts: frozenset[str]) -> str | None:
    """The smallest set of undeclared policies under which a failing case would pass, if any."""
    candidates = [p for p in case.policies if p not in policies]
    for r in range(1, len(candidates) + 1):
        for combo in combinations(candidates, r):
            if not compare_case(case, actual, policies | set(combo), layouts):
                return ",".join(sorted(combo))
    return None


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
    match = _undeclared_policy_match(case, actual, report.policies, report.layouts) if case.policies else None
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
        elif t in ALL_FIELDS:
            fields.add(t)
        elif "/" in t and tuple(t.split("/", 1)) in ALL_MODES:
            pairs.add(tuple(t.split("/", 1)))
        else:
            raise ValueError(f"--require: unknown token {t!r}; valid: MX formats {list(MX_FORMATS)}, scale modes "
                             f"{list(SCALE_MODES)}, roundings {list(ROUNDINGS)}, pairs like 'floor/rne', "
                             f"fields {list(ALL_FIELDS)}")
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
                    f"tuple or a dict of fields {ALL_FIELDS}; got {type(result).__name__}")


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
    a ``(scales, elements)`` tuple, or a dict of any of the fields in ``ALL_FIELDS``.  It raises
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


def _npz_fields(p: Path) -> dict[str, dict[str, Any]]:
    """{case id: {field: array}} of an ``.npz`` results file; bad content -> ValueError naming it."""
    fix = f"write it with numpy.savez(path, **{{key: array}}) using keys {NPZ_KEY_FORM}"
    try:
        npz = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: not a readable .npz archive ({type(exc).__name__}); {fix}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: holds a single array, not an .npz archive of named arrays; {fix}")
    out: dict[str, dict[str, Any]] = {}
    with npz:
        for key in npz.files:
            cid, _, name = key.rpartition("/")
            if name not in ALL_FIELDS:  # a bare case id holds that case's element codes
                cid, name = key, "elements"
            if cid.count("/") != 4:
                raise ValueError(f"{p}: key {key!r} is not of the form {NPZ_KEY_FORM} "
                                 f"(fields: {list(ALL_FIELDS)}; a bare '<case id>' key holds element codes)")
            try:
                out.setdefault(cid, {})[name] = npz[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{p}: array {key!r} is unreadable ({type(exc).__name__}); {fix}") from None
    return out


def _json_fields(p: Path) -> dict[str, dict[str, Any]]:
    """{case id: {field: array}} of a golden-schema results file (.json / .json.gz)."""
    doc = read_json_document(p, what="results file", fix=RESULTS_FIX)
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list):
        raise ValueError(f"{p}: expected a JSON object with a 'cases' list (golden schema); {RESULTS_FIX}")
    out: dict[str, dict[str, Any]] = {}
    for n, rec in enumerate(cases):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise ValueError(f"{p}: cases[{n}] has no string 'id'; {RESULTS_FIX}")
        cid = rec["id"]
        if cid in out:
            raise ValueError(f"{p}: duplicate result id {cid!r} (cases[{n}]); each case may appear once")
        check_field_names(set(rec) - {"id"} - _IGNORED_RECORD_KEYS, f"{p}: case {cid!r}")
        fields: dict[str, Any] = {}
        for name in ALL_FIELDS:
            if name in rec:
                try:
                    fields[name] = hex_to_array(rec[name], FLOAT_FIELDS.get(name))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{p}: case {cid!r} field {name!r} is not a hex string of whole items "
                                     f"({exc}); see golden/README.md 'Array encoding'") from None
        out[cid] = fields
    return out


#: Keys a results record may carry besides the output fields (a copy of the golden record is fine).
_IGNORED_RECORD_KEYS = frozenset({"group", "note", "scale_mode", "rounding", "block_size", "axis", "shape",
                                  "input_dtype", "input", "policies", "policy_outputs"})


def load_results(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read an implementation's outputs: {case id: {field: array}} from .json(.gz) or .npz files.

    A directory is read file by file (every ``*.json``, ``*.json.gz`` and ``*.npz`` in it); a
    field given twice for one case is an error.
    """
    p = Path(path)
    if p.is_dir():
        merged: dict[str, dict[str, Any]] = {}
        files = sorted(p.glob("*.json")) + sorted(p.glob("*.json.gz")) + sorted(p.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"{p} holds no *.json, *.json.gz or *.npz results files")
        for f in files:
            for cid, fields in load_results(f).items():
                have = merged.setdefault(cid, {})
                twice = sorted(set(have) & set(fields))
                if twice:
                    raise ValueError(f"{f}: case {cid!r} field(s) {twice} were already given by another file in {p}")
                have.update(fields)
        return merged
    if not p.is_file():
        raise FileNotFoundError(f"results file {p} not found")
    if p.suffix == ".npz":
        return _npz_fields(p)
    if p.name.endswith((".json", ".json.gz")):
        return _json_fields(p)
    raise ValueError(f"{p}: unsupported results file type {p.suffix!r}; valid: .json / .json.gz (golden schema), .npz")


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
