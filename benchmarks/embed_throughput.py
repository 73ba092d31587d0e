"""`hetero embed` against a plain batched loop of the same model and runtime, images/s side by side.

    .venv/bin/python benchmarks/embed_throughput.py --unit runs/e/cloud      # the emoji cloud (Lite2, 96 px)
Writes benchmarks/results/embed_throughput.{json,md}.

The source is a folder of real images: the emoji set's 4,230 drawings written once as PNG files (one folder per
identity). The plain loop is what a user would write: scan the same records, decode each with the same camera rule,
stack batches of 64 and call the same runtime, sequentially. `hetero embed` adds threaded decoding, atomic shards
(npz) and the plan/manifest files; with --workers 2 it runs two processes of one runtime thread each. Each variant
runs `--repeats` times in alternating order (shared, noisy machine: read the ratios of medians).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hetero.data.folder import decode, scan
from hetero.devices.loader import load
from hetero.embed_job import embed_source


def write_folder(root: Path, limit: int) -> Path:
    from hetero.data import emoji
    from hetero.io import cache_root

    d = emoji.load(96, cache_root())
    for i in range(min(limit, len(d["labels"]))):
        path = root / f"id{int(d['labels'][i]):04d}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(d["images"][i]).save(path)
    return root


def plain_loop(source: Path, unit: Path, batch: int) -> float:
    """Images/s of the obvious loop: decode, batch, embed; nothing written."""
    t0 = time.perf_counter()
    rt = load(unit)
    size, records, rows, buf = rt.manifest.input.height, scan(source), [], []
    for rec in records:
        buf.append(decode(rec.path, size))
        if len(buf) == batch:
            rows.append(rt.embed(np.stack(buf)))
            buf = []
    if buf:
        rows.append(rt.embed(np.stack(buf)))
    return len(records) / (time.perf_counter() - t0)


def hetero_embed(source: Path, unit: Path, batch: int, work: Path, **kw) -> float:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = embed_source(source, unit, out, batch_size=batch, shard_size=1000, progress=False, **kw)
    return r.rows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", type=Path, required=True, help="any checkpoint or artifact unit taking 96 px input")
    ap.add_argument("--images", type=int, default=4230)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    source = write_folder(work / "images", args.images)
    variants = {
        "plain loop": lambda: plain_loop(source, args.unit, args.batch),
        "hetero embed": lambda: hetero_embed(source, args.unit, args.batch, work),
        "hetero embed --workers 2 --threads 1": lambda: hetero_embed(
            source, args.unit, args.batch, work, workers=2, threads=1
        ),
    }
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            runs[name].append(variants[name]())
            print(f"{name}: {runs[name][-1]:.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    m = load(args.unit).manifest
    doc = {"unit": m.model.get("name"), "format": m.format, "images": len(scan(source)), "batch": args.batch,
           "runs": runs, "median": med, "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embed_throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# hetero embed throughput: {doc['images']} emoji PNGs, {doc['unit']} ({m.format}), batch {args.batch}",
        "",
        f"Medians of {args.repeats} alternating runs; produced by `benchmarks/embed_throughput.py` on {doc['date']}.",
        "",
        "| variant | images/s (median) | runs | vs plain loop |",
        "|---|---|---|---|",
    ]
    for k, v in runs.items():
        lines.append(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} | {med[k] / med['plain loop']:.2f}x |")
    (args.out / "embed_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
