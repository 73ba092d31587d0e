"""The export support matrix (format × precision) and the parity tolerance of each precision.

Explicit, like qualcomm ai-hub-models: a combination is either built *and* validated, or refused up front.
Precision names say what is quantised:
- fp32: float32 weights and compute.
- fp16: float16 weights (and compute where the runtime does it).
- int8: int8 weights *and* activations, calibrated on training images (ONNX static QDQ, TFLite full integer).
- int8w: int8 weights, float activations (Core ML weight compression, TFLite dynamic range).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hetero.config import ExportConfig
from hetero.errors import InputError
from hetero.kinds import Format, Precision

if TYPE_CHECKING:
    from hetero.models.registry import EmbeddingGraph

PRECISIONS: dict[str, str] = {
    Precision.FP32: "float32 weights and compute",
    Precision.FP16: "float16 weights",
    Precision.INT8: "int8 weights and activations, calibrated",
    Precision.INT8W: "int8 weights, float activations",
}

SUPPORT: dict[str, tuple[str, ...]] = {
    Format.ONNX: (Precision.FP32, Precision.FP16, Precision.INT8),
    Format.COREML: (Precision.FP32, Precision.FP16, Precision.INT8W),
    Format.TFLITE: (Precision.FP32, Precision.FP16, Precision.INT8W, Precision.INT8),
}

RUNTIMES: dict[str, str] = {
    Format.ONNX: "onnxruntime",
    Format.COREML: "Core ML (macOS only)",
    Format.TFLITE: "LiteRT (ai-edge-litert)",
}


@dataclass(frozen=True)
class BuildRequest:
    """Everything a format's `build` needs; it writes its model file into `dest`."""

    graph: EmbeddingGraph
    space_id: str
    precision: str
    dest: Path
    calibration: np.ndarray  # uint8 NHWC training images (int8 calibration; the first ones trace the graph)
    opset: int
    calibration_method: str = "minmax"  # how int8 activation ranges are set (ExportConfig)
    keep_float: tuple[str, ...] = ()  # module paths of the network kept float in int8, beyond the graph's ends
    weight_bits: int = 8  # ONNX int8: 7 = reduce_range (x86 without VNNI)
    int8_scheme: str = "u8u8"  # ONNX int8 activation x weight types (ExportConfig.onnx_int8_scheme)
    frame_filter: str = "pil-bilinear"  # the resize the app calls, stated in the file (ExportConfig.frame_filter)

    @property
    def embed_dim(self) -> int:
        """The embedding's width, from the classifier every member carries (hetero.models.registry.embed_dim; not
        imported: a format module must load without torch for the runtimes that only run artifacts)."""
        return int(self.graph.model.classifier.weight.shape[1])


class FormatModule(Protocol):
    """What every exporter module provides (export/onnx.py, coreml.py, tflite.py): one graph in, one file out, and
    the runtime that executes it. Checked by a test on each module, so nothing probes for optional parts."""

    FILE: str  # the model file inside the artifact unit
    MIXED_PRECISION: bool  # can an int8 graph keep some layers float (ExportConfig.keep_float)

    def build(self, req: BuildRequest) -> dict[str, Any]:
        """Write `req.dest / FILE`; return the facts the manifest records."""
        ...

    def runner(self, path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 NHWC pixels -> unit embeddings on the format's runtime; NotExecutedError where it cannot run."""
        ...

    def runtime_version(self) -> str: ...

    def inspect(self, path: Path, graph: EmbeddingGraph, space_id: str, dim: int, precision: str) -> dict[str, Any]:
        """Static checks of the written program against the graph ({} where executing it proves more)."""
        ...


@dataclass(frozen=True)
class Tolerance:
    min_cosine: float  # every validation image
    min_mean_cosine: float
    max_r1_drop: float  # upper end of the 95% interval of torch R@1 minus artifact R@1 (paired, leave-one-out)
    min_top10_overlap: float  # mean share of each query's 10 nearest gallery items that torch also returns

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def tolerance(precision: str, cfg: ExportConfig) -> Tolerance:
    if precision == Precision.FP32:
        return Tolerance(cfg.min_cosine_fp32, cfg.min_cosine_fp32, cfg.max_r1_drop_float, cfg.min_top10_overlap_float)
    if precision == Precision.FP16:
        return Tolerance(cfg.min_cosine_fp16, cfg.min_cosine_fp16, cfg.max_r1_drop_float, cfg.min_top10_overlap_float)
    return Tolerance(cfg.min_cosine_int8, cfg.min_mean_cosine_int8, cfg.max_r1_drop_int8, cfg.min_top10_overlap_int8)


@dataclass(frozen=True)
class Target:
    """One (format, precision) to build, decided once from the request and the config — its tolerance and weight
    bits travel with it to the build and the validation instead of being derived again at each step."""

    format: Format
    precision: Precision
    tolerance: Tolerance
    weight_bits: int = 8  # ONNX int8 with onnx_reduce_range: 7
    int8_scheme: str = "u8u8"  # ONNX int8: "u8u8" | "s8s8"

    @property
    def name(self) -> str:
        return f"{self.format}-{self.precision}"


def target(fmt: str, precision: str, cfg: ExportConfig) -> Target:
    """A supported pair as a Target (unknown or unsupported names: InputError listing the matrix)."""
    plan([fmt], [precision])
    f, p = Format(fmt), Precision(precision)
    bits = 7 if f == Format.ONNX and cfg.onnx_reduce_range else 8
    return Target(f, p, tolerance(p, cfg), bits, cfg.onnx_int8_scheme if f == Format.ONNX else "")


def plan(formats: list[str], precisions: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split the requested cross product into (supported, unsupported) pairs; unknown names are input errors."""
    for f in formats:
        if f not in SUPPORT:
            raise InputError(f"unknown export format {f!r} (available: {', '.join(SUPPORT)})")
    for p in precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {p!r} (available: {', '.join(PRECISIONS)})")
    formats = [Format(f) for f in formats]
    precisions = [Precision(p) for p in precisions]
    pairs = [(f, p) for f in formats for p in precisions]
    ok = [fp for fp in pairs if fp[1] in SUPPORT[fp[0]]]
    if not ok:
        raise InputError(f"no supported combination in {formats} × {precisions}; supported: {matrix_text()}")
    return ok, [fp for fp in pairs if fp not in ok]


def matrix_text() -> str:
    return "; ".join(f"{f}: {', '.join(ps)}" for f, ps in SUPPORT.items())
