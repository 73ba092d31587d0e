"""The manifest written beside every checkpoint and artifact, and the one way to load it.

A unit on disk is a directory holding exactly one model file and `manifest.json`. Loading always verifies the
sha256, so a truncated copy or a swapped file is refused before any runtime touches it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetero.errors import InputError, ManifestError
from hetero.frames import FrameRule
from hetero.io import atomic_write_json, read_json, sha256_path
from hetero.spaces import EmbeddingSpace, InputSpec

SCHEMA = "hetero.manifest/1"
MANIFEST_NAME = "manifest.json"
_TOOLS = ("hetero", "torch", "numpy", "onnx", "onnxruntime", "safetensors")


@dataclass
class Manifest:
    kind: str  # "checkpoint" | "artifact"
    file: str  # model file name, relative to the manifest's directory
    sha256: str
    format: str  # "safetensors" | "onnx" | ...
    precision: str
    space: EmbeddingSpace
    input: InputSpec
    model: dict[str, Any]
    seed: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=lambda: tool_versions())
    git_sha: str | None = field(default_factory=lambda: git_sha())
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    schema: str = SCHEMA

    @property
    def frame(self) -> FrameRule:
        """How an app turns a camera frame into this model's input (hetero.frames): stated at export in
        `extra.frame`; anything without one (a checkpoint, an older artifact) takes the default filter at its size."""
        d = self.extra.get("frame")
        rule = FrameRule.from_dict(d) if isinstance(d, dict) else FrameRule(self.input.height, self.input.width)
        if (rule.height, rule.width) != (self.input.height, self.input.width):
            raise ManifestError(
                f"manifest frame rule is {rule.height}x{rule.width}, its input {self.input.height}x{self.input.width}"
            )
        return rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind,
            "file": self.file,
            "sha256": self.sha256,
            "format": self.format,
            "precision": self.precision,
            "space": self.space.to_dict(),
            "input": self.input.to_dict(),
            "model": self.model,
            "seed": self.seed,
            "source": self.source,
            "validation": self.validation,
            "extra": self.extra,
            "tool_versions": self.tool_versions,
            "git_sha": self.git_sha,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: Path) -> Manifest:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise ManifestError(f"{where}: unsupported manifest schema {got!r} (expected {SCHEMA!r})")
        try:
            _require_fields(d, where)
            return cls(
                kind=d["kind"],
                file=d["file"],
                sha256=d["sha256"],
                format=d["format"],
                precision=d["precision"],
                space=EmbeddingSpace.from_dict(d["space"]),
                input=InputSpec.from_dict(d["input"]),
                model=d["model"],
                seed=d.get("seed"),
                source=d.get("source", {}),
                validation=d.get("validation", {}),
                extra=d.get("extra", {}),
                tool_versions=d.get("tool_versions", {}),
                git_sha=d.get("git_sha"),
                created=d.get("created", ""),
            )
        except KeyError as e:
            raise ManifestError(f"{where}: manifest lacks required key {e}") from None


_HEX = frozenset("0123456789abcdef")


def _require_fields(d: dict[str, Any], where: Path) -> None:
    """Types and shapes of the fields that decide what gets loaded and checked; one ManifestError for the first bad."""
    problems = []
    if d.get("kind") not in ("checkpoint", "artifact"):
        problems.append(f"kind must be 'checkpoint' or 'artifact', got {d.get('kind')!r}")
    f = d.get("file")
    if not isinstance(f, str) or not f or f in (".", "..") or any(c in f for c in "/\\\0") or f.startswith("~"):
        problems.append(f"file must be a plain file name inside the unit, got {f!r}")
    h = d.get("sha256")
    if not (isinstance(h, str) and len(h) == 64 and set(h) <= _HEX):
        problems.append(f"sha256 must be 64 lowercase hex digits, got {h!r}")
    for key in ("format", "precision"):
        if not isinstance(d.get(key), str):
            problems.append(f"{key} must be a string, got {d.get(key)!r}")
    for key in ("model", "source", "validation", "extra", "tool_versions"):
        if key in d and not isinstance(d[key], dict):
            problems.append(f"{key} must be an object, got {type(d[key]).__name__}")
    model = d.get("model")
    for key in ("macs", "params", "embed_dim"):  # counts the bench and the search compute with
        v = model.get(key) if isinstance(model, dict) else None
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            problems.append(f"model.{key} must be a non-negative integer, got {v!r}")
    if "seed" in d and d["seed"] is not None and (not isinstance(d["seed"], int) or isinstance(d["seed"], bool)):
        problems.append(f"seed must be an integer or null, got {d['seed']!r}")
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems))


@functools.cache
def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def git_sha() -> str | None:
    """The commit the code ran from (with '-dirty' when the tree has changes), so a number can be traced to code."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Hash the model file and write the manifest beside it (the last file written into a unit)."""
    directory = Path(directory)
    manifest.sha256 = sha256_path(directory / manifest.file)
    path = directory / MANIFEST_NAME
    atomic_write_json(path, manifest.to_dict())
    return path


def locate(path: Path) -> tuple[Path, Path]:
    """Accept a unit directory, its manifest, or its model file; return (manifest path, directory)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"not found: {path}")
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists() and (path.parent / MANIFEST_NAME).exists():
            return path.parent / MANIFEST_NAME, path.parent  # a directory-shaped model file (.mlpackage)
        return path / MANIFEST_NAME, path
    if path.name == MANIFEST_NAME:
        return path, path.parent
    return path.parent / MANIFEST_NAME, path.parent


def load_manifest(path: Path, *, verify: bool = True) -> tuple[Manifest, Path]:
    """Read and verify a manifest; return it with the path of its model file."""
    mpath, directory = locate(path)
    if not mpath.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} beside {path}: every checkpoint and artifact needs its manifest")
    manifest = Manifest.from_dict(read_json(mpath, "manifest"), mpath)
    model_file = directory / manifest.file
    p = Path(path)
    if p != directory and p.name != MANIFEST_NAME and p.name != manifest.file:
        raise ManifestError(f"{p}: manifest {mpath} describes {manifest.file!r}, not {p.name!r}")
    if not model_file.exists():
        raise InputError(f"model file named by {mpath} is missing: {model_file}")
    if verify:
        actual = sha256_path(model_file)
        if actual != manifest.sha256:
            raise ManifestError(
                f"{model_file}: sha256 mismatch (manifest {manifest.sha256[:12]}…, file {actual[:12]}…); "
                "the file is corrupt, truncated or was replaced"
            )
    return manifest, model_file
