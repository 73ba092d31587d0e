"""One graph, every format: an edge whose compute resolution differs from its input size (the real family's
default) exports to ONNX, TFLite and Core ML from the same deployable graph; Core ML is proven structurally."""

from __future__ import annotations

import pytest
import torch

from hetero.checkpoint import load_checkpoint, save_checkpoint
from hetero.config import DataConfig, ExportConfig
from hetero.data import load_split
from hetero.errors import ArtifactError
from hetero.export import coreml
from hetero.export.artifact import ExportData, export_matrix
from hetero.export.formats import BuildRequest
from hetero.models import EmbeddingGraph, create_model
from hetero.spaces import InputSpec

SIZE, RES = 64, 48  # input pixels, backbone compute size: the graph must resize inside


@pytest.fixture(scope="module")
def lite_edge(tmp_path_factory):
    """A real-family member (EfficientNet-Lite0 at half width) computing at 48 px inside a 64 px space."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_050", embed_dim=16, num_classes=4, resolution=RES, pretrained=True).eval()
    split = load_split(DataConfig(image_size=SIZE))
    _pca_head(model, EmbeddingGraph(model, InputSpec(SIZE, SIZE)).preprocess, split.train.images[::4])
    root = tmp_path_factory.mktemp("lite")
    spec = InputSpec(SIZE, SIZE)
    save_checkpoint(
        root / "edge",
        model,
        model_name="efficientnet_lite0_050",
        input_spec=spec,
        space=None,
        space_name="t",
        seed=0,
        extra={},
    )
    return root, ExportData.from_split(split, 32)  # real held-out digits


def _pca_head(model, preprocess, images) -> None:
    """Untrained, every embedding points the same way and float noise reorders neighbours; a centred PCA head
    spreads them like a trained one, in milliseconds."""
    with torch.no_grad():
        f = model.forward_features(preprocess(torch.from_numpy(images)))
        mean = f.mean(0)
        _, _, v = torch.linalg.svd(f - mean, full_matrices=False)
        model.head.weight.copy_(v[: model.head.out_features])
        model.head.bias.copy_(-v[: model.head.out_features] @ mean)


def test_resized_edge_exports_to_every_format_from_one_graph(lite_edge):
    root, data = lite_edge
    results = export_matrix(
        root / "edge", root / "export", ["onnx", "tflite", "coreml"], ["fp32"], data, ExportConfig()
    )
    assert results.passed
    by = {r["format"]: r for r in results.artifacts}
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
