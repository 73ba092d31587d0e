"""`hetero bench`: latency statistics, MAC counting, the distance to the compute limit, rendering, real runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hetero.devices.bench import BenchRow, LatencyStats, bench
from hetero.errors import InputError
from hetero.manifest import load_manifest
from hetero.models.registry import model_cost
from hetero.spaces import InputSpec
from tests.conftest import run_cli


def test_percentiles_of_known_timings() -> None:
    s = LatencyStats.from_ms(list(range(100, 0, -1)))  # 1..100 ms, in any order
    got = (s.n, s.p50, s.p90, s.p99, s.mean, s.min, s.max)
    assert got == pytest.approx((100, 50.5, 90.1, 99.01, 50.5, 1.0, 100.0), abs=1e-9)
    assert s.std == pytest.approx(29.0115, abs=1e-4)  # sample standard deviation (n - 1)
    one = LatencyStats.from_ms([3.0])
    assert one.p50 == one.p99 == 3.0 and one.std == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, -0.5]])
def test_impossible_timings_are_refused(bad: list[float]) -> None:
    with pytest.raises(InputError, match="latency samples"):
        LatencyStats.from_ms(bad)


class Known(torch.nn.Module):
    """3x3 conv 3 -> 8 (padding 1) on 8x8, pooled, then a linear 8 -> 4 head: 8*8*8 * 3*3*3 + 4*8 MACs."""

    resolution = None

    def __init__(self):
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 4)
        self.classifier = torch.nn.Linear(4, 10)  # not part of the deployed graph: not counted

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


def test_macs_and_params_of_a_known_model() -> None:
    cost = model_cost(Known(), InputSpec(8, 8))
    assert cost["macs"] == 8 * 8 * 8 * 27 + 4 * 8
    assert cost["params"] == (8 * 27 + 8) + (4 * 8 + 4)


def test_limit_ratio_is_gemm_rate_over_achieved_rate() -> None:
    row = BenchRow("m", "p", "local", "onnx", "fp32", 1, 1, latency=LatencyStats.from_ms([2.0] * 3), macs=1_000_000,
                   gemm_gflops=10.0)  # fmt: skip
    assert row.achieved_gflops == pytest.approx(1.0)  # 2e6 FLOPs in 2 ms
    assert row.limit_ratio == pytest.approx(10.0)


def test_extras_are_timed_interleaved_and_carry_an_interval() -> None:
    from hetero.timing import interleaved_ms

    order: list[str] = []
    samples, rounds = interleaved_ms([lambda: order.append("a"), lambda: order.append("b")], 6, 0.0, 2, block=3)
    assert order[:4] == ["a", "a", "b", "b"]  # warm-up of each, then alternating blocks of 3
    assert order[4:16] == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert len(samples[0]) == len(samples[1]) == 6 and len(rounds) == 2 and all(len(r) == 2 for r in rounds)
    row = BenchRow("m", "p", "local", "onnx", "fp32", 1, 1, extras_rounds=[[1.1, 1.0], [1.3, 1.0], [1.2, 1.0]])
    assert row.extras_share == pytest.approx(0.2)
    low, high = row.extras_interval
    assert low < 0.2 < high and high - low == pytest.approx(2 * 4.303 * 0.1 / 3**0.5, rel=1e-3)  # t(0.975, 2)
    assert BenchRow("m", "p", "local", "onnx", "fp32", 1, 1).extras_share is None


def test_bench_runs_units_in_fresh_processes_and_renders(tiny, tmp_path: Path) -> None:
    result = bench([f"edge={tiny.onnx}", str(tiny.edge)], (1,), runs=5, warmup=1)
    onnx, torch_row = result.rows
    assert [r.runtime for r in result.rows] == ["onnxruntime", "torch"] and onnx.name == "edge"
    m, model_file = load_manifest(tiny.onnx)
    assert onnx.file_bytes == model_file.stat().st_size and onnx.macs == m.model["macs"] > 0
    for r in result.rows:
        assert r.latency.n >= 5 and 0 < r.latency.p50 <= r.latency.p90 <= r.latency.p99 <= r.latency.max
        assert r.load_ms > 0 and r.peak_rss_mb >= r.rss_before_load_mb > 10 and r.gemm_gflops > 0.1
    assert torch_row.peak_rss_mb > onnx.peak_rss_mb  # torch itself is loaded only in the checkpoint's process
    assert onnx.bare_latency.n >= 5 and onnx.extras_share is not None and torch_row.bare_latency is None
    assert len(onnx.extras_rounds) >= 1 and onnx.cpu == torch_row.cpu != "" and "CPU: local: " in result.to_text()
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == 2 and float(rows[0]["latency_p99"]) == pytest.approx(onnx.latency.p99)
    md = result.to_markdown()
    assert md.count("\n| edge | local | onnxruntime | 1 |") == 1 and "x limit" in md
    json.dumps(result.to_dict())


def _preprocessed(m, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels of the unit's space and what the pixel scaling and resize make of them (float NCHW)."""
    from hetero.models.registry import Preprocess

    pixels = np.random.default_rng(1).integers(0, 256, (n, *m.input.shape(1)[1:]), dtype=np.uint8)
    return pixels, Preprocess(m.input, m.model.get("resolution"))(torch.from_numpy(pixels)).numpy()


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_bare_network_is_the_graph_between_preprocessing_and_l2(tiny) -> None:
    """Cut out of the exported graph, fed the preprocessed pixels, then L2-normalised: the artifact's embedding."""
    import onnxruntime as ort

    from hetero.devices.bench_worker import bare_onnx
    from hetero.devices.loader import load

    m, model_file = load_manifest(tiny.onnx)
    graph, name = bare_onnx(model_file)
    pixels, x = _preprocessed(m, 4)
    raw = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    assert (_l2(raw) * load(tiny.onnx).embed(pixels)).sum(axis=1).min() > 0.99999


def test_the_bare_tflite_network_drops_scaling_resize_and_l2_only(lite_edge, tmp_path) -> None:
    """The real family resizes inside the graph: the TFLite cut takes the resized, scaled pixels, returns the
    unnormalised embedding, and `hetero bench` times it beside the full graph."""
    from hetero.config import ExportConfig
    from hetero.devices.bench_worker import bare_tflite
    from hetero.devices.loader import load
    from hetero.export.artifact import export_artifact
    from hetero.export.tflite import interpreter

    root, data = lite_edge
    unit = tmp_path / "tflite-fp32"
    export_artifact(root / "edge", unit, "tflite", "fp32", data, ExportConfig(input_size="space"))
    m, model_file = load_manifest(unit)
    interp = interpreter(bare_tflite(model_file))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    pixels, x = _preprocessed(m, 3)
    assert x.shape[2] == m.model["resolution"] != m.input.height  # the cut starts after the resize
    nhwc = tuple(inp["shape"][1:]) == (*x.shape[2:], 3)
    raw = []
    for img in x:
        interp.set_tensor(inp["index"], (img.transpose(1, 2, 0) if nhwc else img)[None])
        interp.invoke()
        raw.append(interp.get_tensor(out["index"])[0])
    raw = np.stack(raw)
    assert abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-3  # L2 normalisation is not in the cut
    assert (_l2(raw) * load(unit).embed(pixels)).sum(axis=1).min() > 0.99999
    (row,) = bench([str(unit)], (1,), runs=5, warmup=1).rows
    assert row.bare_latency.n >= 5 and row.extras_share is not None


def test_bench_cli_bad_input_is_one_line(tiny, tmp_path: Path, capsys) -> None:
    assert run_cli("bench", tiny.onnx, "--threads", "0") == 2
    assert "thread counts must be in 1..256" in capsys.readouterr().err
    assert run_cli("bench", tiny.onnx, "--threads", "one") == 2
    assert run_cli("bench", tmp_path / "missing") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("hetero: error:") for e in err)
    assert run_cli("bench", tiny.onnx, "--runs", "3", "--warmup", "0", "--quiet", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "hetero.bench/1" and doc["rows"][0]["latency"]["n"] >= 3
    assert not np.isnan(doc["rows"][0]["limit_ratio"])


# ---- plots: accuracy vs latency with its Pareto front, the compatibility heatmap, latency distributions -------------


def test_pareto_front_of_known_points() -> None:
    from hetero.release.plots import pareto_front

    pts = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.55), (0.5, 0.2), (1.5, 0.4)]
    assert pareto_front(pts) == [3, 0, 1]  # (3, .55) loses to (2, .6); (1.5, .4) to (1, .5)


@pytest.fixture(scope="module")
def verified(tiny, tmp_path_factory):
    from hetero.config import load_config
    from hetero.pipeline import verify

    out = tmp_path_factory.mktemp("verified")
    cands = [f"edge={tiny.edge}", f"onnx={tiny.onnx}"]
    return verify(load_config(tiny.config), tiny.cloud, cands, [f"ind={tiny.independent}"], out).report, out


def test_the_matrix_holds_every_query_producer_in_every_gallery(verified) -> None:
    report, _ = verified
    m = report.matrix
    assert m["queries"] == ["cloud", "edge", "onnx", "ind"] and m["galleries"] == ["cloud", "edge", "onnx", "ind"]
    cell = {(q, g): m["recall_at_1"][i][j] for i, q in enumerate(m["queries"]) for j, g in enumerate(m["galleries"])}
    for r in report.rows:
        assert cell[r.query, r.gallery] == r.recall_at_1  # the rows' numbers, not recomputed differently
    assert cell["edge", "onnx"] == pytest.approx(cell["edge", "edge"], abs=0.01)  # one model on two runtimes
    assert cell["ind", "cloud"] < 0.5 * cell["edge", "cloud"]  # the independent edge is not in the cloud's space


def test_report_renders_plots_with_the_right_series(verified, tmp_path: Path) -> None:
    from hetero.release.plots import accuracy_latency, heatmap

    report, out = verified
    fig, files = accuracy_latency(report, tmp_path / "al.png")
    rows = [r for r in report.rows if r.gallery == "cloud" and r.latency_ms is not None]
    offsets = fig.axes[0].collections[0].get_offsets()
    assert np.allclose(offsets, [[r.latency_ms, r.recall_at_1] for r in rows])
    assert files["png"].stat().st_size > 1000 and len(files["data"].read_text().splitlines()) == len(rows) + 1
    fig, _ = heatmap(report.matrix, tmp_path / "hm.png")
    assert np.allclose(fig.axes[0].images[0].get_array(), report.matrix["recall_at_1"])
    assert run_cli("report", out / "report.json", "--out", tmp_path / "plots", "--quiet") == 0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "report_accuracy_latency.png", "report_accuracy_latency.csv", "report_heatmap.png", "report_heatmap.csv",
    }  # fmt: skip


def test_check_markdown_embeds_the_heatmap(tiny, tmp_path: Path) -> None:
    from tests.conftest import make_fixture

    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    md = tmp_path / "ci" / "report.md"
    assert run_cli("check", "--fixture", fx, "--artifact", tiny.onnx, "--markdown", md, "--quiet") in (0, 1)
    assert "![compatibility heatmap](report_heatmap.png)" in md.read_text()
    assert (tmp_path / "ci" / "report_heatmap.png").stat().st_size > 1000


def test_bench_results_plot_their_latency_distributions(tiny, tmp_path: Path, capsys) -> None:
    assert run_cli("bench", tiny.onnx, "--runs", "20", "--warmup", "1", "--threads", "1,2", "--json", "--quiet") == 0
    (tmp_path / "bench.json").write_text(capsys.readouterr().out)
    assert run_cli("report", tmp_path / "bench.json", "--out", tmp_path / "p", "--quiet") == 0
    data = (tmp_path / "p" / "bench_latency.csv").read_text().splitlines()
    assert len(data) >= 1 + 2 * 20  # every timed call of both rows
    from hetero.release.plots import latency_distributions

    fig, _ = latency_distributions(json.loads((tmp_path / "bench.json").read_text()), tmp_path / "l.png")
    assert len(fig.axes[0].get_xticklabels()) == 2
