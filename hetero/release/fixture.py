"""Compatibility fixture: everything mobile CI needs to gate an edge artifact, nothing else.

Probe frames (uint8 camera-like frames larger than any producer's input, stored as PNG: lossless; each producer gets
them through its own frame rule, hetero.frames), the cloud gallery's embeddings and labels, the cloud's own query
embeddings (so the cloud → cloud reference needs no cloud model), the space, and the gate thresholds. One safetensors
file: tensors plus a JSON header whose sha256 of the tensor bytes makes corruption detectable, and optionally the
cloud team's Ed25519 signature over that hash (hetero.release.signing), which makes tampering detectable: with a trusted
key, an unsigned, re-signed or edited fixture is refused. No training data, no cloud model, no GPU.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetero.errors import InputError
from hetero.frames import DEFAULT_FILTER, FrameRule, decode_png, encode_png
from hetero.io import atomic_write_bytes
from hetero.spaces import EmbeddingSpace

FIXTURE_SCHEMA = "hetero.fixture/2"  # /2: probes are frames above every input size, PNG-encoded
_SIGNATURE_KEY = "hetero.signature"  # safetensors metadata beside "hetero.fixture": the signature record
_ARRAYS = (
    "probe_frames_png",
    "probe_frame_offsets",
    "probe_labels",
    "gallery_embeddings",
    "gallery_labels",
    "reference_queries",
)
# A fixture for a cloud upgrade also carries the v2 cloud's gallery and its embeddings of the probes
# (hetero.training.lineage).
_UPGRADE_ARRAYS = ("upgrade_gallery_embeddings", "upgrade_queries")


@dataclass
class Fixture:
    space: EmbeddingSpace
    probe_frames: np.ndarray  # uint8 [N, H, W, 3]: frames at least the space's input size; producers apply their rule
    probe_labels: np.ndarray  # int64 [N]
    gallery_embeddings: np.ndarray  # float32 [M, dim], embedded by the cloud model
    gallery_labels: np.ndarray  # int64 [M]
    reference_queries: np.ndarray  # float32 [N, dim]: the cloud model's embeddings of the probes
    thresholds: dict[str, float]
    source: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    gallery_images: np.ndarray | None = None  # in-memory only (verify's X → X rows); never saved
    # Cloud v2 trained into this space (an upgrade): its gallery of the same images and its probe embeddings, and
    # the lineage it was checked for ({"cloud_sha256", "model", "compatible_with", "trained_against"}).
    upgrade_gallery_embeddings: np.ndarray | None = None  # float32 [M, dim]
    upgrade_queries: np.ndarray | None = None  # float32 [N, dim]
    upgrade: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, str] | None = None  # as loaded (hetero.release.signing); `save(sign=KEY)` writes a new one
    signed_by: str = ""  # the trusted key id that verified it at load
    stored: bool = False  # loaded from a file: its cloud rows are the stored embeddings, not computed here
    _derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, m, d = len(self.probe_labels), len(self.gallery_labels), self.space.dim
        if m and len(np.unique(self.gallery_labels)) < 2:
            raise InputError(
                "a fixture's gallery holds a single class: every model retrieves it at top-1, so no gate could fail; "
                "use at least two classes"
            )
        given = [a is not None for a in (self.upgrade_gallery_embeddings, self.upgrade_queries)] + [bool(self.upgrade)]
        if any(given) and not all(given):
            raise InputError("a fixture's upgrade needs the v2 gallery, the v2 probe embeddings and its lineage")
        for name, arr, rows in (
            ("upgrade_gallery_embeddings", self.upgrade_gallery_embeddings, m),
            ("upgrade_queries", self.upgrade_queries, n),
        ):
            if arr is not None and arr.shape != (rows, d):
                raise InputError(
                    f"fixture {name} has shape {arr.shape}; the v1 gallery of space {self.space.id} is ({rows}, {d}): "
                    "both galleries must hold the same images in the same space"
                )
        frames = self.probe_frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) != n:
            raise InputError(f"fixture probe frames must be uint8 [N, H, W, 3] for {n} labels, got {frames.shape}")
        for name, arr, rows in (
            ("gallery_embeddings", self.gallery_embeddings, m),
            ("reference_queries", self.reference_queries, n),
        ):
            if arr.shape != (rows, d):
                raise InputError(
                    f"fixture {name} has shape {arr.shape}, expected ({rows}, {d}) for space {self.space.id}"
                )
        spec = self.space.input
        if frames.shape[1] < spec.height or frames.shape[2] < spec.width:
            raise InputError(
                f"fixture probe frames are {list(frames.shape[1:3])}, smaller than space {self.space.id}'s input "
                f"{[spec.height, spec.width]}: frames must be at least every producer's input"
            )

    def _cached(self, key: Any, make: Any) -> Any:
        """Derived from the frames (PNG encoding, resized probes), recomputed when the frames are replaced."""
        if self._derived.get("frames") is not self.probe_frames:
            self._derived.clear()
            self._derived["frames"] = self.probe_frames
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def probes(self, height: int, width: int, filter: str = DEFAULT_FILTER) -> np.ndarray:
        """The probe frames through the frame rule at `height` x `width` with `filter` (what an app's resize
        hands that producer)."""
        return self._cached((height, width, filter), lambda: FrameRule(height, width, filter).apply(self.probe_frames))

    @property
    def probe_images(self) -> np.ndarray:
        """The probes at the space's input size with the default filter (what the cloud embeds)."""
        return self.probes(self.space.input.height, self.space.input.width)

    def _tensors(self) -> dict[str, np.ndarray]:
        png, offsets = self._cached("png", lambda: encode_png(self.probe_frames))
        return {
            "probe_frames_png": png,
            "probe_frame_offsets": offsets,
            "probe_labels": np.ascontiguousarray(self.probe_labels, np.int64),
            "gallery_embeddings": np.ascontiguousarray(self.gallery_embeddings, np.float32),
            "gallery_labels": np.ascontiguousarray(self.gallery_labels, np.int64),
            "reference_queries": np.ascontiguousarray(self.reference_queries, np.float32),
            **{a: np.ascontiguousarray(getattr(self, a), np.float32) for a in _UPGRADE_ARRAYS if self.has_upgrade},
        }

    @property
    def has_upgrade(self) -> bool:
        return self.upgrade_queries is not None

    def info(self) -> dict[str, Any]:
        return {
            "schema": FIXTURE_SCHEMA,
            "space": self.space.to_dict(),
            "probes": len(self.probe_labels),
            "probe_frame_shape": list(self.probe_frames.shape[1:]),
            "gallery": len(self.gallery_labels),
            "classes": len(np.unique(self.gallery_labels)),
            "thresholds": self.thresholds,
            "source": self.source,
            "created": self.created,
            **({"upgrade": self.upgrade} if self.has_upgrade else {}),
        }

    def content_sha256(self) -> str:
        """The hash a signature covers: the header (space, thresholds, source) and every array."""
        return _content_sha256(self._tensors(), self.info())

    def save(self, path: Path, sign: Any = None) -> int:
        """Write atomically; `sign`: an Ed25519 private key (hetero.release.signing) whose signature travels in the
        file. Returns the size in bytes."""
        from safetensors.numpy import save

        from hetero.release import signing

        tensors = self._tensors()
        info = self.info()
        digest = _content_sha256(tensors, info)
        header = {**info, "content_sha256": digest}
        metadata = {"hetero.fixture": json.dumps(header)}
        if sign is not None:
            self.signature = signing.sign(sign, FIXTURE_SCHEMA, digest)
        if self.signature:
            metadata[_SIGNATURE_KEY] = json.dumps(self.signature)
        data = save(tensors, metadata=metadata)
        atomic_write_bytes(Path(path), data)
        return len(data)

    @classmethod
    def load(cls, path: Path, trust: list[Any] | None = None) -> Fixture:
        """Load and verify: checksum always; with `trust` (hetero.release.signing.TrustedKey list), a signature by
        one of those keys over the same content, before any of it is used."""
        from safetensors.numpy import load

        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"{path} is a directory; give the fixture file in it (e.g. {Path(path) / 'fixture.safetensors'})"
                if Path(path).is_dir()
                else f"fixture not found: {path}"
            )
        raw = path.read_bytes()
        try:
            tensors = load(raw)
            meta = _metadata(raw)
            header = json.loads(meta["hetero.fixture"])
            signature = json.loads(meta[_SIGNATURE_KEY]) if _SIGNATURE_KEY in meta else None
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise InputError(
                f"{path}: corrupt or truncated fixture ({str(e).strip()[:120] or type(e).__name__})"
            ) from None
        if header.get("schema") != FIXTURE_SCHEMA:
            raise InputError(
                f"{path}: unsupported fixture schema {header.get('schema')!r} (expected {FIXTURE_SCHEMA!r}"
                + (
                    "; fixtures before /2 store probes at the space's size: recreate it with hetero fixture create)"
                    if header.get("schema") == "hetero.fixture/1"
                    else ")"
                )
            )
        missing = [a for a in _ARRAYS if a not in tensors]
        if missing:
            raise InputError(f"{path}: fixture lacks {missing[0]!r}")
        if not isinstance(header, dict):
            raise InputError(f"{path}: fixture header is not a JSON object")
        claimed = header.pop("content_sha256", None)
        if _content_sha256(tensors, header) != claimed:
            raise InputError(
                f"{path}: fixture checksum mismatch: the file is corrupt, was edited, or was written by an older hetero"
            )
        signed_by = ""
        if trust:
            from hetero.release import signing

            signed_by = signing.verify(signature, FIXTURE_SCHEMA, claimed, trust, str(path)).key_id
        thresholds, source = header.get("thresholds"), header.get("source", {})
        if (
            not isinstance(thresholds, dict)
            or not isinstance(source, dict)
            or not isinstance(header.get("space"), dict)
        ):
            raise InputError(f"{path}: fixture header lacks its space, thresholds or source")
        upgrade = header.get("upgrade", {})
        if not isinstance(upgrade, dict) or bool(upgrade) != all(a in tensors for a in _UPGRADE_ARRAYS):
            raise InputError(f"{path}: fixture's upgrade header and arrays do not match")
        fx = cls(
            space=EmbeddingSpace.from_dict(header["space"]),
            thresholds=thresholds,
            source=source,
            created=str(header.get("created", "")),
            upgrade=upgrade,
            signature=signature if isinstance(signature, dict) else None,
            signed_by=signed_by,
            stored=True,
            probe_frames=_decode(tensors, path),
            **{a: tensors[a] for a in (*_ARRAYS[2:], *(_UPGRADE_ARRAYS if upgrade else ()))},
        )
        if fx.info() != header:  # what the header says must be what the arrays are (probe count, shape, classes)
            raise InputError(f"{path}: fixture header does not describe its arrays")
        # Saved again (signing), the frames keep the bytes that were hashed, whatever this Pillow would encode.
        fx._derived.update(frames=fx.probe_frames, png=(tensors["probe_frames_png"], tensors["probe_frame_offsets"]))
        return fx


def _decode(tensors: dict[str, np.ndarray], path: Path) -> np.ndarray:
    try:
        return decode_png(tensors["probe_frames_png"], tensors["probe_frame_offsets"])
    except InputError:
        raise
    except Exception as e:  # checksummed, so only a writer's bug gets here
        raise InputError(f"{path}: the fixture's probe frames do not decode ({e})") from None


def _content_sha256(tensors: dict[str, np.ndarray], header: dict[str, Any]) -> str:
    """One hash over the header (space, thresholds, source: everything that decides a verdict) and every array."""
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in (*_ARRAYS, *(a for a in _UPGRADE_ARRAYS if a in tensors)):
        arr = tensors[name]
        h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _metadata(raw: bytes) -> dict[str, str]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {})
