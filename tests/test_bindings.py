"""What a space id and a gallery are bound to: every byte of an imported cloud (external data included), the rows of
an embedding-file cloud, a cloud that defines its space (never an edge), a model that embeds something."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from hetero.config import load_config
from hetero.data.folder import Record, try_decode
from hetero.errors import ArtifactError, InputError
from hetero.io import sha256_path
from hetero.onnxrun import session_runner
from hetero.training.cloud import Preprocessing, import_cloud
from hetero.training.table import EmbeddingTable, import_embeddings
from hetero.training.train import train
from tests.test_embedding_table import SPEC, _rows


def _net(weight: np.ndarray, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """A float NCHW image -> [N, 4] graph: global mean over pixels, one affine map, L2 (a cloud in miniature)."""
    bias = np.zeros((1, 4), np.float32) if bias is None else bias
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("LpNormalization", ["z"], ["y"], axis=1, p=2),
    ]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias.astype(np.float32), "b")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external(model: onnx.ModelProto, path: Path, location: str) -> Path:
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)  # fmt: skip
    return path


W1 = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


def test_an_onnx_cloud_is_named_by_its_graph_and_its_external_data(tmp_path: Path) -> None:
    """The same graph with other weights in `model.onnx.data` is another space (before: the same id)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _external(_net(W1), a / "cloud.onnx", "cloud.onnx.data")
    _external(_net(W1 * -1 + 0.5), b / "cloud.onnx", "cloud.onnx.data")
    assert sha256_path(a / "cloud.onnx") == sha256_path(b / "cloud.onnx")  # the graph files are identical
    pre = Preprocessing(8, 8)
    ma, mb = import_cloud(a / "cloud.onnx", tmp_path / "ua", pre), import_cloud(b / "cloud.onnx", tmp_path / "ub", pre)
    assert ma.space.id != mb.space.id
    assert not list((tmp_path / "ua").glob("*.data"))  # the unit holds its weights inside its one hashed file
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert session_runner(tmp_path / "ua" / "model.onnx")(pixels).shape == (2, 4)


def test_a_graph_reaching_outside_its_folder_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "m").mkdir()
    _external(_net(W1), tmp_path / "m" / "cloud.onnx", "cloud.onnx.data")
    model = onnx.load(str(tmp_path / "m" / "cloud.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../elsewhere.bin"
    shutil.copy(tmp_path / "m" / "cloud.onnx.data", tmp_path / "elsewhere.bin")
    onnx.save(model, str(tmp_path / "m" / "evil.onnx"))
    code = run_cli("cloud", "import", tmp_path / "m" / "evil.onnx", "--size", "8", "--out", tmp_path / "u")
    assert code == 2 and "outside the model's folder" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


def test_a_unit_whose_graph_keeps_tensors_in_another_file_does_not_run(tiny, tmp_path: Path) -> None:
    """An artifact's manifest hashes its one model file: tensors moved to a file beside it (and the sha fixed) would
    run on bytes nobody hashed — onnxruntime is handed only the hashed bytes, so it refuses."""
    unit = tmp_path / "unit"
    shutil.copytree(tiny.onnx, unit)
    model = onnx.load(str(unit / "model.onnx"))
    _external(model, unit / "model.onnx", "model.onnx.data")
    doc = json.loads((unit / "manifest.json").read_text())
    doc["sha256"] = sha256_path(unit / "model.onnx")
    (unit / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="external files"):
        session_runner(unit / "model.onnx")
    session_runner(tiny.onnx / "model.onnx")  # the real unit runs


@pytest.mark.parametrize("kind", ["zero", "constant"])
def test_a_cloud_that_embeds_nothing_is_refused(tmp_path: Path, capsys, kind: str) -> None:
    """Before: a zero-output graph imported with --normalize and embedded every image as the zero vector."""
    bias = np.zeros((1, 4)) if kind == "zero" else np.array([[1.0, 2.0, 3.0, 4.0]])  # constant: ignores the image
    model = _net(np.zeros((3, 4), np.float32), bias)
    path = tmp_path / "c.onnx"
    onnx.save(model, str(path))
    code = run_cli("cloud", "import", path, "--size", "8", "--normalize", "--out", tmp_path / "u")
    err = capsys.readouterr().err
    assert code == 2 and ("zero" in err if kind == "zero" else "same embedding for every probe" in err), err


def test_an_embedding_cloud_with_replaced_rows_leaves_its_space(tmp_path: Path, capsys) -> None:
    """Rows replaced in the unit and the manifest's sha256 fixed: before, `fixture create` built a fixture in the
    old space from the new rows."""
    ids, emb = _rows(8)
    np.savez(tmp_path / "cloud.npz", ids=ids, embeddings=emb)
    import_embeddings(tmp_path / "cloud.npz", tmp_path / "unit", SPEC)
    EmbeddingTable(tmp_path / "unit")
    data = tmp_path / "unit" / "embeddings.npz"
    np.savez(data, ids=ids, embeddings=emb[::-1].copy())
    doc = json.loads((tmp_path / "unit" / "manifest.json").read_text())
    doc["sha256"] = sha256_path(data)
    (tmp_path / "unit" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"not the ones space .* was imported with"):
        EmbeddingTable(tmp_path / "unit")


def test_a_huge_row_normalises_to_a_unit_vector_not_to_zero(tmp_path: Path) -> None:
    ids, emb = _rows(4)
    emb[2] = np.array([3e38, -3e38, 1e38, 0.0], np.float32)
    np.savez(tmp_path / "big.npz", ids=ids, embeddings=emb)
    import_embeddings(tmp_path / "big.npz", tmp_path / "unit", SPEC, normalize=True)
    row = EmbeddingTable(tmp_path / "unit").lookup([ids[2]])[0]
    assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-6) and row[0] > 0.6 and row[1] < -0.6


def test_a_compressed_npz_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, ids=np.array(["a", "b"]), embeddings=np.zeros((2, 40_000_000), np.float32))
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(InputError, match="refused before decompressing"):
        import_embeddings(bomb, tmp_path / "unit", SPEC)


def test_an_edge_is_not_accepted_as_the_cloud_of_an_upgrade(tiny, tmp_path: Path) -> None:
    """`train cloud --objective bct --cloud EDGE` trained a 'v2' that claimed the cloud's space."""
    cfg = load_config(tiny.config)
    with pytest.raises(InputError, match="does not define space"):
        train("cloud", cfg, tmp_path / "v2", cloud=tiny.edge, loss_weights={"classification": 1.0, "bct": 1.0})
    assert not (tmp_path / "v2" / "manifest.json").exists()


def test_an_invalid_onnx_graph_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    model = _net(W1)
    model.graph.node[0].attribute.pop()  # ReduceMean without keepdims is valid; one without its input is not:
    del model.graph.node[1].input[:]
    onnx.save(model, str(tmp_path / "bad.onnx"))
    code = run_cli("cloud", "import", tmp_path / "bad.onnx", "--size", "8", "--out", tmp_path / "u")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a valid ONNX graph" in err[0]


def test_a_named_pipe_among_images_is_skipped_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "stuck.png"
    os.mkfifo(fifo)
    why = try_decode(Record(fifo, "c0", id="stuck.png"), 16)  # before: blocked forever in open()
    assert isinstance(why, str) and "named pipe" in why
