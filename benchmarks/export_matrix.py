"""Parity, size and batch-1 latency of every format × precision for the demo's BCT edge model.

    make demo                      # trains runs/demo/edge_bct (or pass --checkpoint)
    .venv/bin/python benchmarks/export_matrix.py
Writes benchmarks/results/export_matrix.{json,md}. Exports through the API `hetero.export.artifact.export_matrix`
(what `hetero export` calls); latency is the median over held-out images at batch 1 on one thread, all runtimes in
this one process, so the *ratios* are what to read on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from hetero.config import DEFAULT_CONFIG, load_config
from hetero.data.datasets import load_split
from hetero.devices.loader import load
from hetero.export.artifact import ExportData, export_matrix
from hetero.timing import median_ms


def latency_ms(path: Path, images: np.ndarray, threads: int = 1) -> float:
    rt = load(path, threads=threads) if path.name != "edge_bct" else load(path)
    return median_ms(lambda img: rt.embed(img[None]), images, warmup=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo/edge_bct"))
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if not args.checkpoint.exists():
        raise SystemExit(f"{args.checkpoint} not found: run `make demo` first or pass --checkpoint")
    torch.set_num_threads(1)
    split = load_split(load_config(args.config).data)
    images, images_all = split.query.images[:200], np.concatenate([split.query.images, split.gallery.images])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config)
        result = export_matrix(
            args.checkpoint,
            Path(tmp),
            ["onnx", "coreml", "tflite"],
            ["fp32", "fp16", "int8", "int8w"],
            ExportData.from_split(split, cfg.export.calibration_images),
            cfg.export,
        )
        results, rc = [a.to_dict() for a in result.artifacts], 0 if result.passed else 1
        torch_ms = latency_ms(args.checkpoint, images)
        for r in results:
            if r["status"] == "passed":
                r["latency_ms"] = latency_ms(Path(r["path"]), images)
    rows = [r for r in results if r["status"] != "unsupported"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_matrix.json").write_text(
        json.dumps({"exit_code": rc, "torch_latency_ms": torch_ms, "artifacts": results}, indent=2, default=str) + "\n"
    )
    md = [
        f"# Export matrix: `{args.checkpoint}` (hnet_edge, 32 px digits, dim 16)",
        "",
        f"Export {'passed' if rc == 0 else 'FAILED'} (exit code {rc}). Parity against torch over all "
        f"{len(images_all)} held-out images, each against the others (leave-one-out, paired): R@1 drop in points "
        "with its 95% interval [low, high] (negative = artifact better); the rule uses the upper end. Latency: "
        f"median ms per image at batch 1, 1 thread, same process; torch eager {torch_ms:.2f} ms.",
        "",
        "| format | precision | status | min cos | mean cos | R@1 drop [95% CI] | top-10 overlap | size KiB "
        "| latency ms | vs torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r.get("validation", {})
        e, q = v.get("embedding"), v.get("retrieval")
        lat = r.get("latency_ms")
        md.append(
            f"| {r['format']} | {r['precision']} | {r['status']} | "
            + (
                f"{e['min_cosine']:.6f} | {e['mean_cosine']:.6f} | {q['r1_drop'] * 100:+.2f} "
                f"[{q['r1_drop_interval'][0] * 100:+.2f}, {q['r1_drop_interval'][1] * 100:+.2f}] | "
                f"{q['top10_overlap']:.3f}"
                if e
                else " |  |  | "
            )
            + f" | {r.get('size_bytes', 0) / 1024:.0f} | "
            + (f"{lat:.3f} | {torch_ms / lat:.1f}x |" if lat else "not executed |  |")
        )
    md += [
        "",
        "Unsupported by design: "
        + ", ".join(f"{r['format']} {r['precision']}" for r in results if r["status"] == "unsupported")
        + ".",
        "",
    ]
    (args.out / "export_matrix.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
