"""Fuzzing the doors: arbitrary bytes and arbitrary JSON/TOML into every loader (manifest, fixture, report, policy,
config, checkpoint). The result is a valid object or an InputError (exit 2): never a traceback, never a pass."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from pathlib import Path

import pytest
from conftest import make_fixture, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetero.checkpoint import load_checkpoint
from hetero.config import load_config, load_policy
from hetero.errors import InputError
from hetero.fixture import Fixture
from hetero.manifest import load_manifest
from hetero.report import Report

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _mutate(doc, data) -> object:
    """Replace one value somewhere in a valid document with arbitrary JSON (or delete its key)."""
    doc = copy.deepcopy(doc)
    node = doc
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            return doc
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(json_values)
        return doc


def _loads_or_input_error(fn) -> None:
    """A valid object, or InputError (exit 2). Anything else propagates and fails the test with the example."""
    with contextlib.suppress(InputError):
        fn()


@pytest.fixture(scope="module")
def valid(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    fx = root / "fixture.safetensors"
    make_fixture(tiny, fx)
    rep = root / "rep"
    assert (
        run_cli(
            "verify", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--candidate", tiny.onnx, "--out", rep
        )
        == 0
    )
    return {
        "manifest": json.loads((tiny.onnx / "manifest.json").read_text()),
        "checkpoint": json.loads((tiny.edge / "manifest.json").read_text()),
        "report": json.loads((rep / "report.json").read_text()),
        "fixture": fx.read_bytes(),
    }


def _unit(src: Path, dst: Path) -> Path:
    if not dst.exists():  # hypothesis reuses tmp_path across examples
        shutil.copytree(src, dst)
    return dst


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["manifest", "checkpoint"]))
def test_manifest_and_checkpoint_loaders(tiny, tmp_path, valid, data, kind):
    unit = _unit(tiny.onnx if kind == "manifest" else tiny.edge, tmp_path / kind)
    (unit / "manifest.json").write_text(json.dumps(_mutate(valid[kind], data)))
    _loads_or_input_error(lambda: (load_manifest if kind == "manifest" else load_checkpoint)(unit))


@FUZZ
@given(raw=st.binary(max_size=300))
def test_manifest_loader_bytes(tiny, tmp_path, raw):
    unit = _unit(tiny.onnx, tmp_path / "b")
    (unit / "manifest.json").write_bytes(raw)
    _loads_or_input_error(lambda: load_manifest(unit))


@FUZZ
@given(raw=st.binary(max_size=400))
def test_checkpoint_weights_bytes(tiny, tmp_path, valid, raw):
    """Garbage weights with a manifest whose sha256 matches them: the loader, not the hash, must refuse."""
    from hetero.io import sha256_file

    unit = _unit(tiny.edge, tmp_path / "w")
    (unit / "model.safetensors").write_bytes(raw)
    doc = {**valid["checkpoint"], "sha256": sha256_file(unit / "model.safetensors")}
    (unit / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError):
        load_checkpoint(unit)


@FUZZ
@given(data=st.data())
def test_report_loader(tmp_path, valid, data):
    p = tmp_path / "report.json"
    p.write_text(json.dumps(_mutate(valid["report"], data)))
    _loads_or_input_error(lambda: Report.load(p))


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_report_loader_garbage_is_never_a_pass(tmp_path, raw, capsys):
    p = tmp_path / "report.json"
    p.write_bytes(raw)
    assert run_cli("check", "--report", p) == 2
    capsys.readouterr()


@FUZZ
@given(data=st.data())
def test_fixture_loader(tmp_path, valid, data):
    raw = bytearray(valid["fixture"])
    for _ in range(data.draw(st.integers(1, 4))):  # flip bytes anywhere: header, arrays, length prefix
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    p = tmp_path / "fx.safetensors"
    p.write_bytes(bytes(raw[: cut if data.draw(st.booleans()) else len(raw)]))
    try:
        Fixture.load(p)
    except InputError:
        return
    assert bytes(raw) == valid["fixture"] or p.read_bytes() == valid["fixture"]  # only the unchanged file loads


def _toml_value(v) -> str:
    """TOML spelling of a scalar: JSON's is right except for None (no TOML null) and non-finite floats."""
    if v is None:
        return '""'
    if isinstance(v, float) and (v != v or abs(v) == float("inf")):
        return "nan" if v != v else ("inf" if v > 0 else "-inf")
    return json.dumps(v)


@FUZZ
@given(
    table=st.sampled_from(["check", "export", "edge", "cloud", "data", "space", "bogus"]),
    key=st.sampled_from(
        [
            "min_map",
            "lr",
            "epochs",
            "batch_size",
            "loss_weights",
            "formats",
            "max_r1_drop_int8",
            "image_size",
            "dim",
            "seed",
            "require_executed",
            "resolution",
            "typo",
        ]
    ),
    value=scalars | st.lists(scalars, max_size=3),
)
def test_config_and_policy_loaders(tmp_path, table, key, value):
    text = f"[{table}]\n{key} = {_toml_value(value) if not isinstance(value, list) else json.dumps(value)}\n"
    p = tmp_path / "c.toml"
    p.write_text(text)
    _loads_or_input_error(lambda: load_config(p))
    _loads_or_input_error(lambda: load_policy(p))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_config_bytes(tmp_path, raw):
    p = tmp_path / "c.toml"
    p.write_bytes(raw)
    _loads_or_input_error(lambda: load_config(Path(p)))
    _loads_or_input_error(lambda: load_policy(Path(p)))
