"""One timing loop for everything timed one item at a time (device-shaped batch-1 embedding, gallery queries)."""

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
