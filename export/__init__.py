"""Exporters: one module per format, plus shared validation. Depends on `hetero` core only.

`hetero.export(...)` is also the export stage of the front door (`export_matrix`): this package is callable, so the
stage and the folder of exporters share the one name the project's layout gives them.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _ExportPackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`hetero.export(checkpoint, out, formats, precisions, data, cfg)`: hetero.export.artifact.export_matrix."""
        from hetero.export.artifact import export_matrix

        return export_matrix(*args, **kwargs)


sys.modules[__name__].__class__ = _ExportPackage
