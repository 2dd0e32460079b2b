"""The pieces of ``--baseline`` and ``--fail-above`` on hand-written bench JSON: reading old and
new files, pairing rows, the speed-ups over a baseline's Keras, the gate, and the tables.
No timing is measured here."""

from __future__ import annotations

import json

import pytest

from keras_edge.benchmarks import baseline, machine, report
from keras_edge.runtime.errors import UsageError

WORKSTATION = {
    "cpu": "Workstation CPU",
    "cores": 16,
    "platform": "Linux-x86_64",
    "python": "3.11.7",
    # A file written before --threads took a list, when absent packages read "absent".
    "versions": {"onnxruntime": "1.32.0", "ai-edge-litert": "absent", "tensorflow": "2.21.0"},
}
DEVICE = {
    "cpu": "Cortex-A76",
    "cores": 4,
    "os": "Linux-aarch64",
    "platform": "Linux-aarch64",
    "python": "3.11.2",
    "versions": {"keras-edge": "0.2.0", "onnxruntime": None, "ai-edge-litert": "2.3.0"},
}


def row(target, batch, p50, threads=None):
    r = {"target": target, "batch_size": batch, "p50_us": p50}
    return r if threads is None else {**r, "threads": threads}


def old_file(tmp_path):
    """An old-format JSON: int config threads, rows without a threads key, Keras included."""
    data = {
        "machine": WORKSTATION,
        "config": {"threads": 1},
        "results": [
            row("keras-predict", 1, 40_000.0),
            row("keras-tf-function", 1, 300.0),
            row("tflite-fp32", 1, 4.0),
            row("tflite-fp32:raw", 1, 2.0),
        ],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    return path


def new_data():
    return {
        "machine": DEVICE,
        "config": {"threads": [1, 2], "seconds": 0.05, "data": "N(0, 1), seed 0"},
        "results": [
            row("tflite-fp32", 1, 8.0, threads=1),
            row("tflite-fp32", 1, 5.0, threads=2),
            row("tflite-fp32:raw", 1, 2.0, threads=1),
        ],
        "startup": [],
        "variants": [],
    }


def test_old_rows_take_config_threads_and_pair_with_new(tmp_path):
    old = baseline.read(old_file(tmp_path))
    assert {r["threads"] for r in old["results"]} == {1}
    cmp = baseline.compare(new_data(), old, "old.json")
    assert cmp["file"] == "old.json" and cmp["machine"] == WORKSTATION
    rows = {(r["target"], r["batch_size"], r["threads"]): r for r in cmp["rows"]}
    for r in cmp["rows"]:
        assert set(r) == {"target", "batch_size", "threads", "baseline_p50_us", "p50_us", "ratio"}
    assert rows["tflite-fp32", 1, 1]["ratio"] == 2.0  # new / old
    assert rows["tflite-fp32:raw", 1, 1]["ratio"] == 1.0
    assert rows["tflite-fp32", 1, 2]["baseline_p50_us"] is None  # only in this run
    keras = rows["keras-predict", 1, 1]  # only in the baseline: shown, new side empty
    assert keras["p50_us"] is None and keras["ratio"] is None
    speedups = {(s["target"], s["threads"], s["over"]): s["speedup"] for s in cmp["speedups"]}
    assert speedups == {
        ("tflite-fp32", 1, "keras-predict"): 5_000.0,
        ("tflite-fp32", 1, "keras-tf-function"): 37.5,
        ("tflite-fp32", 2, "keras-predict"): 8_000.0,
        ("tflite-fp32", 2, "keras-tf-function"): 60.0,
    }  # runtime targets only: no :raw


def test_gate_lists_each_regression(tmp_path):
    cmp = baseline.compare(new_data(), baseline.read(old_file(tmp_path)), "old.json")
    assert baseline.regressions(cmp, 2.5) == []
    regressed = baseline.regressions(cmp, 1.5)
    assert [(r["target"], r["threads"]) for r in regressed] == [("tflite-fp32", 1)]
    message = baseline.gate_message(regressed, 1.5, "old.json")
    assert "tflite-fp32 batch 1 threads 1: 4.0 us -> 8.0 us (2.000x)" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such file"),
        ("not json", "invalid JSON"),
        ("[1, 2]", "a JSON list"),
        ('{"summary": {}}', r"without machine \(dict\), config \(dict\), results \(list\)"),
        ('{"machine": {}, "config": {}, "results": [{"target": "a"}]}', r"results\[0\]"),
        (
            '{"machine": {}, "config": {}, "results": [{"target": "a", "batch_size": 1, "p50_us": 0}]}',
            r"results\[0\]",
        ),
    ],
)
def test_baseline_that_is_not_a_bench_json_is_refused(tmp_path, content, match):
    path = tmp_path / "other.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=f"other.json.*written by 'keras-edge bench --json'.*{match}"):
        baseline.read(path)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "fast"])
def test_fail_above_must_be_a_positive_number(text):
    with pytest.raises(UsageError, match=f"Expected --fail-above to be a number > 0.*got '{text}'"):
        baseline.fail_above(text, has_baseline=True)


def test_fail_above_needs_a_baseline():
    assert baseline.fail_above(None, has_baseline=False) is None
    assert baseline.fail_above("1.25", has_baseline=True) == 1.25
    with pytest.raises(UsageError, match=r"expected --baseline OLD\.json too"):
        baseline.fail_above("1.25", has_baseline=False)


def test_report_names_both_machines_and_flags_regressions(tmp_path):
    data = new_data()
    for r in data["results"]:
        r.update(p90_us=1.0, p99_us=1.0, mean_us=1.0, std_us=0.0, n=3, throughput_per_s=1.0)
    data["baseline"] = {
        **baseline.compare(data, baseline.read(old_file(tmp_path)), "old.json"),
        "fail_above": 1.5,
    }
    for markdown in (False, True):
        text = report.render(data, markdown=markdown)
        assert "Compared with baseline old.json" in text
        assert (
            "baseline: Workstation CPU, 16 cores, Linux-x86_64, onnxruntime 1.32.0, tensorflow 2.21.0"
            in text
        )
        assert "this run: Cortex-A76, 4 cores, Linux-aarch64, ai-edge-litert 2.3.0" in text
        assert "REGRESSED" in text and "vs baseline keras-predict" in text
    assert "| tflite-fp32 | 1 | 1 | 4.0 | 8.0 | 2.000 | REGRESSED |" in report.render(
        data, markdown=True
    )


def test_machine_records_engines_and_no_absent_tensorflow():
    m = machine.describe()
    assert {"cpu", "cores", "os", "platform", "python", "versions"} <= set(m)
    assert {"keras-edge", "numpy", "onnxruntime", "ai-edge-litert"} <= set(m["versions"])
    assert m["versions"]["numpy"] and m["versions"]["keras-edge"]
    assert all(v is not None for k, v in m["versions"].items() if k in ("tensorflow", "keras"))


def test_ratios_use_the_first_thread_count():
    data = {
        "config": {"threads": [2, 1]},
        "results": [
            row("tflite-fp32", 1, 3.0, threads=2),
            row("tflite-fp32:raw", 1, 2.0, threads=2),
            row("tflite-fp32", 1, 30.0, threads=1),  # ignored: not the first thread count
            row("tflite-fp32:raw", 1, 1.0, threads=1),
        ],
        "startup": [],
        "variants": [{"id": "tflite-fp32"}],
    }
    (check,) = report.ratios(data)
    assert check["check"] == "batch 1: tflite-fp32 runtime / bare engine call"
    assert check["value"] == 1.5
