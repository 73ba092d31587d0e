"""The intervals behind every verdict: exact, fail-closed, and honest about what a set can resolve."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetero.release.stats import (
    PairedChange,
    clopper_pearson,
    count_queries_needed,
    count_resolution,
    paired_queries_needed,
    paired_resolution,
    proportion,
)


def test_clopper_pearson_matches_known_values():
    # Reference values (exact binomial intervals, e.g. R's binom.test): 0/10 -> [0, 0.3085]; 5/10 -> [0.1871, 0.8129]
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.30850), abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-4)
    assert clopper_pearson(10, 10)[1] == 1.0 and clopper_pearson(0, 0) == (0.0, 1.0)


def test_no_change_still_has_a_width_and_it_shrinks_with_n():
    """358 queries cannot resolve half a point; 718 resolve about 0.6 point; the rule says how many it needs."""
    loss = PairedChange(358, 0, 0).loss()
    assert loss.value == 0 and loss.low == -loss.high and loss.high == pytest.approx(paired_resolution(358))
    assert 0.0118 < paired_resolution(358) < 0.0125 and 0.0058 < paired_resolution(718) < 0.0063
    n = paired_queries_needed(0.005)
    assert paired_resolution(n) <= 0.005 < paired_resolution(n - 1)
    m = count_queries_needed(0.005)
    assert count_resolution(m) <= 0.005 < count_resolution(m - 1)


def test_three_lost_queries_of_358_do_not_prove_a_drop():
    """The demo's int8 case on another machine: 3 lost, 0 gained. The interval contains 0: noise, not a verdict."""
    loss = PairedChange(358, 3, 0).loss()
    assert loss.value == pytest.approx(3 / 358) and loss.low < 0 < loss.high


def test_a_real_regression_is_resolved():
    loss = PairedChange(358, 40, 2).loss()
    assert loss.low > 0.05  # at least 5 points lost, with 95% confidence


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 2000)
    .flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))
    .flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, t[0] - t[1])))
)
def test_paired_interval_contains_the_estimate_and_lies_in_bounds(case):
    n, worse, better = case
    loss = PairedChange(n, worse, better).loss()
    assert -1.0 <= loss.low <= loss.value <= loss.high <= 1.0
    flip = PairedChange(n, worse, better).flip_rate()
    assert 0.0 <= flip.low <= flip.value <= flip.high <= 1.0


def test_paired_interval_covers_the_truth_at_least_95_percent():
    """Simulated: true loss 2 points with 10% discordance; the interval must cover it in >= 95% of draws."""
    rng = np.random.default_rng(0)
    n, p_worse, p_better = 500, 0.06, 0.04
    covered = 0
    for _ in range(400):
        u = rng.random(n)
        worse, better = int((u < p_worse).sum()), int(((u >= p_worse) & (u < p_worse + p_better)).sum())
        loss = PairedChange(n, worse, better).loss()
        covered += loss.low <= p_worse - p_better <= loss.high
    assert covered / 400 >= 0.95


def test_proportion_interval():
    iv = proportion(291, 358)
    assert iv.low < 291 / 358 < iv.high and iv.high - iv.low < 0.09


def test_inconsistent_counts_are_refused():
    with pytest.raises(ValueError):
        PairedChange(10, 8, 5)
