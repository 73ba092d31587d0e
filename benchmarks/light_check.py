"""The light gate environment for mobile CI: install size and `hetero check` time, side by side with the full one.

Builds a venv from requirements-check.lock plus hetero (no torch), then times the same `hetero check` (a demo's
fixture against its ONNX int8 and TFLite int8 artifacts) in that venv and in the full .venv, alternating, several
times; reports the medians and the sizes of both environments. Wall time of a fresh process is what a CI job pays.

    .venv/bin/python benchmarks/light_check.py --demo runs/demo
Writes benchmarks/results/light_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def size_mb(venv: Path) -> float:
    out = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def build_slim(dest: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(dest)], check=True)
    pip = [str(dest / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "requirements-check.lock")], check=True, capture_output=True)
    src = dest.parent / "src"  # a clean copy: pip builds in-tree, and a stale build/ would leak into the wheel
    shutil.copytree(
        REPO, src, ignore=shutil.ignore_patterns(".*", "build", "runs", "*.egg-info", "tests", "benchmarks")
    )
    subprocess.run([*pip, "--no-deps", str(src)], check=True, capture_output=True)
    return time.perf_counter() - t0


def time_check(hetero: Path, demo: Path, cwd: Path) -> float:
    cmd = [
        str(hetero),
        "check",
        "--quiet",
        "--fixture",
        str(demo / "fixture.safetensors"),
        "--artifact",
        str(demo / "export" / "onnx-int8"),
        "--artifact",
        str(demo / "export" / "tflite-int8"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{hetero} check exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=REPO / "runs" / "demo", help="a demo output directory")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    full = REPO / ".venv"
    args.demo = args.demo.resolve()  # the checks run from a scratch directory
    with tempfile.TemporaryDirectory() as tmp:
        slim = Path(tmp) / "slim"
        install_s = build_slim(slim)
        times: dict[str, list[float]] = {"light": [], "full": []}
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            times["light"].append(time_check(slim / "bin" / "hetero", args.demo, Path(tmp)))
            times["full"].append(time_check(full / "bin" / "hetero", args.demo, Path(tmp)))
        sizes = {"light": size_mb(slim), "full": size_mb(full)}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "install_seconds_light": round(install_s, 1),
        "size_mb": sizes,
        "check_seconds": times,
        "median_check_seconds": med,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "light_check.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# `hetero check` in the light environment (mobile CI) vs the full one",
        "",
        "`benchmarks/light_check.py`: requirements-check.lock + hetero (no torch) against the full `.venv`; the same",
        f"check (demo fixture, ONNX int8 + TFLite int8), alternating, {args.repeats} times each, fresh processes.",
        "",
        "| environment | size | median `hetero check` wall time |",
        "|---|---|---|",
        f"| light (`requirements-check.lock`) | {sizes['light']:.0f} MB | {med['light']:.2f} s |",
        f"| full (`.venv`, training and export) | {sizes['full']:.0f} MB | {med['full']:.2f} s |",
        "",
        f"Building the light environment took {install_s:.0f} s (pip, wheels from the local cache).",
        "",
    ]
    (args.out / "light_check.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
