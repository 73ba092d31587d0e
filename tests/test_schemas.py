"""What hetero writes for machines matches the JSON Schemas it ships, and a schema refuses what the loaders refuse."""

from __future__ import annotations

import contextlib
import io
import json

import jsonschema
import pytest
from conftest import make_fixture, run_cli

from hetero import schemas


def _validate(name: str, doc) -> None:
    jsonschema.Draft202012Validator(schemas.load(name)).validate(doc)


def _fixture_header(path) -> dict:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["hetero.fixture"])


@pytest.fixture(scope="module")
def outputs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("schemas")
    fx = root / "fixture.safetensors"
    make_fixture(tiny, fx)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run_cli("check", "--quiet", "--json", "--fixture", fx, "--artifact", tiny.onnx) == 0
    return {"fixture": fx, "check": json.loads(buf.getvalue())}


def test_every_schema_is_a_valid_schema():
    for name in schemas.NAMES:
        jsonschema.Draft202012Validator.check_schema(schemas.load(name))


def test_manifests_reports_fixtures_and_check_output_validate(tiny, outputs):
    for unit in (tiny.edge, tiny.cloud, tiny.onnx):
        _validate("manifest", json.loads((unit / "manifest.json").read_text()))
    _validate("fixture", _fixture_header(outputs["fixture"]))
    _validate("check", outputs["check"])
    _validate("report", outputs["check"]["report"])


def test_the_error_document_of_check_validates(tmp_path, tiny, capsys):
    assert run_cli("check", "--json", "--fixture", tmp_path / "missing", "--artifact", tiny.onnx) == 2
    _validate("check", json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(
    "change", [{"file": "../edge/model.safetensors"}, {"sha256": "abc"}, {"kind": "model"}, {"precision": "int4"}]
)
def test_schema_refuses_what_the_loader_refuses(tiny, change):
    doc = {**json.loads((tiny.onnx / "manifest.json").read_text()), **change}
    with pytest.raises(jsonschema.ValidationError):
        _validate("manifest", doc)


def test_schema_refuses_a_row_with_text_for_a_number(outputs):
    report = json.loads(json.dumps(outputs["check"]["report"]))
    report["rows"][1]["recall_at_1"] = "0.9"
    with pytest.raises(jsonschema.ValidationError):
        _validate("report", report)
