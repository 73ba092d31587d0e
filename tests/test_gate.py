"""The gate decides on intervals: noise cannot pass or fail a release, and nothing unmeasurable passes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hetero.config import CheckConfig
from hetero.devices.harness import Producer, compatibility_report
from hetero.devices.loader import load
from hetero.errors import ConfigError, InputError, NotExecutedError
from hetero.release.fixture import Fixture
from hetero.release.gate import evaluate
from hetero.release.report import Report, Row

OFF = {"min_recall_at_1": 0.0, "min_relative_recall_at_1": 0.0, "min_map": 0.0, "max_previous_flip_rate": 1.0}


def _row(name: str, n: int, hits: int, kind: str = "candidate", worse: int = 0, better: int = 0, **kw) -> Row:
    return Row(
        name=name,
        query=name,
        gallery="cloud",
        runtime="onnxruntime",
        kind=kind,
        recall_at_1=hits / n,
        recall_at_5=1.0,
        map=0.6,
        n_query=n,
        n_gallery=n,
        r1_hits=hits,
        vs_reference={"n": n, "worse": worse, "better": better},
        map_interval=[0.55, 0.65],
        **kw,
    )


def _report(*rows: Row, n: int = 358, ref_hits: int = 320) -> Report:
    ref = _row("cloud → cloud", n, ref_hits, kind="reference")
    return Report(
        space={"id": "s@1", "dim": 16, "metric": "cosine"}, dataset={}, chance={"recall_at_1": 0.25}, rows=[ref, *rows]
    )


def _cfg(**kw) -> CheckConfig:
    return CheckConfig(**{**OFF, **kw})


def test_r1_decides_on_the_lower_end_of_its_interval():
    """0.53 on 358 probes is above 0.5, but its interval reaches 0.48: not shown. 0.56 is."""
    borderline = evaluate(_report(_row("edge", 358, 190)), _cfg(min_recall_at_1=0.5))
    assert not borderline.passed and borderline.rules[0].value > 0.5 > borderline.rules[0].low
    assert "95% CI" in borderline.failures[0]
    assert evaluate(_report(_row("edge", 358, 215)), _cfg(min_recall_at_1=0.5)).passed


def test_relative_recall_is_paired_with_the_cloud():
    """Cloud 320/358; the candidate loses 60 probes and gains 20: relative ~0.875 at the point, decided lower."""
    r = evaluate(_report(_row("edge", 358, 280, worse=60, better=20)), _cfg(min_relative_recall_at_1=0.8))
    rule = r.rules[0]
    assert rule.value == pytest.approx(280 / 320) and rule.low < rule.value
    assert r.passed == (rule.low >= 0.8)


def test_flip_tolerance_below_resolution_is_refused():
    prev = _row("edge", 358, 300, vs_previous={"n": 358, "worse": 0, "better": 0})
    with pytest.raises(InputError, match=r"below what 358 probes can resolve.*at least \d+ probes"):
        evaluate(_report(prev), _cfg(max_previous_flip_rate=0.005))
    assert evaluate(_report(prev), _cfg(max_previous_flip_rate=0.02)).passed


def test_relative_tolerance_below_resolution_is_refused():
    with pytest.raises(InputError, match=r"min_relative_recall_at_1 0.995 allows a loss of .* at least \d+ probes"):
        evaluate(_report(_row("edge", 358, 320)), _cfg(min_relative_recall_at_1=0.995))


def test_flips_decide_on_the_upper_end():
    prev = _row("edge", 358, 300, vs_previous={"n": 358, "worse": 5, "better": 9})  # 1.4% point, upper ~3.2%
    r = evaluate(_report(prev), _cfg(max_previous_flip_rate=0.02))
    assert not r.passed and r.rules[0].value < 0.02 < r.rules[0].high


def test_non_finite_embeddings_fail_every_rule():
    bad = _row("edge", 358, 300, finite=False)
    r = evaluate(_report(bad), _cfg(min_recall_at_1=0.3, min_map=0.3))
    assert not r.passed and all(not x.passed for x in r.rules)
    assert any(x.rule == "embeddings are finite" for x in r.rules)


def test_require_executed_fails_what_could_not_run():
    skipped = Row(
        name="edge.coreml",
        query="e",
        gallery="cloud",
        runtime="coreml",
        kind="candidate",
        status="not executed",
        note="Core ML executes only on macOS",
    )
    ok = _row("edge", 358, 300)
    assert evaluate(_report(ok, skipped), _cfg(min_recall_at_1=0.5)).passed
    strict = evaluate(_report(ok, skipped), _cfg(min_recall_at_1=0.5), require_executed=True)
    assert not strict.passed and strict.failures[0].startswith("edge.coreml: R@1 not evaluated (coreml not executed")
    assert "<skipped" not in _report(ok, skipped).to_junit(strict)
    lenient = evaluate(_report(ok, skipped), _cfg(min_recall_at_1=0.5))  # listed, skipped with the reason: no pass
    assert [x.status for x in lenient.rules] == ["passed", "not evaluated"] and lenient.not_evaluated
    assert '<skipped message="edge.coreml: R@1 not evaluated' in _report(ok, skipped).to_junit(lenient)
    with pytest.raises(NotExecutedError):
        evaluate(_report(skipped), _cfg(min_recall_at_1=0.5))
    assert not evaluate(_report(skipped), _cfg(min_recall_at_1=0.5), require_executed=True).passed


def test_a_report_without_counts_is_refused():
    old = _row("edge", 358, 300)
    old.r1_hits = None
    with pytest.raises(InputError, match="lacks the counts"):
        evaluate(_report(old), _cfg(min_recall_at_1=0.5))


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5, math.inf])
def test_thresholds_outside_0_1_are_refused(bad):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        CheckConfig(min_map=bad)


def test_harness_marks_nan_producers_and_the_gate_fails_them(tiny):
    """A runtime returning NaN: metrics are still computed (ranked as zeros) but the row fails every rule."""
    edge = load(tiny.edge)
    rng = np.random.default_rng(0)
    probes = rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    ref = edge.embed(probes)
    fx = Fixture(
        space=edge.manifest.space,
        probe_frames=probes,
        probe_labels=labels,
        gallery_embeddings=ref,
        gallery_labels=labels,
        reference_queries=ref,
        thresholds={},
    )

    class NaNRuntime:
        name, manifest = "torch", edge.manifest

        def embed(self, images):
            return np.full((len(images), 16), np.nan, np.float32)

        def info(self):
            return {"runtime": "torch"}

    report = compatibility_report(fx, [Producer("nan", "candidate", edge.manifest, NaNRuntime())])
    row = report.row("nan → cloud")
    assert row.finite is False
    r = evaluate(report, _cfg(min_recall_at_1=0.5))
    assert not r.passed and {x.rule for x in r.rules} == {"R@1", "embeddings are finite"}
