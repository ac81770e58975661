"""Verify another MX implementation against the golden vectors.

Two entry points:

* :func:`verify_results` checks outputs that another implementation already wrote, either in
  the golden schema (a JSON file whose ``cases`` list holds objects with ``id`` and any of
  ``scales``, ``elements``, ``packed``, ``decoded_f32``, ``decoded_f64`` as hex strings) or as
  an ``.npz`` whose keys are ``"<case id>/scales"``, ``"<case id>/elements"`` (uint8 codes),
  ``"<case id>/packed"`` (uint8 bytes) and ``"<case id>/decoded_f32"`` (float32); a bare
  ``"<case id>"`` key holds that case's element codes.
* :func:`verify_quantizer` runs a candidate quantizer callable over the golden inputs.

Comparison rules (the decisions of ``mx_spec``):

* Scale codes and element codes are compared bit for bit.
* In a block whose expected scale is the E8M0 NaN code 0xFF, the element codes, packed bits and
  decoded values are don't-care: the whole block decodes to NaN whatever they hold (OCP MX v1.0
  special-value rule: a NaN scale X makes every value of its block NaN).  ``mx_spec`` writes
  code 0 there (``mx_spec/quantize.py`` decisions).
* Decoded values are compared as bit patterns, except that any NaN matches any NaN.

Cases a candidate does not provide (absent from the results, or the callable raises
``NotImplementedError``) are counted as skipped, never as passed.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mx_spec.golden import ALL_MODES, GoldenCase, GoldenFile, array_to_hex, hex_to_array, load_golden

E8M0_NAN_CODE = 0xFF
CODE_FIELDS: tuple[str, ...] = ("scales", "elements")
ALL_FIELDS: tuple[str, ...] = ("scales", "elements", "packed", "decoded_f32", "decoded_f64")


@dataclass(frozen=True)
class Mismatch:
    """One differing item of one case."""

    case_id: str
    field: str
    index: tuple[int, ...]
    expected: str
    actual: str
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.field}[{', '.join(map(str, self.index))}]" if self.index else self.field
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{self.case_id}: {where}: expected {self.expected}, got {self.actual}{extra}"


@dataclass
class ModeTally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class VerifyReport:
    """Outcome of a verification: per (format, scale mode, rounding) tallies and mismatches."""

    tallies: dict[tuple[str, str, str], ModeTally] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    failed_cases: dict[str, str] = field(default_factory=dict)

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
    def ok(self) -> bool:
        """True when at least one case was compared and none failed."""
        return self.n_failed == 0 and self.n_passed > 0

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

    def summary(self, max_mismatches: int = 20, per_format: bool = False) -> str:
        """Table, then the first mismatches and a one-line verdict."""
        lines = [self.table(per_format), ""]
        shown = self.mismatches[:max_mismatches]
        if shown:
            lines.append(f"first {len(shown)} of {len(self.mismatches)} mismatching items:")
            lines.extend("  " + m.describe() for m in shown)
            lines.append("")
        verdict = "PASS" if self.ok else ("NO CASES COMPARED" if self.n_passed + self.n_failed == 0 else "FAIL")
        lines.append(f"{verdict}: {self.n_passed} cases passed, {self.n_failed} failed, {self.n_skipped} skipped")
        return "\n".join(lines)


# --------------------------------------------------------------------------- bit rendering
def _code_text(code: int, bits: int) -> str:
    return f"0x{code:0{(bits + 3) // 4}x} (0b{code:0{bits}b})"


def _element_bits(fmt_name: str) -> int:
    from mx_spec.formats import get_format

    return int(get_format(fmt_name).element.bits)


def _scale_per_element(case: GoldenCase) -> np.ndarray:
    """The expected scale code of each element's block, shaped like the input."""
    axis = case.axis % case.x.ndim if case.x.ndim else 0
    n = case.x.shape[axis] if case.x.ndim else 0
    scales = case.scales.reshape(_scales_shape(case))
    return np.take(scales, np.arange(n) // case.block_size, axis=axis)


def _scales_shape(case: GoldenCase) -> tuple[int, ...]:
    shape = list(case.x.shape)
    axis = case.axis % len(shape)
    shape[axis] = -(-shape[axis] // case.block_size)
    return tuple(shape)


# --------------------------------------------------------------------------- comparisons
def _compare_codes(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray,
                   bits: int, care: np.ndarray | None) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}")]
    differ = expected != actual
    if care is not None:
        differ &= care
    out = []
    per_elem_scale = _scale_per_element(case) if name == "elements" else None
    for idx in zip(*np.nonzero(differ)):
        idx = tuple(int(i) for i in idx)
        detail = ""
        if per_elem_scale is not None:
            axis = case.axis % case.x.ndim
            detail = (f"block {idx[axis] // case.block_size} along axis {case.axis}, scale "
                      f"0x{int(per_elem_scale[idx]):02x}, input {array_to_hex(case.x[idx], case.input_dtype)}")
        out.append(Mismatch(case.id, name, idx, _code_text(int(expected[idx]), bits),
                            _code_text(int(actual[idx]), bits), detail))
    return out


def _compare_floats(case: GoldenCase, name: str, expected: np.ndarray, actual: np.ndarray,
                    care: np.ndarray) -> list[Mismatch]:
    if actual.shape != expected.shape:
        return [Mismatch(case.id, name, (), f"shape {expected.shape}", f"shape {actual.shape}")]
    width = "float32" if expected.dtype == np.float32 else "float64"
    bits_dtype = np.uint32 if width == "float32" else np.uint64
    both_nan = np.isnan(expected) & np.isnan(actual)
    differ = (expected.view(bits_dtype) != actual.view(bits_dtype)) & ~both_nan & care
    return [Mismatch(case.id, name, tuple(int(i) for i in idx),
                     f"{array_to_hex(expected[idx], width)} ({float(expected[idx])!r})",
                     f"{array_to_hex(actual[idx], width)} ({float(actual[idx])!r})")
            for idx in zip(*np.nonzero(differ))]


def _packed_care(case: GoldenCase) -> np.ndarray | None:
    """Mask of packed bytes that must match, or None when no block has a NaN scale."""
    nan_elems = _scale_per_element(case) == E8M0_NAN_CODE
    if not nan_elems.any():
        return None
    from mx_spec import pack

    # Bytes that hold any don't-care element bit are don't-care: find them by packing a
    # marker array that sets only the bits of NaN-scale elements.
    probe = _with_elements(case, np.where(nan_elems, np.uint8((1 << _element_bits(case.fmt)) - 1), np.uint8(0)))
    marked = np.frombuffer(bytes(pack(probe)), dtype=np.uint8)
    return marked == 0


def _with_elements(case: GoldenCase, elements: np.ndarray) -> Any:
    """An MXArray holding the golden scales and the given element codes."""
    from mx_spec.formats import get_format
    from mx_spec.quantize import MXArray

    return MXArray(fmt=get_format(case.fmt), scales=case.scales.reshape(_scales_shape(case)),
                   elements=elements.astype(np.uint8), axis=case.axis % case.x.ndim, block_size=case.block_size,
                   scale_mode=case.scale_mode, rounding=case.rounding)


def compare_case(case: GoldenCase, actual: dict[str, Any]) -> list[Mismatch]:
    """Mismatches between a golden case and an implementation's outputs for it.

    ``actual`` maps field names (any of ``ALL_FIELDS``) to arrays: uint8 codes for
    ``scales``/``elements``/``packed``, floats for ``decoded_*``.  Missing fields are not checked.
    """
    out: list[Mismatch] = []
    care = _scale_per_element(case) != E8M0_NAN_CODE
    if "scales" in actual:
        got = np.asarray(actual["scales"])
        if got.size != case.scales.size:
            out.append(Mismatch(case.id, "scales", (), f"{case.scales.size} scale codes", f"shape {got.shape}"))
        else:
            shape = _scales_shape(case)
            out += _compare_codes(case, "scales", case.scales.reshape(shape),
                                  got.astype(np.uint8).reshape(shape), 8, None)
    if "elements" in actual:
        got = np.asarray(actual["elements"])
        if got.size == case.elements.size:
            got = got.astype(np.uint8).reshape(case.elements.shape)
        out += _compare_codes(case, "elements", case.elements, got, _element_bits(case.fmt), care)
    if "packed" in actual:
        got = np.frombuffer(bytes(np.asarray(actual["packed"], dtype=np.uint8).tobytes()), dtype=np.uint8)
        exp = np.frombuffer(case.packed, dtype=np.uint8)
        if got.shape != exp.shape:
            out.append(Mismatch(case.id, "packed", (), f"{exp.size} bytes", f"{got.size} bytes"))
        else:
            pcare = _packed_care(case)
            out += _compare_codes(case, "packed", exp, got, 8, pcare)
    for name, ref in (("decoded_f32", case.decoded_f32), ("decoded_f64", case.decoded_f64)):
        if name in actual and ref is not None:
            got = np.asarray(actual[name], dtype=ref.dtype)
            if got.size == ref.size:
                got = got.reshape(ref.shape)
            out += _compare_floats(case, name, ref, got, care)
    return out


# --------------------------------------------------------------------------- selection
def _select(golden: dict[str, GoldenFile], modes: Iterable[tuple[str, str]] | None) -> list[GoldenCase]:
    wanted = None if modes is None else {tuple(m) for m in modes}
    if wanted is not None:
        bad = wanted - set(ALL_MODES)
        if bad:
            raise ValueError(f"unknown mode(s) {sorted(bad)}; valid (scale_mode, rounding) pairs: {list(ALL_MODES)}")
    return [c for g in golden.values() for c in g.cases
            if wanted is None or (c.scale_mode, c.rounding) in wanted]


def _record(report: VerifyReport, case: GoldenCase, mismatches: list[Mismatch]) -> None:
    tally = report._tally(case)
    if mismatches:
        tally.failed += 1
        report.mismatches.extend(mismatches)
        report.failed_cases[case.id] = mismatches[0].describe()
    else:
        tally.passed += 1


# --------------------------------------------------------------------------- entry points
QuantizerFn = Callable[..., Any]


def _outputs_of(result: Any) -> dict[str, Any]:
    """Normalise a quantizer's return value to a field dict."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k in ALL_FIELDS}
    if isinstance(result, tuple) and len(result) == 2:
        return {"scales": result[0], "elements": result[1]}
    if hasattr(result, "scales") and hasattr(result, "elements"):
        return {"scales": result.scales, "elements": result.elements}
    raise TypeError("a quantizer must return an object with .scales and .elements, a (scales, elements) "
                    f"tuple or a dict of fields {ALL_FIELDS}; got {type(result).__name__}")


def verify_quantizer(fn: QuantizerFn, formats: Sequence[str] | None = None,
                     modes: Iterable[tuple[str, str]] | None = None,
                     golden_dir: str | os.PathLike | None = None, progress: bool = False) -> VerifyReport:
    """Run ``fn`` over the golden inputs and compare its codes with the golden ones.

    ``fn(x, fmt, *, block_size, axis, scale_mode, rounding)`` receives the input as a numpy
    array of its golden dtype (float32, float64, float16 or ml_dtypes.bfloat16) and returns an
    object with ``.scales`` and ``.elements`` (uint8 codes as ``mx_spec.quantize`` lays them out),
    a ``(scales, elements)`` tuple, or a dict of any of the fields in ``ALL_FIELDS``.  It raises
    ``NotImplementedError`` for inputs it does not support; those cases are skipped.
    ``formats`` defaults to all six MX formats, ``modes`` to every (scale_mode, rounding) pair.
    """
    golden = load_golden(golden_dir, formats)
    cases = _select(golden, modes)
    report = VerifyReport()
    from tqdm import tqdm

    for case in tqdm(cases, desc="verify", unit="case", disable=not progress):
        try:
            # the golden inputs hold NaN/Inf on purpose: keep numpy's warnings about them quiet
            with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
                result = fn(case.x.copy(), case.fmt, block_size=case.block_size, axis=case.axis,
                            scale_mode=case.scale_mode, rounding=case.rounding)
        except NotImplementedError as exc:
            report._tally(case).skipped += 1
            report.skip_reasons[case.id] = str(exc) or "NotImplementedError"
            continue
        _record(report, case, compare_case(case, _outputs_of(result)))
    return report


def load_results(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read an implementation's outputs: {case id: {field: array}} from .json or .npz files.

    A directory is read file by file (every ``*.json`` and ``*.npz`` in it).
    """
    p = Path(path)
    if p.is_dir():
        merged: dict[str, dict[str, Any]] = {}
        files = sorted(p.glob("*.json")) + sorted(p.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"{p} holds no *.json or *.npz results files")
        for f in files:
            for cid, fields in load_results(f).items():
                merged.setdefault(cid, {}).update(fields)
        return merged
    if not p.is_file():
        raise FileNotFoundError(f"results file {p} not found")
    if p.suffix == ".npz":
        out: dict[str, dict[str, Any]] = {}
        with np.load(p, allow_pickle=False) as npz:
            for key in npz.files:
                cid, _, name = key.rpartition("/")
                if name not in ALL_FIELDS:  # a bare case id holds that case's element codes
                    cid, name = key, "elements"
                out.setdefault(cid, {})[name] = npz[key]
        return out
    if p.suffix == ".json":
        with open(p, encoding="utf-8") as fh:
            doc = json.load(fh)
        cases = doc.get("cases") if isinstance(doc, dict) else None
        if not isinstance(cases, list):
            raise ValueError(f"{p}: expected a JSON object with a 'cases' list (golden schema)")
        out = {}
        for rec in cases:
            fields: dict[str, Any] = {}
            for name in ALL_FIELDS:
                if name in rec:
                    dtype = {"decoded_f32": "float32", "decoded_f64": "float64"}.get(name)
                    fields[name] = hex_to_array(rec[name], dtype)
            out[rec["id"]] = fields
        return out
    raise ValueError(f"{p}: unsupported results file type {p.suffix!r}; valid: .json (golden schema), .npz")


def verify_results(results: str | os.PathLike | dict[str, dict[str, Any]],
                   golden_dir: str | os.PathLike | None = None) -> VerifyReport:
    """Compare already-computed outputs (path or {case id: fields}) with the golden vectors.

    Only the formats that the results mention are loaded; golden cases without results are
    counted as skipped.
    """
    res = load_results(results) if not isinstance(results, dict) else results
    formats = sorted({cid.split("/", 1)[0] for cid in res})
    from mx_spec.formats import MX_FORMATS

    unknown = [f for f in formats if f not in MX_FORMATS]
    if unknown:
        raise ValueError(f"results mention unknown format(s) {unknown} in case ids; valid: {sorted(MX_FORMATS)}")
    golden = load_golden(golden_dir, formats)
    cases = _select(golden, None)
    known = {c.id for c in cases}
    stray = sorted(set(res) - known)
    if stray:
        raise ValueError(f"{len(stray)} result id(s) are not golden case ids, e.g. {stray[0]!r}; "
                         "ids look like 'mxfp4_e2m1/floor/rne/ties/0000'")
    report = VerifyReport()
    for case in cases:
        if case.id not in res:
            report._tally(case).skipped += 1
            continue
        _record(report, case, compare_case(case, res[case.id]))
    return report
