"""One graph, every format: an edge whose compute resolution differs from its input size (the real family's
default) exports to ONNX, TFLite and Core ML from the same deployable graph; Core ML is proven structurally."""

from __future__ import annotations

import pytest
import torch

from hetero.config import ExportConfig
from hetero.errors import ArtifactError
from hetero.export import coreml
from hetero.export.artifact import export_matrix
from hetero.export.formats import BuildRequest
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph


def test_resized_edge_exports_to_every_format_from_one_graph(lite_edge):
    root, data = lite_edge
    results = export_matrix(  # input at the space's size: the resize is inside the graph, in every format
        root / "edge", root / "export", ["onnx", "tflite", "coreml"], ["fp32"], data, ExportConfig(input_size="space")
    )
    assert results.passed
    by = {a.format: a.to_dict() for a in results.artifacts}
    for fmt in ("onnx", "tflite"):
        v = by[fmt]["validation"]
        assert v["status"] == "passed" and v["embedding"]["min_cosine"] > 0.9999, fmt
        assert v["retrieval"]["n_query"] == data.n_heldout and v["retrieval"]["r1_drop_interval"][1] <= 0.02
    static = by["coreml"]["validation"]["static"]
    assert by["coreml"]["validation"]["status"] in ("not executed", "passed")
    _, ckpt = load_checkpoint(root / "edge")
    assert static["ops"]["resize"] == 1 and static["macs"] == ckpt.model["macs"]


def test_coreml_structure_check_catches_a_dropped_resize(lite_edge, tmp_path, monkeypatch):
    """The pre-fix Core ML path traced forward_embedding: no resize, convolutions at 64 px. It must fail."""
    root, data = lite_edge
    model, ckpt = load_checkpoint(root / "edge")
    graph = EmbeddingGraph(model, ckpt.input).eval()
    monkeypatch.setattr(coreml, "trace_body", lambda graph, x: graph.model.forward_embedding(x))
    coreml.build(BuildRequest(graph, ckpt.space.id, "fp32", tmp_path, data.calibration, 17))
    with pytest.raises(ArtifactError, match=r"op sequence differs.*resize"):
        coreml.inspect(tmp_path / coreml.FILE, graph, ckpt.space.id, 16, "fp32")


def test_coreml_structure_check_catches_other_weights(lite_edge, tmp_path):
    root, data = lite_edge
    model, ckpt = load_checkpoint(root / "edge")
    graph = EmbeddingGraph(model, ckpt.input).eval()
    coreml.build(BuildRequest(graph, ckpt.space.id, "int8w", tmp_path, data.calibration, 17))
    coreml.inspect(tmp_path / coreml.FILE, graph, ckpt.space.id, 16, "int8w")  # int8w dequantises to torch's weights
    with torch.no_grad():
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[0] > 8)
        conv.weight[1:3] = torch.randn_like(conv.weight[1:3])
    with pytest.raises(ArtifactError, match="weights differ from torch"):
        coreml.inspect(tmp_path / coreml.FILE, graph, ckpt.space.id, 16, "int8w")
