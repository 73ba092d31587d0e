"""LiteRT (ai-edge-litert), the maintained TFLite runtime. Batch 1, as on a device."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import tflite as _format
from hetero.kinds import Runtime


class LiteRTRuntime(ArtifactRuntime):
    name = Runtime.LITERT
    format_module = _format
