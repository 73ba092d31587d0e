"""Cloud upgrades v1 -> v2 without backfill: identities-matched BCT, lineage that cannot be claimed, the fixture with
both galleries, the gate's upgrade rules, focal distillation and the negative-flip numbers every report carries."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import run_cli

from hetero.config import OBJECTIVES, CheckConfig, load_config, override
from hetero.data.datasets import load_split
from hetero.devices.harness import compatibility_report
from hetero.errors import InputError
from hetero.manifest import load_manifest
from hetero.pipeline import check, create_fixture
from hetero.release.fixture import Fixture
from hetero.release.gate import evaluate
from hetero.training.lineage import require_upgrade
from hetero.training.losses import Batch, FocalDistillation, PlainDistillation
from hetero.training.start import aligned_prototypes as _aligned_prototypes
from hetero.training.teacher import CheckpointTeacher, ClassPrototypes
from hetero.training.train import train


@pytest.fixture(scope="module")
def upgrade(tiny, tmp_path_factory):
    """v1 on half of the tiny run's training identities; v2 (BCT into v1's space) and an independent v2 on all."""
    root = tmp_path_factory.mktemp("upgrade")
    cfg = load_config(tiny.config)
    v1_cfg = override(cfg, data={"train_class_share": 0.5})
    train("cloud", v1_cfg, root / "v1", progress=False)
    train("cloud", cfg, root / "v2", cloud=root / "v1", loss_weights=OBJECTIVES["bct"], progress=False)
    train("cloud", cfg, root / "v2_ind", progress=False)
    train("edge", v1_cfg, root / "edge", cloud=root / "v1", progress=False)  # an edge in the field, v1's space
    return root, cfg, v1_cfg


def test_train_class_share_trains_on_fewer_identities_and_evaluates_on_the_same(tiny):
    cfg = load_config(tiny.config)
    full, half = load_split(cfg.data), load_split(replace(cfg.data, train_class_share=0.5))
    assert set(half.train_classes) < set(full.train_classes) and len(half.train_classes) == 3
    assert half.heldout_classes == full.heldout_classes
    assert np.array_equal(half.query.labels, full.query.labels)
    assert np.array_equal(half.gallery.images, full.gallery.images)
    assert sorted(set(half.train.labels.tolist())) == [0, 1, 2]


def test_v2_matches_v1s_classifier_by_identity_and_records_its_lineage(upgrade):
    root, cfg, _ = upgrade
    v1, v2 = load_manifest(root / "v1")[0], load_manifest(root / "v2")[0]
    assert v2.space.id == v1.space.id and v2.model["num_classes"] == 6 and v1.model["num_classes"] == 3
    assert v2.extra["lineage"] == {
        "kind": "upgrade",
        "compatible_with": v1.space.id,
        "cloud_sha256": v1.sha256,
        "cloud_model": "hnet_cloud",
    }
    assert v2.extra["prototypes"] == {"from_classifier": 3, "from_embeddings": 3}
    teacher = CheckpointTeacher.load(root / "v1")
    split = load_split(cfg.data)
    protos, _ = _aligned_prototypes(teacher, split, v1.input, 16.0, progress=False)
    v1_rows = ClassPrototypes.from_classifier(teacher.model.classifier).weight
    v1_classes = v1.extra["split"]["train_classes"]
    for i, c in enumerate(split.train_classes):
        if c in v1_classes:  # the same identity gets v1's own row, whatever its index in either run
            assert torch.equal(protos.weight[i], v1_rows[v1_classes.index(c)])
        else:  # a new identity: the normalised mean of v1's embeddings of its training images
            assert abs(float(protos.weight[i].norm()) - 1.0) < 1e-5
            assert not any(torch.allclose(protos.weight[i], r) for r in v1_rows)


def test_lineage_cannot_be_claimed(upgrade, tiny, tmp_path, capsys):
    root, _cfg, _v1_cfg = upgrade
    v1 = load_manifest(root / "v1")[0]
    assert require_upgrade(root / "v2", v1).sha256 == load_manifest(root / "v2")[0].sha256
    with pytest.raises(InputError, match="not a cloud upgrade"):
        require_upgrade(root / "v2_ind", v1)
    # an independent v2 whose manifest is edited to claim v1's space and lineage: its weights say otherwise
    forged = tmp_path / "forged"
    shutil.copytree(root / "v2_ind", forged)
    m = json.loads((forged / "manifest.json").read_text())
    m["space"]["id"] = v1.space.id
    m["extra"]["lineage"] = {"kind": "upgrade", "compatible_with": v1.space.id, "cloud_sha256": v1.sha256}
    m["source"] = {"cloud_sha256": v1.sha256}
    (forged / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "fx.safetensors"
    argv = ("fixture", "create", "--config", tiny.config, "--quiet", "--cloud", root / "v1", "--out", out)
    assert run_cli(*argv, "--upgrade", forged) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "weights were trained for their own space" in err and not out.exists()
    # a true upgrade, but of another cloud (the tiny run's)
    assert run_cli("fixture", "create", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--out", out,
                   "--upgrade", root / "v2") == 2  # fmt: skip
    assert "not the cloud's" in capsys.readouterr().err and not out.exists()


def test_fixture_carries_both_galleries_and_check_gates_the_upgrade(upgrade, tiny, tmp_path, capsys):
    root, cfg, _ = upgrade
    path = create_fixture(cfg, root / "v1", tmp_path / "fx.safetensors", upgrade=root / "v2").path
    fx = Fixture.load(path)
    assert fx.has_upgrade and fx.upgrade["compatible_with"] == fx.space.id
    import jsonschema

    from hetero import schemas

    jsonschema.Draft202012Validator(schemas.load("fixture")).validate({**fx.info(), "content_sha256": "0" * 64})
    # v2's rows are what its model gives: embed the probes with the v2 checkpoint and rank v1's gallery here
    from hetero.devices.loader import load
    from hetero.release.metrics import retrieval_metrics

    v2_queries = load(root / "v2").embed(fx.probe_images)
    assert np.allclose(v2_queries, fx.upgrade_queries, atol=1e-5)
    result = check(fixture=fx)  # no artifact: the upgrade alone is gated
    rows = {r.name: r for r in result.report.rows}
    assert rows["cloud v2 → cloud"].kind == "upgrade" and rows["cloud v2 → cloud v2"].kind == "backfill"
    want = retrieval_metrics(v2_queries, fx.probe_labels, fx.gallery_embeddings, fx.gallery_labels)
    assert rows["cloud v2 → cloud"].recall_at_1 == pytest.approx(want["recall_at_1"])
    up, ref = rows["cloud v2 → cloud"], rows["cloud → cloud"]
    assert up.relative_flip_rate == pytest.approx(up.negative_flip_rate / (ref.recall_at_1 * (1 - up.recall_at_1)))
    assert sum(up.flips_by_class.values()) == up.vs_reference["worse"]
    gated = {(r.row, r.rule) for r in result.gate.rules}
    assert gated == {
        ("cloud v2 → cloud", "negative flips vs cloud → cloud"),
        ("cloud v2 → cloud", "R@1 lost vs cloud → cloud"),
    }
    assert result.report.matrix["galleries"] == ["cloud", "cloud v2"]
    # the CLI, with an edge of v1's space: its row in v2's gallery (the edges in the field after a backfill)
    rc = run_cli("check", "--fixture", path, "--quiet", "--json", "--artifact", f"edge={root / 'edge'}")
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["report"]["rows"]}
    assert rows["edge → cloud v2"]["kind"] == "backfill" and rc in (0, 1)
    jsonschema.Draft202012Validator(schemas.load("check")).validate(out)  # upgrade and backfill rows included
    assert {r["row"] for r in out["gate"]["rules"]} == {"edge → cloud", "cloud v2 → cloud"}
    # after a backfill v2 is the cloud: it fills a gallery of v1's space, and v1's edges are gated against it
    after = Fixture.load(create_fixture(cfg, root / "v2", tmp_path / "v2.safetensors").path)
    assert after.space.id == fx.space.id and np.allclose(after.gallery_embeddings, fx.upgrade_gallery_embeddings)


def _fixture_with(fx: Fixture, queries: np.ndarray) -> Fixture:
    return replace(
        fx,
        upgrade_queries=queries.astype(np.float32),
        upgrade_gallery_embeddings=fx.gallery_embeddings,
        upgrade={"kind": "upgrade", "compatible_with": fx.space.id},
    )


def test_upgrade_rules_pass_an_unchanged_cloud_and_fail_a_scrambled_one(upgrade, tmp_path):
    root, _cfg, v1_cfg = upgrade
    fx = Fixture.load(create_fixture(v1_cfg, root / "v1", tmp_path / "fx.safetensors").path)
    cfg_gate = CheckConfig(min_recall_at_1=0, min_relative_recall_at_1=0, min_map=0)
    same = evaluate(compatibility_report(_fixture_with(fx, fx.reference_queries), []), cfg_gate)
    assert same.passed and len(same.rules) == 2
    scrambled = np.random.default_rng(0).permutation(fx.reference_queries)
    worse = evaluate(compatibility_report(_fixture_with(fx, scrambled), []), cfg_gate)
    assert not worse.passed and {r.rule for r in worse.rules if not r.passed} == {
        "negative flips vs cloud → cloud",
        "R@1 lost vs cloud → cloud",
    }
    with pytest.raises(InputError, match="below what 358 probes can resolve"):
        evaluate(compatibility_report(_fixture_with(fx, scrambled), []), replace(cfg_gate, max_upgrade_r1_loss=0.001))


def test_fixture_galleries_of_different_dims_are_refused(upgrade, tmp_path):
    root, _, v1_cfg = upgrade
    fx = Fixture.load(create_fixture(v1_cfg, root / "v1", tmp_path / "fx.safetensors").path)
    with pytest.raises(InputError, match="both galleries must hold the same images in the same space"):
        replace(
            fx,
            upgrade_queries=np.zeros((len(fx.probe_labels), fx.space.dim + 1), np.float32),
            upgrade_gallery_embeddings=np.zeros((len(fx.gallery_labels), fx.space.dim + 1), np.float32),
            upgrade={"kind": "upgrade"},
        )


def test_focal_distillation_weights_what_the_old_model_got_right():
    torch.manual_seed(0)
    protos = ClassPrototypes(torch.nn.functional.normalize(torch.randn(4, 8), dim=1), 16.0)

    class T:
        def prototypes(self):
            return protos

    old = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    new = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    labels = (protos.logits(old)).argmax(1).clone()
    labels[:3] = (labels[:3] + 1) % 4  # the old model is wrong on the first three
    batch = Batch(new, torch.zeros(6, 4), labels, cloud_embedding=old)
    focal, plain = FocalDistillation(T()), PlainDistillation(T())
    t = focal.temperature
    p_old = torch.softmax(protos.logits(old) / t, 1)
    kl = (p_old * (p_old.log() - torch.log_softmax(protos.logits(new) / t, 1))).sum(1) * t * t
    w = torch.tensor([1.0, 1, 1, 6, 6, 6])
    assert float(focal(batch)) == pytest.approx(float((w * kl).sum() / w.sum()), rel=1e-5)
    assert float(plain(batch)) == pytest.approx(float(kl.mean()), rel=1e-5)
    same = Batch(old, torch.zeros(6, 4), labels, cloud_embedding=old)
    assert float(focal(same)) == pytest.approx(0.0, abs=1e-5)


def test_previous_release_from_another_space_is_refused(tiny, upgrade, tmp_path, capsys):
    """A `--previous` from another space cannot be compared probe for probe against this one: exit 2, one line."""
    root, _, v1_cfg = upgrade
    fx = create_fixture(v1_cfg, root / "v1", tmp_path / "fx.safetensors").path
    rc = run_cli("check", "--fixture", fx, "--quiet", "--artifact", f"v2={root / 'v2'}", "--previous", tiny.onnx)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "foreign embedding space" in err


def test_edge_release_distils_from_the_previous_release(tiny, upgrade, tmp_path):
    """Edge N+1 with focal distillation from release N: N runs on every view; N must share the cloud's space."""
    from hetero.errors import ConfigError, SpaceMismatchError

    cfg = override(load_config(tiny.config), edge={"epochs": 2, "seed": 5, "previous": str(tiny.edge)})
    weights = {**OBJECTIVES["bct"], "focal_distillation": 1.0}
    m = train("edge", cfg, tmp_path / "next", cloud=tiny.cloud, loss_weights=weights, progress=False).manifest
    assert m.extra["previous"]["sha256"] == load_manifest(tiny.edge)[0].sha256
    assert m.extra["final"]["focal_distillation"] > 0
    with pytest.raises(ConfigError, match="read only by focal_distillation"):
        train("edge", cfg, tmp_path / "x", cloud=tiny.cloud, loss_weights=OBJECTIVES["bct"], progress=False)
    root = upgrade[0]
    with pytest.raises(SpaceMismatchError, match="not the cloud's"):
        train("edge", cfg, tmp_path / "y", cloud=root / "v1", loss_weights=weights, progress=False)
