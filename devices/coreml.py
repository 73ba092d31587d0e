"""Core ML. Executes only on macOS; elsewhere loading raises NotExecutedError ("not executed", never a pass)."""

from __future__ import annotations

from hetero.devices.base import ArtifactRuntime
from hetero.export import coreml as _format
from hetero.kinds import Runtime


class CoreMLRuntime(ArtifactRuntime):
    name = Runtime.COREML
    format_module = _format
