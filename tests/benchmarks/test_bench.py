"""The benchmark CLI, run for real with a tiny budget: it works and its JSON has every key.
Benchmarks are not tests: nothing here asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_edge.benchmarks import report, timing

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
RESULT_KEYS = {
    "target",
    "batch_size",
    "p50_us",
    "p90_us",
    "p99_us",
    "mean_us",
    "std_us",
    "n",
    "throughput_per_s",
}
STARTUP_KEYS = {"target", "load_s", "first_call_us", "peak_rss_mb"}


def test_timing_loop_interleaves_and_counts_every_call():
    calls: list[tuple[str, int]] = []
    pool = [np.full(1, i) for i in range(5)]

    def recorder(name):
        return lambda x: calls.append((name, int(x[0])))

    targets = [timing.Timed(n, recorder(n), pool) for n in ("a", "b", "c")]
    samples = timing.measure(targets, seconds=0.0, min_samples=50, warmup=2, round_ms=0.001)
    timed_calls = calls[6:]  # after 2 warm-up calls per target
    for name in ("a", "b", "c"):
        got = [x for n, x in timed_calls if n == name]
        assert len(got) == len(samples[name]) >= 50  # every timed call is one sample, no more
        assert set(got) == set(range(5))  # cycles through distinct inputs
    firsts = [n for n, _ in timed_calls[:30]]
    assert len(set(firsts[:3])) == 3  # one chunk of each target before any repeats
    stats = timing.Stats.of(samples["a"], batch_size=4)
    assert stats.n == len(samples["a"]) and stats.p50_us <= stats.p99_us


@pytest.fixture(scope="module")
def bench_run(fp32_export, seed_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_edge.benchmarks",
            str(fp32_export),
            "--keras",
            str(seed_dir / "seed.keras"),
            "--batch-sizes",
            "1,4",
            "--seconds",
            "0.01",
            "--min-samples",
            "3",
            "--warmup",
            "1",
            "--data",
            str(seed_dir / "val.npz"),
            "--json",
            str(out / "b.json"),
            "--markdown",
            str(out / "b.md"),
            "--plot",
            str(out / "b.png"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_bench_json_has_every_key(bench_run):
    out, proc = bench_run
    data = json.loads((out / "b.json").read_text())
    assert {"machine", "config", "results", "startup", "variants"} <= set(data)
    assert {"cpu", "cores", "python", "versions"} <= set(data["machine"])
    targets = [
        "keras-predict",
        "keras-predict-on-batch",
        "keras-tf-function",
        "onnx-fp32",
        "onnx-fp32:raw",
        "tflite-fp32",
        "tflite-fp32:raw",
    ]
    assert sorted(data["config"]["targets"]) == sorted(targets)
    assert len(data["results"]) == len(targets) * 2
    for r in data["results"]:
        assert set(r) == RESULT_KEYS and r["n"] >= 3 and r["batch_size"] in (1, 4)
    assert sorted(s["target"] for s in data["startup"]) == sorted(targets)
    for s in data["startup"]:
        assert STARTUP_KEYS <= set(s)
        if not s["target"].startswith("keras-"):
            assert s["heavy_modules"] == []  # the runtime's start-up imports no TensorFlow
    assert {v["id"] for v in data["variants"]} == {"onnx-fp32", "tflite-fp32"}
    for v in data["variants"]:
        assert v["label_agreement"] == 1.0 and v["bytes"] > 0
    assert any(c["check"].startswith("batch 1:") for c in data["ratios"])
    assert "Batch size 1 " in proc.stdout and "Start-up" in proc.stdout


def test_bench_markdown_and_plot(bench_run):
    out, _ = bench_run
    markdown = (out / "b.md").read_text()
    assert "| target | p50 |" in markdown and "| tflite-fp32:raw |" in markdown
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--batch-sizes", "0"], "positive batch sizes"),
        (["--batch-sizes", "a"], "comma list of integers"),
        (["--variants", "onnx-int9"], "Unknown variant"),
        (["--seconds", "0"], "--seconds > 0"),
    ],
)
def test_bench_bad_usage_exits_2(fp32_export, seed_dir, args, match):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_edge",
            "bench",
            str(fp32_export),
            "--keras",
            str(seed_dir / "seed.keras"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr


def test_ratios_state_met_and_missed():
    def row(target, batch, p50):
        return {"target": target, "batch_size": batch, "p50_us": p50}

    data = {
        "results": [
            row("keras-predict", 1, 40_000.0),
            row("keras-tf-function", 1, 300.0),
            row("tflite-fp32", 1, 3.0),
            row("tflite-fp32:raw", 1, 2.0),
            row("onnx-fp32", 1, 12.0),
            row("onnx-fp32:raw", 1, 7.0),
        ],
        "startup": [
            {
                "target": "keras-predict-on-batch",
                "load_s": 3.0,
                "first_call_us": 30_000,
                "peak_rss_mb": 600,
            },
            {"target": "tflite-fp32", "load_s": 0.1, "first_call_us": 80, "peak_rss_mb": 47},
        ],
        "variants": [{"id": "tflite-fp32"}, {"id": "onnx-fp32"}],
    }
    checks = {c["check"]: c for c in report.ratios(data)}
    assert checks["batch 1: tflite-fp32 (runtime predict) vs keras-predict"]["met"]
    assert checks["batch 1: tflite-fp32 runtime / bare engine call"]["value"] == 1.5
    assert checks["batch 1: tflite-fp32 runtime / bare engine call"]["met"]
    assert not checks["batch 1: onnx-fp32 runtime / bare engine call"]["met"]  # 1.71 > 1.5
    assert any(c.startswith("peak RSS: tflite-fp32") and checks[c]["met"] for c in checks)
