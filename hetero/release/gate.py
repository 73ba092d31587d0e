"""The release gate: rules on every candidate row of a report, decided on intervals, not point values.

Each rule is applied to counts measured on the probe set and passes only when the *worse* end of its 95% interval is
inside the threshold (fail-closed, `hetero.release.stats`):
- R@1 >= min: the lower end of R@1's exact interval;
- R@1 / cloud R@1 >= min: paired with the reference row on the same probes (queries the cloud gets right and the
  candidate loses, and the reverse): the relative recall at the upper end of the loss interval;
- mAP >= min: the lower end of the per-query AP mean's interval;
- negative flips vs a previous release <= max: the upper end of the flip rate's exact interval; R@1 lost against it
  <= max: the upper end of the paired loss interval. A max below what the probe set can resolve (for flips, the
  upper end when nothing flipped, about 3.7 / n) is refused: it could never pass.
- a cloud upgrade (a fixture carrying a v2 cloud, hetero.training.lineage): v2's queries in v1's gallery, paired with
  v1's own queries (cloud → cloud), by the same two rules with their own maxima (no backfill: BCT's criterion).
A row whose embeddings are not finite fails every rule. Exit 1 when any rule fails.

No requested rule vanishes: a rule that could not be evaluated (its row, or the previous release it compares with,
did not execute here) is listed as *not evaluated* with the reason, and fails the gate under `require_executed`.
A minimum at or below what chance gives on the probes (a random or all-zero model reaches it) is refused, as is a
probe set with a single class: neither can tell a working model from a broken one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hetero.config import CheckConfig
from hetero.errors import InputError, NotExecutedError
from hetero.release.report import Report, Row
from hetero.release.stats import PairedChange, count_queries_needed, paired_queries_needed, proportion

RESIZERS = "resizers"  # require_resizers without the rows that would decide it
RUNS = "runs"  # the rule every row of a runtime that refused its artifact fails


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
    evaluated: bool = True  # False: requested but not measurable here (`reason` says why); never a pass
    reason: str = ""

    @property
    def status(self) -> str:
        return "not evaluated" if not self.evaluated else ("passed" if self.passed else "failed")

    def describe(self) -> str:
        if not self.evaluated:
            return f"{self.row}: {self.rule} not evaluated ({self.reason})"
        if self.reason:  # decided without a number: the runtime refused the artifact
            return f"{self.row}: {self.rule} failed — {self.reason}"
        op = ("<=" if self.passed else ">") if self.upper_bound else (">=" if self.passed else "<")
        worse = self.high if self.upper_bound else self.low
        resolves = "" if math.isnan(self.resolution) else f"; resolves {self.resolution:.4f}"
        interval = "" if math.isnan(self.low) else f" [95% CI {self.low:.4f}, {self.high:.4f}; n={self.n}{resolves}]"
        decided = "" if math.isnan(worse) else f" (decided on {worse:.4f})"
        return f"{self.row}: {self.rule} {self.value:.4f}{interval}{decided} {op} {self.threshold:.4f}"


@dataclass(frozen=True)
class GateResult:
    rules: list[RuleResult]
    require_executed: bool = False  # a rule not evaluated fails the gate

    def counts(self, rule: RuleResult) -> bool:
        """Whether `rule` decides the verdict: every evaluated rule; an unevaluated one when execution is required."""
        return rule.evaluated or self.require_executed

    @property
    def passed(self) -> bool:
        return any(r.evaluated for r in self.rules) and all(r.passed for r in self.rules if self.counts(r))

    @property
    def failures(self) -> list[str]:
        return [r.describe() for r in self.rules if self.counts(r) and not r.passed]

    def verdict(self, rule: RuleResult, fail: str = "FAIL") -> str:
        """PASS, FAIL, or SKIP for a requested rule not evaluated here (FAIL when execution is required)."""
        if self.counts(rule):
            return "PASS" if rule.passed else fail
        return "SKIP"

    def to_text(self) -> str:
        lines = [f"{self.verdict(r):<6}{r.describe()}" for r in self.rules]
        return "\n".join(lines) + f"\n\ngate: {'PASS' if self.passed else 'FAIL'}"

    def to_markdown(self) -> str:
        word = "PASS" if self.passed else ("FAIL" if self.failures else "NOT EXECUTED")
        rules = [f"- {self.verdict(r, '**FAIL**')} {r.describe()}" for r in self.rules]
        return f"\n## Gate: {word}\n\n" + "\n".join(rules) + "\n"

    @property
    def not_evaluated(self) -> list[str]:
        return [r.describe() for r in self.rules if not r.evaluated]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rules": [{**_json_numbers(asdict(r)), "status": r.status} for r in self.rules],
            "failures": self.failures,
            "not_evaluated": self.not_evaluated,
        }


_R1, _REL, _MAP = "R@1", "R@1 / cloud R@1", "mAP"
_CLOUD = "cloud → cloud"  # what an upgrade's paired rules compare with


def _paired_limits(cfg: CheckConfig, versus: str) -> list[tuple[str, float, str, str]]:
    """(rule name, max, config key, attribute of PairedChange) of the two paired rules against `versus`."""
    knob = "upgrade" if versus == _CLOUD else "previous"
    return [
        (f"negative flips vs {versus}", getattr(cfg, f"max_{knob}_flip_rate"), f"max_{knob}_flip_rate", "flip_rate"),
        (f"R@1 lost vs {versus}", getattr(cfg, f"max_{knob}_r1_loss"), f"max_{knob}_r1_loss", "loss"),
    ]


def requested(r: Row, cfg: CheckConfig, previous: bool) -> list[str]:
    """The rules `cfg` asks of row `r` (a rule at 0 for a minimum or 1 for a maximum is off): what the result must
    list, evaluated or not. `previous`: the check compares with a previous release."""
    if r.kind == "upgrade":
        return [name for name, limit, _, _ in _paired_limits(cfg, _CLOUD) if limit < 1.0]
    names = [n for n, t in ((_R1, cfg.min_recall_at_1), (_REL, cfg.min_relative_recall_at_1), (_MAP, cfg.min_map)) if t]
    if previous:
        names += [name for name, limit, _, _ in _paired_limits(cfg, "previous") if limit < 1.0]
    return names


def _not_evaluated(r: Row, names: list[str], reason: str, cfg: CheckConfig) -> list[RuleResult]:
    limits = {_R1: cfg.min_recall_at_1, _REL: cfg.min_relative_recall_at_1, _MAP: cfg.min_map}
    for versus in ("previous", _CLOUD):
        limits.update({name: limit for name, limit, _, _ in _paired_limits(cfg, versus)})
    kw = {"evaluated": False, "reason": reason}
    return [RuleResult(r.name, n, math.nan, limits.get(n, 1.0), False, upper_bound=n not in (_R1, _REL, _MAP), **kw)
            for n in names]  # fmt: skip


def _json_numbers(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (an interval a rule does not have, a value not measured) is not JSON: null instead."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


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
                _R1,
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
                _REL,
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
            RuleResult(r.name, _MAP, float(r.map), cfg.min_map, lo >= cfg.min_map, lo, hi, (hi - lo) / 2, r.n_query)
        )
    if r.vs_previous is not None:
        out += _paired_rules(r, "vs_previous", _paired_limits(cfg, "previous"))
    return out


def _require_finite(r: Row, rules: list[RuleResult]) -> list[RuleResult]:
    """NaN/Inf embeddings: whatever the numbers say, nothing about this row can pass."""
    if r.finite:
        return rules
    return [replace(x, passed=False) for x in rules] + [RuleResult(r.name, "embeddings are finite", 0.0, 1.0, False)]


def _paired_rules(r: Row, what: str, limits: list[tuple[str, float, str, str]]) -> list[RuleResult]:
    """Rules on the paired top-1 outcomes of row `r` against an earlier model on the same probes: the negative-flip
    rate (upper end of its exact interval) and the R@1 lost (upper end of the paired loss interval), each at most
    its max; 1 turns a rule off. A max below what the probes can resolve is refused: it could never pass."""
    change, out = _counts(r, what), []
    for name, limit, key, measure in limits:
        if limit >= 1.0:
            continue
        iv = change.flip_rate() if measure == "flip_rate" else change.loss()
        if limit < iv.resolution:
            needed = count_queries_needed if measure == "flip_rate" else paired_queries_needed
            raise InputError(
                f"{key} {limit:g} is below what {iv.n} probes can resolve ({iv.resolution:.4f}): "
                f"raise it or use a fixture with at least {needed(limit)} probes"
            )
        out.append(
            RuleResult(r.name, name, iv.value, limit, iv.high <= limit, iv.low, iv.high, iv.resolution, iv.n, True)
        )
    return out


def _refuse_chance(report: Report, ref: Row, cfg: CheckConfig) -> None:
    """A minimum that chance reaches cannot tell a working model from a random or all-zero one: refused with the
    number, as is a probe set with a single class (chance R@1 = 1: every model passes)."""
    chance = report.chance.get("recall_at_1")
    if not isinstance(chance, int | float) or not 0.0 <= chance <= 1.0:
        raise InputError(f"report has no valid chance R@1 ({chance!r})")
    if chance >= 1.0:
        raise InputError("the probes and gallery hold a single class: any model retrieves it; use at least two classes")
    chance_map = float(report.chance.get("map", chance))
    ref_r1 = ref.recall_at_1 or 0.0
    for key, value, floor, what in (
        ("min_recall_at_1", cfg.min_recall_at_1, chance, f"chance R@1 on these probes is {chance:.4f}"),
        ("min_map", cfg.min_map, chance_map, f"a random ranking's mAP on these probes is {chance_map:.4f}"),
        (
            "min_relative_recall_at_1",
            cfg.min_relative_recall_at_1,
            chance / ref_r1 if ref_r1 > 0 else 1.0,
            f"a random model reaches {chance:.4f} / cloud R@1 {ref_r1:.4f}",
        ),
    ):
        if 0 < value <= floor:
            raise InputError(
                f"{key} {value:g} is at or below what chance gives ({what}): a random or all-zero model would pass; "
                f"raise it above {floor:.4f}"
            )


def tightened(floor: CheckConfig, changes: dict[str, Any], what: str) -> CheckConfig:
    """`floor` (a fixture's frozen thresholds) with `changes` applied, which may only tighten it: a higher minimum,
    a lower maximum, a rule turned on, execution required. Loosening any of them needs a newly signed fixture; it
    is refused with the reason, never applied silently."""
    cfg = replace(floor, **changes)
    looser = []
    for f in fields(CheckConfig):
        was, now = getattr(floor, f.name), getattr(cfg, f.name)
        if isinstance(was, bool):  # require_executed, require_resizers: a requirement may be added, never dropped
            worse = was and not now
        elif f.name.startswith("min_"):
            worse = now < was  # 0 turns a minimum off: below any floor that is on
        else:
            worse = now > was  # 1 turns a maximum off
        if worse:
            looser.append(f"{f.name} {now:g} (the fixture's is {was:g})")
    if looser:
        raise InputError(
            f"{what} would loosen the fixture's thresholds, which are a floor: {'; '.join(looser)} — tighten only, "
            "or have the cloud team sign a new fixture"
        )
    return cfg


def _missing_resizes(report: Report, rows: list[Row], cfg: CheckConfig) -> list[RuleResult]:
    """require_resizers on a report without resize rows for a candidate: a failed rule, never a silent pass."""
    if not cfg.require_resizers:
        return []
    resized = {r.query.rpartition(" [")[0] for r in report.rows if r.kind == "resize"}
    why = "require_resizers: no resize rows for this candidate (run check on a fixture, which embeds them)"
    return [
        RuleResult(r.name, RESIZERS, math.nan, 1.0, False, reason=why)
        for r in rows
        if r.kind == "candidate" and r.executed and r.query not in resized
    ]


def evaluate(
    report: Report, cfg: CheckConfig, candidates: list[str] | None = None, *, require_executed: bool = False
) -> GateResult:
    """Apply `cfg` to the candidate rows (all rows of kind 'candidate' unless named explicitly).

    Every requested rule is in the result: a row that was not executed here, or a comparison with a previous release
    that was not, lists its rules as not evaluated with the reason — skipped, or failed under `require_executed`.
    When no rule could be evaluated at all there is nothing to pass, and that is an error, not a pass.
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
        gated = ("candidate", "upgrade", "resize") if cfg.require_resizers else ("candidate", "upgrade")
        rows = [r for r in report.rows if r.kind in gated]
    if not rows:
        raise InputError("report has no candidate rows to check")
    previous = next((r for r in report.rows if r.kind == "previous"), None)
    maxima = (cfg.max_previous_flip_rate, cfg.max_previous_r1_loss, cfg.max_upgrade_flip_rate, cfg.max_upgrade_r1_loss)
    if not any(t > 0 for t in (cfg.min_recall_at_1, cfg.min_relative_recall_at_1, cfg.min_map)) and min(maxima) >= 1:
        raise InputError("every gate threshold is off: nothing would be checked")
    _refuse_chance(report, ref, cfg)
    results: list[RuleResult] = []
    for r in rows:
        names = requested(r, cfg, previous is not None and r.kind == "candidate")
        if r.status == "failed":  # the runtime (version, CPU) an app ships refused it: no rule can pass
            results.append(RuleResult(r.name, RUNS, math.nan, 1.0, False, reason=r.note or "the runtime failed"))
            continue
        if not r.executed:
            results += _not_evaluated(r, names or ["executed"], f"{r.runtime} not executed here: {r.note}", cfg)
            continue
        if r.kind == "upgrade":  # a cloud v2's queries in v1's gallery (no backfill) against v1's own: BCT's criterion
            rules = _paired_rules(r, "vs_reference", _paired_limits(cfg, _CLOUD))
        else:
            rules = _row_rules(r, ref, cfg)
        results += _require_finite(r, rules)
        missing = [n for n in names if n not in {x.rule for x in rules}]
        if missing and previous is not None and r.vs_previous is None:
            why = f"previous release {previous.query!r} " + (
                f"not executed here: {previous.note}" if not previous.executed else "has no paired outcomes"
            )
            results += _not_evaluated(r, missing, why, cfg)
    results += _missing_resizes(report, rows, cfg)
    if not results:
        raise InputError("every gate threshold is off for these rows: nothing would be checked")
    gate = GateResult(results, require_executed)
    if not any(x.evaluated for x in results) and not require_executed:
        reasons = sorted({x.reason for x in results})
        error = NotExecutedError("no candidate could be executed on this machine: " + "; ".join(reasons))
        error.gate = gate  # the rules, each skipped with its reason, for JUnit and Markdown
        raise error
    return gate
