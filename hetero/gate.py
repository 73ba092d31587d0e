"""The release gate: rules on every candidate row of a report, decided on intervals, not point values.

Each rule is applied to counts measured on the probe set and passes only when the *worse* end of its 95% interval is
inside the threshold (fail-closed, `hetero.stats`):
- R@1 >= min: the lower end of R@1's exact interval;
- R@1 / cloud R@1 >= min: paired with the reference row on the same probes (queries the cloud gets right and the
  candidate loses, and the reverse): the relative recall at the upper end of the loss interval;
- mAP >= min: the lower end of the per-query AP mean's interval;
- negative flips vs a previous release <= max: the upper end of the flip rate's exact interval; R@1 lost against it
  <= max: the upper end of the paired loss interval. A max below what the probe set can resolve (for flips, the
  upper end when nothing flipped, about 3.7 / n) is refused: it could never pass.
- a cloud upgrade (a fixture carrying a v2 cloud, hetero.lineage): v2's queries in v1's gallery, paired with v1's
  own queries (cloud → cloud), by the same two rules with their own maxima (no backfill: BCT's criterion).
A row whose embeddings are not finite fails every rule. Exit 1 when any rule fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from hetero.config import CheckConfig
from hetero.errors import InputError, NotExecutedError
from hetero.report import Report, Row
from hetero.stats import PairedChange, count_queries_needed, paired_queries_needed, proportion


@dataclass(frozen=True)
class RuleResult:
    row: str
    rule: str
    value: float
    threshold: float
    passed: bool
    low: float = math.nan  # 95% interval of the value
    high: float = math.nan
    resolution: float = math.nan  # the smallest change the probe set resolves for this rule
    n: int = 0
    upper_bound: bool = False  # True: the value must stay at or below the threshold

    def describe(self) -> str:
        op = ("<=" if self.passed else ">") if self.upper_bound else (">=" if self.passed else "<")
        worse = self.high if self.upper_bound else self.low
        resolves = "" if math.isnan(self.resolution) else f"; resolves {self.resolution:.4f}"
        interval = "" if math.isnan(self.low) else f" [95% CI {self.low:.4f}, {self.high:.4f}; n={self.n}{resolves}]"
        decided = "" if math.isnan(worse) else f" (decided on {worse:.4f})"
        return f"{self.row}: {self.rule} {self.value:.4f}{interval}{decided} {op} {self.threshold:.4f}"


@dataclass(frozen=True)
class GateResult:
    rules: list[RuleResult]

    @property
    def passed(self) -> bool:
        return bool(self.rules) and all(r.passed for r in self.rules)

    @property
    def failures(self) -> list[str]:
        return [r.describe() for r in self.rules if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rules": [asdict(r) for r in self.rules], "failures": self.failures}


def _counts(r: Row, what: str) -> PairedChange:
    d = getattr(r, what)
    try:
        return PairedChange(int(d["n"]), int(d["worse"]), int(d["better"]))
    except (TypeError, KeyError, ValueError):
        raise InputError(
            f"row {r.name!r} has no valid paired counts {what!r}: re-run verify with this hetero"
        ) from None


def _row_rules(r: Row, ref: Row, cfg: CheckConfig) -> list[RuleResult]:
    if r.recall_at_1 is None or r.r1_hits is None or r.map_interval is None:
        raise InputError(f"row {r.name!r} lacks the counts the gate decides on: re-run verify with this hetero")
    out: list[RuleResult] = []
    if cfg.min_recall_at_1 > 0:
        iv = proportion(int(r.r1_hits), int(r.n_query))
        out.append(
            RuleResult(
                r.name,
                "R@1",
                iv.value,
                cfg.min_recall_at_1,
                iv.low >= cfg.min_recall_at_1,
                iv.low,
                iv.high,
                iv.resolution,
                iv.n,
            )
        )
    if cfg.min_relative_recall_at_1 > 0:
        loss = _counts(r, "vs_reference").loss()
        base = ref.recall_at_1 or 0.0
        allowed = (1.0 - cfg.min_relative_recall_at_1) * base  # the R@1 loss vs the cloud the rule tolerates
        if base > 0 and allowed < loss.resolution:
            raise InputError(
                f"min_relative_recall_at_1 {cfg.min_relative_recall_at_1:g} allows a loss of {allowed:.4f} R@1, below "
                f"what {loss.n} probes can resolve ({loss.resolution:.4f}): lower it or use a fixture with at least "
                f"{paired_queries_needed(allowed)} probes"
            )
        rel = (lambda x: (base - x) / base) if base > 0 else (lambda x: 0.0)
        out.append(
            RuleResult(
                r.name,
                "R@1 / cloud R@1",
                rel(loss.value),
                cfg.min_relative_recall_at_1,
                base > 0 and rel(loss.high) >= cfg.min_relative_recall_at_1,
                rel(loss.high),
                rel(loss.low),
                loss.resolution / base if base else math.nan,
                loss.n,
            )
        )
    if cfg.min_map > 0:
        lo, hi = r.map_interval
        out.append(
            RuleResult(r.name, "mAP", float(r.map), cfg.min_map, lo >= cfg.min_map, lo, hi, (hi - lo) / 2, r.n_query)
        )
    if r.vs_previous is not None:
        out += _paired_rules(
            r, "vs_previous", "previous", "previous", cfg.max_previous_flip_rate, cfg.max_previous_r1_loss
        )
    return out


def _require_finite(r: Row, rules: list[RuleResult]) -> list[RuleResult]:
    """NaN/Inf embeddings: whatever the numbers say, nothing about this row can pass."""
    if r.finite:
        return rules
    return [replace(x, passed=False) for x in rules] + [RuleResult(r.name, "embeddings are finite", 0.0, 1.0, False)]


def _paired_rules(r: Row, what: str, knob: str, versus: str, max_flips: float, max_loss: float) -> list[RuleResult]:
    """Rules on the paired top-1 outcomes of row `r` against an earlier model on the same probes: the negative-flip
    rate (upper end of its exact interval) and the R@1 lost (upper end of the paired loss interval), each at most
    its max; 1 turns a rule off. A max below what the probes can resolve is refused: it could never pass."""
    change, out = _counts(r, what), []
    for rule, limit, suffix, iv, needed in (
        ("negative flips", max_flips, "flip_rate", change.flip_rate(), count_queries_needed),
        ("R@1 lost", max_loss, "r1_loss", change.loss(), paired_queries_needed),
    ):
        if limit >= 1.0:
            continue
        if limit < iv.resolution:
            raise InputError(
                f"max_{knob}_{suffix} {limit:g} is below what {iv.n} probes can resolve ({iv.resolution:.4f}): "
                f"raise it or use a fixture with at least {needed(limit)} probes"
            )
        name = f"{rule} vs {versus}"
        out.append(
            RuleResult(r.name, name, iv.value, limit, iv.high <= limit, iv.low, iv.high, iv.resolution, iv.n, True)
        )
    return out


def evaluate(
    report: Report, cfg: CheckConfig, candidates: list[str] | None = None, *, require_executed: bool = False
) -> GateResult:
    """Apply `cfg` to the candidate rows (all rows of kind 'candidate' unless named explicitly).

    Rows that were not executed are left out (the report and JUnit list them as skipped) unless `require_executed`,
    which fails each of them; when no candidate could be executed at all there is nothing to pass, and that is an
    error, not a pass.
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
        rows = [r for r in report.rows if r.kind in ("candidate", "upgrade")]
    if not rows:
        raise InputError("report has no candidate rows to check")
    executed = [r for r in rows if r.executed]
    results: list[RuleResult] = []
    if require_executed:
        results += [RuleResult(r.name, f"executed ({r.note})", 0.0, 1.0, False) for r in rows if not r.executed]
    if not executed and not results:
        raise NotExecutedError("no candidate could be executed on this machine: " + "; ".join(r.note for r in rows))
    maxima = (cfg.max_previous_flip_rate, cfg.max_previous_r1_loss, cfg.max_upgrade_flip_rate, cfg.max_upgrade_r1_loss)
    if not any(t > 0 for t in (cfg.min_recall_at_1, cfg.min_relative_recall_at_1, cfg.min_map)) and min(maxima) >= 1:
        raise InputError("every gate threshold is off: nothing would be checked")
    for r in executed:
        if r.kind == "upgrade":  # a cloud v2's queries in v1's gallery (no backfill) against v1's own: BCT's criterion
            rules = _paired_rules(
                r, "vs_reference", "upgrade", "cloud → cloud", cfg.max_upgrade_flip_rate, cfg.max_upgrade_r1_loss
            )
        else:
            rules = _row_rules(r, ref, cfg)
        results += _require_finite(r, rules)
    if not results:
        raise InputError("every gate threshold is off for these rows: nothing would be checked")
    return GateResult(results)
