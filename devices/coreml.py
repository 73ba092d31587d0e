"""Core ML. Executes only on macOS; elsewhere loading raises NotExecutedError ("not executed", never a pass)."""

from __future__ import annotations

import export.coreml
from devices.base import ArtifactRuntime


class CoreMLRuntime(ArtifactRuntime):
    name = "coreml"
    format_module = export.coreml
