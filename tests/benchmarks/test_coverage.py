"""The coverage benchmark, run for real on two cheap cases of the zoo and, with ``--update``, one
of the models people ship (a custom layer exported from its .py file): it writes a Markdown
table and a JSON with a row per case and a cell per variant, and each export's time and peak
memory, measured in a process of its own. Timings are never asserted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keras_edge import cli
from keras_edge.benchmarks import coverage, coverage_export

VARIANTS = [f"{f}-{p}" for f in ("tflite", "onnx") for p in ("fp32", "fp16", "dynamic", "int8")]
CELL = re.compile(
    r"^(passed \d+\.\d%(, \d+\.\dx)?(, \d+ float layers)?|FAILED \d+\.\d% \(.+\)|refused[ :].+)$"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("coverage")
    return _bench_coverage(folder, "mlp,multiclass"), folder


def _bench_coverage(folder: Path, only: str, *more: str) -> subprocess.CompletedProcess:
    args = ["--only", only, *more, "--seconds", "0.02", "--out", str(folder / "work")]
    args += ["--markdown", str(folder / "coverage.md"), "--json", str(folder / "coverage.json")]
    return subprocess.run(
        [sys.executable, "-m", "keras_edge", "bench-coverage", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _table_rows(markdown: str) -> list[list[str]]:
    """The coverage table's rows (header first), split on the pipes that are not escaped."""
    lines = [line for line in markdown.splitlines() if line.startswith("| case | `tflite-fp32`")]
    assert len(lines) == 1, markdown
    start = markdown.splitlines().index(lines[0])
    rows = []
    for line in markdown.splitlines()[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return [rows[0], *rows[2:]]  # without the |---| rule


def test_writes_a_row_per_case_and_a_cell_per_variant(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    markdown = (folder / "coverage.md").read_text(encoding="utf-8")
    assert coverage.COMMAND in markdown  # the command that regenerates it
    assert "cores" in markdown  # the machine
    header, *rows = _table_rows(markdown)
    assert header == ["case", *(f"`{v}`" for v in VARIANTS)]
    assert [row[0].split(":")[0] for row in rows] == ["`mlp`", "`multiclass`"]
    for row in rows:
        assert len(row) == 1 + len(VARIANTS)
        for cell in row[1:]:
            assert CELL.match(cell), cell
    assert "| `mlp`: " in proc.stdout and "| `multiclass`: " in proc.stdout  # printed too


def test_json_holds_every_figure(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((folder / "coverage.json").read_text(encoding="utf-8"))
    assert data["command"] == coverage.COMMAND and data["machine"]["cores"]
    assert data["variants"] == VARIANTS
    assert [c["name"] for c in data["cases"]] == ["mlp", "multiclass"]
    for case in data["cases"]:
        assert case["error"] is None and case["build_s"] > 0 and case["export_s"] > 0
        assert case["source"] == "keras-file" and case["export_process_s"] > case["export_s"]
        # The export process's peak, reset before export(): above what it held before the call.
        assert case["peak_method"] == coverage_export.PEAK_RESET
        assert case["peak_rss_mib"] > case["rss_before_mib"] > 50
        assert sorted(case["variants"]) == sorted(VARIANTS)
        for vid, v in case["variants"].items():
            assert v["status"] in ("passed", "failed", "refused"), (vid, v)
            assert CELL.match(v["cell"]), v["cell"]
            if v["status"] != "refused":
                assert 0.0 <= v["label_agreement"] <= 1.0 and v["p50_us"] > 0 and v["calls"] > 0
        for fmt in ("tflite", "onnx"):  # fp32 passes on these cases and is its own baseline
            fp32 = case["variants"][f"{fmt}-fp32"]
            assert fp32["status"] == "passed" and fp32["speedup_vs_fp32"] == 1.0
    assert (folder / "work" / "mlp" / "mlp.keras").is_file()
    assert (folder / "work" / "mlp" / "dist" / "manifest.json").is_file()


def test_markdown_gives_each_export_time_and_peak_memory(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((folder / "coverage.json").read_text(encoding="utf-8"))
    markdown = (folder / "coverage.md").read_text(encoding="utf-8")
    header = "| case | head | exported from | build + train (s) | export, 8 variants (s) | "
    assert header + "peak RSS in export (MiB) | RSS before export (MiB) |" in markdown
    for case in data["cases"]:
        cells = f"| {case['export_s']:.1f} | {case['peak_rss_mib']:.0f} | {case['rss_before_mib']:.0f} |"
        assert f"| `{case['name']}` | auto | keras-file | " in markdown and cells in markdown


def test_update_adds_a_custom_layer_case_and_keeps_the_other_rows(run, tmp_path):
    # One of the models people ship, run alone and merged into an earlier run's table: a model
    # with a registered custom layer, exported from its .keras file with custom_objects=[the
    # .py file] in a process that never imported it.
    proc, folder = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copy(folder / "coverage.json", tmp_path / "coverage.json")
    proc = _bench_coverage(tmp_path, "custom-layer", "--update")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "coverage.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in data["cases"]] == ["mlp", "multiclass", "custom-layer"]
    case = data["cases"][2]
    assert case["error"] is None and case["source"] == "keras-file+custom-objects"
    assert case["peak_rss_mib"] > case["rss_before_mib"] > 50 and case["export_s"] > 0
    for vid in ("tflite-fp32", "onnx-fp32"):
        assert case["variants"][vid]["status"] == "passed", case["variants"][vid]
    work = tmp_path / "work" / "custom-layer"
    manifest = json.loads((work / "dist" / "manifest.json").read_text(encoding="utf-8"))
    assert [c["source"] for c in manifest["model"]["custom_objects"]] == ["layers.py"]
    assert (work / "custom-layer.keras").is_file()
    markdown = (tmp_path / "coverage.md").read_text(encoding="utf-8")
    _, *rows = _table_rows(markdown)
    assert [row[0].split(":")[0] for row in rows] == ["`mlp`", "`multiclass`", "`custom-layer`"]
    assert "Rows `mlp`, `multiclass`: `keras-edge bench-coverage --only mlp,multiclass " in markdown
    assert "Rows `custom-layer`: `keras-edge bench-coverage --only custom-layer --update " in markdown


def test_update_needs_the_json_of_an_earlier_run(capsys, tmp_path):
    assert cli.main(["bench-coverage", "--only", "mlp", "--update"]) == 2
    assert "Expected --json F.json with --update" in capsys.readouterr().err
    missing = tmp_path / "none.json"
    assert cli.main(["bench-coverage", "--only", "mlp", "--update", "--json", str(missing)]) == 2
    assert f"Expected --update's --json {missing} to hold an earlier run" in capsys.readouterr().err


def test_merge_replaces_by_name_in_the_order_of_the_case_lists():
    earlier = [{"name": "transformer", "v": 1}, {"name": "mlp", "v": 1}, {"name": "gone", "v": 1}]
    merged = coverage.merge(earlier, [{"name": "transformer", "v": 2}, {"name": "cnn", "v": 2}])
    assert [(c["name"], c["v"]) for c in merged] == [
        ("mlp", 1), ("cnn", 2), ("transformer", 2), ("gone", 1),
    ]  # fmt: skip


def test_an_export_process_that_dies_is_recorded_not_raised(tmp_path):
    (tmp_path / coverage_export.JOB).write_text(json.dumps({"case": "mlp", "source": "telepathy"}))
    outcome = coverage_export.run_job(tmp_path)
    assert outcome.export_s is None and outcome.peak_rss_mib is None
    assert outcome.error.startswith("export process: exit 1: ")
    assert "Expected a job source from" in outcome.error and "'telepathy'" in outcome.error


def test_new_cases_are_known_to_only():
    assert coverage._cases("transformer,masked-bilstm,mlp") == ["transformer", "masked-bilstm", "mlp"]
    assert set(coverage_export.BUILDERS) >= {
        "dict-inputs", "three-heads", "uint8-pixels", "saved-model", "transformer",
        "masked-bilstm", "custom-layer", "subclassed", "concat-heads",
    }  # fmt: skip


def test_unknown_case_is_bad_usage(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench-coverage", "--only", "mlp,resnet9000"])
    assert info.value.code == 2
    assert "resnet9000" in capsys.readouterr().err


def test_a_case_the_export_refuses_is_refused_in_every_cell():
    # As a model the exporter cannot take is recorded: its own message, in every cell and in
    # the notes under the table.
    error = "UnsupportedModelError: Expected a model with exactly one input, got 2: ['a', 'b']"
    case = {"name": "two", "description": "two inputs", "error": error, "head": "auto"}
    data = {
        "command": coverage.COMMAND,
        "run": coverage.COMMAND,
        "machine": {"cpu": "cpu", "cores": 2},
        "seconds": 0.3,
        "cases": [coverage._refused_everywhere(case)],
    }
    markdown = coverage.markdown(data)
    _, row = _table_rows(markdown)
    assert row[1:] == [f"refused: {error}"] * len(VARIANTS)
    assert f"- `two`, every variant: {error}" in markdown
    assert "0 passed, 0 failed, 8 refused" in markdown


def test_percent_never_rounds_up_to_full_agreement():
    assert coverage.percent(1.0) == "100.0%"
    assert coverage.percent(0.9996) == "99.9%"
    assert coverage.percent(0.998) == "99.8%"
