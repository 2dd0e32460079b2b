"""``export()`` from Python changes no process-wide state: the working directory, file
descriptors 1 and 2, the environment and the warning filters are as it found them, and another
thread's output, written throughout, all reaches the terminal (none of it vanishes into a
converter log)."""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np

from keras_edge import exporter


def _identity(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def test_export_leaves_the_process_as_it_found_it(seed_dir, seed_val, tmp_path, capfd):
    with np.load(seed_dir / "calib.npz") as data:
        calib = data["x"]
    work = tmp_path / "work"
    work.mkdir()
    os.chdir(work)  # the test's own working directory (pytest restores nothing: see finally)
    # A first export imports TensorFlow, tf2onnx and ONNX Runtime, which add warning filters of
    # their own when imported; the second must change nothing at all.
    exporter.export(seed_dir / "seed.keras", tmp_path / "warm", quantize="int8,fp16",
                    calibration=calib, validation=seed_val)  # fmt: skip
    before = (os.getcwd(), _identity(1), _identity(2), dict(os.environ), list(warnings.filters))
    stop, written, seen = threading.Event(), [], set()

    def chatter() -> None:
        i = 0
        while not stop.is_set():
            line = f"other thread line {i}\n"
            os.write(1, line.encode())
            written.append(line.strip())
            seen.add((_identity(1), _identity(2), os.getcwd()))
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        result = exporter.export(
            seed_dir / "seed.keras", tmp_path / "dist", quantize="int8,fp16",
            calibration=calib, validation=seed_val,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
        os.chdir(seed_dir)
    assert result.passed and len(result.variants) == 6
    after = (str(work), _identity(1), _identity(2), dict(os.environ), list(warnings.filters))
    assert before == after
    assert seen == {(before[1], before[2], str(work))}  # never another fd or folder meanwhile
    assert len(written) > 100
    out = capfd.readouterr().out
    assert all(line in out for line in written)  # every line reached fd 1
    assert not list(work.iterdir())  # no converter left a file in the working directory


CHILD = """
import json, os, sys, warnings
import numpy as np
import tensorflow, keras, tf2onnx.convert, onnx, onnxruntime.quantization, onnxconverter_common
import ai_edge_litert.interpreter, onnxruntime.tools.symbolic_shape_infer
# (tf2onnx.convert sets TF_CPP_MIN_LOG_LEVEL when imported; sympy adds a filter: theirs, not ours)
before = (dict(os.environ), [repr(f) for f in warnings.filters])
import keras_edge
from keras_edge import exporter
with np.load(sys.argv[1] + "/calib.npz") as c, np.load(sys.argv[1] + "/val.npz") as v:
    result = exporter.export(sys.argv[1] + "/seed.keras", sys.argv[2], quantize="int8,fp16",
                             calibration=c["x"], validation=(v["x"], v["y"]))
after = (dict(os.environ), [repr(f) for f in warnings.filters])
added = sorted(set(after[0].items()) - set(before[0].items()))
removed = sorted(set(before[0].items()) - set(after[0].items()))
filters = [f for f in after[1] if f not in before[1]]
print(json.dumps({"passed": result.passed, "env": [added, removed], "filters": filters}))
"""


def test_importing_and_exporting_set_no_environment_variable_and_no_warning_filter(seed_dir, tmp_path):
    """In a fresh process, after TensorFlow and the converters are imported (they add warning
    filters of their own): importing keras_edge and exporting add nothing to the environment
    or the warning filters."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(seed_dir), str(tmp_path / "dist")],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"passed": True, "env": [[], []], "filters": []}
