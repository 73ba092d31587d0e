"""`hetero bench`: latency, load time, memory and size of units on their runtimes, beside the machine's GEMM rate.

Each (unit, thread count) is measured in a fresh process (`hetero.devices.bench_worker`: cold load, its own peak
RSS, thread pools sized before they start), locally or on a remote host over SSH — each unit uploaded once per run.
Latency is reported as percentiles of the per-call samples, never one median; the MACs recorded in the manifest
(counted on the torch graph at the compute resolution) and a 256³ GEMM rate measured in the same process give the
achieved GFLOP/s and the ratio to the compute limit (1.0: as fast as dense matrix products allow).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.cpu import cpu_tag
from hetero.errors import InputError
from hetero.kinds import Format
from hetero.manifest import Manifest, load_manifest

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles by linear interpolation between order statistics (numpy's default, Hyndman & Fan type 7)."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def from_ms(cls, samples: Sequence[float]) -> LatencyStats:
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all() or (x < 0).any():
            raise InputError(f"latency samples must be finite, non-negative and not empty; got {len(x)} values")
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        return cls(len(x), float(p50), float(p90), float(p99), float(x.mean()), std, float(x.min()), float(x.max()))


@dataclass
class BenchRow:
    name: str
    path: str
    host: str  # "local" or the remote host
    format: str
    precision: str
    threads: int
    batch: int
    status: str = "ok"  # "ok" | "not executed"
    note: str = ""
    runtime: str = ""
    latency: LatencyStats | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    rss_before_load_mb: float | None = None
    file_bytes: int = 0
    params: int | None = None
    macs: int | None = None  # per image, from the manifest
    gemm_gflops: float | None = None
    samples_ms: list[float] | None = None  # every timed call (JSON only: `hetero report` plots their distribution)
    bare_latency: LatencyStats | None = None  # ONNX, TFLite: the network alone, without pixel scaling, resize and L2
    # Per round of the interleaved timing: [artifact median, bare network median] (ms), timed in alternating blocks
    extras_rounds: list[list[float]] | None = None
    cpu: str = ""  # the CPU the row ran on (architecture and the ISA extensions that pick the kernels)

    @property
    def extras_share(self) -> float | None:
        """What the in-graph extras (uint8 -> float, resize, L2) add, as a share of the bare network's time: the mean
        over interleaved rounds of artifact / bare − 1 (one machine state per round)."""
        ratios = self._extras_ratios()
        return None if ratios is None else float(ratios.mean())

    @property
    def extras_interval(self) -> list[float] | None:
        """95% t-interval of the extras share over the interleaved rounds."""
        from hetero.release.stats import mean_interval

        ratios = self._extras_ratios()
        if ratios is None or len(ratios) < 2:
            return None
        ci = mean_interval(ratios, bounds=(-np.inf, np.inf))
        return [ci.low, ci.high]

    def _extras_ratios(self) -> np.ndarray | None:
        rounds = np.asarray(self.extras_rounds or [], dtype=np.float64)
        if rounds.ndim != 2 or rounds.shape[1] != 2 or not len(rounds) or (rounds[:, 1] <= 0).any():
            return None
        return rounds[:, 0] / rounds[:, 1] - 1.0

    @property
    def achieved_gflops(self) -> float | None:
        if self.latency is None or not self.macs or self.latency.p50 <= 0:
            return None
        return 2 * self.macs * self.batch / (self.latency.p50 * 1e-3) / 1e9

    @property
    def limit_ratio(self) -> float | None:
        """p50 latency over the time the MACs take at the same-run GEMM rate (>= 1; lower is closer to the limit)."""
        achieved = self.achieved_gflops
        return None if achieved is None or not self.gemm_gflops else self.gemm_gflops / achieved

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["achieved_gflops"], d["limit_ratio"] = self.achieved_gflops, self.limit_ratio
        d["extras_share"], d["extras_interval"] = self.extras_share, self.extras_interval
        return d


@dataclass
class BenchResult:
    rows: list[BenchRow]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "hetero.bench/1", "settings": self.settings, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> tuple[list[str], list[list[str]]]:
        head = ["unit", "host", "runtime", "threads", "p50 ms", "p90 ms", "p99 ms", "load ms", "peak RSS MB",
                "MB on disk", "MMACs", "GFLOP/s", "x limit", "extras"]  # fmt: skip

        def f(v: float | None, spec: str) -> str:
            return "" if v is None else format(v, spec)

        body = []
        for r in self.rows:
            lat = r.latency
            if lat is None:
                body.append([r.name, r.host, r.format, str(r.threads), "not executed", *[""] * 9])
                continue
            body.append([r.name, r.host, r.runtime, str(r.threads), f(lat.p50, ".3f"), f(lat.p90, ".3f"),
                         f(lat.p99, ".3f"), f(r.load_ms, ".0f"), f(r.peak_rss_mb, ".0f"), f(r.file_bytes / 1e6, ".2f"),
                         f(r.macs / 1e6 if r.macs else None, ".1f"), f(r.achieved_gflops, ".2f"),
                         f(r.limit_ratio, ".2f"), _extras(r)])  # fmt: skip
        return head, body

    def cpus(self) -> str:
        """Which CPU the numbers hold for: every row names its own; one line per distinct host."""
        seen = dict.fromkeys(f"{r.host}: {r.cpu}" for r in self.rows if r.cpu)
        return "; ".join(seen) if seen else "not recorded"

    def to_text(self) -> str:
        head, body = self.table()
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*b) for b in body)]
        lines += [f"SKIP  {r.name}: not executed — {r.note}" for r in self.rows if r.status != "ok"]
        lines.append(f"CPU: {self.cpus()}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head, body = self.table()
        s = self.settings
        lines = [
            "# hetero bench",
            "",
            f"Batch {s.get('batch')}, {s.get('warmup')} warm-up calls, at least {s.get('runs')} timed calls and "
            f"{s.get('seconds')} s per row, each row in a fresh process. x limit: p50 over the time the model's MACs "
            "take at the same process's 256³ float32 GEMM rate. extras: what pixel scaling, resize and L2 add to the "
            "bare network's time (ONNX and TFLite: the network cut out of the same graph), timed interleaved with the "
            "artifact in alternating blocks of one process: the mean over rounds and its 95% interval.",
            "",
            f"CPU: {self.cpus()}.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(b) + " |" for b in body),
        ]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        flat = []
        for r in self.rows:
            d = r.to_dict()
            lat, bare = d.pop("latency") or {}, d.pop("bare_latency") or {}
            d.pop("samples_ms")
            d.pop("extras_rounds")
            ci = d.pop("extras_interval") or [None, None]
            d["extras_low"], d["extras_high"] = ci
            flat.append({**d, **{f"latency_{k}": v for k, v in lat.items()},
                         **{f"bare_latency_{k}": v for k, v in bare.items()}})  # fmt: skip
        keys = sorted({k for d in flat for k in d})
        w = csv.DictWriter(out, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
        return out.getvalue()


def _worker_argv(python: str, unit: str, threads: int, runs: int, seconds: float, warmup: int, batch: int) -> list[str]:
    return [python, "-m", "hetero.devices.bench_worker", unit, str(threads), str(runs), str(seconds), str(warmup),
            str(batch)]  # fmt: skip


def _run_local(unit: Path, threads: int, args: tuple[int, float, int, int]) -> dict[str, Any]:
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(threads))}
    argv = _worker_argv(sys.executable, str(unit), threads, *args)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InputError(f"bench of {unit} at {threads} threads failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(
    spec: str, path: Path, m: Manifest, model_file: Path, host: str, threads: int, batch: int, out: dict
) -> BenchRow:
    row = BenchRow(
        name=spec, path=str(path), host=host, format=m.format, precision=m.precision, threads=threads, batch=batch,
        file_bytes=model_file.stat().st_size, params=m.model.get("params"), macs=m.model.get("macs"),
    )  # fmt: skip
    if out.get("status") != "ok":
        row.status, row.note = "not executed", str(out.get("note", ""))
        return row
    row.runtime = str(out["runtime"])
    row.latency = LatencyStats.from_ms(out["samples_ms"])
    row.samples_ms = [round(float(v), 6) for v in out["samples_ms"]]
    row.load_ms = float(out["load_ms"])
    row.peak_rss_mb = out["peak_rss_bytes"] / 2**20
    row.rss_before_load_mb = out["rss_before_load_bytes"] / 2**20
    row.gemm_gflops = float(out["gemm_gflops"])
    if out.get("bare_samples_ms"):
        row.bare_latency = LatencyStats.from_ms(out["bare_samples_ms"])
        row.extras_rounds = [[round(float(a), 6), round(float(b), 6)] for a, b in out.get("rounds_ms", [])]
    row.cpu = cpu_tag(out["cpu"]) if out.get("cpu") else ""
    return row


def _extras(r: BenchRow) -> str:
    if r.extras_share is None:
        return ""
    ci = r.extras_interval
    return f"{r.extras_share:+.1%}" + (f" [{ci[0]:+.1%}, {ci[1]:+.1%}]" if ci else "")


MAX_THREADS = 256  # more than any phone or server CPU this runs on: 100,000 threads only stall the machine
MAX_RUNS = 1_000_000
MAX_SECONDS = 3600.0  # per row; an infinite or NaN duration would never end (or end at once, silently)


def bench(
    units: Sequence[str],
    threads: Sequence[int] = (1,),
    *,
    runs: int = 100,
    seconds: float = 0.0,
    warmup: int = 10,
    batch: int = 1,
    remote: Any = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Every unit (`[NAME=]PATH`) at every thread count, here and (with `remote`, an SSHHost) on the remote host."""
    if not units:
        raise InputError("give at least one unit to bench")
    if not threads or min(threads) < 1 or max(threads) > MAX_THREADS:
        raise InputError(f"thread counts must be in 1..{MAX_THREADS}; got {list(threads)}")
    if not (1 <= runs <= MAX_RUNS and 0 <= seconds <= MAX_SECONDS and 0 <= warmup <= MAX_RUNS and 1 <= batch <= 4096):
        raise InputError(  # NaN fails every comparison, so it is refused too
            f"runs in 1..{MAX_RUNS}, seconds in 0..{MAX_SECONDS:g} (finite), warmup in 0..{MAX_RUNS}, batch in "
            f"1..4096; got {runs}, {seconds}, {warmup}, {batch}"
        )
    opened = []
    for spec in units:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        m, model_file = load_manifest(Path(path))  # sha256 verified before anything runs
        opened.append((name or Path(path).name, Path(path), m, model_file))
    timing = (runs, seconds, warmup, batch)
    rows = []
    for name, path, m, model_file in opened:
        for t in threads:
            if progress:
                progress(f"{name}: {t} thread{'s' if t > 1 else ''}")
            rows.append(_row(name, path, m, model_file, "local", t, batch, _run_local(path, t, timing)))
    if remote is not None:
        rows += _bench_remote(remote, opened, threads, timing, progress)
    settings = {"threads": list(threads), "runs": runs, "seconds": seconds, "warmup": warmup, "batch": batch}
    return BenchResult(rows, settings)


def _bench_remote(remote: Any, opened: list, threads: Sequence[int], timing: tuple, progress) -> list[BenchRow]:
    """Each unit uploaded once, then one worker per thread count; the remote temp directory is always removed."""
    remote_dir = remote.mkdtemp()
    rows = []
    try:
        for i, (name, path, m, model_file) in enumerate(opened):
            target = f"{remote_dir}/unit{i}"
            remote.put(model_file.parent, target)
            for t in threads:
                if progress:
                    progress(f"{name}@{remote.label}: {t} thread{'s' if t > 1 else ''}")
                env = [f"{v}={t}" for v in THREAD_VARS]
                text = remote.run("env", *env, *_worker_argv(remote.python, target, t, *timing))
                out = json.loads(text.strip().splitlines()[-1])
                rows.append(_row(name, path, m, model_file, remote.label, t, timing[3], out))
    finally:
        remote.remove(remote_dir)
    return rows


def graph_latency_ms(graph: Any, threads: int = 1, fmt: str = "onnx") -> float:
    """Median batch-1 latency (ms) of a torch deployable graph exported at fp32 to `fmt` ("onnx": onnxruntime,
    "tflite": LiteRT) and run here: the architecture search's latency budget. Weights do not change the time, so an
    untrained candidate is measured."""
    import tempfile

    from hetero.config import ExportConfig
    from hetero.export.artifact import FORMAT_MODULES
    from hetero.export.formats import BuildRequest
    from hetero.timing import repeated_ms

    if fmt not in (Format.ONNX, Format.TFLITE):
        raise InputError(f"latency is measured on onnx or tflite (runtimes that execute here), not {fmt!r}")
    mod = FORMAT_MODULES[fmt]
    spec = graph.input_spec
    pixels = np.zeros((2, spec.height, spec.width, 3), np.uint8)
    with tempfile.TemporaryDirectory(prefix="hetero-latency-") as tmp:
        opset = ExportConfig().opset
        mod.build(
            BuildRequest(graph=graph, space_id="x", precision="fp32", dest=Path(tmp), calibration=pixels, opset=opset)
        )
        run = mod.runner(Path(tmp) / mod.FILE, threads=threads)
        one = pixels[:1]
        return float(np.median(repeated_ms(lambda: run(one), runs=50, seconds=0.3, warmup=10)))
