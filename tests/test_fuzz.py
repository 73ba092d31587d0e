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

from hetero.config import load_config
from hetero.errors import InputError
from hetero.manifest import load_manifest
from hetero.models.checkpoint import load_checkpoint
from hetero.policy import load_policy
from hetero.release.fixture import Fixture
from hetero.release.report import Report

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


# ---- issue 27: the loaders where the probe found defects ------------------------------------------------------------


@FUZZ
@given(
    ids=st.lists(st.text(max_size=6) | st.integers(-5, 5), max_size=6),
    rows=st.integers(0, 6),
    dim=st.integers(0, 5),
    values=st.sampled_from([0.0, 1.0, -2.5, 3e38, -3e38, 1e-45, float("nan"), float("inf")]),
    dtype=st.sampled_from(["float32", "float16", "float64", "int32"]),
    normalize=st.booleans(),
)
def test_embedding_file_loaders(tmp_path, ids, rows, dim, values, dtype, normalize):
    """Any .npz of ids and rows: a unit whose rows are unit length and finite, or one InputError line."""
    import numpy as np

    from hetero.spaces import InputSpec
    from hetero.training.table import EmbeddingTable, import_embeddings

    emb = np.random.default_rng(rows * 7 + dim).normal(size=(rows, dim))
    if rows and dim:
        emb[0, 0] = values
    src = tmp_path / "e.npz"
    np.savez(src, ids=np.array(ids), embeddings=emb.astype(dtype))
    out = tmp_path / "unit"
    shutil.rmtree(out, ignore_errors=True)
    try:
        import_embeddings(src, out, InputSpec(8, 8), normalize=normalize)
    except InputError:
        return
    table = EmbeddingTable(out)
    norms = np.linalg.norm(table.embeddings.astype(np.float64), axis=1)
    assert np.isfinite(table.embeddings).all() and np.abs(norms - 1).max() < 2e-3


@pytest.fixture(scope="module")
def embedded(tiny, tmp_path_factory):
    """A small complete `hetero embed` set (3 shards) to damage."""
    from hetero.embed_job import embed_source
    from tests.test_own_data import _folder

    src = _folder(tmp_path_factory.mktemp("src") / "imgs", classes=3, per_class=4, size=16)
    out = tmp_path_factory.mktemp("emb") / "e"
    r = embed_source(src, tiny.cloud, out, shard_size=4, progress=False)
    return src, out, json.loads((out / "embeddings.json").read_text())["sha256"], r.rows


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_embed_plans_and_shards(tiny, tmp_path, embedded, data):
    """Damage the plan, a shard record or a shard's arrays: a rerun either rebuilds exactly the clean set or refuses
    with one line; it never completes with different rows."""
    import numpy as np

    from hetero.embed_job import embed_source, read_shard, record_name, shard_name

    src, clean, clean_sha, rows = embedded
    out = tmp_path / "e"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(clean, out)
    (out / "embeddings.json").unlink()
    what = data.draw(st.sampled_from(["plan", "record", "arrays", "bytes"]))
    k = data.draw(st.integers(0, 2))
    if what == "plan":
        (out / "plan.json").write_text(json.dumps(_mutate(json.loads((out / "plan.json").read_text()), data)))
    elif what == "record":
        rec = out / record_name(k)
        rec.write_text(json.dumps(_mutate(json.loads(rec.read_text()), data)))
    elif what == "arrays":
        emb, ids, bad = read_shard(out / shard_name(k))
        emb = emb.copy()
        if emb.size:
            emb.reshape(-1)[data.draw(st.integers(0, emb.size - 1))] = data.draw(st.floats(allow_nan=True))
        with open(out / shard_name(k), "wb") as f:
            np.savez(f, embeddings=emb, ids=ids, skipped=np.array([json.dumps(b) for b in bad], dtype=str))
    else:
        raw = bytearray((out / shard_name(k)).read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        (out / shard_name(k)).write_bytes(bytes(raw))
    try:
        r = embed_source(src, tiny.cloud, out, shard_size=4, progress=False)
    except InputError:
        return
    assert r.complete and r.rows == rows
    assert json.loads((out / "embeddings.json").read_text())["sha256"] == clean_sha


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["report", "bench"]))
def test_report_renderer(tmp_path, valid, data, kind):
    """`hetero report` on any document: plots, or one InputError line."""
    from hetero.release.plots import render

    bench = {"schema": "hetero.bench/1", "settings": {"batch": 1}, "rows": [
        {"name": "u", "host": "local", "runtime": "onnxruntime", "threads": 1, "samples_ms": [0.1, 0.2, 0.15],
         "latency": {"n": 3, "p50": 0.15, "p90": 0.19, "p99": 0.2}}]}  # fmt: skip
    doc = _mutate(valid["report"] if kind == "report" else bench, data)
    _loads_or_input_error(lambda: render(doc, tmp_path / "plots", "x"))


@FUZZ
@given(data=st.data())
def test_resume_state(tmp_path, data):
    """A resume state with the right fingerprint and anything inside: resumed, or one InputError line."""
    import torch

    from hetero.training.loop import _load_state, _save_state

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), torch.Generator().manual_seed(0)

    path = tmp_path / "state.pt"
    _save_state(path, "fp", *fresh(), [{"epoch": 1}])
    state = torch.load(path, weights_only=True)
    key = data.draw(st.sampled_from(["model", "optimizer", "scheduler", "generator", "history"]))
    choice = data.draw(st.sampled_from(["drop", "json", "tensor"]))
    if choice == "drop":
        del state[key]
    elif choice == "json":
        state[key] = json.dumps(data.draw(json_values))
    else:
        state[key] = torch.zeros(data.draw(st.integers(0, 4)), dtype=torch.uint8)
    torch.save(state, path)
    _loads_or_input_error(lambda: _load_state(path, "fp", *fresh()))


@FUZZ
@given(lines=st.lists(json_values.map(json.dumps) | st.text(max_size=40), max_size=6), cut=st.integers(0, 200))
def test_search_logs(tmp_path, lines, cut):
    """Any trials.jsonl: the intact trials of it, never an exception (a cut or garbled line runs again)."""
    from hetero.training.search import Candidate, Trial, _read_trials

    good = json.dumps(Trial("full", "k", Candidate({"width": [1.0]}, 32), 10, 0.1, None, 0.5, 0.4, 0.9, 2.0).to_json())
    text = "\n".join([good, *lines, good[:cut]])
    (tmp_path / "trials.jsonl").write_text(text)
    trials = _read_trials(tmp_path / "trials.jsonl")
    assert trials and trials[0].key == "k" and all(isinstance(t.val_recall_at_1, float | int) for t in trials)


@FUZZ
@given(data=st.data())
def test_signatures_never_verify_altered_content(tmp_path, valid, data):
    """A signed report with any value changed (checksum recomputed, signature kept): refused under trust."""
    from hetero.release.report import content_sha256
    from hetero.release.signing import generate_key, load_private_key, load_public_key

    key = tmp_path / "k"
    if not key.exists():
        generate_key(key)
    report = Report.from_dict(valid["report"])
    report.sign(load_private_key(key))
    signed = report.to_dict()
    doc = _mutate({k: v for k, v in signed.items() if k not in ("content_sha256", "signature")}, data)
    if isinstance(doc, dict):
        doc = {**doc, "content_sha256": content_sha256(doc), "signature": signed["signature"]}
    changed = doc != signed
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    try:
        Report.load(p, trust=[load_public_key(Path(f"{key}.pub"))])
    except InputError:
        return
    assert not changed
