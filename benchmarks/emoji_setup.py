"""The setup every emoji benchmark against a trained cloud shares: arguments, a private work directory and cache,
the config (epochs overridable for smoke runs) and its split."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hetero.config import RunConfig, load_config, override
from hetero.data.datasets import OpenSetSplit, load_split

CONFIG = Path(__file__).resolve().parents[1] / "hetero" / "configs" / "emoji.toml"


@dataclass
class EmojiRun:
    args: argparse.Namespace
    work: Path
    cfg: RunConfig
    split: OpenSetSplit


def emoji_run(doc: str, prefix: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> EmojiRun:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cloud", type=Path, required=True, help="emoji cloud checkpoint (hetero train cloud)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--epochs", type=int, help="override the edge's epochs (smoke runs: not comparable)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument(
        "--work", type=Path, help="run directories (default: a new temporary one); resumable benchmarks reuse it"
    )
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HETERO_CACHE", str(work / "cache"))
    cfg = load_config(args.config)
    if args.epochs:
        cfg = override(cfg, edge={"epochs": args.epochs})
    return EmojiRun(args, work, cfg, load_split(cfg.data))
