"""LiteRT (ai-edge-litert), the maintained TFLite runtime. Batch 1, as on a device."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import tflite as _format


class LiteRTRuntime(ArtifactRuntime):
    name = "litert"
    format_module = _format
