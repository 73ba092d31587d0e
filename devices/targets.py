"""Runtime targets: run an artifact on the runtime version an app ships, and on the CPU it ships to.

`onnxruntime==1.17.3`, `ai-edge-litert==1.4.0@arm64`, `onnxruntime==1.32.0@x86_64:Haswell` — a runtime package pinned
to one version, natively or under QEMU user-mode emulation (`@arm64[:CPU]`: the aarch64 wheels, with their NEON and
dot-product kernels, in an arm64 Debian root; `@x86_64:CPU`: this machine's wheels as an x86 CPU without some
extensions). Each target's environment is created once on first use and cached under `$HETERO_RUNTIMES` (default
`$HETERO_CACHE/runtimes`); later runs are offline. The artifact runs through the same worker and protocol as
`--remote` (hetero.devices.remote), so a runtime that cannot load a file is a failed row with its own message.

Environments hold only the runtime and its pinned numpy (installed with pip `--target`, wheels only) plus a view of
this hetero's own package: the worker imports nothing heavier, so an old runtime's numpy<2 never meets hetero's
numpy. Emulated latency is not a phone's; rows say so, and parity (cosine to this machine's run of the same file)
is what they are for.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hetero.devices.remote import call
from hetero.errors import InputError
from hetero.io import cache_root
from hetero.kinds import Format

PACKAGES = {"onnxruntime": Format.ONNX, "ai-edge-litert": Format.TFLITE}
DEFAULT_CPU = {"arm64": "cortex-a76"}  # Armv8.2 with dot product: the big core of most phones since 2019
_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}
_SPEC = re.compile(r"([a-z][a-z0-9-]*)==(\d[0-9A-Za-z.]*)(?:@(arm64|x86_64)(?::([A-Za-z0-9_.+-]+))?)?")
DEBIAN_SUITE, DEBIAN_PYTHON = "bookworm", "3.11"  # the arm64 root's python; wheels are chosen for it
# onnxruntime's cpuinfo library reads /proc/cpuinfo and crashes on the x86 host's under qemu-user: the arm64 root gets
# one describing the emulated core (qemu resolves paths inside the root first).
_ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    "CPU part\t: 0xd0b\nCPU revision\t: 1\n\n"
    for i in range(2)
)


@dataclass(frozen=True)
class RuntimeTarget:
    package: str  # a key of PACKAGES
    version: str
    arch: str = ""  # "" = this machine; "arm64" | "x86_64" = under QEMU user-mode emulation
    cpu: str = ""  # the emulated CPU model (qemu -cpu)

    @classmethod
    def parse(cls, spec: str) -> RuntimeTarget:
        m = _SPEC.fullmatch(spec.strip())
        if not m:
            raise InputError(
                f"not a runtime target: {spec!r} (expected PACKAGE==VERSION[@arm64[:CPU] | @x86_64:CPU], e.g. "
                "onnxruntime==1.17.3, ai-edge-litert==1.4.0@arm64, onnxruntime==1.32.0@x86_64:Haswell)"
            )
        package, version, arch, cpu = m.group(1), m.group(2), m.group(3) or "", m.group(4) or ""
        if package not in PACKAGES:
            raise InputError(f"runtime target {spec!r}: no runtime package {package!r} (one of {', '.join(PACKAGES)})")
        if arch == "x86_64" and not cpu:
            raise InputError(f"runtime target {spec!r}: @x86_64 emulates a CPU model; name it, e.g. @x86_64:Haswell")
        return cls(package, version, arch, cpu or DEFAULT_CPU.get(arch, ""))

    @property
    def label(self) -> str:
        where = f"@{self.arch}:{self.cpu}" if self.arch else ""
        return f"{self.package}=={self.version}{where}"

    @property
    def format(self) -> Format:
        return PACKAGES[self.package]

    @property
    def machine(self) -> str:
        return _MACHINE.get(self.arch) or os.uname().machine

    @property
    def emulated(self) -> str:
        return f"QEMU {self.cpu}" if self.arch else ""


def runtimes_root() -> Path:
    return Path(os.environ.get("HETERO_RUNTIMES") or cache_root() / "runtimes")


def companions(package: str, version: str) -> list[str]:
    """What each runtime release is pinned beside: numpy 1.x under onnxruntime before 1.19 (built against it)."""
    from hetero.export.requires import version_tuple

    if package == "onnxruntime" and version_tuple(version) < (1, 19):
        return ["numpy==1.26.4"]
    return ["numpy==2.4.6"]


def _python_version(target: RuntimeTarget) -> str:
    return DEBIAN_PYTHON if target.arch == "arm64" else f"{sys.version_info[0]}.{sys.version_info[1]}"


def ensure_site(target: RuntimeTarget, log: Callable[[str], None]) -> Path:
    """The target's packages, installed once (wheels only) into a directory of their own; reused after."""
    py = _python_version(target)
    site = runtimes_root() / f"{target.package}-{target.version}-cp{py.replace('.', '')}-{target.machine}"
    if (site / "hetero-env.json").is_file():
        return site
    pins = [f"{target.package}=={target.version}", *companions(target.package, target.version)]
    log(f"hetero: installing {' '.join(pins)} for {target.machine} into {site} (once)")
    tmp = site.with_name(site.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", "--target", str(tmp)]  # fmt: skip
    if target.machine != os.uname().machine:
        abi = "cp" + py.replace(".", "")
        tags = [f"manylinux_2_{v}_{target.machine}" for v in (17, 27, 28, 31, 34, 35, 36)]
        cmd += ["--python-version", py, "--implementation", "cp", "--abi", abi]
        cmd += [a for t in tags for a in ("--platform", t)]
    done = subprocess.run([*cmd, *pins], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InputError(f"runtime target {target.label}: pip could not install {' '.join(pins)}: {last}")
    installed = sorted(d.name.removesuffix(".dist-info") for d in tmp.glob("*.dist-info"))
    (tmp / "hetero-env.json").write_text(json.dumps({"target": target.label, "pins": pins, "installed": installed}))
    os.replace(tmp, site)
    return site


def ensure_root(log: Callable[[str], None]) -> Path:
    """An arm64 Debian root with python (debootstrap's first stage plus its python packages unpacked: nothing runs
    inside it to set it up, so it needs no binfmt registration). Made once; needs root, debootstrap and
    qemu-user-static (Debian: `apt-get install qemu-user-static debootstrap`)."""
    root = runtimes_root() / f"debian-{DEBIAN_SUITE}-arm64"
    if (root / ".hetero-complete").is_file():
        return root
    missing = [t for t in ("debootstrap", "dpkg-deb", "qemu-aarch64-static") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"{', '.join(missing)} not found" if missing else "making it needs root"
        raise InputError(
            f"ARM64 targets run in an arm64 Debian root made once with debootstrap ({why}): as root, "
            "`apt-get install qemu-user-static debootstrap`, then run this command once as root"
        )
    mirror = os.environ.get("HETERO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    log(f"hetero: making an arm64 Debian {DEBIAN_SUITE} root with python {DEBIAN_PYTHON} in {root} (once)")
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include=python{DEBIAN_PYTHON}",
           DEBIAN_SUITE, str(tmp), mirror]  # fmt: skip
    call(cmd, "debootstrap", "arm64 root", 1800)
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):  # --foreign leaves --include packed
        call(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpack {deb.name}", "arm64 root", 300)
        deb.unlink()
    (tmp / "proc").mkdir(exist_ok=True)
    (tmp / "proc/cpuinfo").write_text(_ARM_CPUINFO)
    (tmp / ".hetero-complete").write_text(mirror + "\n")
    os.replace(tmp, root)
    return root


def _hetero_view() -> Path:
    """A directory whose `hetero` is this installation's package (hetero.devices and hetero.export live in their own
    top-level folders in a source checkout, so the package is assembled from symlinks): what the worker imports."""
    import importlib.util

    view = Path(tempfile.mkdtemp(prefix="hetero-view-"))
    atexit.register(shutil.rmtree, view, True)
    pkg = view / "hetero"
    pkg.mkdir()
    home = Path(importlib.util.find_spec("hetero").origin).parent
    for entry in home.iterdir():
        if entry.name not in ("devices", "export", "__pycache__"):
            (pkg / entry.name).symlink_to(entry)
    for sub in ("devices", "export"):
        (pkg / sub).symlink_to(Path(importlib.util.find_spec(f"hetero.{sub}").submodule_search_locations[0]))
    return view


class LocalHost:
    """Runs the worker for one runtime target on this machine (natively or under QEMU): the host side of the worker
    protocol that SSHHost is for a remote machine."""

    def __init__(self, target: RuntimeTarget, log: Callable[[str], None] = lambda s: None, timeout: float = 1800):
        self.target, self.timeout = target, timeout
        site = ensure_site(target, log)
        python: list[str] = [sys.executable]
        if target.arch == "arm64":
            root = ensure_root(log)
            python = [
                "qemu-aarch64-static",
                "-cpu",
                target.cpu,
                "-L",
                str(root),
                str(root / f"usr/bin/python{DEBIAN_PYTHON}"),
            ]
        elif target.arch:
            if shutil.which(f"qemu-{target.machine}-static") is None:
                raise InputError(
                    f"{target.label}: qemu-{target.machine}-static not found (apt-get install qemu-user-static)"
                )
            python = [f"qemu-{target.machine}-static", "-cpu", target.cpu, sys.executable]
        self.python_argv = (*python, "-S", "-P")  # only the target's packages and hetero's view: no site, no cwd
        self.env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{_hetero_view()}", "PYTHONNOUSERSITE": "1"}
        self.env.pop("PYTHONHOME", None)

    label = property(lambda self: self.target.label)
    runtime_name = property(lambda self: self.target.label)
    emulated = property(lambda self: self.target.emulated)

    def mkdtemp(self) -> str:
        return tempfile.mkdtemp(prefix="hetero-worker-")

    def remove(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def run(self, *argv: str, worker: bool = False) -> str:
        return call(list(argv), "worker", self.label, self.timeout, worker=worker, env=self.env)

    def put(self, local: Path, remote: str) -> None:
        (shutil.copytree if Path(local).is_dir() else shutil.copy2)(local, remote)

    def get(self, remote: str, local: Path) -> None:
        shutil.copy2(remote, local)


def target_producers(specs: list[str], targets: list[RuntimeTarget], log: Callable[[str], None]) -> list:
    """Each candidate artifact on each target of its format (`NAME@TARGET`). A target below the minimum the file
    needs (hetero.export.requires) is a failed producer that names the minimum, and never runs; a target that no
    artifact's format matches is refused — a runtime the user asked for never vanishes from the report."""
    from hetero.devices.harness import open_producer
    from hetero.export.requires import minimum_version, requirements, version_tuple
    from hetero.manifest import load_manifest

    out, hosts = [], {}
    units = [(spec, *load_manifest(Path(spec.rpartition("=")[2]))) for spec in specs]
    for t in targets:
        matching = [(spec, m, f) for spec, m, f in units if m.format == t.format]
        if not matching:
            have = sorted({m.format for _, m, _ in units}) or ["none"]
            raise InputError(f"--runtime {t.label} runs {t.format} artifacts; the artifacts given: {', '.join(have)}")
        for spec, manifest, model_file in matching:
            if t not in hosts:
                hosts[t] = LocalHost(t, log)
            producer = open_producer(spec, "candidate", remote=hosts[t])
            least, why = minimum_version(t.package, requirements(model_file, manifest.format))
            if least and version_tuple(t.version) < version_tuple(least):
                producer.failure = f"{t.label}: not run — the artifact needs {t.package} >= {least} ({why})"
            out.append(producer)
    return out


def export_runners(specs: list[str], log: Callable[[str], None] = lambda s: None) -> tuple:
    """`[export] validate_on` as runners export can call (hetero.export.validate.ElsewhereRunner): each runs a
    written unit on its target through the worker and returns the embeddings and the CPU it ran on."""
    from hetero.devices.remote import RemoteRuntime
    from hetero.export.validate import ElsewhereRunner

    def runner(target: RuntimeTarget):
        def run(unit: Path, images):
            rt = RemoteRuntime(LocalHost(target, log), unit)
            try:
                return rt.embed(images), rt.info()["cpu"]
            finally:
                rt.close()

        return run

    targets = [(spec, RuntimeTarget.parse(spec)) for spec in specs]
    return tuple(ElsewhereRunner(spec, t.label, str(t.format), runner(t)) for spec, t in targets)
