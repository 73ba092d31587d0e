"""onnxruntime (CPU execution provider)."""

from __future__ import annotations

import export.onnx
from devices.base import ArtifactRuntime


class OnnxRuntime(ArtifactRuntime):
    name = "onnxruntime"
    format_module = export.onnx
