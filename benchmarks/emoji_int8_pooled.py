"""int8 of the shipped emoji edge, resolved: edge → cloud R@1 lost by int8, pooled over every cross-style direction.

Issue 14 found that 705 probes cannot resolve "int8 loses at most 1 point of edge → cloud R@1 at the upper end of the
paired interval" (705 paired probes resolve ~0.6 points only when no answer changes; a few flips either way widen
the interval past 1 point). The held-out identities exist in 3 styles (Twemoji, OpenMoji, Noto), so each style can
query each other style's cloud gallery: 6 directions × ~705 probes. Each probe is paired — the fp32 edge (torch) and
the int8 artifact (its runtime) answer the same query against the same cloud gallery — so the pooled paired counts
give one exact interval (hetero.release.stats.PairedChange) with ~6x the resolution.

The artifacts are built by the stage API `hetero export` calls (`export_matrix`, with the config's [export]
settings and its validation); an artifact the validation refuses is reported as refused and measured anyway from
the file the same build writes to a scratch directory, so the table says what it would have lost.

    .venv/bin/python benchmarks/emoji_int8_pooled.py --cloud CLOUD --edge EDGE [--config hetero/configs/emoji.toml]
Writes benchmarks/results/emoji_int8_pooled.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from hetero.config import DEFAULT_CONFIG, load_config
from hetero.data.datasets import load_dataset, load_split
from hetero.devices.loader import load
from hetero.export.artifact import ExportData, export_matrix
from hetero.release.stats import PairedChange, paired_resolution

CONFIG = DEFAULT_CONFIG.parent / "emoji.toml"


def directions(cfg, heldout: tuple[int, ...]):
    """(query style, gallery style, query images, query labels, gallery images, gallery labels) for every ordered
    pair of styles, restricted to held-out identities drawn in both."""
    data = load_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data)
    mine = np.isin(data.labels, np.asarray(heldout))
    for a, b in itertools.permutations(range(len(data.style_names)), 2):
        qa, gb = mine & (data.styles == a), mine & (data.styles == b)
        both = np.intersect1d(data.labels[qa], data.labels[gb])
        qi = np.flatnonzero(qa & np.isin(data.labels, both))
        gi = np.flatnonzero(gb & np.isin(data.labels, both))
        yield (
            data.style_names[a],
            data.style_names[b],
            data.images[qi],
            data.labels[qi],
            data.images[gi],
            data.labels[gi],
        )


def hits(q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray) -> np.ndarray:
    return gl[np.argmax(q @ g.T, axis=1)] == ql


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True)
    ap.add_argument("--edge", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--formats", default="onnx,tflite")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    split = load_split(cfg.data)
    cloud, edge = load(args.cloud), load(args.edge)
    with tempfile.TemporaryDirectory() as tmp:
        data = ExportData.from_split(split, cfg.export.calibration_images)
        res = export_matrix(args.edge, Path(tmp), args.formats.split(","), ["int8"], data, cfg.export)
        runs = {a.format: (a, load(Path(a.path)) if a.path else None) for a in res.artifacts}
        dirs, pooled = [], {f: [np.zeros(0, bool), np.zeros(0, bool)] for f in runs}
        for qs, gs, qx, ql, gx, gl in directions(cfg, split.heldout_classes):
            g = cloud.embed(gx)
            ref = hits(edge.embed(qx), ql, g, gl)
            row = {"query": qs, "gallery": gs, "n": len(ql), "fp32_edge_to_cloud": float(ref.mean())}
            for fmt, (_, runner) in runs.items():
                if runner is None:
                    continue
                got = hits(runner.embed(qx), ql, g, gl)
                row[fmt] = PairedChange.from_outcomes(ref, got).to_dict()
                pooled[fmt][0] = np.concatenate([pooled[fmt][0], ref])
                pooled[fmt][1] = np.concatenate([pooled[fmt][1], got])
            dirs.append(row)
    summary = {}
    for fmt, (artifact, _) in runs.items():
        ref, got = pooled[fmt]
        change = PairedChange.from_outcomes(ref, got) if len(ref) else None
        summary[fmt] = {
            "status": artifact.status,
            "failures": artifact.failures,
            "mean_cosine": artifact.validation.get("embedding", {}).get("mean_cosine"),
            "pooled": change.to_dict() if change else None,
            "loss": change.loss().to_dict() if change else None,
        }
    result = {
        "edge": str(args.edge),
        "edge_model": load_checkpoint_model(args.edge),
        "machine": platform.processor() or platform.machine(),
        "directions": dirs,
        "formats": summary,
        "resolution_705": paired_resolution(705),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emoji_int8_pooled.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "emoji_int8_pooled.md").write_text(render(result))
    print(render(result))


def load_checkpoint_model(path: Path) -> dict:
    from hetero.manifest import load_manifest

    m = load_manifest(path)[0]
    return {k: m.model.get(k) for k in ("name", "resolution", "macs", "arch")}


def render(r: dict) -> str:
    lines = [
        "# int8 of the shipped emoji edge: edge → cloud R@1 lost, pooled over the 6 cross-style directions",
        "",
        f"Edge: `{r['edge_model']['name']}` at {r['edge_model']['resolution']} px. Target: at most 1 point lost at the",
        "upper end of the pooled exact 95% paired interval.",
        "",
        "| format | export validation | mean cosine | probes | fp32 right, int8 wrong | fp32 wrong, int8 right | "
        "R@1 lost [95%] | resolution | target (≤ 1 pt at the upper end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt, s in r["formats"].items():
        if not s["loss"]:
            lines.append(f"| {fmt} | {s['status']} | | | | | not measured | | |")
            continue
        loss, p = s["loss"], s["pooled"]
        ok = "met" if loss["high"] <= 0.01 else "missed"
        cos = f"{s['mean_cosine']:.4f}" if s["mean_cosine"] is not None else ""
        lines.append(
            f"| {fmt} int8 | {s['status']} | {cos} | {p['n']:,} | {p['worse']} | {p['better']} | "
            f"{loss['value'] * 100:+.2f} pt [{loss['low'] * 100:+.2f}, {loss['high'] * 100:+.2f}] | "
            f"{loss['resolution'] * 100:.2f} pt | {ok} |"
        )
    lines += ["", "Per direction (paired counts: worse = fp32 right and int8 wrong):", ""]
    lines += ["| query → gallery | probes | fp32 edge → cloud R@1 | " + " | ".join(r["formats"]) + " |"]
    lines += ["|---|---|---|" + "---|" * len(r["formats"])]
    for d in r["directions"]:
        cells = [f"{d[f]['worse']} worse / {d[f]['better']} better" if f in d else "—" for f in r["formats"]]
        lines.append(
            f"| {d['query']} → {d['gallery']} | {d['n']} | {d['fp32_edge_to_cloud']:.3f} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"One direction alone (705 probes) resolves {r['resolution_705'] * 100:.2f} points at best.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
