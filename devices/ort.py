"""onnxruntime (CPU execution provider)."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import onnx as _format


class OnnxRuntime(ArtifactRuntime):
    name = "onnxruntime"
    format_module = _format
