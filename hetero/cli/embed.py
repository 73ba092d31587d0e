"""`hetero embed`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import emit
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    """Embed a folder or manifest with any unit into resumable shards (and a faiss index)."""
    from hetero.embed_job import embed_source

    k, _, m = args.part.partition("/")
    try:
        part = (int(k), int(m))
    except ValueError:
        raise InputError(f"--part takes K/M (this machine's share, 0-based), got {args.part!r}") from None
    r = embed_source(
        args.source, args.unit, args.out, batch_size=args.batch_size, shard_size=args.shard_size,
        workers=args.workers, part=part, threads=args.threads, max_bad_fraction=args.max_bad_fraction,
        index="" if args.index == "none" else args.index, progress=not args.quiet,
    )  # fmt: skip
    doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in r.__dict__.items()}
    status = "complete" if r.complete else f"partial: {r.shards_total} shards planned, run the other parts"
    text = (
        f"embeddings -> {r.out}  ({status}; {r.rows:,} rows x {r.dim}, space {r.space['id']}; "
        f"{r.shards_computed} shards computed at {r.images_per_second:,.0f} img/s, {r.shards_reused} reused; "
        f"{len(r.skipped)} images skipped)"
    )
    if r.index:
        rec = r.index["recall"]
        text += f"\nindex -> {r.out / 'index.faiss'}  ({r.index['factory']}, 1-recall@10 {rec['recall_1_at_10']})"
    emit(args, doc, text)
    return 0


def register(add) -> None:
    e = add(
        "embed",
        "embed a folder or manifest with any unit, into resumable shards and a faiss index",
        "Decode every image of SOURCE (a folder root/<class>/... or a .csv/.jsonl manifest) by the camera rule and\n"
        "embed it with UNIT (a cloud checkpoint, an imported cloud, an edge checkpoint or an exported artifact, on\n"
        "its runtime). Shards of --shard-size records are written atomically as shard-NNNNN.npz (embeddings, ids,\n"
        "undecodable images); after a kill, the same command skips the shards that exist and the result is\n"
        "identical. embeddings.json marks a complete set; --index then builds a faiss index with its recall\n"
        "against exact search measured and saved beside it (auto: exact up to 200,000 rows, else IVF-PQ).\n"
        "Several machines: give each --part K/M with the same --out (shared disk) or copy the shards together,\n"
        "then run once more to finalise.",
        "examples:\n  hetero embed catalogue/ --unit runs/shop/cloud --out runs/shop/gallery --index auto\n"
        "  hetero embed photos.csv --unit runs/shop/export/onnx-int8 --out runs/shop/queries --workers 2\n"
        "  hetero embed catalogue/ --unit runs/shop/cloud --out /shared/gallery --part 0/4   # machine 1 of 4",
    )
    e.add_argument("source", type=Path, help="image folder root/<class>/... or a .csv/.jsonl manifest")
    e.add_argument("--unit", type=Path, required=True, help="what embeds: any checkpoint or artifact unit")
    e.add_argument("--out", type=Path, required=True, help="directory for shards, plan and embeddings.json")
    e.add_argument("--batch-size", type=int, default=64, help="images per runtime call (default 64)")
    e.add_argument("--shard-size", type=int, default=10_000, help="records per shard file (default 10000)")
    e.add_argument("--workers", type=int, default=1, help="processes, each with its own runtime (default 1)")
    e.add_argument("--threads", type=int, default=None, help="runtime threads per worker (default: cores/workers)")
    e.add_argument("--part", default="0/1", help="K/M: compute only shards with index %% M == K (default 0/1)")
    e.add_argument("--max-bad-fraction", type=float, default=0.01, help="undecodable share that fails the run")
    e.add_argument(
        "--index", choices=["none", "auto", "exact", "ivfpq", "hnsw"], default="none", help="faiss index to build"
    )
    e.set_defaults(func=run)
