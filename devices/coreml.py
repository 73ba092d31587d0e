"""Core ML. Executes only on macOS; elsewhere loading raises NotExecutedError ("not executed", never a pass)."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import coreml as _format


class CoreMLRuntime(ArtifactRuntime):
    name = "coreml"
    format_module = _format
