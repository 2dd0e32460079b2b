"""The coverage benchmark, run for real on two cheap cases: it writes a Markdown table and a
JSON with a row per case and a cell per variant. Timings are never asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_edge import cli
from keras_edge.benchmarks import coverage

VARIANTS = [f"{f}-{p}" for f in ("tflite", "onnx") for p in ("fp32", "fp16", "dynamic", "int8")]
CELL = re.compile(
    r"^(passed \d+\.\d%(, \d+\.\dx)?(, \d+ float layers)?|FAILED \d+\.\d% \(.+\)|refused[ :].+)$"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("coverage")
    args = ["--only", "mlp,multiclass", "--seconds", "0.02", "--out", str(folder / "work")]
    args += ["--markdown", str(folder / "coverage.md"), "--json", str(folder / "coverage.json")]
    proc = subprocess.run(
        [sys.executable, "-m", "keras_edge", "bench-coverage", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, folder


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
