"""Confidence intervals for retrieval verdicts: exact on counts, so a rule decides only what its data can resolve.

Every retrieval rule compares producers on the *same* queries, so the measurements are paired. What matters is how
many queries changed side: `worse` (the reference got it right at top-1, the candidate does not) and `better` (the
opposite). Queries that agree carry no information about a change.

The interval for the loss (worse − better) / n is exact and fail-closed (Bonferroni, 95% overall):
- the discordant rate d = (worse + better) / n gets a Clopper–Pearson interval at 97.5%;
- the worse share among discordant pairs, s = worse / (worse + better), gets one at 97.5% (with no discordant pair
  it is [0, 1]: nothing is known about the direction);
- loss = d · (2s − 1), whose extremes lie at the corners of that box.
So when nothing changed (no discordant pair) the interval is ±(upper end of d), not zero: that half-width is the
smallest change the query set can resolve (`resolution`), about 4.4 / n. A tolerance below it can never be
shown to hold and is refused (`paired_queries_needed` says how many queries it would take).

One-sided counts (negative flips vs a previous release: share of queries it got right and the candidate loses) get
a plain 95% Clopper–Pearson interval; absolute rates (R@1) too. mAP, a mean of per-query average precisions in
[0, 1], gets a Student-t interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# scipy.special, not scipy.stats: the same inverse functions at a third of the import time (the light `check`
# install answers in about a second; scipy.stats alone took one).
from scipy import special as _sp

ALPHA = 0.05


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact two-sided (1 − alpha) interval for a binomial proportion k / n; [0, 1] when n = 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    lo = 0.0 if k == 0 else float(_sp.betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(_sp.betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


def _zero_count_upper(n: int, alpha: float) -> float:
    """Upper end of the two-sided (1 − alpha) Clopper–Pearson interval when nothing was counted: 1 − (alpha/2)^(1/n)."""
    return 1.0 - (alpha / 2) ** (1.0 / n) if n > 0 else 1.0


def _queries_needed(tolerance: float, alpha: float) -> int:
    """Smallest n whose zero-count upper end (two-sided 1 − alpha) is at most `tolerance`."""
    if not 0 < tolerance < 1:
        return 0 if tolerance >= 1 else 10**12
    return math.ceil(math.log(alpha / 2) / math.log1p(-tolerance))


@dataclass(frozen=True)
class Interval:
    """A measured value with its 95% interval and the smallest change the data could resolve."""

    value: float
    low: float
    high: float
    resolution: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class PairedChange:
    """Paired top-1 outcomes of a candidate against a reference on the same n queries."""

    n: int
    worse: int  # reference right, candidate wrong
    better: int  # reference wrong, candidate right

    def __post_init__(self) -> None:
        if self.n < 0 or self.worse < 0 or self.better < 0 or self.worse + self.better > self.n:
            raise ValueError(f"inconsistent paired counts: n={self.n}, worse={self.worse}, better={self.better}")

    @classmethod
    def from_outcomes(cls, reference_ok: np.ndarray, candidate_ok: np.ndarray) -> PairedChange:
        reference_ok, candidate_ok = np.asarray(reference_ok, bool), np.asarray(candidate_ok, bool)
        if reference_ok.shape != candidate_ok.shape:
            raise ValueError("paired outcomes need equal shapes")
        return cls(
            n=int(reference_ok.size),
            worse=int((reference_ok & ~candidate_ok).sum()),
            better=int((~reference_ok & candidate_ok).sum()),
        )

    def loss(self, alpha: float = ALPHA) -> Interval:
        """(worse − better) / n: the R@1 the candidate loses against the reference, with its exact interval."""
        if self.n == 0:
            return Interval(0.0, -1.0, 1.0, 1.0, 0)
        m = self.worse + self.better
        d_lo, d_hi = clopper_pearson(m, self.n, alpha / 2)
        s_lo, s_hi = clopper_pearson(self.worse, m, alpha / 2)
        corners = [d * (2 * s - 1) for d in (d_lo, d_hi) for s in (s_lo, s_hi)]
        return Interval(
            value=(self.worse - self.better) / self.n,
            low=min(corners),
            high=max(corners),
            resolution=paired_resolution(self.n, alpha),
            n=self.n,
        )

    def flip_rate(self, alpha: float = ALPHA) -> Interval:
        """worse / n: negative flips, the share of queries the reference got right and the candidate loses."""
        lo, hi = clopper_pearson(self.worse, self.n, alpha)
        return Interval(self.worse / max(self.n, 1), lo, hi, count_resolution(self.n, alpha), self.n)

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n, "worse": self.worse, "better": self.better}


def paired_resolution(n: int, alpha: float = ALPHA) -> float:
    """Half-width of the paired-loss interval when no query changed side: the smallest loss n queries resolve."""
    return _zero_count_upper(n, alpha / 2)


def count_resolution(n: int, alpha: float = ALPHA) -> float:
    """Upper end of a count's interval when nothing was counted: the smallest rate n queries resolve."""
    return _zero_count_upper(n, alpha)


def paired_queries_needed(tolerance: float, alpha: float = ALPHA) -> int:
    """Smallest n whose `paired_resolution` is at most `tolerance` (the inverse of that function)."""
    return _queries_needed(tolerance, alpha / 2)


def count_queries_needed(tolerance: float, alpha: float = ALPHA) -> int:
    """Smallest n whose `count_resolution` is at most `tolerance` (the inverse of that function)."""
    return _queries_needed(tolerance, alpha)


def proportion(k: int, n: int, alpha: float = ALPHA) -> Interval:
    """A rate (e.g. R@1 = hits / queries) with its exact interval; resolution = the interval's half-width."""
    lo, hi = clopper_pearson(k, n, alpha)
    return Interval(k / max(n, 1), lo, hi, (hi - lo) / 2, n)


def mean_interval(values: np.ndarray, alpha: float = ALPHA, bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """Mean of per-query scores in [0, 1] (e.g. average precision) with a Student-t interval, clipped to `bounds`
    (a ratio that can be negative, such as an overhead share: (-inf, inf))."""
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return Interval(0.0, 0.0, 1.0, 0.5, 0)
    mean = float(v.mean())
    if n == 1:
        return Interval(mean, 0.0, 1.0, 0.5, 1)
    half = float(_sp.stdtrit(n - 1, 1 - alpha / 2) * v.std(ddof=1) / math.sqrt(n))
    return Interval(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), half, n)
