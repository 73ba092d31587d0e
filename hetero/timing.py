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


def repeated_ms(call: Callable[[], Any], runs: int, seconds: float, warmup: int) -> list[float]:
    """`warmup` untimed calls, then at least `runs` and at least `seconds` of timed ones; milliseconds each. Nothing
    else happens inside the timed loop."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max(runs, 1) or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1e3)
    return samples
