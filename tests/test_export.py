"""Every format × precision round-trips the tiny model on its real runtime; the validation can fail."""

import json
import platform
import shutil

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from hetero.config import load_config
from hetero.data.datasets import load_split
from hetero.devices.loader import load
from hetero.errors import ArtifactError, NotExecutedError
from hetero.export import coreml
from hetero.export.formats import SUPPORT
from hetero.frames import FrameRule, artifact_input
from hetero.io import sha256_path
from hetero.models.checkpoint import load_checkpoint
from hetero.models.registry import EmbeddingGraph

ON_MAC = platform.system() == "Darwin"
ALL_PRECISIONS = "fp32,fp16,int8,int8w"


@pytest.fixture(scope="session")
def matrix(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    argv = [
        "export",
        "--config",
        tiny.config,
        "--quiet",
        "--json",
        "--checkpoint",
        tiny.edge,
        "--out",
        root,
        "--formats",
        "onnx,coreml,tflite",
        "--precisions",
        ALL_PRECISIONS,
    ]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = run_cli(*argv)
    return rc, json.loads(buf.getvalue()), root


def test_every_supported_combination_exports_and_validates(matrix):
    rc, payload, root = matrix
    assert rc == 0 and payload["passed"]
    by = {(r["format"], r["precision"]): r for r in payload["artifacts"]}
    assert len(by) == 12
    for fmt, precisions in SUPPORT.items():
        for prec in ALL_PRECISIONS.split(","):
            r = by[(fmt, prec)]
            if prec not in precisions:
                assert r["status"] == "unsupported" and not (root / f"{fmt}-{prec}").exists()
                continue
            manifest = json.loads((root / f"{fmt}-{prec}" / "manifest.json").read_text())
            assert manifest["format"] == fmt and manifest["precision"] == prec
            assert manifest["sha256"] == sha256_path(root / f"{fmt}-{prec}" / manifest["file"])
            v = manifest["validation"]
            if fmt == "coreml" and not ON_MAC:
                assert v["status"] == "not executed" and "embedding" not in v  # never reported as passed
                assert v["static"]["output_shape"][-1] == 16
                continue
            assert v["status"] == "passed"
            floor = {"fp32": 0.99999, "fp16": 0.9995}.get(prec, 0.95)
            tol = v["tolerance"]["max_r1_drop"]
            assert v["embedding"]["min_cosine"] >= floor and v["retrieval"]["r1_drop_interval"][1] <= tol
    sizes = {p: by[("tflite", p)]["size_bytes"] for p in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_exported_artifacts_take_uint8_pixels_and_agree_with_torch(tiny, matrix):
    _, _, root = matrix
    # real held-out digits: int8 is calibrated for them (uniform noise pixels fall outside its ranges)
    # at the artifacts' input, the edge's 12 px compute size: the checkpoint takes that size too
    images = FrameRule(12, 12).apply(load_split(load_config(tiny.config).data).query.images[::20])
    ref = load(tiny.edge).embed(images)
    for unit in ("onnx-fp32", "tflite-fp32", "onnx-int8", "tflite-int8"):
        out = load(root / unit).embed(images)
        cos = (out * ref).sum(1)
        assert cos.min() > (0.99999 if unit.endswith("fp32") else 0.95), unit
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-2)


@pytest.mark.skipif(ON_MAC, reason="Core ML executes on macOS")
def test_coreml_is_not_executed_off_macos(matrix):
    _, _, root = matrix
    with pytest.raises(NotExecutedError, match="only on macOS"):
        load(root / "coreml-fp32")


def test_coreml_spec_check_refuses_a_foreign_space(tiny, matrix):
    _, _, root = matrix
    m = json.loads((root / "coreml-fp16" / "manifest.json").read_text())
    model, ckpt = load_checkpoint(tiny.edge)
    graph = EmbeddingGraph(model, artifact_input(ckpt.input, model.resolution)).eval()  # 12 px in, no resize
    path = root / "coreml-fp16" / "model.mlpackage"
    assert coreml.inspect(path, graph, m["space"]["id"], 16, "fp16")["macs"] == ckpt.model["macs"]
    with pytest.raises(ArtifactError, match=r"metadata hetero\.space_id"):
        coreml.inspect(path, graph, "another-space@0", 16, "fp16")
    with pytest.raises(ArtifactError, match=r"output is not 'embedding' \[1, 32\]"):
        coreml.inspect(path, graph, m["space"]["id"], 32, "fp16")


def _rehash(unit):
    m = json.loads((unit / "manifest.json").read_text())
    m["sha256"] = sha256_path(unit / m["file"])
    (unit / "manifest.json").write_text(json.dumps(m))


def _perturb_onnx(unit):
    model = onnx.load(unit / "model.onnx")
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(biggest)
    noisy = w + np.random.default_rng(0).normal(0, 0.5 * float(np.abs(w).mean()), w.shape).astype(w.dtype)
    biggest.CopyFrom(numpy_helper.from_array(noisy, biggest.name))
    onnx.save(model, unit / "model.onnx")


def _perturb_tflite(unit, tiny):
    """Find the embedding head's float32 weights inside the flatbuffer and overwrite them with noise."""
    model, _ = load_checkpoint(tiny.edge)
    w = model.head.weight.detach().numpy().astype(np.float32)
    data = bytearray((unit / "model.tflite").read_bytes())
    at = data.find(w.tobytes())
    assert at >= 0, "head weights not found in the flatbuffer"
    noisy = w + np.random.default_rng(0).normal(0, float(np.abs(w).mean()), w.shape).astype(np.float32)
    data[at : at + w.nbytes] = noisy.tobytes()
    (unit / "model.tflite").write_bytes(bytes(data))


@pytest.mark.parametrize("unit", ["onnx-fp32", "onnx-int8", "tflite-fp32"])
def test_mutation_weights_perturbed_inside_the_file_fail_validation(tiny, matrix, tmp_path, capsys, unit):
    _, _, root = matrix
    copy = shutil.copytree(root / unit, tmp_path / unit)
    args = ("export", "--config", tiny.config, "--quiet", "--checkpoint", tiny.edge, "--validate", copy)
    assert run_cli(*args) == 0  # untouched: passes
    _perturb_tflite(copy, tiny) if unit.startswith("tflite") else _perturb_onnx(copy)
    _rehash(copy)  # a consistent manifest: only the numbers can catch it
    capsys.readouterr()
    assert run_cli(*args) == 1
    assert "hetero: FAIL: parity failed" in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["tflite-int8", "coreml-fp32", "onnx-fp16"])
def test_truncated_artifact_is_refused_with_exit_2(tiny, matrix, tmp_path, capsys, unit):
    _, _, root = matrix
    copy = shutil.copytree(root / unit, tmp_path / unit)
    target = next(
        p for p in sorted(copy.rglob("*")) if p.is_file() and p.name != "manifest.json" and p.stat().st_size > 1000
    )
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    assert run_cli("export", "--config", tiny.config, "--checkpoint", tiny.edge, "--validate", copy) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_corrupt_tflite_with_consistent_manifest_is_refused_by_litert(tiny, matrix, tmp_path, capsys):
    _, _, root = matrix
    copy = shutil.copytree(root / "tflite-fp32", tmp_path / "t")
    (copy / "model.tflite").write_bytes(b"TFL3" + b"\x00garbage" * 64)
    _rehash(copy)
    assert run_cli("check", "--config", tiny.config, "--cloud", tiny.cloud, "--artifact", copy) == 2
    assert "LiteRT cannot load it" in capsys.readouterr().err


def test_unsupported_combination_alone_is_a_usage_error(tiny, tmp_path, capsys):
    rc = run_cli(
        "export",
        "--config",
        tiny.config,
        "--checkpoint",
        tiny.edge,
        "--out",
        tmp_path / "o",
        "--formats",
        "coreml",
        "--precisions",
        "int8",
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "no supported combination" in err and "coreml: fp32, fp16, int8w" in err
    assert not (tmp_path / "o").exists()


def test_tflite_artifact_is_gated_like_any_other(tiny, matrix):
    _, _, root = matrix
    assert (
        run_cli("check", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--artifact", root / "tflite-int8")
        == 0
    )


@pytest.mark.skipif(not ON_MAC, reason="Core ML executes only on macOS: not executed here")
def test_coreml_executes_and_matches_torch_on_macos(tiny, matrix):
    _, _, root = matrix
    # at the artifacts' input, the edge's 12 px compute size: the checkpoint takes that size too
    images = FrameRule(12, 12).apply(load_split(load_config(tiny.config).data).query.images[::20])
    ref = load(tiny.edge).embed(images)
    out = load(root / "coreml-fp32").embed(images)
    assert ((out * ref).sum(1)).min() > 0.9999


def test_legacy_tflite_runtime_is_accepted_with_a_warning(matrix, monkeypatch):
    """A device that only has tflite_runtime: same Interpreter API, used with a loud warning."""
    import sys
    import types

    from ai_edge_litert.interpreter import Interpreter

    from hetero.export import tflite

    legacy = types.ModuleType("tflite_runtime.interpreter")
    legacy.Interpreter = Interpreter  # stands in for the legacy package, which is not installed here
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", legacy)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails as on such a device
    _, _, root = matrix
    with pytest.warns(RuntimeWarning, match="legacy tflite_runtime"):
        run = tflite.runner(root / "tflite-fp32" / "model.tflite")
    images = np.zeros((2, 12, 12, 3), np.uint8)  # the edge's compute size: the artifact's input
    np.testing.assert_allclose(np.linalg.norm(run(images), axis=1), 1.0, atol=1e-5)


def test_every_format_describes_itself_inside_the_file(tiny, matrix):
    """Space id, input contract and the camera rule inside each file; `image` -> `embedding` in every format."""
    from hetero.export import tflite

    _, _, root = matrix
    space = json.loads((tiny.edge / "manifest.json").read_text())["space"]["id"]
    onnx_model = onnx.load(root / "onnx-int8" / "model.onnx")
    props = {p.key: p.value for p in onnx_model.metadata_props}
    assert props["hetero.space_id"] == space and json.loads(props["hetero.input"])["height"] == 12
    assert [i.name for i in onnx_model.graph.input] == ["image"] and onnx_model.graph.output[0].name == "embedding"
    for prec in ("fp32", "int8"):
        meta = tflite.read_metadata(root / f"tflite-{prec}" / "model.tflite")
        assert meta["hetero.space_id"] == space and meta["hetero.precision"] == prec
        from ai_edge_litert.interpreter import Interpreter

        sig = Interpreter(str(root / f"tflite-{prec}" / "model.tflite")).get_signature_list()["serving_default"]
        assert sig == {"inputs": ["image"], "outputs": ["embedding"]}
    spec = coreml._ct().models.MLModel(str(root / "coreml-fp32" / "model.mlpackage"), skip_model_load=True).get_spec()
    meta = dict(spec.description.metadata.userDefined)
    assert meta["hetero.space_id"] == space and "centre-crop 12x12" in meta["hetero.camera_to_input"]
    assert spec.description.metadata.author == "hetero" and spec.description.input[0].shortDescription
    m = json.loads((root / "tflite-int8" / "manifest.json").read_text())
    assert m["extra"]["camera_to_input"].startswith("scale the frame")
