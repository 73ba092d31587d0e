"""`hetero bench`: its parser beside its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from hetero.cli.common import add_remote_flags, emit, log
from hetero.errors import InputError


def run(args: argparse.Namespace) -> int:
    """Latency percentiles, load time, memory, size and distance to the compute limit of units on their runtimes."""
    from hetero.devices.bench import bench
    from hetero.io import atomic_write_text, ensure_writable_dir

    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise InputError(f"--threads takes comma-separated counts, e.g. 1,2; got {args.threads!r}") from None
    for out in (args.markdown, args.csv):
        if out is not None:
            ensure_writable_dir(Path(out).parent)
    remote = None
    if args.remote:
        from hetero.devices.remote import SSHHost

        remote = SSHHost.from_args(args)
    result = bench(
        args.unit, threads, runs=args.runs, seconds=args.seconds, warmup=args.warmup, batch=args.batch,
        remote=remote, progress=lambda m: log(args, f"bench {m}"),
    )  # fmt: skip
    if args.markdown:
        atomic_write_text(Path(args.markdown), result.to_markdown())
    if args.csv:
        atomic_write_text(Path(args.csv), result.to_csv())
    emit(args, result.to_dict(), result.to_text())
    return 0


def register(add) -> None:
    b = add(
        "bench",
        "time units on their runtimes: latency percentiles, load time, memory, size, distance to the compute limit",
        "Each UNIT (checkpoint or exported artifact, [NAME=]PATH) at each --threads count runs in a fresh process:\n"
        "cold load timed, --warmup calls, then at least --runs timed calls and at least --seconds, one call per\n"
        "iteration with nothing else in the loop. Reports p50/p90/p99, mean and spread, load time, peak RSS, size on\n"
        "disk, MACs (from the manifest) and achieved GFLOP/s, and 'x limit': p50 over the time those MACs take at\n"
        "a 256^3 float32 GEMM rate measured in the same process (1.0 = as fast as dense matrix products allow).\n"
        "A runtime that cannot execute here (Core ML off macOS) is a row marked not executed. --remote runs the\n"
        "same worker on another host over SSH, each unit uploaded once.",
        "examples:\n  hetero bench runs/x/export/onnx-fp32 runs/x/export/tflite-int8 --threads 1,2\n"
        "  hetero bench edge=runs/x/export/tflite-fp32 --seconds 10 --markdown bench.md --csv bench.csv --json\n"
        "  hetero bench runs/x/export/tflite-int8 --remote pi@board.local --remote-python /opt/hetero/bin/python",
    )
    b.add_argument("unit", nargs="+", metavar="[NAME=]PATH", help="checkpoint or artifact units")
    b.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    b.add_argument("--runs", type=int, default=100, help="at least this many timed calls per row (default 100)")
    b.add_argument("--seconds", type=float, default=0.0, help="and at least this long per row (default 0)")
    b.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    b.add_argument("--batch", type=int, default=1, help="images per call (default 1, as on a device)")
    b.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    b.add_argument("--csv", type=Path, help="write one CSV row per (unit, host, threads) here")
    add_remote_flags(b)
    b.set_defaults(func=run)
