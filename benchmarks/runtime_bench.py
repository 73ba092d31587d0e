"""The real edge family on every runtime that executes here: `hetero bench` and `verify` side by side.

    .venv/bin/python benchmarks/runtime_bench.py --cloud runs/e/cloud --edge runs/e/edge   # ~15 min on 2 cores
Writes benchmarks/results/NAME.{json,md,csv} and plots in benchmarks/results/NAME/ (`--name`, default runtime_bench).

The emoji edge (EfficientNet-Lite0 at half width, 64 px inside the 96 px space) is exported to ONNX and TFLite at
fp32, fp16 and int8 (artifacts whose validation fails are not written, and are listed); the torch checkpoint (eager)
is the baseline. Every unit is timed by `hetero bench` at 1 and 2 threads (fresh process per row, `--seconds`
each) and its edge → cloud R@1 is measured by `verify` on the emoji probes, so the accuracy-vs-latency plot and the
heatmap come from the same artifacts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from emoji_setup import emoji_run

from hetero.devices.bench import bench
from hetero.export.artifact import ExportData, export_matrix
from hetero.manifest import load_manifest
from hetero.pipeline import verify
from hetero.release.plots import accuracy_latency, heatmap, latency_distributions


def main() -> None:
    def extra(ap) -> None:
        ap.add_argument("--edge", type=Path, required=True, help="emoji edge checkpoint (hetero train edge)")
        ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per bench row")
        ap.add_argument("--threads", default="1,2")
        ap.add_argument("--name", default="runtime_bench", help="result file stem (another edge: another name)")

    run = emoji_run(__doc__, "runtime-bench-", extra)
    args, work, cfg, split = run.args, run.work, run.cfg, run.split
    threads = [int(t) for t in args.threads.split(",")]
    data = ExportData.from_split(split, cfg.export.calibration_images)
    exported = export_matrix(args.edge, work / "export", ["onnx", "tflite"], ["fp32", "fp16", "int8"], data, cfg.export)
    units = {"torch": args.edge}
    artifacts = [a.to_dict() for a in exported.artifacts]
    for r in artifacts:
        if r["status"] == "passed":
            units[f"{r['format']}-{r['precision']}"] = Path(r["path"])
    failed = [f"{r['format']}-{r['precision']}: {r['status']}" for r in artifacts if r["status"] != "passed"]
    result = bench([f"{k}={v}" for k, v in units.items()], threads, runs=20, seconds=args.seconds, warmup=10,
                   progress=lambda m: print(f"bench {m}", flush=True))  # fmt: skip
    report = verify(cfg, args.cloud, [f"{k}={v}" for k, v in units.items()], out=work / "verify").report
    out = args.out
    name = args.name
    edge_model = load_manifest(args.edge)[0].model["name"]  # the checkpoint's, not the config's edge
    plots = out / name
    plots.mkdir(parents=True, exist_ok=True)
    doc = {**result.to_dict(), "export": artifacts, "not_written": failed, "date": time.strftime("%Y-%m-%d"),
           "edge": edge_model, "report": report.to_dict()}  # fmt: skip
    for row in doc["rows"]:  # the committed JSON keeps statistics; `hetero bench --json` keeps every sample
        row["samples_ms"] = None
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{name}.csv").write_text(result.to_csv())
    accuracy_latency(report, plots / "accuracy_latency.png")
    heatmap(report.matrix, plots / "heatmap.png")
    latency_distributions(result.to_dict(), plots / "latency.png")
    (plots / "latency.csv").unlink(missing_ok=True)  # every sample of every row: too large to commit
    r1 = {r.query: r for r in report.rows if r.gallery == "cloud"}
    lines = [
        f"# {edge_model} on every runtime here (emoji, batch 1)",
        "",
        f"Produced by `benchmarks/runtime_bench.py` on {doc['date']}. Latency: `hetero bench`, each row a fresh "
        f"process, ≥ {args.seconds:g} s of timed calls after 10 warm-up calls; × limit = p50 over the time the "
        "model's MACs take at the same process's 256³ GEMM rate. R@1: `verify`, edge → cloud on "
        f"{r1['cloud'].n_query if 'cloud' in r1 else len(split.query)} probes (cloud → cloud "
        f"{report.reference.recall_at_1:.3f}). Not written (validation failed): {', '.join(failed) or 'none'}.",
        "",
        result.to_markdown().split("\n", 2)[2].strip(),
        "",
        "| unit | edge → cloud R@1 | parity min cos | verify ms/img |",
        "|---|---|---|---|",
        *(_verify_row(k, r1[k]) for k in units if k in r1),
        "",
        f"Plots: [accuracy vs latency]({name}/accuracy_latency.png), [heatmap]({name}/heatmap.png), "
        f"[latency distributions]({name}/latency.png).",
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _verify_row(name: str, row) -> str:
    parity = "" if row.parity_min_cosine is None else f"{row.parity_min_cosine:.5f}"
    return f"| {name} | {row.recall_at_1:.3f} | {parity} | {row.latency_ms:.3f} |"


if __name__ == "__main__":
    main()
