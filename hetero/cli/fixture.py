"""`hetero fixture`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import UPGRADE_HELP, emit, run_config, signing_key, trusted_keys
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    from hetero.release.fixture import Fixture

    if args.action == "info":
        if args.path is None:
            raise InputError("fixture info needs the fixture file: hetero fixture info FIXTURE")
        fx = Fixture.load(args.path, trust=trusted_keys(args))
        info = {**fx.info(), "path": str(args.path), "size_bytes": Path(args.path).stat().st_size}
        info["signature"] = (
            f"verified: key {fx.signed_by}" if fx.signed_by
            else f"present, not verified (key {fx.signature.get('key_id')}; pass --trust)" if fx.signature
            else "unsigned"
        )  # fmt: skip
        emit(args, info, "\n".join(f"{k}: {v}" for k, v in info.items()))
        return 0
    if args.cloud is None or args.out is None:
        raise InputError("fixture create needs --cloud CHECKPOINT and --out FIXTURE")
    from hetero.pipeline import create_fixture

    key = signing_key(args)
    made = create_fixture(run_config(args), args.cloud, args.out, args.max_probes, upgrade=args.upgrade, sign=key)
    fx, size = made.fixture, made.size_bytes
    emit(
        args,
        {**fx.info(), "path": str(args.out), "size_bytes": size},
        f"fixture -> {args.out}  ({size / 1e6:.2f} MB: {len(fx.probe_labels)} probes, {len(fx.gallery_labels)} "
        f"gallery vectors, space {fx.space.id}"
        + (f"; and cloud v2 {fx.upgrade['cloud_sha256'][:12]}'s gallery" if fx.has_upgrade else "")
        + (f"; signed by key {fx.signature['key_id']}" if fx.signature else "")
        + ")",
    )
    return 0


def register(add) -> None:
    f = add(
        "fixture",
        "freeze what mobile CI needs into one file",
        "`create` embeds the config's held-out probes and gallery with the cloud model and writes one checksummed\n"
        "safetensors file: probe frames (PNG, at [data] frame_size: each artifact gets them through its own frame\n"
        "rule), gallery embeddings and labels, the cloud's own\n"
        "query embeddings, the space and the config's [check] thresholds. `--sign KEY` adds the cloud team's\n"
        "Ed25519 signature over all of it (`hetero key generate` makes a key pair); CI checks it with --trust\n"
        "KEY.pub, and the thresholds become a floor nobody downstream can loosen. `info` shows one (with --trust,\n"
        "verified).",
        "examples:\n  hetero fixture create --cloud runs/demo/cloud --out fixture.safetensors\n"
        "  hetero key generate keys/cloud-team && hetero fixture create --cloud runs/demo/cloud \\\n"
        "      --out fixture.safetensors --sign keys/cloud-team\n"
        "  hetero fixture info fixture.safetensors --trust keys/cloud-team.pub\n"
        "  hetero fixture info fixture.safetensors --json",
    )
    f.add_argument("action", choices=["create", "info"])
    f.add_argument("path", nargs="?", type=Path, help="fixture file (info)")
    f.add_argument("--cloud", type=Path, help="cloud checkpoint (create)")
    f.add_argument("--out", type=Path, help="fixture file to write (create)")
    f.add_argument("--max-probes", type=int, default=0, help="keep at most N probes (seeded sample); 0 = all")
    f.add_argument(
        "--upgrade", type=Path, metavar="V2", help=UPGRADE_HELP + "its gallery and probe embeddings are added"
    )
    f.add_argument("--sign", type=Path, metavar="KEY", help="sign the fixture with this Ed25519 private key (create)")
    f.add_argument(
        "--trust", type=Path, action="append", default=[], metavar="KEY.pub", help="verify its signature (info)"
    )
    f.set_defaults(func=run)
