"""One benchmark measurement in a fresh process: `python -m hetero.devices.bench_worker UNIT THREADS RUNS SECONDS
WARMUP BATCH`, run by `hetero bench` locally or on a remote host over SSH; prints one JSON object.

A fresh process per (unit, thread count) so that load time is a cold load, peak RSS belongs to this unit alone and
the BLAS/OpenMP pools are sized before any library starts them (the parent sets OMP_NUM_THREADS and friends). The
timed loop is the bare loop a user would write — one call per iteration, `perf_counter` around it, nothing else — and
the machine's 256³ float32 GEMM rate is measured in the same process at the same thread count, so "how close to the
compute limit" is a ratio of two numbers taken side by side.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

GEMM_N = 256


def gemm_gflops(seconds: float = 0.3) -> float:
    """float32 256³ matrix products per second through numpy's BLAS, in GFLOP/s (2 n³ per product)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: thread pool and caches
    done, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or done < 5:
        a @ b
        done += 1
    return 2 * GEMM_N**3 * done / elapsed / 1e9


def peak_rss_bytes() -> int:
    """This process image's peak resident memory. On Linux VmHWM (reset by exec): getrusage's ru_maxrss survives
    exec, so a worker forked from a large parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB, macOS bytes


def measure(unit: Path, threads: int, runs: int, seconds: float, warmup: int, batch: int) -> dict:
    from hetero.devices.loader import load
    from hetero.errors import NotExecutedError
    from hetero.manifest import load_manifest

    manifest, _ = load_manifest(unit)
    if manifest.format == "safetensors":  # the torch reference: its intra-op pool is sized here
        import torch

        torch.set_num_threads(threads)
    rss_before = peak_rss_bytes()
    t0 = time.perf_counter()
    try:
        rt = load(unit, threads)
    except NotExecutedError as e:
        return {"status": "not executed", "note": str(e)}
    load_ms = (time.perf_counter() - t0) * 1e3
    shape = manifest.input.shape(batch)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for _ in range(warmup):
        rt.embed(x)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max(runs, 1) or time.perf_counter() - start < seconds:  # at least `runs`, `seconds`
        t = time.perf_counter()
        rt.embed(x)
        samples.append((time.perf_counter() - t) * 1e3)
    return {
        "status": "ok",
        "runtime": rt.name,
        "load_ms": load_ms,
        "samples_ms": samples,
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "gemm_gflops": gemm_gflops(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print("usage: python -m hetero.devices.bench_worker UNIT THREADS RUNS SECONDS WARMUP BATCH", file=sys.stderr)
        return 2
    from hetero.errors import HeteroError

    unit, threads, runs, seconds, warmup, batch = argv
    try:
        out = measure(Path(unit), int(threads), int(runs), float(seconds), int(warmup), int(batch))
    except HeteroError as e:
        print(f"hetero bench worker: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
