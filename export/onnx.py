"""ONNX export: preprocessing (uint8 NHWC pixels) and L2 normalisation inside the graph, dynamic batch.

Export happens in an atomic directory: the artifact, its manifest and the parity it passed appear together, or,
when parity fails, not at all.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from export.validate import validate_parity
from hetero.checkpoint import load_checkpoint
from hetero.embed import embed_batches
from hetero.io import atomic_dir
from hetero.manifest import Manifest, write_manifest
from hetero.models import EmbeddingGraph

ARTIFACT_NAME = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def export_onnx(
    checkpoint: Path, out_dir: Path, parity_images: np.ndarray, *, opset: int = 17, min_cosine: float = 0.99999
) -> Manifest:
    """Export `checkpoint` to `out_dir/model.onnx` (fp32) and validate it in onnxruntime against torch."""
    import onnxruntime as ort

    model, ckpt = load_checkpoint(checkpoint)
    graph = EmbeddingGraph(model, ckpt.input).eval()
    example = torch.from_numpy(parity_images[:2])
    with atomic_dir(out_dir) as tmp:
        path = tmp / ARTIFACT_NAME
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is not the user's problem
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        with torch.no_grad():
            reference = embed_batches(lambda b: graph(torch.from_numpy(b)).numpy(), parity_images)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        candidate = embed_batches(lambda b: session.run([OUTPUT_NAME], {INPUT_NAME: b})[0], parity_images)
        parity = validate_parity(reference, candidate, expected_dim=ckpt.space.dim, min_cosine=min_cosine)
        manifest = Manifest(
            kind="artifact",
            file=ARTIFACT_NAME,
            sha256="",
            format="onnx",
            precision="fp32",
            space=ckpt.space,
            input=ckpt.input,
            model=ckpt.model,
            seed=ckpt.seed,
            source={"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt.sha256},
            validation={"runtime": f"onnxruntime {ort.__version__}", "parity": parity},
            extra={"opset": opset, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME},
        )
        write_manifest(tmp, manifest)
    return manifest
