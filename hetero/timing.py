"""The timing loops: each item once (device-shaped batch-1 embedding of probes, gallery queries), or one call
repeated for a count and a time budget (`hetero bench`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any


def per_item_ms(fn: Callable[[Any], Any], items: Iterable[Any], warmup: int = 1) -> tuple[list[Any], list[float]]:
    """Call `fn` on each item after `warmup` untimed calls on the first; returns the outputs and milliseconds each."""
    items = list(items)
    for _ in range(warmup if items else 0):
        fn(items[0])  # session init, first-call allocation
    outputs, times = [], []
    for item in items:
        t0 = time.perf_counter()
        outputs.append(fn(item))
        times.append((time.perf_counter() - t0) * 1e3)
    return outputs, times


def median_ms(fn: Callable[[Any], Any], items: Iterable[Any], warmup: int = 1) -> float:
    return statistics.median(per_item_ms(fn, items, warmup)[1])


def _timed(call: Callable[[], Any], n: int) -> list[float]:
    """`n` calls, milliseconds each; nothing else happens inside the timed loop."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1e3)
    return samples


def repeated_ms(call: Callable[[], Any], runs: int, seconds: float, warmup: int) -> list[float]:
    """`warmup` untimed calls, then at least `runs` and at least `seconds` of timed ones; milliseconds each."""
    return interleaved_ms([call], runs, seconds, warmup, block=1)[0]


def interleaved_ms(
    calls: list[Callable[[], Any]], runs: int, seconds: float, warmup: int, block: int = 5
) -> tuple[list[list[float]], list[list[float]]]:
    """Several calls timed in alternating blocks — `block` calls of the first, then of the second, ... — for at least
    `runs` calls each and `seconds` in all, after `warmup` untimed calls of each. A machine whose speed drifts (other
    jobs, frequency changes) slows every call alike, so their ratio holds where separate runs of each do not.
    Returns each call's samples, and per round each call's median (the pairs a ratio's interval is computed over)."""
    for call in calls:
        for _ in range(warmup):
            call()
    samples: list[list[float]] = [[] for _ in calls]
    rounds: list[list[float]] = []
    start = time.perf_counter()
    while len(samples[0]) < max(runs, 1) or time.perf_counter() - start < seconds:
        medians = []
        for call, into in zip(calls, samples, strict=True):
            got = _timed(call, block)
            into += got
            medians.append(statistics.median(got))
        rounds.append(medians)
    return samples, rounds
