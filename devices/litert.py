"""LiteRT (ai-edge-litert), the maintained TFLite runtime. Batch 1, as on a device."""

from __future__ import annotations

import export.tflite
from devices.base import ArtifactRuntime


class LiteRTRuntime(ArtifactRuntime):
    name = "litert"
    format_module = export.tflite
