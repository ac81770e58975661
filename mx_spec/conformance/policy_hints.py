"""Which undeclared policy a failing run follows: suggested only when declaring it is consistent.

A failing case that would pass under an undeclared policy is evidence, not proof: an
implementation with a defect in the same corner (e.g. subnormal inputs flushed in the scale but
not in the elements) passes some such cases and fails others.  So a policy (or combination) P
is suggested only when declaring it, re-checked over *every* compared case whose outputs depend
on P, makes failing cases pass and no passing case fail; the cases that still fail are counted.
Only then are the failing cases annotated ``[passes under policy P]``.
"""
from __future__ import annotations

from typing import Any

from mx_spec.conformance.compare import compare_case


def policy_effect(report: Any, combo: str) -> tuple[int, int, int]:
    """(failing cases that pass, failing cases that still fail, passing cases that fail) when the
    policies of ``combo`` (comma-separated) are declared on top of the report's own."""
    extra = set(combo.split(","))
    declared = report.policies | extra
    fixed = still = broken = 0
    for case, actual, passed in report._policy_cases.values():
        if not extra & set(case.policies):
            continue
        now = not compare_case(case, actual, declared, report.layouts)
        if passed and not now:
            broken += 1
        elif not passed:
            fixed, still = (fixed + 1, still) if now else (fixed, still + 1)
    return fixed, still, broken


def evaluate_policy_hints(report: Any) -> None:
    """Fill ``report.policy_hints`` and annotate the failing cases a consistent policy explains."""
    report.policy_hints = []
    consistent = set()
    for combo in sorted(set(report._case_policy_match.values())):
        fixed, still, broken = policy_effect(report, combo)
        if broken or not fixed:
            continue  # declaring it would break passing cases: not a policy this implementation follows
        consistent.add(combo)
        text = f"{fixed} failing case(s) pass under policy {combo} and no passing case fails under it"
        if still:
            text += f"; {still} other failing case(s) that depend on it still fail for another reason"
        report.policy_hints.append(text + ": declare the policy if your implementation follows it "
                                          "(golden/README.md, Policies)")
    for cid, combo in report._case_policy_match.items():
        if combo in consistent:
            report.failed_cases[cid] += f"  [passes under policy {combo}]"
