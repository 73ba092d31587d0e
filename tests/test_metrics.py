import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from hetero.errors import SpaceMismatchError
from hetero.release.metrics import chance_levels, cosine_parity, retrieval_metrics


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_map_and_recall_match_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    q, g = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(60, 8)))
    ql, gl = rng.integers(0, 4, 40), rng.integers(0, 4, 60)
    m = retrieval_metrics(q, ql, g, gl, ks=(1, 5), chunk=7)  # chunking must not change the answer
    sims = q @ g.T
    ap = [average_precision_score(gl == ql[i], sims[i]) for i in range(40)]
    assert m["map"] == pytest.approx(np.mean(ap), abs=1e-6)
    top = np.argsort(-sims, axis=1)
    for k in (1, 5):
        assert m[f"recall_at_{k}"] == pytest.approx(np.mean([(gl[top[i, :k]] == ql[i]).any() for i in range(40)]))


def test_perfect_and_reversed_rankings():
    g = np.eye(4, dtype=np.float32)
    labels = np.arange(4)
    perfect = retrieval_metrics(g, labels, g, labels)
    assert perfect["recall_at_1"] == 1.0 and perfect["map"] == 1.0
    wrong = retrieval_metrics(g, labels, g, np.array([1, 2, 3, 0]))
    assert wrong["recall_at_1"] == 0.0


def test_queries_without_match_are_excluded_and_counted():
    g = np.eye(3, dtype=np.float32)
    m = retrieval_metrics(g, np.array([0, 1, 9]), g, np.array([0, 1, 2]))
    assert m["n_without_match"] == 1 and m["recall_at_1"] == 1.0


def test_dimension_mismatch_is_refused():
    with pytest.raises(SpaceMismatchError):
        retrieval_metrics(np.ones((2, 4)), np.zeros(2), np.ones((2, 5)), np.zeros(2))


def test_chance_and_parity():
    assert chance_levels(np.array([0, 1]), np.array([0, 0, 0, 1]))["recall_at_1"] == pytest.approx((0.75 + 0.25) / 2)
    x = _unit(np.random.default_rng(1).normal(size=(5, 3)))
    assert cosine_parity(x, x)["min_cosine"] == pytest.approx(1.0)
    assert cosine_parity(x, -x)["min_cosine"] == pytest.approx(-1.0)
