"""A cloud known only by its embedding file: import (.npz, .safetensors, .parquet), bad rows, training, verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hetero.config import load_config, override
from hetero.data.datasets import load_dataset, load_split
from hetero.devices.loader import load
from hetero.errors import ConfigError, InputError
from hetero.manifest import load_manifest
from hetero.pipeline import cloud_fixture, verify
from hetero.spaces import InputSpec
from hetero.training.table import EmbeddingTable, import_embeddings, read_embedding_file
from hetero.training.train import train
from tests.conftest import run_cli

SPEC = InputSpec(height=16, width=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _rows(n: int = 6, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    e = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return np.array([f"img/{i}.png" for i in range(n)]), e / np.linalg.norm(e, axis=1, keepdims=True)


def _write(path: Path, ids: np.ndarray, emb: np.ndarray) -> Path:
    """The same rows in the format the suffix names."""
    if path.suffix == ".npz":
        np.savez(path, ids=ids, embeddings=emb)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"embeddings": emb}, str(path), metadata={"ids": json.dumps(ids.tolist())})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": ids.tolist(), "embedding": [list(map(float, r)) for r in emb]}), path)
    return path


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".parquet"])
def test_every_format_imports_the_same_rows(tmp_path: Path, suffix: str) -> None:
    ids, emb = _rows()
    src = _write(tmp_path / f"cloud{suffix}", ids, emb)
    m = import_embeddings(src, tmp_path / "unit", SPEC, name="shop")
    from hetero.training.table import rows_sha256

    # the space is named by the rows, not the file: the same rows in any format are the same space
    assert m.format == "embeddings" and m.space.id == f"shop@{rows_sha256(ids, emb)[:12]}" and m.space.dim == 4
    table = EmbeddingTable(tmp_path / "unit")
    assert np.array_equal(table.lookup(ids[::-1]), emb[::-1])  # looked up by id, in the order asked


def test_safetensors_ids_may_be_an_integer_tensor(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    _, emb = _rows()
    save_file({"embeddings": emb, "ids": np.arange(10, 16)}, str(tmp_path / "e.safetensors"))
    ids, got = read_embedding_file(tmp_path / "e.safetensors")
    assert ids.tolist() == [str(i) for i in range(10, 16)] and np.array_equal(got, emb)


def _bad(tmp_path: Path, ids: np.ndarray, emb: np.ndarray) -> Path:
    return _write(tmp_path / "bad.npz", ids, emb)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ids, e: (ids, np.where(np.arange(len(e))[:, None] == 2, np.nan, e)), "1 rows are not finite"),
        (lambda ids, e: (np.array([*ids[:-1], ids[0]]), e), "ids repeat (first: 'img/0.png')"),
        (lambda ids, e: (ids, e * 3), "not unit length"),
        (lambda ids, e: (ids, np.zeros_like(e)), "rows are zero"),
        (lambda ids, e: (ids[:0], e[:0]), "no embeddings"),
        (lambda ids, e: (ids[:3], e), "3 ids for 6 embedding rows"),
        (lambda ids, e: (ids, e[:, 0]), "float [N, D]"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path: Path, capsys, mutate, message: str) -> None:
    src = _bad(tmp_path, *mutate(*_rows()))
    assert run_cli("cloud", "import", src, "--size", "16", "--out", tmp_path / "unit") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "unit").exists()


def test_normalize_declares_unit_rows_and_model_flags_are_refused(tmp_path: Path, capsys) -> None:
    ids, emb = _rows()
    src = _write(tmp_path / "e.npz", ids, emb * 3)
    assert run_cli("cloud", "import", src, "--size", "16", "--normalize", "--out", tmp_path / "u") == 0
    assert np.allclose(EmbeddingTable(tmp_path / "u").lookup(ids), emb, atol=1e-6)
    assert run_cli("cloud", "import", src, "--size", "16", "--layout", "NHWC", "--out", tmp_path / "v") == 2
    assert "an embedding file has no model" in capsys.readouterr().err


def test_wrong_keys_and_damaged_files_are_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", names=np.array(["a"]), vectors=np.ones((1, 4)))
    with pytest.raises(InputError, match="needs arrays 'ids' and 'embeddings' \\(has names, vectors\\)"):
        read_embedding_file(tmp_path / "k.npz")
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read embeddings"):
        read_embedding_file(tmp_path / "d.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[1.0, 0.0], [1.0, 0.0, 0.0]]}), tmp_path / "r.parquet")
    with pytest.raises(InputError, match="different lengths"):
        read_embedding_file(tmp_path / "r.parquet")


def test_an_edited_space_id_is_refused_and_it_is_no_producer(tmp_path: Path) -> None:
    ids, emb = _rows()
    import_embeddings(_write(tmp_path / "e.npz", ids, emb), tmp_path / "unit", SPEC)
    with pytest.raises(InputError, match="no model to run"):
        load(tmp_path / "unit")
    doc = json.loads((tmp_path / "unit" / "manifest.json").read_text())
    doc["space"]["id"] = "e@000000000000"
    (tmp_path / "unit" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not the ones space e@000000000000 was imported with"):
        EmbeddingTable(tmp_path / "unit")


# ---- the tiny digits cloud, exported as nothing but its embeddings --------------------------------------------------


@pytest.fixture(scope="module")
def cloud_rows(tiny, tmp_path_factory) -> Path:
    """Every digits image's embedding by the tiny cloud, keyed by the built-in ids, imported as a cloud unit."""
    from hetero.devices.harness import open_cloud

    cfg = load_config(tiny.config)
    data = load_dataset(cfg.data.dataset, cfg.data.image_size)
    emb = open_cloud(tiny.cloud).embed(data.images)
    root = tmp_path_factory.mktemp("table")
    np.savez(root / "digits.npz", ids=data.ids, embeddings=emb)
    import_embeddings(root / "digits.npz", root / "cloud", load_manifest(tiny.cloud)[0].input)
    return root


def test_the_fixture_from_the_file_is_the_fixture_from_the_model(tiny, cloud_rows: Path) -> None:
    """Gallery and cloud -> cloud rows come from the stored rows by id, in the split's order. The file holds the
    cloud team's embeddings of its own images; a model cloud embeds the fixture's probe frames by its frame rule."""
    cfg = load_config(tiny.config)
    by_model, by_file = cloud_fixture(cfg, tiny.cloud), cloud_fixture(cfg, cloud_rows / "cloud")
    assert np.allclose(by_model.gallery_embeddings, by_file.gallery_embeddings, atol=1e-6)
    cloud = load(tiny.cloud)
    assert np.allclose(by_file.reference_queries, cloud.embed(load_split(cfg.data).query.images), atol=1e-6)
    assert np.allclose(by_model.reference_queries, cloud.embed(by_model.probes(16, 16)), atol=1e-6)
    assert by_file.space.id.startswith("digits@") and by_file.space.id != by_model.space.id


def test_an_edge_trains_from_the_file_alone_and_verifies_against_it(tiny, cloud_rows: Path, tmp_path: Path) -> None:
    """BCT with prototypes from the stored rows + regression to each image's row; the edge lands in the file's
    space and its queries find the stored gallery far above chance."""
    cfg = override(load_config(tiny.config), edge={"cloud_views": 1, "epochs": 12})
    split = load_split(cfg.data)
    weights = {"classification": 1.0, "bct": 1.0, "regression_cosine": 1.0}
    m = train(
        "edge", cfg, tmp_path / "edge", cloud=cloud_rows / "cloud", split=split, loss_weights=weights, progress=False
    ).manifest
    assert m.space.id == EmbeddingTable(cloud_rows / "cloud").space.id
    assert m.extra["cloud_targets"]["source"] == "embedding file"
    report = verify(cfg, cloud_rows / "cloud", [str(tmp_path / "edge")]).report
    row = next(r for r in report.rows if r.query == "edge" and r.gallery == "cloud")
    assert row.recall_at_1 > 0.6  # 5 held-out digits: chance is ~0.2 (0.77 at 1 and 2 threads)


def test_images_without_a_row_and_views_a_file_cannot_give_are_refused(tiny, cloud_rows: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny.config)
    with pytest.raises(ConfigError, match="cloud_views = 1, mix = 0"):  # default cloud_views 4, regression term
        train("edge", cfg, tmp_path / "a", cloud=cloud_rows / "cloud", loss_weights={"regression_cosine": 1.0})
    with np.load(cloud_rows / "digits.npz") as z:
        ids, emb = z["ids"], z["embeddings"]
    gone = load_split(cfg.data).gallery.ids[:2]  # two gallery images lose their rows
    keep = ~np.isin(ids, gone)
    np.savez(tmp_path / "part.npz", ids=ids[keep], embeddings=emb[keep])
    import_embeddings(tmp_path / "part.npz", tmp_path / "part", load_manifest(tiny.cloud)[0].input)
    with pytest.raises(
        InputError, match=f"2 of \\d+ gallery images have no embedding in the file \\(first: id '{gone[0]}'"
    ):
        cloud_fixture(cfg, tmp_path / "part")
    assert not (tmp_path / "a").exists()


def test_an_edge_takes_the_dimension_of_its_cloud(tiny, tmp_path: Path, capsys) -> None:
    """The file's rows are 4-d, the config's space.dim is 16: the edge is trained into the cloud's 4-d space (the
    imported cloud knows its dim; nobody has to type it), and says so."""
    from hetero.manifest import load_manifest

    cfg = load_config(tiny.config)
    data = load_dataset(cfg.data.dataset, cfg.data.image_size)
    e = np.random.default_rng(0).normal(size=(len(data), 4)).astype(np.float32)
    np.savez(tmp_path / "small.npz", ids=data.ids, embeddings=e / np.linalg.norm(e, axis=1, keepdims=True))
    assert run_cli("cloud", "import", tmp_path / "small.npz", "--size", "16", "--out", tmp_path / "c", "--quiet") == 0
    capsys.readouterr()
    argv = ("train", "edge", "--config", tiny.config, "--cloud", tmp_path / "c", "--out", tmp_path / "edge")
    assert run_cli(*argv, "--epochs", "1") == 0
    assert "space.dim 16 -> 4, the cloud's" in capsys.readouterr().err
    assert load_manifest(tmp_path / "edge")[0].space.dim == 4
