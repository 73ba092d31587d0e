"""`hetero verify`: its parser beside its handler."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from hetero.cli.common import UPGRADE_HELP, add_index_flags, emit, index_spec, run_config, signing_key


def run(args: argparse.Namespace) -> int:
    from hetero.pipeline import verify

    key = signing_key(args)
    result = verify(
        run_config(args), args.cloud, args.candidate, args.control, args.out, index_spec(args), upgrade=args.upgrade,
        sign=key,
    )  # fmt: skip
    report, paths = result.report, result.paths
    emit(
        args,
        {"report": report.to_dict(), "paths": {k: str(v) for k, v in paths.items()}},
        report.to_text()
        + f"\n\nreport: {paths['json']}  {paths['markdown']}"
        + f"\nnext: hetero check --report {shlex.quote(str(paths['json']))}",
    )
    return 0


def register(add) -> None:
    v = add(
        "verify",
        "measure edge queries against the cloud gallery",
        "Embed the held-out gallery with the cloud unit and the queries with each producer (torch checkpoint or\n"
        "exported artifact, run on its runtime). Reports R@1, R@5, mAP per row plus parity to torch. Candidates\n"
        "must declare the cloud's space; controls may not (they are baselines).",
        "example:\n  hetero verify --cloud runs/x/cloud --candidate edge=runs/x/edge_bct \\\n"
        "      --candidate edge.tflite=runs/x/export/tflite-int8 --control runs/x/edge_ind --out runs/x",
    )
    v.add_argument(
        "--cloud", type=Path, required=True, help="cloud checkpoint or imported cloud (model or embedding file)"
    )
    v.add_argument("--candidate", action="append", default=[], metavar="[NAME=]PATH", help="gated query producer")
    v.add_argument("--control", action="append", default=[], metavar="[NAME=]PATH", help="ungated baseline producer")
    v.add_argument("--out", type=Path, required=True, help="directory for report.json and report.md")
    v.add_argument("--upgrade", type=Path, metavar="V2", help=UPGRADE_HELP + "rows for v2/v1, v2/v2, edge/v2 are added")
    v.add_argument("--sign", type=Path, metavar="KEY", help="sign report.json with this Ed25519 private key")
    add_index_flags(v)
    v.set_defaults(func=run)
