"""Frame rule: how an app turns a camera frame into an artifact's input, and the resize implementations apps use.

The app resizes once, from the camera frame straight to the artifact's input size: scale so the shorter side is the
input's (both sides cover it), then centre-crop. Which filter does that scaling changes the pixels a model sees —
PIL's bilinear antialiases when it shrinks, OpenCV's INTER_LINEAR does not, INTER_AREA averages — so the rule names
one (the artifact's stated filter, recorded in its manifest and file), and the release gate can run the probes
through each of the others as well (`hetero check --resize all`).

The fixture stores its probes as frames larger than any producer's input; the harness applies each producer's rule
at that producer's size. Needs numpy and Pillow; OpenCV (`cv2-*`) and torch (`torch-bilinear-aa`) when those
filters are asked for — a filter whose library is absent is reported, never silently replaced.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from hetero.errors import InputError, NotExecutedError
from hetero.spaces import InputSpec

DEFAULT_FILTER = "pil-bilinear"
RULE = "shorter side to the input size, centre crop"


def _pil(method: str) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), getattr(Image.Resampling, method)))

    return resize


def _cv2(flag: str) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        try:
            import cv2
        except ImportError:
            raise NotExecutedError("OpenCV filters need opencv-python-headless (pip install 'hetero[check]')") from None
        return cv2.resize(frame, (size[1], size[0]), interpolation=getattr(cv2, flag))

    return resize


def _torch_bilinear_aa(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise NotExecutedError("torch-bilinear-aa needs torch (pip install 'hetero[all]')") from None
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


# name -> resize(uint8 HxWx3, (height, width)) -> uint8: the implementations apps actually call
FILTERS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "pil-bilinear": _pil("BILINEAR"),  # Pillow: antialiased when shrinking (its support grows with the scale)
    "pil-box": _pil("BOX"),  # Pillow: area average
    "cv2-linear": _cv2("INTER_LINEAR"),  # OpenCV's default: 2x2 taps, no antialiasing (Android apps' usual call)
    "cv2-area": _cv2("INTER_AREA"),  # OpenCV: area average when shrinking
    "torch-bilinear-aa": _torch_bilinear_aa,  # torchvision's Resize(antialias=True)
}


def require_filter(name: str) -> str:
    if name not in FILTERS:
        raise InputError(f"unknown resize filter {name!r}; choose from {', '.join(FILTERS)}")
    return name


@dataclass(frozen=True)
class FrameRule:
    """Camera frame -> input: shorter side to the input size, centre crop `height` x `width`, with `filter`."""

    height: int
    width: int
    filter: str = DEFAULT_FILTER

    def __post_init__(self) -> None:
        require_filter(self.filter)
        if self.height < 1 or self.width < 1:
            raise InputError(f"a frame rule needs a positive size, got {self.height}x{self.width}")

    def to_dict(self) -> dict[str, object]:
        return {"height": self.height, "width": self.width, "filter": self.filter, "rule": RULE}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FrameRule:
        if d.get("rule", RULE) != RULE:
            raise InputError(f"unsupported frame rule {d.get('rule')!r} (this hetero applies {RULE!r})")
        return cls(int(d["height"]), int(d["width"]), str(d.get("filter", DEFAULT_FILTER)))

    def describe(self) -> str:
        return (
            f"scale the frame so its shorter side is {min(self.height, self.width)} px ({self.filter}), "
            f"centre-crop {self.height}x{self.width}"
        )

    def apply(self, frames: np.ndarray, filter: str | None = None) -> np.ndarray:
        """uint8 [N, H, W, 3] frames -> uint8 [N, height, width, 3]; `filter` overrides the rule's own."""
        resize = FILTERS[require_filter(filter or self.filter)]
        n, fh, fw = frames.shape[:3]
        scale = max(self.height / fh, self.width / fw)  # both sides cover the input
        sh, sw = max(self.height, round(fh * scale)), max(self.width, round(fw * scale))
        top, left = (sh - self.height) // 2, (sw - self.width) // 2
        out = np.empty((n, self.height, self.width, 3), np.uint8)
        for i, frame in enumerate(frames):
            scaled = frame if (sh, sw) == (fh, fw) else resize(np.ascontiguousarray(frame), (sh, sw))
            out[i] = scaled[top : top + self.height, left : left + self.width]
        return out


def artifact_input(spec: InputSpec, resolution: int | None, input_size: str = "compute") -> InputSpec:
    """What an exported artifact takes ([export] input_size): "compute" — a member computing below the space's size
    takes frames at its compute size, so the app resizes once and the graph has no resize — or "space"."""
    if input_size == "space" or not resolution or resolution >= min(spec.height, spec.width):
        return spec
    return replace(spec, height=resolution, width=resolution)


def encode_png(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] -> (the PNG files concatenated, uint8; their N + 1 offsets, int64): lossless and a
    fraction of the raw size for flat images."""
    from PIL import Image

    blobs = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="PNG", compress_level=6)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return (np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)), offsets


def decode_png(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The inverse of `encode_png`; every frame must decode to the same RGB size."""
    from PIL import Image

    frames = [
        np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB")) for a, b in itertools.pairwise(offsets)
    ]
    if len({f.shape for f in frames}) > 1:
        raise InputError("the fixture's probe frames differ in size")
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
