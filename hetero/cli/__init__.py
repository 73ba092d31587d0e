"""`hetero` command line: one module per command, each holding its parser beside its handler.

Exit codes: 0 pass, 1 compatibility/threshold failure, 2 usage or input error. Errors are one line on stderr
(a traceback only with --debug). `--json` prints one JSON document on stdout; progress goes to stderr.
Heavy modules (torch, exporters, runtimes) are imported inside the commands so `--help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from hetero import __version__
from hetero.cli import (
    bench,
    check,
    cloud,
    datasets,
    demo,
    embed,
    env,
    export,
    fixture,
    key,
    models,
    report,
    search,
    sign,
    split,
    train,
    verify,
)
from hetero.cli.common import CHECK_SCHEMA, EPILOG_EXIT, json_argv, output_file
from hetero.errors import GateFailure, HeteroError

# In the order `hetero --help` lists them: the pipeline's stages first, then tools.
COMMANDS = (
    split,
    train,
    search,
    export,
    verify,
    check,
    fixture,
    key,
    sign,
    bench,
    report,
    embed,
    cloud,
    demo,
    models,
    datasets,
    env,
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config (TOML); default: the packaged digits config. Unknown keys are refused",
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout; `--json FILE.json` (or --json=FILE) writes it to FILE instead",
    )
    common.add_argument("--json-file", type=Path, help=argparse.SUPPRESS)
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    p = argparse.ArgumentParser(
        prog="hetero",
        description="Train edge models into a cloud model's embedding space, export them, and prove on real "
        "runtimes that edge queries still find the right items in the cloud gallery.",
        epilog="Start with `hetero demo`. " + EPILOG_EXIT,
    )
    p.add_argument("--version", action="version", version=f"hetero {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, description: str, epilog: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            name,
            parents=[common],
            help=help_,
            description=description,
            epilog=epilog + "\n\n" + EPILOG_EXIT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(parser=parser)  # errors print this command's usage, not the top level's
        return parser

    for command in COMMANDS:
        command.register(add)
    return p


def _report_error(args: argparse.Namespace, message: str, exit_code: int) -> None:
    """On exit 2 the CI page still needs a reason: --json prints (or writes) it, --junit records it as an error."""
    if getattr(args, "json", False):
        doc = {"passed": False, "exit_code": exit_code, "error": message}
        if getattr(args, "command", None) == "check":
            doc = {"schema": CHECK_SCHEMA, "hetero_version": __version__, **doc}
        if getattr(args, "json_file", None) is not None:
            from hetero.io import atomic_write_text

            with contextlib.suppress(OSError, ValueError, HeteroError):
                atomic_write_text(Path(args.json_file), json.dumps(doc, indent=2) + "\n")
        else:
            print(json.dumps(doc, indent=2), flush=True)
    junit = getattr(args, "junit", None)
    if junit and not getattr(args, "junit_written", False):
        from hetero.io import atomic_write_text
        from hetero.release.junit import error_case, suite

        with contextlib.suppress(OSError, ValueError, HeteroError):  # an unwritable --junit may be the error itself
            atomic_write_text(Path(junit), suite([error_case(message)]))


# What only the full install has (torch, converters, plotting): the light `check` install reaching one of them is a
# missing install, said in one line with exit 2 — never a ModuleNotFoundError traceback.
FULL_INSTALL = {
    "torch", "torchvision", "onnx", "onnxscript", "onnxconverter_common", "coremltools", "litert_torch",
    "ai_edge_quantizer", "sklearn", "cairosvg", "fontTools", "PIL", "faiss", "pyarrow", "matplotlib",
}  # fmt: skip
INSTALL_HINT = "install hetero with its `all` extra (README: Install)"


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(json_argv(sys.argv[1:] if argv is None else [str(a) for a in argv]))
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        output_file(args.json_file, "--json")  # every command can write its JSON to a file: checked before work
        return args.func(args)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in FULL_INSTALL:
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        what = "plotting" if root == "matplotlib" else "this"
        msg = f"`hetero {args.command}`: {what} needs the full install: {root} is not installed here; {INSTALL_HINT}"
        print(f"hetero: error: {msg}", file=sys.stderr)
        _report_error(args, msg, 2)
        return 2
    except HeteroError as e:
        if args.debug:  # the traceback, and still the documented exit code
            import traceback

            traceback.print_exc()
        label = "FAIL" if isinstance(e, GateFailure) else "error"
        print(f"hetero: {label}: {e}", file=sys.stderr)
        if not isinstance(e, GateFailure):  # a gate failure has already written its report, JSON and JUnit
            _report_error(args, str(e), e.exit_code)
        return e.exit_code
    except BrokenPipeError:  # `hetero ... | head`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 141
    except OSError as e:  # unreadable/unwritable paths, full disk: the environment, not a bug
        if args.debug:
            import traceback

            traceback.print_exc()
        msg = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"hetero: error: {msg}", file=sys.stderr)
        _report_error(args, msg, 2)
        return 2
    except KeyboardInterrupt:
        print("hetero: interrupted", file=sys.stderr)
        return 130
