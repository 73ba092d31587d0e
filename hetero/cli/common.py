"""What every command shares: config and threshold loading, output, and the flags several commands take."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hetero.errors import InputError


def log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """The result: JSON on stdout with --json, into a file with --json FILE.json (the text then on stdout, as with
    --junit and --markdown), else the text."""
    document = json.dumps(payload, indent=2)
    if getattr(args, "json_file", None) is not None:
        from hetero.io import atomic_write_text

        atomic_write_text(Path(args.json_file), document + "\n")
        print(text, flush=True)
    else:
        print(document if args.json else text, flush=True)


# Commands whose own inputs are JSON files (`hetero report RESULT.json`, `hetero sign REPORT.json`): there a
# `--json X.json` keeps meaning the switch, so an input is never taken for the output and overwritten.
READS_JSON = ("report", "sign")


def output_file(path: Path | None, flag: str) -> None:
    """Refuse an output a command could not write — a directory, an unwritable folder — before any work is done."""
    if path is None:
        return
    from hetero.io import ensure_writable_dir

    if Path(path).is_dir():
        raise InputError(f"{flag} {path} is a directory; give the file to write")
    ensure_writable_dir(Path(path).parent)


def json_argv(argv: list[str]) -> list[str]:
    """`--json FILE.json` and `--json=FILE` name a file, as --junit and --markdown do; a bare `--json` is stdout.
    (A value is taken only when it ends in .json, so `hetero fixture info --json FIXTURE` still reads FIXTURE, and
    never for the commands that read JSON files.)"""
    command = next((a for a in argv if not a.startswith("-")), "")
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--json="):
            out += ["--json", "--json-file", a.split("=", 1)[1]]
        elif (
            a == "--json" and command not in READS_JSON and i + 1 < len(argv) and argv[i + 1].lower().endswith(".json")
        ):
            out += ["--json", "--json-file", argv[i + 1]]
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def run_config(args: argparse.Namespace):
    from hetero.config import load_config

    return load_config(args.config)


def check_thresholds(args: argparse.Namespace, fixture_thresholds: dict | None = None, base=None):
    """Thresholds: a fixture's frozen ones are a floor that the --policy file and flags may only tighten; without a
    fixture, --policy (its keys over `base`: the thresholds a report was verified under, else the config's [check]),
    an explicit --config's [check] over a report's, and flags override."""
    import dataclasses

    from hetero.config import CheckConfig, from_dict
    from hetero.errors import ConfigError
    from hetero.policy import read_policy
    from hetero.release.gate import tightened

    table = read_policy(args.policy)[0] if getattr(args, "policy", None) else {}
    overrides = {key: getattr(args, flag[2:].replace("-", "_"), None) for flag, key in THRESHOLD_FLAGS}
    for flag in ("require_executed", "require_resizers"):
        overrides[flag] = True if getattr(args, flag, False) else None
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        if fixture_thresholds is not None:
            floor = from_dict(CheckConfig, fixture_thresholds, prefix="fixture thresholds.")
            policy = dataclasses.asdict(from_dict(CheckConfig, table, prefix="check.", base=floor))
            cfg = tightened(floor, policy, "the policy") if table else floor
            return tightened(cfg, flags, "a command-line threshold") if flags else cfg
        if base is None or getattr(args, "config", None) is not None:
            base = run_config(args).check
        cfg = from_dict(CheckConfig, table, prefix="check.", base=base) if getattr(args, "policy", None) else base
        return dataclasses.replace(cfg, **flags)
    except ConfigError as e:
        raise ConfigError(f"command-line threshold: {e}") from None


def signing_key(args: argparse.Namespace):
    """The private key of --sign, loaded before any work: a bad key is found in a second, not after embedding."""
    if args.sign is None:
        return None
    from hetero.release.signing import load_private_key

    return load_private_key(args.sign)


def trusted_keys(args: argparse.Namespace) -> list:
    """Public keys from --trust and the --policy file's trust list: with any, fixtures and reports must be signed."""
    from hetero.policy import read_policy
    from hetero.release.signing import load_public_key

    paths = list(getattr(args, "trust", None) or [])
    if getattr(args, "policy", None):
        paths += list(read_policy(args.policy)[1])
    return [load_public_key(p) for p in paths]


def csv_names(value: str, flag: str) -> list[str]:
    """A flag's comma-separated names; one given empty (`--formats ,`) is refused, never read as 'the defaults'."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"{flag} names nothing ({value!r}); leave it out for the config's defaults")
    return names


def index_spec(args: argparse.Namespace):
    """--index KIND [--nprobe N]: search the cloud gallery through a faiss index; none: rank it densely."""
    if args.index == "none":
        return None
    from hetero.release.index import IndexSpec

    return IndexSpec(kind=args.index, nprobe=args.nprobe)


def add_index_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        choices=["none", "auto", "exact", "ivfpq", "hnsw"],
        default="none",
        help="search the cloud gallery through a faiss index built over it, as a deployed search would "
        "(auto: exact up to 200k items, IVF-PQ above; the report records which and its recall vs exact); "
        "none: rank every gallery item densely (default)",
    )
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells probed per query (--index ivfpq)")


THRESHOLD_FLAGS = (
    ("--min-r1", "min_recall_at_1"),
    ("--min-relative-r1", "min_relative_recall_at_1"),
    ("--min-map", "min_map"),
    ("--max-previous-flips", "max_previous_flip_rate"),
    ("--max-previous-r1-loss", "max_previous_r1_loss"),
    ("--max-upgrade-flips", "max_upgrade_flip_rate"),
    ("--max-upgrade-r1-loss", "max_upgrade_r1_loss"),
)


def add_threshold_flags(parser: argparse.ArgumentParser, *, hidden: bool) -> None:
    """Gate overrides of the config's [check] table (read by `check_thresholds`)."""
    for flag, key in THRESHOLD_FLAGS:
        parser.add_argument(flag, type=float, help=argparse.SUPPRESS if hidden else f"override [check].{key}")


def support_matrix() -> dict[str, tuple[str, ...]]:
    from hetero.export.formats import SUPPORT

    return SUPPORT


def add_remote_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("remote device (SSH)")
    g.add_argument("--remote", metavar="USER@HOST", help="also run each artifact on this host over SSH")
    g.add_argument("--remote-python", default="python3", help="python with hetero installed on the remote host")
    g.add_argument("--ssh-port", type=int, default=22)
    g.add_argument("--ssh-key", type=Path, help="private key for the remote host")
    g.add_argument("--ssh-option", action="append", default=[], metavar="OPT", help="extra `ssh -o OPT` (repeatable)")


def pixel_size(text: str) -> tuple[int, int]:
    """`224` or `256x192` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PX or HxW, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected PX or HxW, got {text!r}")
    return (values[0], values[-1])


def objectives() -> dict[str, dict[str, float]]:
    from hetero.config import OBJECTIVES

    return OBJECTIVES


UPGRADE_HELP = (
    "a cloud v2 trained into the cloud's space (hetero train cloud --cloud V1); its lineage is checked (exit 2 if "
    "it was not trained against this cloud), then "
)


CHECK_SCHEMA = "hetero.check/1"  # `check --json`, described by hetero/schemas/check.schema.json


EPILOG_EXIT = "exit codes: 0 pass, 1 compatibility or threshold failure, 2 usage or input error"
