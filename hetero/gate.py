"""The release gate: thresholds applied to every candidate row of a report. Exit 1 when any rule fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hetero.config import CheckConfig
from hetero.errors import InputError, NotExecutedError
from hetero.report import Report


@dataclass(frozen=True)
class RuleResult:
    row: str
    rule: str
    value: float
    threshold: float
    passed: bool

    def describe(self) -> str:
        if self.rule.startswith("negative flips"):
            return f"{self.row}: {self.rule} {self.value:.4f} {'<=' if self.passed else '>'} {self.threshold:.4f}"
        op = ">=" if self.passed else "<"
        return f"{self.row}: {self.rule} {self.value:.4f} {op} {self.threshold:.4f}"


@dataclass(frozen=True)
class GateResult:
    rules: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def failures(self) -> list[str]:
        return [r.describe() for r in self.rules if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rules": [r.__dict__ for r in self.rules], "failures": self.failures}


def evaluate(report: Report, cfg: CheckConfig, candidates: list[str] | None = None) -> GateResult:
    """Apply `cfg` to the candidate rows (all rows of kind 'candidate' unless named explicitly).

    Rows that were not executed are left out (the report and JUnit list them as skipped); when no candidate could be
    executed at all there is nothing to pass, and that is an error, not a pass.
    """
    ref = report.reference
    if ref is None:
        raise InputError("report has no reference row (cloud → cloud); cannot compute relative recall")
    if candidates:
        names = {r.name for r in report.rows}
        missing = [c for c in candidates if c not in names]
        if missing:
            raise InputError(f"no row named {missing[0]!r} in the report (rows: {', '.join(sorted(names))})")
        rows = [report.row(c) for c in candidates]
    else:
        rows = [r for r in report.rows if r.kind == "candidate"]
    if not rows:
        raise InputError("report has no candidate rows to check")
    executed = [r for r in rows if r.executed]
    if not executed:
        raise NotExecutedError("no candidate could be executed on this machine: " + "; ".join(r.note for r in rows))
    results: list[RuleResult] = []
    for r in executed:
        rel = r.recall_at_1 / ref.recall_at_1 if ref.recall_at_1 > 0 else 0.0
        for rule, value, threshold in (
            ("R@1", r.recall_at_1, cfg.min_recall_at_1),
            ("R@1 / cloud R@1", rel, cfg.min_relative_recall_at_1),
            ("mAP", r.map, cfg.min_map),
        ):
            if threshold > 0:  # 0 = rule off: a rule that cannot fail is not reported as passed
                results.append(RuleResult(r.name, rule, float(value), float(threshold), bool(value >= threshold)))
        if r.previous_flip_rate is not None and cfg.max_previous_flip_rate < 1.0:
            results.append(
                RuleResult(
                    r.name,
                    "negative flips vs previous",
                    r.previous_flip_rate,
                    cfg.max_previous_flip_rate,
                    r.previous_flip_rate <= cfg.max_previous_flip_rate,
                )
            )
    if not results:
        raise InputError("every gate threshold is off: nothing would be checked")
    return GateResult(results)
