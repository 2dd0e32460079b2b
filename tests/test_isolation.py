"""The runtime without TensorFlow: in a subprocess, and in a fresh virtual environment that
holds only numpy, onnxruntime, ai-edge-litert and keras-edge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.test_layers import foreign, run_cli_child

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx")

CHECK = textwrap.dedent(
    """
    import json, subprocess, sys
    import numpy as np
    from keras_edge import runtime

    folder, data = sys.argv[1], sys.argv[2]
    with np.load(data) as d:
        x, expected = d["x"], d["expected"]
    report = {}
    for variant in ("tflite-fp32", "onnx-fp32"):
        clf = runtime.load(folder, variant=variant)
        for batch in (1, 7, 4096):
            got = np.concatenate([clf.predict(x[i:i + batch]) for i in range(0, 4096, batch)])
            report[f"{variant}@{batch}"] = int((got != expected).sum())
    report["heavy"] = sorted(m for m in {HEAVY} if m in sys.modules)
    print(json.dumps(report))
    """
).replace("{HEAVY}", repr(HEAVY))


@pytest.fixture(scope="module")
def labelled(seed_model, wide_inputs, tmp_path_factory) -> Path:
    x = wide_inputs[:4096]
    expected = (seed_model.predict(x, verbose=0)[:, 0] > 0.5).astype(np.int64)
    path = tmp_path_factory.mktemp("labelled") / "data.npz"
    np.savez(path, x=x, expected=expected)
    return path


def _check(python: str, folder: Path, data: Path, cwd: Path) -> dict:
    proc = subprocess.run(
        [python, "-c", CHECK, str(folder), str(data)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_runtime_loads_no_heavy_module(fp32_export, labelled, tmp_path):
    # Here TensorFlow is installed: the runtime must still not import it, even as a fallback.
    report = _check(sys.executable, fp32_export, labelled, cwd=REPO)
    assert report.pop("heavy") == []
    assert all(v == 0 for v in report.values()), report


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The keras-edge wheel, built once from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
         "-w", str(out), str(REPO)],
        check=True,
        timeout=900,
    )  # fmt: skip
    return next(out.glob("keras_edge-*.whl"))


ENGINE = {"onnx": ("onnx-fp32", "onnxruntime"), "litert": ("tflite-fp32", "ai-edge-litert")}


@pytest.mark.parametrize("extra", ["onnx", "litert"])
def test_device_venv_with_one_engine(extra, wheel, seed_all, labelled, two_inputs, tmp_path):
    """numpy, one engine and the wheel: predict, inspect, verify and bench all work, and none
    of them imports TensorFlow, exporter code or (but bench) benchmarks code."""
    folder = seed_all[0]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[{extra}]"],
        check=True,
        timeout=900,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    installed = {line.split("==")[0].lower() for line in freeze.splitlines()}
    variant, engine = ENGINE[extra]
    unwanted = {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "matplotlib", "psutil"}
    other_engine = "onnxruntime" if extra == "litert" else "ai-edge-litert"
    assert engine in installed and not installed & (unwanted | {other_engine}), installed
    # The installed wheel under test, from outside the source tree; labels equal Keras's.
    check = CHECK.replace('("tflite-fp32", "onnx-fp32")', f"({variant!r},)")
    proc = subprocess.run([python, "-c", check, str(folder), str(labelled)], capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report.pop("heavy") == [] and all(v == 0 for v in report.values()), report

    samples = tmp_path / "s.npy"
    np.save(samples, np.array([[2.0, 0.0], [-1.0, 0.5]], np.float32))
    bench_json = tmp_path / "bench.json"
    commands = {
        "predict": ["predict", str(folder), str(samples)],
        "inspect": ["inspect", str(folder)],
        "verify": ["verify", str(folder)],
        "bench": ["bench", str(folder), "--batch-sizes", "1,32", "--seconds", "0.2",
                  "--json", str(bench_json)],
    }  # fmt: skip
    outputs = {}
    for name, args in commands.items():
        code, out, err, modules = run_cli_child(*args, cwd=tmp_path, python=python)
        assert code == 0, (name, err)
        assert modules and foreign(modules, "keras_edge.exporter") == [], name
        if name != "bench":
            assert not [m for m in modules if m.startswith("keras_edge.benchmarks")], name
        assert not [m for m in modules if m.split(".")[0] in ("pyarrow", "ray", "pandas")], name
        outputs[name] = out
    assert outputs["predict"].splitlines()[0] == "probability,class,label"
    # Parquet and Ray are extras, never on a device: asked for, the error names the extra.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [0.5], "b": [1.0]}), tmp_path / "s.parquet")
    for extra_args, name in (([], "batch"), (["--ray", "--output", str(tmp_path / "o")], "ray")):
        code, _, err, _ = run_cli_child("predict", str(folder), str(tmp_path / "s.parquet"), *extra_args,
                                        cwd=tmp_path, python=python)  # fmt: skip
        assert code == 2 and f"pip install 'keras-edge[{name}]'" in err, err
    assert "passed" in outputs["verify"] and "skipped" in outputs["verify"]
    bench = json.loads(bench_json.read_text())
    timed = {r["target"] for r in bench["results"]}
    fmt = variant.split("-")[0]
    assert {v for v in seed_all[1].variants if v.startswith(fmt)} <= timed
    assert not [t for t in timed if t.startswith("keras-") or not t.startswith(fmt)], timed
    # A model with two named inputs: an npz with one array per input, labels equal Keras's.
    model, x, two_folder, _ = two_inputs
    np.savez(tmp_path / "two.npz", **{k: v[:50] for k, v in x.items()})
    code, out, err, modules = run_cli_child(
        "predict", str(two_folder), str(tmp_path / "two.npz"), "--variant", variant,
        cwd=tmp_path, python=python,
    )  # fmt: skip
    assert code == 0, err
    got = [int(line.split(",")[1]) for line in out.strip().splitlines()[1:]]
    keras_p = model.predict([x["numeric"][:50], x["image"][:50]], verbose=0)[:, 0]
    assert got == (keras_p > 0.5).astype(int).tolist()
    # The console script itself, and an export where the converters are missing: exit 2.
    cli = env_dir / "bin" / "keras-edge"
    proc = subprocess.run([str(cli), "verify", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "m.keras").write_bytes(b"")  # the file exists; the converter does not
    proc = subprocess.run(
        [str(cli), "export", "m.keras", "--out", "d"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and "pip install 'keras-edge[export]'" in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists()
