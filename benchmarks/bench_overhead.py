"""What `hetero bench` adds over a bare timing loop of the same runtime, measured side by side.

    .venv/bin/python benchmarks/bench_overhead.py --cloud runs/e/cloud --edge runs/e/edge    # ~4 min on 2 cores
Writes benchmarks/results/bench_overhead.{json,md}.

The emoji edge exported to ONNX and TFLite (fp32). For each, at 1 thread, `--repeats` rotating rounds of:
- hetero bench: one row (fresh process, hetero's runtime wrapper: `rt.embed(pixels)` with its input checks);
- bare loop: in a fresh process too, the runtime's own API only — `session.run` for onnxruntime,
  `set_tensor`/`invoke`/`get_tensor` for LiteRT — with `perf_counter` around each call.
Both take the same warm-up and at least the same number of calls and seconds; the ratio of median p50s is the
overhead (target ≤ 1.02).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from emoji_setup import emoji_run

from hetero.devices.bench import THREAD_VARS, bench
from hetero.export.artifact import ExportData, export_matrix

BARE = r"""
import json, sys, time, numpy as np
kind, path, runs, seconds, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
if kind == "onnx":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).integers(0, 256, [1, *i.shape[1:]], dtype=np.uint8)
    call = lambda: s.run(None, {i.name: x})
else:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=1); it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    x = np.random.default_rng(0).integers(0, 256, i["shape"], dtype=np.uint8).astype(i["dtype"])
    def call():
        it.set_tensor(i["index"], x); it.invoke(); return it.get_tensor(o["index"])
for _ in range(warmup):
    call()
ms, t0 = [], time.perf_counter()
while len(ms) < runs or time.perf_counter() - t0 < seconds:
    t = time.perf_counter(); call(); ms.append((time.perf_counter() - t) * 1e3)
print(json.dumps(float(np.median(ms))))
"""


def bare_p50(kind: str, model_file: Path, runs: int, seconds: float, warmup: int) -> float:
    import os

    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
    argv = [sys.executable, "-c", BARE, kind, str(model_file), str(runs), str(seconds), str(warmup)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _row(kind: str, arms: dict[str, list[float]], ratio: float) -> str:
    rounds = [", ".join(f"{v:.4f}" for v in arms[a]) for a in ("hetero bench", "bare loop")]
    return f"| {kind} | {rounds[0]} | {rounds[1]} | {ratio:.3f} |"


def main() -> None:
    def extra(ap) -> None:
        ap.add_argument("--edge", type=Path, required=True, help="emoji edge checkpoint")
        ap.add_argument("--repeats", type=int, default=5)
        ap.add_argument("--seconds", type=float, default=3.0)

    run = emoji_run(__doc__, "bench-overhead-", extra)
    args, work, cfg, split = run.args, run.work, run.cfg, run.split
    data = ExportData.from_split(split, cfg.export.calibration_images)
    exported = export_matrix(args.edge, work / "export", ["onnx", "tflite"], ["fp32"], data, cfg.export)
    exported.raise_for_failures()
    units = {a.format: Path(a.path) for a in exported.artifacts}
    files = {"onnx": units["onnx"] / "model.onnx", "tflite": units["tflite"] / "model.tflite"}
    p50: dict[str, dict[str, list[float]]] = {k: {"hetero bench": [], "bare loop": []} for k in units}
    for r in range(args.repeats):
        for kind in units:
            order = ["hetero bench", "bare loop"] if r % 2 == 0 else ["bare loop", "hetero bench"]
            for arm in order:
                if arm == "hetero bench":
                    row = bench([str(units[kind])], (1,), runs=100, seconds=args.seconds, warmup=20).rows[0]
                    p50[kind][arm].append(row.latency.p50)
                else:
                    p50[kind][arm].append(bare_p50(kind, files[kind], 100, args.seconds, 20))
                print(f"round {r + 1} {kind} {arm}: {p50[kind][arm][-1]:.4f} ms", flush=True)
    med = {k: {a: statistics.median(v) for a, v in arms.items()} for k, arms in p50.items()}
    ratio = {k: m["hetero bench"] / m["bare loop"] for k, m in med.items()}
    doc = {"edge": cfg.edge.model, "p50_ms": p50, "median_p50_ms": med, "ratio": ratio,
           "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (args.out / "bench_overhead.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# `hetero bench` against a bare loop of the same runtime ({cfg.edge.model}, fp32, batch 1, 1 thread)",
        "",
        f"Produced by `benchmarks/bench_overhead.py` on {doc['date']}: {args.repeats} alternating rounds, each arm "
        f"≥ {args.seconds:g} s and ≥ 100 timed calls after 20 warm-up calls, in a fresh process. Target ≤ 1.02.",
        "",
        "| runtime | hetero bench p50 ms (each round) | bare loop p50 ms (each round) | ratio of medians |",
        "|---|---|---|---|",
        *(_row(k, p50[k], ratio[k]) for k in units),
    ]
    (args.out / "bench_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
