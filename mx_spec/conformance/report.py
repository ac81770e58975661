"""The outcome of a verification (:class:`VerifyReport`) and its rendering: tallies per format and
mode, field coverage, failing cases by group, the first mismatches, cause hints and the verdict.

The verdict is PASS (every asked case compared on every asked field, none failed), PARTIAL
(nothing failed but some asked case or field was not compared), FAIL (a mismatch or an unmet
requirement) or NO CASES COMPARED: nothing counts as passed that was not compared.  Each verdict
has its own exit status (:data:`EXIT_CODES`), so a CI job that checks only the exit status is
never told PASS for a partial run.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mx_spec.conformance.compare import Mismatch
from mx_spec.conformance.golden import CODE_FIELDS, OUTPUT_FIELDS, GoldenCase
from mx_spec.conformance.hints import cause_hints
from mx_spec.policies import POLICY_CHOICES

#: Exit status of ``mx-spec verify`` per verdict (2 is bad usage or unreadable input).
EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "PARTIAL": 3, "NO CASES COMPARED": 4}


@dataclass
class ModeTally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class VerifyReport:
    """Outcome of a verification: tallies, coverage, mismatches, policies and requirements."""

    tallies: dict[tuple[str, str, str], ModeTally] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list, repr=False)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    failed_cases: dict[str, str] = field(default_factory=dict)
    policies: frozenset[str] = frozenset()
    layouts: frozenset[str] = frozenset()
    field_cases: Counter = field(default_factory=Counter)
    group_field_failures: Counter = field(default_factory=Counter)
    policy_cases: Counter = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)
    unmet: list[str] = field(default_factory=list)
    asked: set[str] | None = None
    asked_fields: frozenset[str] = frozenset(CODE_FIELDS)
    asked_text: str = ""
    files_read: list[str] = field(default_factory=list)
    files_ignored: list[tuple[str, str]] = field(default_factory=list)
    policy_hints: list[str] = field(default_factory=list)
    _checked: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _cases: dict[str, GoldenCase] = field(default_factory=dict, repr=False)
    _actuals: dict[str, dict] = field(default_factory=dict, repr=False)
    _policy_cases: dict[str, tuple] = field(default_factory=dict, repr=False)
    _case_policy_match: dict[str, str] = field(default_factory=dict, repr=False)
    _float64_passed: list[GoldenCase] = field(default_factory=list, repr=False)

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

    def not_covered(self) -> list[str]:
        """Asked cases not compared, or compared without every asked field (ids, golden order)."""
        if self.asked is None:  # a report built by hand: every booked case counts as asked
            skipped = list(self.skip_reasons)
            return skipped + [c for c, f in self._checked.items() if not set(CODE_FIELDS) <= f]
        return sorted(c for c in self.asked if not self.asked_fields <= self._checked.get(c, frozenset()))

    @property
    def complete(self) -> bool:
        """Every asked case compared, with every asked field (scales and elements by default)."""
        return not self.not_covered()

    @property
    def verdict(self) -> str:
        """PASS, PARTIAL (nothing failed but coverage is incomplete), FAIL or NO CASES COMPARED."""
        if self.n_failed or self.unmet:
            return "FAIL"
        if self.n_passed == 0:
            return "NO CASES COMPARED"
        return "PASS" if self.complete else "PARTIAL"

    @property
    def exit_code(self) -> int:
        """``mx-spec verify``'s exit status for this verdict (:data:`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]

    @property
    def ok(self) -> bool:
        """True only for PASS: every asked case compared on every asked field and none failed."""
        return self.verdict == "PASS"

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
        parts = [f"{f} in {self.field_cases[f]}" for f in OUTPUT_FIELDS]
        return f"fields checked (of {self.n_compared} compared cases): " + ", ".join(parts)

    def failure_table(self) -> str:
        """Failing cases by group x field (a case counts once per field that differs)."""
        if not self.group_field_failures:
            return ""
        groups = sorted({g for g, _ in self.group_field_failures})
        rows = ["| group | " + " | ".join(OUTPUT_FIELDS) + " |", "| --- |" + " ---: |" * len(OUTPUT_FIELDS)]
        for g in groups:
            rows.append(f"| {g} | " + " | ".join(str(self.group_field_failures[(g, f)]) for f in OUTPUT_FIELDS) + " |")
        return "\n".join(rows)

    def hints(self) -> list[str]:
        return self.policy_hints + cause_hints(self)

    def summary(self, max_mismatches: int = 20, per_format: bool = False) -> str:
        """Files, what was asked, table, coverage, failures, first mismatches, hints and the verdict."""
        lines = []
        if self.files_read:
            lines.append(f"files read ({len(self.files_read)}): " + ", ".join(self.files_read))
        for name, why in self.files_ignored:
            lines.append(f"file ignored: {name}: {why}")
        if self.asked_text:
            lines.append(self.asked_text)
        lines += [self.table(per_format), "", self.coverage_line()]
        missing = self.not_covered()
        if missing:
            first = missing[0]
            why = self.skip_reasons.get(first, "compared without every asked field")
            lines.append(f"not covered: {len(missing)} asked case(s), e.g. {first} ({why})")
        if self.policies:
            applied = ", ".join(f"{p} (applied to {self.policy_cases[p]} cases)" for p in sorted(self.policies))
            lines.append(f"declared policies: {applied}")
        else:
            defaults = ", ".join(f"{name}={choices[0]}" for name, choices in POLICY_CHOICES.items())
            lines.append(f"declared policies: none (mx_spec defaults: {defaults})")
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
                     f"{self.n_skipped} skipped (exit status {self.exit_code})")
        return "\n".join(lines)

