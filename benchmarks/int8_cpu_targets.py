"""Does one int8 file compute the same function on every CPU an app ships to? The shipped emoji edge, measured.

An int8 artifact is validated on the machine that exports it, but it runs on others: x86 CPUs with and without
VNNI, and phones' ARM64 cores (NEON / dot-product kernels). onnxruntime's x86 kernels without VNNI multiply u8 x s8
pairs with a saturating 16-bit add, so a file with full 8-bit signed weights (S8S8, hetero's default) can compute a
different function there. This benchmark builds the shipped emoji edge's int8 artifacts in each scheme — ONNX S8S8,
ONNX U8U8 (unsigned activations and asymmetric unsigned weights), ONNX S8S8 with 7-bit weights (reduce_range), and
TFLite int8 — through the export stage with its tolerances opened (so every file is written, and the export's own
numbers are recorded), then runs each file on every CPU target available here: this machine natively, and ARM64
(the aarch64 wheels, Cortex-A76 under QEMU: hetero.devices.targets). Per file and CPU: cosine to the torch fp32
edge over all held-out images, edge → cloud R@1 paired against the torch fp32 edge (705 probes, exact interval),
and across CPUs the min cosine and the top-1 answers that differ — "the same function" is that last column.

    .venv/bin/python benchmarks/int8_cpu_targets.py --cloud CLOUD --edge EDGE [--arm64]
Writes benchmarks/results/int8_cpu_targets.{json,md}. ARM64 needs root once (debootstrap; see docs/mobile-ci.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from emoji_int8_pooled import CONFIG, hits, load_checkpoint_model

from hetero.config import load_config
from hetero.cpu import cpu_info, cpu_tag
from hetero.data.datasets import load_split
from hetero.devices.loader import load
from hetero.devices.remote import RemoteRuntime
from hetero.devices.targets import LocalHost, RuntimeTarget
from hetero.export.artifact import ExportData, export_matrix
from hetero.release.metrics import cosine_parity
from hetero.release.stats import PairedChange

ARMS = {  # name -> (format, [export] overrides)
    "onnx S8S8": ("onnx", {"onnx_int8_scheme": "s8s8"}),
    "onnx U8U8": ("onnx", {"onnx_int8_scheme": "u8u8"}),
    "onnx S8S8 7-bit weights": ("onnx", {"onnx_reduce_range": True}),
    "tflite int8": ("tflite", {}),
}
OPEN = {"min_cosine_int8": -1.0, "min_mean_cosine_int8": -1.0, "max_r1_drop_int8": 1.0, "min_top10_overlap_int8": 0.0}
ARM64 = {"onnx": "onnxruntime==1.32.0@arm64", "tflite": "ai-edge-litert==1.4.0@arm64"}


def run_on(unit: Path, fmt: str, where: str, images: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Embeddings of `images` by the file at `unit` on `where` ("native" or "arm64"), the CPU, and seconds taken."""
    t0 = time.perf_counter()
    if where == "native":
        return load(unit).embed(images), cpu_tag(), time.perf_counter() - t0
    rt = RemoteRuntime(LocalHost(RuntimeTarget.parse(ARM64[fmt]), log=print), unit)
    try:
        emb = rt.embed(images)
        return emb, rt.info()["cpu"], time.perf_counter() - t0
    finally:
        rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True)
    ap.add_argument("--edge", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--arm64", action="store_true", help="also run every file on ARM64 under QEMU")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    split = load_split(cfg.data)
    data = ExportData.from_split(split, cfg.export.calibration_images)
    cloud, edge = load(args.cloud), load(args.edge)
    images = np.concatenate([data.query.images, data.gallery.images])
    nq = len(data.query.images)
    gallery = cloud.embed(data.gallery.images)
    ref = edge.embed(images)
    ref_ok = hits(ref[:nq], data.query.labels, gallery, data.gallery.labels)
    wheres = ["native", "arm64"] if args.arm64 else ["native"]
    arms = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fmt, overrides) in ARMS.items():
            export_cfg = dataclasses.replace(cfg.export, **OPEN, **overrides)
            res = export_matrix(args.edge, Path(tmp) / name.replace(" ", "_"), [fmt], ["int8"], data, export_cfg)
            unit = Path(res.artifacts[0].path)
            arm = {"arm": name, "format": fmt, "overrides": overrides, "cpus": {}}
            embs = {}
            for where in wheres:
                emb, cpu, seconds = run_on(unit, fmt, where, images)
                embs[where] = emb
                ok = hits(emb[:nq], data.query.labels, gallery, data.gallery.labels)
                change = PairedChange.from_outcomes(ref_ok, ok)
                arm["cpus"][where] = {
                    "cpu": cpu,
                    "seconds": round(seconds, 1),
                    **{k: float(v) for k, v in cosine_parity(ref, emb).items()},
                    "edge_to_cloud_r1": float(ok.mean()),
                    "vs_fp32": change.to_dict(),
                    "r1_lost": change.loss().to_dict(),
                }
                print(name, where, json.dumps(arm["cpus"][where]))
            if len(embs) == 2:
                a, b = embs["native"], embs["arm64"]
                top_a = np.argmax(a[:nq] @ gallery.T, axis=1)
                top_b = np.argmax(b[:nq] @ gallery.T, axis=1)
                arm["across_cpus"] = {**{k: float(v) for k, v in cosine_parity(a, b).items()},
                                      "top1_differs": int((top_a != top_b).sum())}  # fmt: skip
            arms.append(arm)
    result = {
        "edge": str(args.edge),
        "edge_model": load_checkpoint_model(args.edge),
        "host_cpu": cpu_info(),
        "fp32_edge_to_cloud_r1": float(ref_ok.mean()),
        "probes": nq,
        "heldout_images": len(images),
        "arms": arms,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_cpu_targets.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "int8_cpu_targets.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    host = r["host_cpu"]
    lines = [
        "# One int8 file, every CPU: the shipped emoji edge on x86 (this machine) and ARM64 (QEMU)",
        "",
        f"Edge `{r['edge_model']['name']}` at {r['edge_model']['resolution']} px; fp32 edge → cloud R@1 "
        f"{r['fp32_edge_to_cloud_r1']:.3f} on {r['probes']} probes. Host: {host.get('model')} "
        f"({host['machine']}: {' '.join(host.get('features', []))}). Cosines over all {r['heldout_images']:,} held-out "
        "images against the torch fp32 edge; R@1 lost is paired against it (exact 95% interval).",
        "",
        "| file | CPU | mean cos | min cos | edge → cloud R@1 | R@1 lost [95%] | across CPUs: min cos "
        "| top-1 differs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in r["arms"]:
        across = arm.get("across_cpus")
        for i, c in enumerate(arm["cpus"].values()):
            lost = c["r1_lost"]
            tail = f"{across['min_cosine']:.4f} | {across['top1_differs']}" if across and i == 0 else " | "
            lines.append(
                f"| {arm['arm'] if i == 0 else ''} | {c['cpu']} | {c['mean_cosine']:.4f} | {c['min_cosine']:.4f} | "
                f"{c['edge_to_cloud_r1']:.3f} | {lost['value'] * 100:+.1f} pt [{lost['low'] * 100:+.1f}, "
                f"{lost['high'] * 100:+.1f}] | {tail} |"
            )
    lines += [
        "",
        "Emulated ARM64 runs the aarch64 builds' own kernels (onnxruntime 1.32.0, ai-edge-litert 1.4.0 — the newest",
        "LiteRT with aarch64 Linux wheels) on a Cortex-A76 model; its timings are not a phone's and are not reported.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
