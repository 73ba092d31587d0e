"""`hetero env`: what a bug report needs — versions of hetero, its runtimes and converters, and the CPU it ran on.

Versions come from the installed distributions' metadata (nothing heavy is imported, so it answers in well under a
second, also in the light `check` install); CPU features from /proc/cpuinfo (Linux) or sysctl (macOS), because
kernels — and so the last digits of every number — differ between AVX2, AVX-512/VNNI and ARM machines.
"""

from __future__ import annotations

import argparse
import os
import platform
from importlib import metadata

from hetero import __version__
from hetero.cli.common import emit
from hetero.cpu import CPU_FLAGS, cpu_info

# What decides a number or a verdict: the runtimes that execute artifacts, the converters that write them, and the
# libraries under the metrics. Listed whether or not installed (a missing runtime explains a "not executed").
DISTRIBUTIONS = (
    "onnxruntime", "ai-edge-litert", "coremltools", "torch", "onnx", "onnxscript", "onnxconverter-common",
    "litert-torch", "ai-edge-quantizer", "faiss-cpu", "numpy", "scipy", "safetensors", "cryptography",
)  # fmt: skip


def versions() -> dict[str, str | None]:
    """Installed version of each distribution that decides a number, None when it is not installed."""
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment() -> dict[str, object]:
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HETERO_CACHE") if k in os.environ}
    return {
        "hetero": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "packages": versions(),
        "environment": threads,
    }


def run(args: argparse.Namespace) -> int:
    env = environment()
    cpu = env["cpu"]
    lines = [
        f"hetero   {env['hetero']}",
        f"python   {env['python']}  ({env['platform']})",
        f"cpu      {cpu.get('model') or '?'}, {cpu['machine']}, {cpu['cores']} logical cores; "
        f"features: {' '.join(cpu.get('features', [])) or 'none of ' + ', '.join(CPU_FLAGS)}",
    ]
    lines += [f"{k:<20} {v or 'not installed'}" for k, v in env["packages"].items()]
    lines += [f"{k}={v}" for k, v in env["environment"].items()]
    emit(args, env, "\n".join(lines))
    return 0


def register(add) -> None:
    e = add(
        "env",
        "versions of hetero, runtimes and converters, and this CPU's features (for bug reports)",
        "Print what decides a number on this machine: hetero's version, Python, the installed runtimes\n"
        "(onnxruntime, LiteRT, coremltools), converters, torch and numpy, and the CPU's model, cores and the\n"
        "instruction-set extensions that pick the kernels (AVX2, AVX-512, VNNI, ARM dot product). Paste it into a\n"
        "bug report. Nothing heavy is imported: it works in the light `check` install too.",
        "examples:\n  hetero env\n  hetero env --json > env.json",
    )
    e.set_defaults(func=run)
