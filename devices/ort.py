"""onnxruntime runtime (CPU execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hetero.embed import embed_batches
from hetero.errors import ArtifactError
from hetero.manifest import load_manifest


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        self.manifest, model_file = load_manifest(path)
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several private exception types for a bad file
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"{model_file}: onnxruntime cannot load it ({first})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def embed(self, images: np.ndarray) -> np.ndarray:
        return embed_batches(lambda b: self.session.run([self.output_name], {self.input_name: b})[0], images)

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "version": ort.__version__,
            "format": "onnx",
            "precision": self.manifest.precision,
            "providers": self.session.get_providers(),
        }
