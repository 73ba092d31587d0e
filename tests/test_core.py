"""Config, manifest, spaces, data split, models and atomic IO: the contracts every later stage relies on."""

import json

import numpy as np
import pytest
import torch

from hetero.config import DEFAULT_CONFIG, RunConfig, load_config, override
from hetero.data.datasets import load_split
from hetero.errors import ConfigError, InputError, ManifestError, SpaceMismatchError
from hetero.io import atomic_dir
from hetero.manifest import Manifest, load_manifest, write_manifest
from hetero.models.registry import EmbeddingGraph, create_model, model_cost
from hetero.spaces import EmbeddingSpace, InputSpec


def test_packaged_config_is_the_documented_default():
    assert load_config(DEFAULT_CONFIG) == RunConfig()


def test_packaged_config_documents_every_key():
    """digits.toml says it documents every key: each field of each table is written there ([cloud] and [edge] share
    one table type, so a key shown in either counts)."""
    import dataclasses
    import tomllib

    doc = tomllib.loads(DEFAULT_CONFIG.read_text())
    doc["cloud"] = doc["edge"] = {**doc["cloud"], **doc["edge"]}
    missing = [
        f"[{table.name}] {key.name}"
        for table in dataclasses.fields(RunConfig)
        for key in dataclasses.fields(type(getattr(RunConfig(), table.name)))
        if key.name not in doc.get(table.name, {})
    ]
    assert not missing, missing


def test_partial_table_keeps_the_run_defaults(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[edge]\nepochs = 3\n")
    cfg = load_config(p)
    assert cfg.edge.epochs == 3 and cfg.edge.model == RunConfig().edge.model
    assert cfg.edge.loss_weights == RunConfig().edge.loss_weights


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[cloud]\nepoch = 3\n", "unknown config key 'cloud.epoch'"),
        ("[nope]\n", "unknown config key 'nope'"),
        ("[cloud]\nepochs = 'three'\n", "cloud.epochs: expected int"),
        ("[cloud]\nepochs = [\n", "not valid TOML"),
        ("[edge]\nmix = 1.5\n", "mix is a share of views, between 0 and 1"),
        ("[edge]\ncloud_views = 0\n", "cloud_views must be at least 1"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, needle):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config(p)


def test_override_changes_only_what_it_names_and_validates_like_a_file():
    base = load_config()
    cfg = override(base, edge={"epochs": 3, "cache_cloud": False})
    assert (cfg.edge.epochs, cfg.edge.cache_cloud) == (3, False)
    assert cfg.edge.resolution == base.edge.resolution and cfg.cloud == base.cloud and base.edge.epochs != 3
    with pytest.raises(ConfigError, match=r"unknown config key 'edge\.epochz'"):
        override(base, edge={"epochz": 1})
    with pytest.raises(ConfigError, match="mix is a share of views"):
        override(base, edge={"mix": 2.0})


def _space(id_="s@1", dim=4) -> EmbeddingSpace:
    return EmbeddingSpace(id=id_, dim=dim, input=InputSpec(8, 8))


def test_manifest_roundtrip_and_sha256_check(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"weights")
    m = Manifest(
        kind="artifact",
        file="m.bin",
        sha256="",
        format="onnx",
        precision="fp32",
        space=_space(),
        input=InputSpec(8, 8),
        model={"name": "x"},
        seed=3,
    )
    write_manifest(tmp_path, m)
    loaded, path = load_manifest(tmp_path / "m.bin")
    assert loaded.space == _space() and loaded.seed == 3 and path == tmp_path / "m.bin"
    assert {"torch", "numpy", "python"} <= set(loaded.tool_versions)
    (tmp_path / "m.bin").write_bytes(b"weightz")
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        load_manifest(tmp_path)


def test_manifest_with_foreign_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(ManifestError, match="unsupported manifest schema"):
        load_manifest(tmp_path, verify=False)


def test_space_refuses_foreign_id_and_dim():
    s = _space()
    s.require_same(_space(), "x")
    with pytest.raises(SpaceMismatchError, match="foreign embedding space"):
        s.require_same(_space(id_="t@2"), "x")
    with pytest.raises(SpaceMismatchError, match="dim 8"):
        s.require_same(_space(dim=8), "x")


def test_open_set_split_holds_out_whole_classes():
    cfg = RunConfig().data
    split = load_split(cfg)
    assert split.train.images.dtype == np.uint8 and split.train.images.shape[1:] == (32, 32, 3)
    assert set(split.heldout_classes).isdisjoint(split.train_classes)
    assert set(np.unique(split.query.labels)) == set(split.heldout_classes) == set(np.unique(split.gallery.labels))
    assert split.train.labels.max() == len(split.train_classes) - 1  # remapped for the classifier
    n_total = len(split.train) + len(split.query) + len(split.gallery)
    assert n_total == 1797


def test_models_are_an_aligned_family_with_unit_embeddings():
    spec = InputSpec(32, 32)
    cloud = create_model("hnet_cloud", embed_dim=16, num_classes=3)
    edge = create_model("hnet_edge", embed_dim=16, num_classes=3)
    assert type(cloud) is type(edge)
    cc, ec = model_cost(cloud, spec), model_cost(edge, spec)
    assert ec["macs"] < 0.2 * cc["macs"] and ec["params"] < cc["params"]
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    emb = EmbeddingGraph(edge.eval(), spec)(pixels)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    with pytest.raises(InputError, match=r"available: .*hnet_cloud, hnet_edge"):
        create_model("resnet9000", embed_dim=4, num_classes=2)


def test_atomic_dir_leaves_nothing_on_failure_and_keeps_the_old_unit(tmp_path):
    target = tmp_path / "unit"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit"]


def test_training_is_reproducible_from_the_seed(tmp_path):
    """The seed in the manifest must reproduce the checkpoint bit for bit (init, shuffling and augmentation)."""
    from hetero.config import from_dict
    from hetero.training.train import train

    cfg = from_dict(RunConfig, {"data": {"image_size": 8}, "cloud": {"epochs": 1, "batch_size": 256}})
    a = train("cloud", cfg, tmp_path / "a", progress=False).manifest
    b = train("cloud", cfg, tmp_path / "b", progress=False).manifest
    assert a.sha256 == b.sha256 and a.space.id == b.space.id
    c = train(
        "cloud",
        from_dict(RunConfig, {"data": {"image_size": 8}, "cloud": {"epochs": 1, "seed": 5}}),
        tmp_path / "c",
        progress=False,
    ).manifest
    assert c.sha256 != a.sha256
