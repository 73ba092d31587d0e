"""The front door as a newcomer meets it: each test here failed before its fix (issue: one front door)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import make_fixture, run_cli

import hetero
from hetero.cli import main


def test_version_and_env(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"hetero {hetero.__version__}"
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["hetero"] == hetero.__version__ and env["packages"]["onnxruntime"]
    assert env["cpu"]["cores"] >= 1 and isinstance(env["cpu"]["features"], list)


def _light(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """A process where torch (the full install's) cannot be imported, as in the light `check` install."""
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        f"from hetero.cli import main\nsys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.parametrize("command", [["models"], ["demo", "--out", "d"], ["verify", "--cloud", "c", "--out", "o"]])
def test_full_install_commands_say_so_in_the_light_install(command, tiny, tmp_path):
    if command[0] == "verify":
        command = [*command[:2], str(tiny.cloud), *command[3:], "--candidate", str(tiny.edge)]
    proc = _light(command, tmp_path)
    assert proc.returncode == 2, proc.stderr[-800:]
    assert "needs the full install: torch is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_of_a_checkpoint_in_the_light_install_is_exit_2(tiny, tmp_path):
    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    proc = _light(["check", "--fixture", str(fx), "--artifact", str(tiny.edge)], tmp_path)
    assert proc.returncode == 2 and "needs the full install" in proc.stderr and "Traceback" not in proc.stderr


def test_light_check_imports_neither_torch_nor_scipy_stats(tiny, tmp_path):
    """The gate's import cost: scipy.stats alone took a second; scipy.special gives the same intervals."""
    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    code = (
        "import sys; from hetero.cli import main; "
        f"rc = main(['check', '--quiet', '--fixture', {str(fx)!r}, '--artifact', {str(tiny.onnx)!r}]); "
        "print(sorted(m for m in ('torch', 'scipy.stats') if m in sys.modules)); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_not_executed_writes_a_junit_with_an_error(tiny, tmp_path, monkeypatch, capsys):
    import hetero.pipeline as pipeline
    from hetero.release.gate import GateResult, RuleResult

    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    real = pipeline.check

    def nothing_ran(**kw):
        r = real(**kw)
        skipped = [RuleResult("a → cloud", "R@1", float("nan"), 0.5, False, evaluated=False, reason="not run")]
        return pipeline.CheckResult(r.report, GateResult(skipped), r.thresholds, "no candidate could be executed")

    monkeypatch.setattr(pipeline, "check", nothing_ran)
    junit = tmp_path / "junit.xml"
    assert run_cli("check", "--quiet", "--fixture", fx, "--artifact", tiny.onnx, "--junit", junit) == 2
    suite = ET.parse(junit).getroot()
    assert suite.get("errors") == "1" and suite.get("skipped") == "1"
    assert suite.find("testcase/error").get("message") == "no candidate could be executed"


def test_junit_and_json_files_together(tiny, tmp_path, capsys):
    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    junit, doc = tmp_path / "junit.xml", tmp_path / "out.json"
    assert run_cli("check", "--quiet", "--fixture", fx, "--artifact", tiny.onnx, "--junit", junit, "--json", doc) == 0
    assert "gate: PASS" in capsys.readouterr().out  # the text on stdout, the document in the file
    payload = json.loads(doc.read_text())
    assert payload["passed"] and payload["hetero_version"] == hetero.__version__
    assert payload["report"]["hetero_version"] == hetero.__version__ and ET.parse(junit).getroot().get("tests")


def test_unknown_argument_shows_the_command_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["check", "--report", "r.json", "stray"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: hetero check") and "unrecognized arguments: stray" in err


def test_a_report_is_judged_by_the_thresholds_it_was_verified_under(tiny, tmp_path, capsys):
    out = tmp_path / "v"
    verify = ("verify", "--config", tiny.config, "--quiet", "--cloud", tiny.cloud, "--candidate", tiny.edge)
    assert run_cli(*verify, "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["verified_under"]["thresholds"]["min_map"] == 0.35  # the tiny config's, not the packaged 0.40
    assert report["rows"][0]["runtime"] == "torch"  # computed here by the cloud checkpoint: no fixture involved
    capsys.readouterr()
    # No --config: the report's own thresholds, not the packaged digits defaults.
    assert run_cli("check", "--json", "--report", out / "report.json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["thresholds"]["min_map"] == 0.35 and "notes" not in doc
    # Another threshold is applied and stated.
    assert run_cli("check", "--report", out / "report.json", "--min-map", "0.3") == 0
    assert "min_map 0.3 (verified under 0.35)" in capsys.readouterr().out
    assert run_cli("check", "--report", out / "report.json", "--config", tmp_path / "none.toml") == 2


def test_onnx_records_hetero_as_its_producer(tiny):
    import onnx

    model = onnx.load(str(next(tiny.onnx.glob("*.onnx"))))
    assert (model.producer_name, model.producer_version) == ("hetero", hetero.__version__)


def test_wording(tiny, tmp_path, capsys, monkeypatch):
    from hetero.export.metadata import camera_rule
    from hetero.spaces import InputSpec

    assert run_cli("check", "--fixture", tmp_path, "--artifact", tiny.onnx) == 2
    assert "is a directory; give the fixture file in it" in capsys.readouterr().err
    spec = InputSpec(height=32, width=32)
    assert "uint8 NHWC" in camera_rule(spec) and "uint8 NHWC" not in camera_rule(spec, image_input=True)
    import hetero.release.plots as plots

    def no_matplotlib(*a, **k):
        raise ImportError("matplotlib")

    monkeypatch.setattr(plots, "heatmap", no_matplotlib)
    fx = make_fixture(tiny, tmp_path / "fx.safetensors")
    md = tmp_path / "r.md"
    assert run_cli("check", "--quiet", "--fixture", fx, "--artifact", tiny.onnx, "--markdown", md) == 0
    text = md.read_text()
    assert "pip install matplotlib" in text and "hetero[all]" not in text


def test_import_hetero_is_the_front_door_and_stays_light():
    """Every stage is a function on `hetero`, resolved lazily: importing it pulls neither torch nor a runtime."""
    code = (
        "import sys, hetero\n"
        "assert not any(m in sys.modules for m in ('torch', 'onnxruntime', 'hetero.pipeline')), 'eager'\n"
        "names = ['train', 'search', 'export', 'verify', 'check', 'create_fixture', 'bench', 'embed', 'import_cloud']\n"
        "assert all(callable(getattr(hetero, n)) for n in names)\n"
        "import hetero.export.artifact as a, hetero.embed_job as e\n"
        "assert hetero.export.artifact is a and hetero.embed is e.embed_source and hetero.check.__module__ == "
        "'hetero.pipeline'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]


def test_every_printed_next_step_runs_as_printed(tiny, tmp_path):
    """train cloud -> train edge -> export -> verify -> check, each command taken from the previous one's 'next:'
    line and run through the console script from a shell-like argv, as a user pastes it."""
    import shlex

    cfg = tmp_path / "short.toml"
    cfg.write_text(
        tiny.config.read_text().replace("[export]", '[export]\nformats = ["onnx"]\nprecisions = ["fp32"]') + "\n"
    )
    exe = str(Path(sys.executable).with_name("hetero"))
    command = f"hetero train cloud --config {cfg} --out {tmp_path / 'run' / 'cloud'} --epochs 2"
    seen = []
    for _ in range(5):
        argv = shlex.split(command)
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, cwd=tmp_path)
        seen.append(argv[1])
        if argv[1] == "check":
            assert proc.returncode in (0, 1), proc.stderr[-1500:]  # a verdict, either way; never a usage error
            break
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-1500:]}"
        if argv[1] == "train":
            assert proc.stderr.startswith("split: ") or "\nsplit: " in proc.stderr
        command = next(line for line in proc.stdout.splitlines() if line.startswith("next: "))[6:].split("  #")[0]
    assert seen == ["train", "train", "export", "verify", "check"]


def test_split_is_shown_before_training_and_a_folder_space_is_named_after_it(tmp_path, capsys):
    from hetero.config import RunConfig, from_dict, space_name

    assert main(["split", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["heldout_classes"]) == 4 and doc["space_name"] == "digits"
    photos = tmp_path / "my_photos"
    cfg = from_dict(RunConfig, {"data": {"dataset": "folder", "path": str(photos)}})
    assert space_name(cfg) == "my_photos"
    manifest = from_dict(RunConfig, {"data": {"dataset": "folder", "path": str(tmp_path / "shop.csv")}})
    assert space_name(manifest) == "shop"
    named = from_dict(RunConfig, {"data": {"dataset": "folder", "path": str(photos)}, "space": {"name": "x"}})
    assert space_name(named) == "x"


def _protocol_gaps(module) -> list[str]:
    from hetero.export.formats import FormatModule

    wanted = [n for n in vars(FormatModule) if not n.startswith("_")] + list(FormatModule.__annotations__)
    return [n for n in wanted if not hasattr(module, n) or (n.islower() and not callable(getattr(module, n)))]


def test_every_format_module_implements_the_protocol():
    """The exporters are called through FormatModule, never probed with hasattr: each provides all of it."""
    import types

    from hetero.export.artifact import FORMAT_MODULES
    from hetero.kinds import RUNTIME_OF, Format, Precision

    assert set(FORMAT_MODULES) == set(Format) == set(RUNTIME_OF)
    for fmt, module in FORMAT_MODULES.items():
        assert _protocol_gaps(module) == [], fmt
    assert _protocol_gaps(types.SimpleNamespace(FILE="x", MIXED_PRECISION=False, build=print)) == [
        "runner", "runtime_version", "inspect"
    ]  # fmt: skip
    assert Precision("int8").quantised and not Precision.FP16.quantised and Precision.INT8W == "int8w"


def test_the_guides_link_only_to_what_exists_and_every_result_is_indexed():
    import re

    repo = Path(__file__).resolve().parents[1]
    pages = [repo / "README.md", *(repo / "docs").glob("*.md"), repo / "benchmarks" / "results" / "README.md"]
    broken = [
        (page.name, link)
        for page in pages
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text())
        if not link.startswith("http") and not (page.parent / link).exists()
    ]
    assert not broken, broken
    index = (repo / "benchmarks" / "results" / "README.md").read_text()
    results = sorted(p.name for p in (repo / "benchmarks" / "results").glob("*.md") if p.name != "README.md")
    assert [r for r in results if f"]({r})" not in index] == []


def test_json_file_output_never_takes_a_commands_json_input():
    """`--json X.json` names the output file, except for commands whose inputs are JSON files (report, sign), where
    it stays the switch: the input is read, never overwritten."""
    from hetero.cli.common import json_argv

    assert json_argv(["check", "--report", "r.json", "--json", "out.json"])[-3:] == [
        "--json",
        "--json-file",
        "out.json",
    ]
    assert json_argv(["sign", "--json", "runs/report.json", "--key", "k"]) == [
        "sign", "--json", "runs/report.json", "--key", "k"
    ]  # fmt: skip
    assert json_argv(["report", "--json", "bench.json", "--out", "p"])[:3] == ["report", "--json", "bench.json"]
    assert json_argv(["report", "bench.json", "--json=plots.json"])[-2:] == ["--json-file", "plots.json"]


def test_a_json_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    assert main(["env", f"--json={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "is a directory" in err and len(err.strip().splitlines()) == 1
