"""A cloud hetero did not write, on the real family and dataset: the emoji Lite2 cloud exported the way a team would
export its own model (plain `torch.onnx.export`, float NCHW input, normalisation outside), imported with `hetero
cloud import`, against the same network as a hetero checkpoint.

    .venv/bin/python benchmarks/imported_cloud.py --cloud /path/to/emoji/cloud   # ~15 min on 2 cores
Writes benchmarks/results/imported_cloud.{json,md}.

Measured: (1) the imported unit's gallery and cloud → cloud embeddings against the checkpoint's (max |diff|, min
cosine) and cloud → cloud R@1 of both with the paired change; (2) embedding throughput of both units (onnxruntime
vs torch, batch 64); (3) the emoji edge recipe (classification + BCT + cosine regression, 4 cached cloud views)
trained against each, BCT prototypes from the cloud's embeddings in both arms (the imported cloud has no
classifier), so the only difference is the teacher: edge → cloud R@1 and the paired change on the same probes.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from emoji_setup import emoji_run

from hetero.config import override
from hetero.devices.harness import open_cloud
from hetero.devices.loader import load
from hetero.models.checkpoint import load_checkpoint
from hetero.pipeline import cloud_fixture
from hetero.release.metrics import retrieval_metrics
from hetero.release.stats import PairedChange, proportion
from hetero.training.cloud import Preprocessing, import_cloud
from hetero.training.train import train


class TeamExport(torch.nn.Module):
    """The network as a team's own code would export it: normalised float NCHW in, raw embedding out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.forward_features(x))


def export_plain(cloud: Path, out: Path) -> tuple[Path, Preprocessing]:
    model, m = load_checkpoint(cloud)
    if getattr(model, "resolution", None):
        raise SystemExit("this benchmark exports a cloud that computes at its input size")
    size = m.input.height
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        torch.onnx.export(
            TeamExport(model), (torch.rand(1, 3, size, size),), str(out), dynamo=False, input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )  # fmt: skip
    return out, Preprocessing(size, m.input.width, tuple(m.input.mean), tuple(m.input.std))


def throughput(unit: Path, images: np.ndarray, repeats: int = 3) -> float:
    rt = open_cloud(unit)
    rt.embed(images[:64])  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(images), 64):
            rt.embed(images[s : s + 64])
        best = max(best, len(images) / (time.perf_counter() - t0))
    return best


def main() -> None:
    run = emoji_run(__doc__, "imported-cloud-")
    args, work, cfg, split = run.args, run.work, run.cfg, run.split
    src, pre = export_plain(args.cloud, work / "team_cloud.onnx")
    imported = work / "imported"
    import_cloud(src, imported, pre, name="team", normalize=True)
    fx = {"checkpoint": cloud_fixture(cfg, args.cloud, split), "imported": cloud_fixture(cfg, imported, split)}
    a, b = fx["checkpoint"], fx["imported"]
    both = (
        np.concatenate([a.gallery_embeddings, a.reference_queries]),
        np.concatenate([b.gallery_embeddings, b.reference_queries]),
    )
    parity = {"max_abs": float(np.abs(both[0] - both[1]).max()), "min_cos": float((both[0] * both[1]).sum(1).min())}

    def score(q: np.ndarray, f) -> dict:
        return retrieval_metrics(q, f.probe_labels, f.gallery_embeddings, f.gallery_labels, per_query=True)

    ref = {k: score(f.reference_queries, f) for k, f in fx.items()}
    speed = {k: throughput(u, split.gallery.images) for k, u in (("checkpoint", args.cloud), ("imported", imported))}
    edges = {}
    for arm, cloud in (("checkpoint", args.cloud), ("imported", imported)):
        print(f"edge against the {arm} cloud …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        run_cfg = override(cfg, edge={"prototypes": "embeddings"})
        m = train("edge", run_cfg, work / f"edge-{arm}", cloud=cloud, split=split, progress=False).manifest
        q = load(work / f"edge-{arm}").embed(fx[arm].probe_images)
        edges[arm] = {**score(q, fx[arm]), "seconds": round(time.perf_counter() - t0, 1), "space": m.space.id}
    n = len(a.probe_labels)
    ref_change = PairedChange.from_outcomes(ref["checkpoint"]["top1_correct"], ref["imported"]["top1_correct"])
    edge_change = PairedChange.from_outcomes(edges["checkpoint"]["top1_correct"], edges["imported"]["top1_correct"])
    doc = {
        "config": args.config.name, "edge": cfg.edge.model, "epochs": cfg.edge.epochs, "probes": n,
        "gallery": len(a.gallery_labels), "parity": parity,
        "cloud_r1": {k: v["recall_at_1"] for k, v in ref.items()}, "cloud_r1_loss": ref_change.loss().to_dict(),
        "images_per_s": speed,
        "edge_r1": {k: v["recall_at_1"] for k, v in edges.items()}, "edge_r1_loss": edge_change.loss().to_dict(),
        "edge_seconds": {k: v["seconds"] for k, v in edges.items()}, "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imported_cloud.json").write_text(json.dumps(doc, indent=2) + "\n")

    def hits(d: dict) -> str:
        return proportion(int(np.sum(d["top1_correct"])), n).text()

    def loss(d: dict) -> str:
        return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    lines = [
        "# A cloud hetero did not write: the emoji Lite2 cloud exported by plain torch.onnx, then imported",
        "",
        f"Emoji cross-style, {n} probes against {doc['gallery']} gallery images. Edge {cfg.edge.model}, "
        f"{cfg.edge.epochs} epochs, classification + BCT + cosine regression, 4 cached cloud views, BCT prototypes "
        f"from the cloud's embeddings in both arms. Produced by `benchmarks/imported_cloud.py` on {doc['date']}.",
        "",
        f"Imported vs checkpoint embeddings (gallery + cloud queries): max |diff| {parity['max_abs']:.1e}, "
        f"min cosine {parity['min_cos']:.7f}.",
        "",
        "| | hetero checkpoint (torch) | imported ONNX (onnxruntime) | R@1 lost [95% CI] |",
        "|---|---|---|---|",
        f"| cloud → cloud R@1 | {hits(ref['checkpoint'])} | {hits(ref['imported'])} | {loss(doc['cloud_r1_loss'])} |",
        f"| edge → cloud R@1 | {hits(edges['checkpoint'])} | {hits(edges['imported'])} | {loss(doc['edge_r1_loss'])} |",
        f"| cloud images/s (batch 64) | {speed['checkpoint']:.0f} | {speed['imported']:.0f} | |",
        f"| edge training s | {edges['checkpoint']['seconds']:.0f} | {edges['imported']['seconds']:.0f} | |",
    ]
    (args.out / "imported_cloud.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
