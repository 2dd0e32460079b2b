"""The streaming benchmark, run for real on a few thousand rows: it runs every case, and its
JSON and table have every figure. Benchmarks are not tests: nothing here asserts a timing."""

from __future__ import annotations

import json

from keras_edge import cli
from keras_edge.benchmarks import stream_bench


def test_stream_bench_runs_every_case(fp32_export, tmp_path):
    out_json, out_md = tmp_path / "stream.json", tmp_path / "stream.md"
    args = ["--rows", "5000", "--chunk-size", "1024", "--work", str(tmp_path), "--json", str(out_json),
            "--markdown", str(out_md)]  # fmt: skip
    code = cli.main(["bench-stream", str(fp32_export), *args])
    assert code == 0
    report = json.loads(out_json.read_text())
    assert (report["chunk_size"], report["threads"], report["variant"]) == (1024, 1, "tflite-fp32")
    cases = {(r["input"], r["output"]) for r in report["results"]}
    assert cases == set(stream_bench.CASES)
    for r in report["results"]:
        assert r["rows"] == 5000 and r["peak_rss_mb"] > 0
        assert r["rows_per_s"] > 0 and r["loop_rows_per_s"] > 0
        assert r["ratio"] == r["rows_per_s"] / r["bare_rows_per_s"]
    assert report["machine"]["cores"] and "| 5,000 | npy | parquet |" in out_md.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.json", "stream.md"]  # inputs removed
