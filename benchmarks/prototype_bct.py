"""BCT without the cloud's classifier: class prototypes from the cloud's embeddings, or from nothing but a file of
them, vs the classifier's own weights.

    .venv/bin/python benchmarks/prototype_bct.py --cloud /path/to/emoji/cloud   # ~50 min on 2 cores (3 seeds x 4)
Writes benchmarks/results/prototype_bct.{json,md}.

A cloud imported from ONNX/TorchScript, or known only by a file of its embeddings, has no classifier; BCT then
scores the edge against frozen prototypes, the normalised mean of the cloud's embeddings of each training class
(`TrainConfig.prototypes = "embeddings"`, what `hetero cloud import` clouds get automatically). Arms, all with the
objective classification + BCT unless named:
- classifier: the cloud checkpoint's own classifier weights (BCT as published);
- embeddings: prototypes from the checkpoint's embeddings of the clean training images;
- file: the cloud known only by an embedding file — every emoji image embedded once by the cloud, written as
  Parquet keyed by image id, imported with `import_embeddings`; the edge never sees the cloud model;
- file + regression: the same file, plus cosine regression to each training image's stored row (one clean view:
  what a file can give).
Same emoji cloud, edge config and seeds for every arm; per seed the paired difference of edge→cloud R@1 against the
classifier arm on the same probes with its exact 95% interval (hetero.release.stats).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from emoji_setup import emoji_run

from hetero.config import override
from hetero.devices.loader import load
from hetero.pipeline import cloud_fixture
from hetero.release.metrics import retrieval_metrics
from hetero.release.stats import PairedChange, proportion
from hetero.training.train import train

BCT = {"classification": 1.0, "bct": 1.0}
# arm -> (edge overrides, loss weights, whether the cloud is the embedding file)
ARMS = {
    "classifier": ({"prototypes": "classifier"}, BCT, False),
    "embeddings": ({"prototypes": "embeddings"}, BCT, False),
    "file": ({}, BCT, True),
    "file + regression": ({"cloud_views": 1, "mix": 0.0, "transfer": ""}, {**BCT, "regression_cosine": 1.0}, True),
}


def embedding_file(cfg, cloud: Path, work: Path) -> Path:
    """What a cloud team would hand over: every image of the dataset embedded once, as Parquet keyed by id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hetero.data.datasets import load_dataset
    from hetero.manifest import load_manifest
    from hetero.training.table import import_embeddings

    data = load_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data)
    emb = load(cloud).embed(data.images)
    pq.write_table(pa.table({"id": data.ids.tolist(), "embedding": list(emb)}), work / "emoji_cloud.parquet")
    import_embeddings(work / "emoji_cloud.parquet", work / "file-cloud", load_manifest(cloud)[0].input)
    return work / "file-cloud"


def main() -> None:
    seeds = lambda ap: ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])  # noqa: E731
    run = emoji_run(__doc__, "proto-bct-", seeds)
    args, work, cfg, split = run.args, run.work, run.cfg, run.split
    fx = cloud_fixture(cfg, args.cloud, split)
    cloud_ok = retrieval_metrics(
        fx.reference_queries, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True
    )
    file_cloud = embedding_file(cfg, args.cloud, work)
    by_file = cloud_fixture(cfg, file_cloud, split)  # the gallery looked up by id: the same rows as the model's
    file_gap = float(np.abs(by_file.gallery_embeddings - fx.gallery_embeddings).max())
    runs = []
    for seed in args.seeds:
        outcome = {}
        for arm, (edge, weights, from_file) in ARMS.items():
            run_cfg = override(cfg, edge={"seed": seed, "loss_weights": weights, **edge})
            print(f"seed {seed}: {arm} …", file=sys.stderr, flush=True)
            t0, out = time.perf_counter(), work / f"{arm.replace(' ', '')}-{seed}"
            train("edge", run_cfg, out, cloud=file_cloud if from_file else args.cloud, split=split, progress=False)
            q = load(out).embed(fx.probe_images)
            m = retrieval_metrics(q, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels, per_query=True)
            outcome[arm] = m
            hits, secs = int(np.sum(m["top1_correct"])), round(time.perf_counter() - t0, 1)
            row = {"seed": seed, "arm": arm, "recall_at_1": m["recall_at_1"], "hits": hits, "seconds": secs}
            if arm != "classifier":
                change = PairedChange.from_outcomes(outcome["classifier"]["top1_correct"], m["top1_correct"])
                row["paired_loss_vs_classifier"] = change.loss().to_dict()
            runs.append(row)
    n = len(fx.probe_labels)
    mean = {a: float(np.mean([r["recall_at_1"] for r in runs if r["arm"] == a])) for a in ARMS}
    doc = {
        "config": str(args.config.name), "epochs": cfg.edge.epochs, "edge": cfg.edge.model, "probes": n,
        "cloud_r1": cloud_ok["recall_at_1"], "mean_r1": mean,
        "ratio": {a: mean[a] / mean["classifier"] for a in ARMS if a != "classifier"},
        "file_vs_model_gallery_max_abs": file_gap, "runs": runs, "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prototype_bct.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# BCT without the cloud classifier: prototypes from its embeddings, or from an embedding file alone",
        "",
        f"Edge {cfg.edge.model} ({cfg.edge.epochs} epochs), emoji cross-style, {n} probes; cloud → cloud R@1 "
        f"{cloud_ok['recall_at_1']:.3f}. The embedding file (Parquet, every image once) gives the model's gallery "
        f"rows to {file_gap:.1e}. Produced by `benchmarks/prototype_bct.py` on {doc['date']}; R@1 lost is the paired "
        "change against the classifier arm of the same seed (negative: better).",
        "",
        "| seed | arm | edge → cloud R@1 [95% CI] | R@1 lost vs classifier [95% CI] |",
        "|---|---|---|---|",
    ]
    for r in runs:
        loss = r.get("paired_loss_vs_classifier")
        lost = f"{loss['value']:+.3f} [{loss['low']:+.3f}, {loss['high']:+.3f}]" if loss else "—"
        lines.append(f"| {r['seed']} | {r['arm']} | {proportion(r['hits'], n).text()} | {lost} |")
    lines += ["", "| arm | mean R@1 | ratio to classifier (target ≥ 0.9) |", "|---|---|---|"]
    lines += [f"| {a} | {mean[a]:.3f} | {doc['ratio'].get(a, 1.0):.3f} |" for a in ARMS]
    (args.out / "prototype_bct.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
