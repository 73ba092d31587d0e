"""hetero: edge models that share one embedding space with a cloud model, proven on real runtimes.

The front door: every stage of the pipeline is a function here, each returning a result object (no printing, no
exit) — the CLI is a thin shell over exactly these::

    import hetero

    cfg = hetero.load_config()                      # or hetero.load_config("my.toml")
    split = hetero.load_split(cfg.data)
    hetero.train("cloud", cfg, "runs/x/cloud", split=split)
    hetero.train("edge", cfg, "runs/x/edge", cloud="runs/x/cloud", split=split)
    hetero.export("runs/x/edge", "runs/x/export", ["tflite"], ["int8"],
                  hetero.ExportData.from_split(split, cfg.export.calibration_images), cfg.export)
    report = hetero.verify(cfg, "runs/x/cloud", ["edge=runs/x/export/tflite-int8"]).report
    print(hetero.check(thresholds=cfg.check, report=report).passed)

Names resolve lazily (PEP 562): `import hetero` stays instant and torch-free, so the light `check` install can use
`hetero.check` and `hetero.create_fixture`'s results without the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute): the stages in pipeline order, then what they take and return.
_FRONT_DOOR: dict[str, tuple[str, str]] = {
    "train": ("hetero.training.train", "train"),
    "search": ("hetero.training.search", "search"),
    "import_cloud": ("hetero.training.cloud", "import_cloud"),
    "export": ("hetero.export", ""),  # the exporters' package, callable as the stage (export_matrix)
    "verify": ("hetero.pipeline", "verify"),
    "create_fixture": ("hetero.pipeline", "create_fixture"),
    "check": ("hetero.pipeline", "check"),
    "run_demo": ("hetero.pipeline", "run_demo"),
    "bench": ("hetero.devices.bench", "bench"),
    "embed": ("hetero.embed_job", "embed_source"),
    "load": ("hetero.devices.loader", "load"),
    "load_config": ("hetero.config", "load_config"),
    "override": ("hetero.config", "override"),
    "load_split": ("hetero.data.datasets", "load_split"),
    "ExportData": ("hetero.export.artifact", "ExportData"),
    "Fixture": ("hetero.release.fixture", "Fixture"),
    "Report": ("hetero.release.report", "Report"),
}
__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str) -> Any:
    if name not in _FRONT_DOOR:
        raise AttributeError(f"module 'hetero' has no attribute {name!r}")
    module, attr = _FRONT_DOOR[name]
    value = importlib.import_module(module)
    value = getattr(value, attr) if attr else value
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
