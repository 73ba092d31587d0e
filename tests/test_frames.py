"""The camera frame: the frame rule and the resize implementations apps use, probe frames in the fixture, artifacts
at their compute size (no resize in the graph), and the resize-robustness rows of the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import export_to, make_fixture, run_cli

from hetero.config import CheckConfig, load_config
from hetero.errors import InputError
from hetero.frames import FILTERS, FrameRule, artifact_input, decode_png, encode_png
from hetero.manifest import load_manifest
from hetero.pipeline import check
from hetero.release.fixture import Fixture
from hetero.release.gate import evaluate, tightened
from hetero.spaces import InputSpec


def _banded(h: int, w: int, band: int) -> np.ndarray:
    """Grey frame with red bands `band` px wide at the left and right edges."""
    frame = np.full((h, w, 3), 128, np.uint8)
    frame[:, :band] = frame[:, -band:] = (255, 0, 0)
    return frame


@pytest.mark.parametrize("name", list(FILTERS))
def test_frame_rule_scales_the_shorter_side_and_crops_the_centre(name):
    """A 40x60 frame to 20x20: scaled to 20x30 and cropped 5 px each side, which removes 3 px side bands entirely
    (plus the filter's bleed); every implementation agrees on the geometry."""
    out = FrameRule(20, 20, name).apply(_banded(40, 60, 6)[None])
    assert out.shape == (1, 20, 20, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - 128).max() <= 1, name  # the bands were outside the crop
    tall = FrameRule(20, 20, name).apply(_banded(60, 40, 6).transpose(1, 0, 2)[None])  # same rule, portrait
    assert tall.shape == (1, 20, 20, 3)
    same = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)
    assert np.array_equal(FrameRule(20, 20, name).apply(same), same)  # at the input size: untouched


def test_the_filters_really_differ_where_apps_differ():
    """A one-pixel checkerboard shrunk 3.05x: antialiased bilinear averages it to grey, the area filters nearly so;
    OpenCV's INTER_LINEAR (no antialiasing, the usual Android call) samples it — the difference the robustness rows
    measure. Measured: mean |pixel - 128| 0.5 (PIL, torch), 3.3 (cv2-area), 13 (pil-box), 32 (cv2-linear)."""
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    frame = np.repeat(board[..., None], 3, axis=2)[None]
    off = {name: np.abs(FrameRule(21, 21, name).apply(frame).astype(int) - 128).mean() for name in FILTERS}
    assert off["pil-bilinear"] < 1 and off["torch-bilinear-aa"] < 1 and off["cv2-area"] < 5
    assert off["cv2-linear"] > 20 and off["cv2-linear"] > 2 * off["pil-box"]
    with pytest.raises(InputError, match="unknown resize filter"):
        FrameRule(16, 16, "nearest")


def test_png_round_trip_is_lossless():
    frames = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    data, offsets = encode_png(frames)
    assert data.dtype == np.uint8 and offsets.tolist()[0] == 0 and len(offsets) == 4
    assert np.array_equal(decode_png(data, offsets), frames)


def test_artifact_input_is_the_compute_size_by_default():
    spec = InputSpec(96, 96)
    assert (artifact_input(spec, 52).height, artifact_input(spec, 52).width) == (52, 52)
    assert artifact_input(spec, 52, "space") == spec
    assert artifact_input(spec, None) == spec and artifact_input(spec, 128) == spec  # no upsampling input


@pytest.fixture(scope="module")
def frames_fixture(tiny, tmp_path_factory) -> Path:
    return make_fixture(tiny, tmp_path_factory.mktemp("frames") / "fixture.safetensors")


def test_fixture_stores_frames_and_every_producer_gets_its_own_size(tiny, frames_fixture):
    """Frames at twice the space's size, hashed as stored; the cloud's rows are its embeddings of the frames
    through its rule at 16 px, and a changed frame byte is a checksum mismatch."""
    from hetero.devices.loader import load

    fx = Fixture.load(frames_fixture)
    assert fx.probe_frames.shape[1:] == (32, 32, 3)
    cloud = load(tiny.cloud)
    np.testing.assert_allclose(fx.reference_queries, cloud.embed(fx.probes(16, 16)), atol=1e-5)
    assert fx.probes(12, 12).shape[1:] == (12, 12, 3)
    digest = fx.content_sha256()
    fx.probe_frames = fx.probe_frames.copy()
    fx.probe_frames[0, 0, 0, 0] ^= 1
    assert fx.content_sha256() != digest  # the stored (encoded) frames are what the hash covers
    header = json.loads(frames_fixture.read_bytes()[8 : 8 + int.from_bytes(frames_fixture.read_bytes()[:8], "little")])
    stored = json.loads(header["__metadata__"]["hetero.fixture"])
    assert stored["source"]["frame_size"] == 32
    assert Fixture.load(frames_fixture).content_sha256() == stored["content_sha256"]  # re-saving keeps the bytes


def test_edge_artifact_takes_its_compute_size_with_no_resize_inside(tiny):
    """The tiny edge computes at 12 px in a 16 px space: its ONNX artifact takes 12 px frames, states the frame
    rule in the manifest and the file, and holds no Resize node; with input_size = "space" it keeps the resize."""
    import onnx

    m, model_file = load_manifest(tiny.onnx)
    assert (m.input.height, m.input.width) == (12, 12) and m.frame == FrameRule(12, 12)
    model = onnx.load(model_file)
    assert "Resize" not in {n.op_type for n in model.graph.node}
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["hetero.frame"]) == FrameRule(12, 12).to_dict()
    assert m.extra["frame"] == FrameRule(12, 12).to_dict()


def test_space_input_keeps_the_resize_and_the_stated_filter_is_what_the_gate_uses(tiny, tmp_path, frames_fixture):
    """input_size = "space": the graph resizes inside. frame_filter = "cv2-area": the artifact states the app's
    resize, the gate resizes its probes with it, and --resize all adds the others (the default among them)."""
    import onnx

    cfg = tmp_path / "space.toml"
    export = '[export]\ninput_size = "space"\nframe_filter = "cv2-area"'
    cfg.write_text(Path(tiny.config).read_text().replace("[export]", export))
    export_to(type(tiny)(tiny.root, cfg), tiny.edge, tmp_path / "x", "onnx", "fp32")
    m, model_file = load_manifest(tmp_path / "x" / "onnx-fp32")
    assert (m.input.height, m.frame.height, m.frame.filter) == (16, 16, "cv2-area")
    model = onnx.load(model_file)
    assert "Resize" in {n.op_type for n in model.graph.node}
    assert json.loads({p.key: p.value for p in model.metadata_props}["hetero.frame"])["filter"] == "cv2-area"
    fx = Fixture.load(frames_fixture)
    thresholds = CheckConfig(**load_config(tiny.config).check.__dict__)
    report = check(thresholds=thresholds, fixture=fx, artifacts=[str(tmp_path / "x")], resizers=["all"]).report
    assert report.producers["onnx-fp32"]["frame"]["filter"] == "cv2-area"
    assert "onnx-fp32 [pil-bilinear]" in {r.query for r in report.rows if r.kind == "resize"}
    assert "onnx-fp32 [cv2-area]" not in {r.query for r in report.rows}


def test_resize_rows_are_reported_and_gated_only_when_required(tiny, frames_fixture, monkeypatch):
    """--resize all: one row per other filter, with verdicts beside the gate; a filter that destroys the image
    fails its row — the gate too under require_resizers, and a report without resize rows cannot pass it."""
    import hetero.frames as frames

    fx = Fixture.load(frames_fixture)
    thresholds = CheckConfig(**load_config(tiny.config).check.__dict__)
    result = check(thresholds=thresholds, fixture=fx, artifacts=[str(tiny.onnx)], resizers=["all"])
    resized = [r for r in result.report.rows if r.kind == "resize"]
    assert sorted(r.query for r in resized) == sorted(f"onnx-fp32 [{f}]" for f in FILTERS if f != "pil-bilinear")
    assert result.passed and result.resize_gate is not None and result.resize_gate.passed
    assert all(r.parity_min_cosine is not None for r in resized)  # against the same artifact's own-rule row
    assert result.report.matrix["queries"] == ["cloud", "onnx-fp32"]  # variants are rows, not heatmap models

    monkeypatch.setitem(frames.FILTERS, "cv2-area", lambda frame, size: np.zeros((*size, 3), np.uint8))
    fx = Fixture.load(frames_fixture)  # its resized probes are cached per filter
    loose = check(thresholds=thresholds, fixture=fx, artifacts=[str(tiny.onnx)], resizers=["all"])
    assert loose.passed and not loose.resize_gate.passed  # reported, not gated
    assert any("[cv2-area]" in f for f in loose.resize_gate.failures)
    strict = tightened(thresholds, {"require_resizers": True}, "test")
    gated = check(thresholds=strict, fixture=fx, artifacts=[str(tiny.onnx)])  # implies every filter
    assert not gated.passed and any("[cv2-area]" in f for f in gated.gate.failures)

    plain = check(thresholds=thresholds, fixture=fx, artifacts=[str(tiny.onnx)]).report
    missing = evaluate(plain, strict)
    assert not missing.passed and any("resizers" in f for f in missing.failures)
    with pytest.raises(InputError, match="loosen"):
        tightened(strict, {"require_resizers": False}, "a policy")


def test_check_resize_from_the_shell_path(tiny, frames_fixture, capsys):
    """The CLI as a user runs it: --resize all --json carries the resize verdicts, and the schema accepts them."""
    import jsonschema

    from hetero import schemas

    assert run_cli("check", "--fixture", frames_fixture, "--artifact", tiny.onnx, "--resize", "all", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resize_verdicts"]["passed"] and len(out["resize_verdicts"]["rules"]) >= 4
    jsonschema.Draft202012Validator(schemas.load("check")).validate(out)
    assert run_cli("check", "--fixture", frames_fixture, "--artifact", tiny.onnx, "--resize", "lanczos") == 2
    assert "unknown resize filter 'lanczos'" in capsys.readouterr().err


def test_required_resizers_reach_junit_and_markdown(tiny, frames_fixture, tmp_path, capsys):
    """--require-resizers (as a policy's require_resizers would): every filter's row is a gated rule, so each is a
    JUnit test case and a Markdown row — what mobile CI shows."""
    junit, md = tmp_path / "j.xml", tmp_path / "r.md"
    argv = ("check", "--fixture", frames_fixture, "--artifact", tiny.onnx, "--require-resizers", "--quiet")
    assert run_cli(*argv, "--junit", junit, "--markdown", md) == 0
    xml, text = junit.read_text(), md.read_text()
    for f in FILTERS:
        if f != "pil-bilinear":
            assert f"onnx-fp32 [{f}]" in xml and f"onnx-fp32 [{f}]" in text, f


def test_an_older_fixture_is_refused_with_what_to_do(frames_fixture, tmp_path):
    raw = frames_fixture.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["hetero.fixture"])
    meta["schema"] = "hetero.fixture/1"
    header["__metadata__"]["hetero.fixture"] = json.dumps(meta)
    text = json.dumps(header).encode().ljust(n)
    old = tmp_path / "old.safetensors"
    old.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    with pytest.raises(InputError, match="recreate it with hetero fixture create"):
        Fixture.load(old)


def test_an_edited_frame_rule_in_the_manifest_is_refused(tiny, frames_fixture, tmp_path, capsys):
    """The manifest is not hashed, the model file is: a manifest whose frame rule differs from the file's (a filter
    edited to one that passes) is exit 2, before anything runs."""
    import shutil

    from hetero.export.requires import stated_frame

    unit = tmp_path / "onnx-fp32"
    shutil.copytree(tiny.onnx, unit)
    assert stated_frame(unit / "model.onnx", "onnx") == FrameRule(12, 12).to_dict()
    manifest = json.loads((unit / "manifest.json").read_text())
    manifest["extra"]["frame"]["filter"] = "cv2-area"
    (unit / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli("check", "--fixture", frames_fixture, "--artifact", unit) == 2
    assert "the file states frame rule" in capsys.readouterr().err
