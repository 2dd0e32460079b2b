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


def test_fresh_venv_without_tensorflow(fp32_export, labelled, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, f"{REPO}[onnx,litert]"], check=True, timeout=900, env={**os.environ, "PIP_NO_INPUT": "1"}
    )
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "tensorflow" not in freeze and "tf2onnx" not in freeze and "\nonnx==" not in freeze
    # cwd outside the repository: the installed wheel, not the source tree, is under test.
    report = _check(python, fp32_export, labelled, cwd=tmp_path)
    assert report.pop("heavy") == []
    assert all(v == 0 for v in report.values()), report
    cli = env_dir / "bin" / "keras-edge"
    proc = subprocess.run([str(cli), "inspect", str(fp32_export)], capture_output=True, text=True)
    assert proc.returncode == 0 and "onnx-fp32" in proc.stdout, proc.stderr
    samples = tmp_path / "s.npy"
    np.save(samples, np.array([[2.0, 0.0], [-1.0, 0.5]], np.float32))
    proc = subprocess.run(
        [str(cli), "predict", str(fp32_export), str(samples)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "probability,class"
    (tmp_path / "m.keras").write_bytes(b"")  # the file exists; the converter does not
    proc = subprocess.run(
        [str(cli), "export", "m.keras", "--out", "d"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and "pip install 'keras-edge[export]'" in proc.stderr, proc.stderr
