"""`hetero key`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import emit


def run(args: argparse.Namespace) -> int:
    from hetero.release.signing import generate_key

    pub, kid = generate_key(args.path)
    emit(
        args,
        {"private_key": str(args.path), "public_key": str(pub), "key_id": kid},
        f"key {kid}: private -> {args.path} (keep it secret), public -> {pub} (for check --trust)",
    )
    return 0


def register(add) -> None:
    k = add(
        "key",
        "make an Ed25519 key pair for signing fixtures and reports",
        "`generate PATH` writes a new private key to PATH (PEM, mode 0600: keep it with the team that owns the\n"
        "cloud) and its public key to PATH.pub (give it to mobile CI: check --trust PATH.pub). Never overwrites.\n"
        "`openssl genpkey -algorithm ed25519` keys work as well.",
        "example:\n  hetero key generate keys/cloud-team",
    )
    k.add_argument("action", choices=["generate"])
    k.add_argument("path", type=Path, help="private key file to write; the public key goes to PATH.pub")
    k.set_defaults(func=run)
