"""onnxruntime (CPU execution provider)."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import onnx as _format
from hetero.kinds import Runtime


class OnnxRuntime(ArtifactRuntime):
    name = Runtime.ONNXRUNTIME
    format_module = _format
