"""`hetero sign`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import emit


def run(args: argparse.Namespace) -> int:
    from hetero.pipeline import sign_file
    from hetero.release.signing import load_private_key

    r = sign_file(args.path, load_private_key(args.key))
    emit(args, r.to_dict(), f"signed {r.kind} {r.path} with key {r.key_id} (content {r.content_sha256[:16]}…)")
    return 0


def register(add) -> None:
    sg = add(
        "sign",
        "sign a fixture or a report with the cloud team's key",
        "Verifies the file's checksum, then writes it again (atomically) with an Ed25519 signature over its content:\n"
        "header, thresholds and every array of a fixture; every row and count of a report. `check --trust KEY.pub`\n"
        "then refuses it if any byte changes, or if it is re-signed by a key CI does not trust.",
        "examples:\n  hetero sign fixture.safetensors --key keys/cloud-team\n"
        "  hetero sign runs/demo/report.json --key keys/cloud-team",
    )
    sg.add_argument("path", type=Path, help="fixture (.safetensors) or report (.json) to sign in place")
    sg.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    sg.set_defaults(func=run)
