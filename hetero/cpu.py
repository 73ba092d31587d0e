"""The CPU a number was measured on: model, architecture and the instruction-set extensions that pick the kernels.

Kernels — and so the last digits of every embedding, and whether an int8 graph saturates — differ between AVX2,
AVX-512/VNNI and ARM64 (NEON, dot product) machines, so every verdict row and bench result names its CPU. Light on
purpose (stdlib only): the runtime worker imports it inside minimal runtime environments and under emulation.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

# The instruction-set extensions that change which kernels run (and so the last digits of embeddings).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "asimd", "asimddp")


def cpu_info() -> dict[str, object]:
    """Model name, logical cores and the kernel-relevant feature flags of this machine."""
    info: dict[str, object] = {"machine": platform.machine(), "cores": os.cpu_count() or 0}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        info["model"] = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part", "")
        flags = set((fields.get("flags") or fields.get("Features") or "").split())
        info["features"] = [f for f in CPU_FLAGS if f in flags]
    elif sys.platform == "darwin":
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        info["model"] = out.stdout.strip()
        info["features"] = []
    return info


def cpu_tag(info: dict[str, object] | None = None) -> str:
    """One short line for a report row: `x86_64 avx2 fma` or `aarch64 asimd asimddp`."""
    info = info if info is not None else cpu_info()
    features = [str(f) for f in info.get("features", []) or [] if f not in ("sse4_2", "avx")]  # type: ignore[union-attr]
    return " ".join([str(info.get("machine", "?")), *features])
