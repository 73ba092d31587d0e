"""Transfer images from anywhere (registry sets, folders, manifests, caps) and the held-out hygiene check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from hetero.config import TransferSource, load_config, override
from hetero.data.datasets import load_split
from hetero.data.folder import scan
from hetero.data.transfer import capped, drop_heldout_duplicates, hash_order, load_transfer
from hetero.errors import ConfigError, InputError
from hetero.manifest import load_manifest


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_transfer_config_takes_one_source_a_list_and_caps(tiny):
    cfg = load_config(tiny.config)
    assert override(cfg, edge={"transfer": ""}).edge.transfer == ()
    assert override(cfg, edge={"transfer": "emoji_unlabeled"}).edge.transfer == (TransferSource("emoji_unlabeled"),)
    two = override(cfg, edge={"transfer": ["a", {"source": "/x", "cap": 5}]}).edge.transfer
    assert two == (TransferSource("a"), TransferSource("/x", 5))
    with pytest.raises(ConfigError, match="cap must be 0"):
        override(cfg, edge={"transfer": [{"source": "a", "cap": -1}]})
    with pytest.raises(ConfigError, match=r"transfer\[0\] names no source"):
        override(cfg, edge={"transfer": [{"cap": 3}]})
    with pytest.raises(ConfigError, match=r"unknown config key 'edge.transfer\[0\].limit'"):
        override(cfg, edge={"transfer": [{"source": "a", "limit": 3}]})
    with pytest.raises(ConfigError, match="transfer_max_cosine"):
        override(cfg, edge={"transfer_max_cosine": 1.5})


def test_a_cap_is_an_even_sample_whatever_the_listing_order():
    ids = [f"{d}/{i}.png" for d in ("a", "b", "c", "d") for i in range(50)]
    take = capped(ids, 40)
    assert len(take) == 40 and list(take) == sorted(take)
    reordered = ids[::-1]
    assert {reordered[i] for i in capped(reordered, 40)} == {ids[i] for i in take}  # same images, any order
    assert all(5 <= sum(ids[i].startswith(d) for i in take) <= 15 for d in "abcd")  # every folder sampled
    assert list(capped(ids, 0)) == list(range(200)) == list(capped(ids, 500))
    assert sorted(hash_order(ids)) == list(range(200))


def test_sources_load_from_folders_at_any_depth_and_path_only_manifests(tiny, tmp_path):
    cfg = dataclasses.replace(load_config(tiny.config).data, max_bad_fraction=0.5)
    rng = np.random.default_rng(0)
    for i in range(6):
        _save(
            tmp_path / "art" / ("deep/er" if i % 2 else "top") / f"{i}.png", rng.integers(0, 255, (20, 20, 3), np.uint8)
        )
    (tmp_path / "art" / "notes.txt").write_text("not an image")
    (tmp_path / "art" / "broken.png").write_bytes(b"not a png")
    listed = tmp_path / "list.jsonl"
    listed.write_text("\n".join(json.dumps({"path": f"art/top/{i}.png"}) for i in (0, 2)))
    sources = [
        TransferSource(str(tmp_path / "art"), cap=0),
        TransferSource(str(listed)),
        TransferSource(str(tmp_path / "art"), 3),
    ]
    found = load_transfer(sources, cfg, (), progress=False)
    ids = [r.id for r in scan(tmp_path / "art", labelled=False)]
    assert len(ids) == 7 and "broken.png" in ids and "deep/er/1.png" in ids  # any depth; .txt ignored
    broken_taken = int("broken.png" in [ids[i] for i in capped(ids, 3)])
    assert [s["kind"] for s in found.sources] == ["folder", "manifest", "folder"]
    counts = [(s["found"], s["taken"], s["undecodable"]) for s in found.sources]
    assert counts == [(7, 7, 1), (2, 2, 0), (7, 3, broken_taken)]
    assert found.images.shape[1:] == (cfg.image_size, cfg.image_size, 3) and found.images.dtype == np.uint8
    assert len(found) == 6 + 2 + 3 - broken_taken
    assert list(found.source_of).count(1) == 2 and found.ids[6].startswith("list.jsonl:")
    with pytest.raises(InputError, match=r"1 of 7 images cannot be decoded .* max_bad_fraction 0\.1"):
        load_transfer([TransferSource(str(tmp_path / "art"))], dataclasses.replace(cfg, max_bad_fraction=0.1), ())
    with pytest.raises(InputError, match="neither a registry set"):
        load_transfer([TransferSource(str(tmp_path / "missing"))], cfg, ())
    with pytest.raises(InputError, match="no images at any depth"):
        (tmp_path / "empty").mkdir()
        load_transfer([TransferSource(str(tmp_path / "empty"))], cfg, ())


def test_hygiene_drops_exact_and_near_copies_of_heldout_images(tiny, tmp_path):
    cfg = load_config(tiny.config).data
    split = load_split(cfg)
    heldout = np.concatenate([split.query.images, split.gallery.images])
    rng = np.random.default_rng(1)
    for i in range(3):  # exact: a held-out image saved as a PNG decodes to the same pixels
        _save(tmp_path / "mix" / f"exact{i}.png", heldout[i * 7])
    for i in range(2):  # near: a held-out image a little brighter
        _save(tmp_path / "mix" / f"near{i}.png", np.clip(heldout[i * 5 + 1].astype(int) + 4, 0, 255).astype(np.uint8))
    for i in range(5):  # unrelated
        _save(tmp_path / "mix" / f"other{i}.png", rng.integers(0, 255, heldout.shape[1:], np.uint8))
    found = load_transfer([TransferSource(str(tmp_path / "mix"))], cfg, (), progress=False)

    def embed(x: np.ndarray) -> np.ndarray:  # a stand-in cloud: centred pixels as the embedding
        v = x.reshape(len(x), -1).astype(np.float32)
        v -= v.mean(axis=1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    kept, record = drop_heldout_duplicates(found, heldout, embed, 0.95)
    assert (record["exact_duplicates"], record["near_duplicates"], record["kept"]) == (3, 2, 5)
    assert sorted(kept.ids) == [f"mix:other{i}.png" for i in range(5)]
    assert record["sources"][0]["kept"] == 5 and record["kept_nearest_cosine"]["max"] <= 0.95
    assert record["heldout_images"] == len(heldout)


def test_training_with_a_folder_source_records_what_hygiene_dropped(tiny, tmp_path, capsys):
    cfg = load_config(tiny.config)
    split = load_split(cfg.data)
    heldout = np.concatenate([split.query.images, split.gallery.images])
    for i in range(4):
        _save(tmp_path / "art" / f"copy{i}.png", heldout[i * 3])
    for i in range(30):
        _save(tmp_path / "art" / "flipped" / f"{i}.png", split.train.images[i, :, ::-1])
    toml = tmp_path / "c.toml"
    toml.write_text(
        tiny.config.read_text().replace(
            "[edge]", f'[edge]\ntransfer = [{{source = "{tmp_path / "art"}", cap = 30}}]', 1
        )
    )
    argv = ("train", "edge", "--config", toml, "--cloud", tiny.cloud, "--objective", "l2", "--out", tmp_path / "t")
    assert run_cli(*argv) == 0
    assert "dropped as held-out duplicates:" in capsys.readouterr().err
    m, _ = load_manifest(tmp_path / "t")
    rec = m.extra["transfer"]
    taken = rec["sources"][0]["taken"]
    ids = [r.id for r in scan(tmp_path / "art", labelled=False)]
    copies = sum(ids[i].startswith("copy") for i in capped(ids, 30))
    assert taken == 30 and copies >= 1 and rec["exact_duplicates"] == copies
    assert rec["kept"] + rec["exact_duplicates"] + rec["near_duplicates"] == taken
    assert m.extra["unlabeled_images"] == rec["kept"]
