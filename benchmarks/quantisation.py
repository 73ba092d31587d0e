"""Quantised artifacts of the real edge family, measured: parity, edge→cloud R@1 against the fp32 edge, size, latency.

The emoji edge (`efficientnet_lite0_050` at 64 px inside the 96 px space, trained with emoji.toml) is built at every
float and int8 precision of ONNX and TFLite, with and without the torch-side preparation of `hetero.export.prepare`
(bias correction; and cross-layer equalisation, measured because the literature recommends it for depthwise
networks). For each artifact: cosine to the torch model over every held-out image (min, mean), the export
validation's verdict with the config's tolerances, its queries' R@1 against the *cloud's* gallery paired with the
fp32 edge's (the number the issue targets: the loss's 95% interval), file size, and batch-1 latency on one thread
measured in this run beside the fp32 artifact of the same runtime. Then the per-layer sensitivity ranking
(`hetero.export.sensitivity`) that mixed precision uses.

The benchmark measures every artifact, including those validation refuses (export would not write them); it builds
them with the same functions `hetero export` calls.

    .venv/bin/python benchmarks/quantisation.py --cloud CLOUD --edge EDGE     # ~10 min on 2 cores
Writes benchmarks/results/quantisation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hetero.batching import embed_batches
from hetero.config import DEFAULT_CONFIG, load_config, override
from hetero.data.datasets import load_split
from hetero.devices.base import timed_embed
from hetero.devices.loader import load
from hetero.errors import ParityError
from hetero.export.artifact import FORMAT_MODULES, ExportData, deployable, weight_bits
from hetero.export.formats import BuildRequest, tolerance
from hetero.export.sensitivity import sweep
from hetero.export.validate import Embeddings, validate_parity
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph
from hetero.release.stats import PairedChange

CONFIG = DEFAULT_CONFIG.parent / "emoji.toml"
TITLE = "Quantised artifacts of the real edge family (emoji)"
RECIPES = {
    "plain": {"bias_correction": False, "equalise": False},
    "equalised": {"bias_correction": False, "equalise": True},
    "bias-corrected": {"bias_correction": True, "equalise": False},
    "bias-corrected, percentile": {"bias_correction": True, "equalise": False, "calibration_method": "percentile"},
    # TFLite only (ONNX offers no float layers inside int8): the stem's input is the resized image, whose 8-bit grid
    # puts many pixels exactly on rounding ties, so a 1-ulp change in the float scaling flipped which images fail
    "bias-corrected, stem float": {"bias_correction": True, "equalise": False, "keep_float": ["stem"]},
}
BUILDS = [
    ("onnx", "fp32", "plain"),
    ("onnx", "fp16", "plain"),
    *[("onnx", "int8", r) for r in RECIPES if "stem" not in r],  # percentile calibration: ONNX only
    ("tflite", "fp32", "plain"),
    ("tflite", "fp16", "plain"),
    *[("tflite", p, r) for p in ("int8", "int8w") for r in RECIPES if "percentile" not in r and "stem" not in r],
    ("tflite", "int8", "bias-corrected, stem float"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True)
    ap.add_argument("--edge", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--replot", action="store_true", help="render the Markdown and plot again from the saved JSON")
    ap.add_argument("--title", default=TITLE, help="the Markdown's heading (which edge, which training)")
    args = ap.parse_args()
    if args.replot:
        write(json.loads((args.out / "quantisation.json").read_text()), args.out)
        return
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    split = load_split(cfg.data)
    data = ExportData.from_split(split, cfg.export.calibration_images)
    model, ckpt = load_checkpoint(args.edge)
    graph = EmbeddingGraph(model, ckpt.input).eval()
    with torch.inference_mode():
        fn = lambda b: graph(torch.from_numpy(b)).numpy()  # noqa: E731
        ref = Embeddings(embed_batches(fn, split.query.images), embed_batches(fn, split.gallery.images))
    cloud_gallery = load(args.cloud).embed(split.gallery.images)
    ql, gl = split.query.labels, split.gallery.labels

    def hits(q: np.ndarray) -> np.ndarray:
        return gl[np.argmax(q @ cloud_gallery.T, axis=1)] == ql

    torch_hits = hits(ref.query)
    few = split.query.images[:200]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, prec, recipe in BUILDS:
            print(f"{fmt} {prec} {recipe} …", flush=True)
            ecfg = override(cfg, export=RECIPES[recipe]).export
            bits = weight_bits(fmt, ecfg)
            built, prepared = deployable(graph, prec, ecfg, data.calibration, bits)
            dest = Path(tmp) / f"{fmt}-{prec}-{recipe}"
            dest.mkdir()
            mod = FORMAT_MODULES[fmt]
            request = BuildRequest(
                built,
                ckpt.space.id,
                prec,
                dest,
                data.calibration,
                ecfg.opset,
                calibration_method=ecfg.calibration_method,
                keep_float=tuple(ecfg.keep_float),
                weight_bits=bits,
            )
            mod.build(request)
            run = mod.runner(dest / mod.FILE)
            cand = Embeddings(embed_batches(run, split.query.images), embed_batches(run, split.gallery.images))
            try:
                validate_parity(ref, cand, ql, gl, dim=ckpt.space.dim, tolerance=tolerance(prec, cfg.export))
                failures: list[str] = []
            except ParityError as e:
                failures = e.failures
            cos = np.sum(cand.all() * ref.all(), axis=1) / np.linalg.norm(cand.all(), axis=1)
            loss = PairedChange.from_outcomes(torch_hits, hits(cand.query)).loss()
            rows.append(
                {
                    "format": fmt,
                    "precision": prec,
                    "recipe": recipe,
                    "weight_bits": bits if "int8" in prec else None,
                    "prepared": prepared,
                    "min_cosine": float(cos.min()),
                    "mean_cosine": float(cos.mean()),
                    "validation": "passed" if not failures else "FAILED",
                    "failures": failures,
                    "edge_to_cloud_r1": float(hits(cand.query).mean()),
                    "r1_loss_vs_fp32_edge": [loss.value, loss.low, loss.high],
                    "size_bytes": (dest / mod.FILE).stat().st_size,
                    "latency_ms": timed_embed(SimpleNamespace(embed=mod.runner(dest / mod.FILE, threads=1)), few)[1],
                }
            )
    print("sensitivity sweep …", flush=True)
    ranked = sweep(graph, data.calibration, split.query.images)
    result = {
        "title": args.title,
        "edge": ckpt.model,
        "torch_edge_to_cloud_r1": float(torch_hits.mean()),
        "n_query": len(ql),
        "n_heldout": data.n_heldout,
        "calibration_images": len(data.calibration),
        "tolerance_int8": tolerance("int8", cfg.export).to_dict(),
        "rows": rows,
        "sensitivity": [s.to_dict() for s in ranked],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantisation.json").write_text(json.dumps(result, indent=2) + "\n")
    write(result, args.out)


def write(result: dict, out: Path) -> None:
    (out / "quantisation.md").write_text(render(result))
    plot(result, out / "quantisation.png")
    print(render(result))


def plot(r: dict, path: Path) -> None:
    """Left: what quantising each layer alone costs. Right: each int8 artifact's mean cosine by recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    sens = r["sensitivity"]
    a.bar(range(len(sens)), [1 - s["mean_cosine"] for s in sens], color="tab:red")
    a.set_yscale("log")
    a.set_xticks(range(len(sens)), [s["layer"] for s in sens], rotation=90, fontsize=7)
    a.set_ylabel("1 − mean cosine to float (log)")
    a.set_title("one layer quantised at a time (torch simulation)")
    rows = [x for x in r["rows"] if "int8" in x["precision"]]
    labels = [f"{x['format']} {x['precision']}\n{x['recipe']}" for x in rows]
    b.barh(range(len(rows)), [1 - x["mean_cosine"] for x in rows], color="tab:blue")
    b.axvline(1 - r["tolerance_int8"]["min_mean_cosine"], color="k", ls="--", lw=1, label="validation limit (mean)")
    b.set_xscale("log")
    b.set_yticks(range(len(rows)), labels, fontsize=7)
    b.invert_yaxis()
    b.set_xlabel("1 − mean cosine to torch, held-out images (log)")
    b.set_title("int8 artifacts by recipe")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(r: dict) -> str:
    m = r["edge"]
    lines = [
        f"# {r.get('title', TITLE)}",
        "",
        f"Edge {m['name']} ({m['macs'] / 1e6:.1f} M MACs at {m.get('resolution')} px), torch edge→cloud R@1 "
        f"{r['torch_edge_to_cloud_r1']:.4f} over {r['n_query']} Twemoji queries against the cloud's OpenMoji gallery. "
        f"Parity over all {r['n_heldout']} held-out images; {r['calibration_images']} calibration images (training "
        "set). R@1 loss = fp32 torch edge minus artifact, both against the cloud gallery, paired, with its exact 95% "
        "interval. Latency: batch 1, median over 200 queries, in this run.",
        "",
        "| format | precision | recipe | w bits | min cos | mean cos | validation | edge→cloud R@1 | loss vs fp32 edge "
        "[95% CI] | size | ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        v, lo, hi = x["r1_loss_vs_fp32_edge"]
        lines.append(
            f"| {x['format']} | {x['precision']} | {x['recipe'] if 'int8' in x['precision'] else ''} | "
            f"{x['weight_bits'] or ''} | {x['min_cosine']:.4f} | {x['mean_cosine']:.5f} | {x['validation']} | "
            f"{x['edge_to_cloud_r1']:.4f} | {v * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}] pt | "
            f"{x['size_bytes'] / 1024:.0f} KiB | {x['latency_ms']:.3f} |"
        )
    lines += ["", "Failed rules:", ""]
    for x in r["rows"]:
        for f in x["failures"]:
            lines.append(f"- {x['format']} {x['precision']} {x['recipe']}: {f}")
    t = r["tolerance_int8"]
    lines += [
        "",
        f"int8 tolerance: min cosine ≥ {t['min_cosine']}, mean ≥ {t['min_mean_cosine']}, R@1 drop (leave-one-out, "
        f"upper end) ≤ {t['max_r1_drop'] * 100:.0f} pt, top-10 overlap ≥ {t['min_top10_overlap']}.",
        "",
        "## Sensitivity: one layer quantised at a time (torch simulation), most sensitive first",
        "",
        "| layer | mean cos | min cos |",
        "|---|---|---|",
        *(f"| {s['layer']} | {s['mean_cosine']:.5f} | {s['min_cosine']:.4f} |" for s in r["sensitivity"][:10]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
