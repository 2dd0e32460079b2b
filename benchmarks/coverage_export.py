"""One coverage case's export, in a fresh Python process, timed and with its peak memory.

``keras-edge bench-coverage`` builds and trains a case, then :func:`write_job` writes what the
export needs into the case's folder: the model as the case says it reaches ``export()`` (a
``.keras`` file; a Keras 3 ``tf_saved_model`` folder; a ``.keras`` file and a copy of the
user's layer file beside it; nothing for a model object, which the export process builds
again from the same seed), the calibration and validation arrays, and ``job.json``.
:func:`run_job` then starts ``python -m keras_edge.benchmarks.coverage_export FOLDER``, which
imports TensorFlow and Keras, resets the process's peak-memory mark, calls
``keras_edge.exporter.export`` exactly as a user would (all 8 variants, calibration and
validation data, the case's thresholds, ``custom_objects=[file]``), and writes ``result.json``.

What the numbers mean:

- ``export_s``: wall time of the ``export()`` call. TensorFlow and Keras are imported before
  it and not counted; the converters (tf2onnx, ONNX, ONNX Runtime, LiteRT) and loading the
  model from its file or folder are counted.
- ``peak_rss_mib``: the peak resident memory (VmHWM) of the export process during the
  ``export()`` call, in MiB. On Linux the mark is reset just before the call (``echo 5 >
  /proc/self/clear_refs``), so it is the export's peak, on top of ``rss_before_mib``, the
  process's resident memory at that moment (Python, NumPy, TensorFlow and Keras; for a model
  object, the model trained in that process too). Where the reset is not allowed the figure is
  ``ru_maxrss`` of the whole process, and ``peak_method`` says so.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.benchmarks import zoo, zoo_shipped
from keras_edge.benchmarks.zoo_data import SOURCES, Case, Inputs, Labels
from keras_edge.runtime.errors import UsageError, plain

logger = logging.getLogger(__name__)

# Every case bench-coverage knows: the zoo's, then the models people ship (issue 21).
BUILDERS = {**zoo.CASES, **zoo_shipped.CASES}
_SHARED = set(zoo.CASES) & set(zoo_shipped.CASES)
if _SHARED:  # pragma: no cover - a typo in a case list
    raise RuntimeError(f"Expected zoo and zoo_shipped to name cases apart, got both naming {_SHARED}")

MODULE = "keras_edge.benchmarks.coverage_export"  # run with python -m
JOB = "job.json"
RESULT = "result.json"
TIMEOUT_S = 1800  # one export, whatever the model; past it the case is recorded as failed
STDERR_TAIL = 400  # characters of a crashed export process's stderr kept in the record
MIB = 1024 * 1024
PEAK_RESET = "VmHWM, reset before export()"
PEAK_WHOLE = "ru_maxrss of the whole export process"


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``: the exporter's own words, on one line."""
    text = plain(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else '(no message)'}"


def build(name: str) -> Case:
    """Build and train the case ``name``, from the zoo or from the models people ship."""
    if name not in BUILDERS:
        raise UsageError(f"Expected a coverage case from {list(BUILDERS)}, got {name!r}")
    return zoo.build(name) if name in zoo.CASES else zoo_shipped.build(name)


@dataclass(frozen=True)
class Outcome:
    """What the export process reported: its timings, memory and the export's error, if any."""

    export_s: float | None
    peak_rss_mib: float | None
    rss_before_mib: float | None
    peak_method: str | None
    error: str | None
    process_s: float


# -- the coverage side: write the job, run the process, read its result ----------------------


def _save_arrays(path: Path, value: Inputs | Labels) -> bool:
    """``value`` into ``path`` (``.npz``): one array per name for a dict, else ``x``; True for
    a dict."""
    if isinstance(value, dict):
        np.savez(path, **{k: np.asarray(v) for k, v in value.items()})
        return True
    np.savez(path, x=np.asarray(value))
    return False


def write_job(case: Case, folder: Path) -> Path | None:
    """The model as the case reaches ``export()``, its data and ``job.json`` into ``folder``;
    returns the model file or folder written (None for a model object)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path: Path | None = None
    custom: list[str] | None = None
    if case.source in ("keras-file", "keras-file+custom-objects"):
        model_path = folder / f"{case.name}.keras"
        case.model.save(model_path)
    elif case.source == "saved-model":
        model_path = folder / "saved_model"
        shutil.rmtree(model_path, ignore_errors=True)
        case.model.export(model_path, format="tf_saved_model", verbose=False)
    if case.custom_code is not None:  # the user's layer file, beside the model as they keep it
        module = sys.modules.get(case.custom_code)
        source = getattr(module, "__file__", None)
        if source is None:
            raise UsageError(
                f"Expected the custom-objects module {case.custom_code!r} of case {case.name!r} "
                f"imported from a .py file, got {module!r}"
            )
        custom = [str(Path(shutil.copyfile(source, folder / "layers.py")).resolve())]
    job = {
        "case": case.name,
        "source": case.source,
        "model": None if model_path is None else str(model_path.resolve()),
        "custom_objects": custom,
        "head": case.head,
        "threshold": case.threshold,
        "dist": str((folder / "dist").resolve()),
        "x_dict": _save_arrays(folder / "calib.npz", case.x_calib),
        "y_dict": _save_arrays(folder / "val_y.npz", case.y_val),
    }
    _save_arrays(folder / "val_x.npz", case.x_val)
    (folder / JOB).write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
    return model_path


def run_job(folder: Path, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run the export of ``folder``'s job in a fresh process; a process that crashes or
    times out is an error in the outcome, never an exception."""
    (folder / RESULT).unlink(missing_ok=True)
    env = {  # as the keras-edge command line sets them for a command that converts
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", MODULE, str(folder.resolve())],
            cwd=folder,  # files a converter leaves in the working directory stay in the case's
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return Outcome(None, None, None, None, f"export process: ran past {timeout_s:g} s",
                       time.perf_counter() - started)  # fmt: skip
    elapsed = time.perf_counter() - started
    result = folder / RESULT
    if proc.returncode != 0 or not result.is_file():
        tail = plain(proc.stderr).strip()[-STDERR_TAIL:].replace("\n", " / ")
        error = f"export process: exit {proc.returncode}: {tail or '(no output)'}"
        return Outcome(None, None, None, None, error, elapsed)
    data = json.loads(result.read_text(encoding="utf-8"))
    return Outcome(data["export_s"], data["peak_rss_mib"], data["rss_before_mib"],
                   data["peak_method"], data["error"], elapsed)  # fmt: skip


# -- the export process -----------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """``field`` (VmRSS, VmHWM) of /proc/self/status in KiB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak resident memory to its current size (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        logger.info("cannot reset the peak memory mark (%s): reporting the whole process's", exc)
        return False
    return _status_kib("VmHWM") is not None


def _maxrss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def _load_arrays(path: Path, as_dict: bool) -> Any:
    with np.load(path) as data:
        return {k: data[k] for k in data.files} if as_dict else data["x"]


def export_job(folder: Path) -> dict[str, Any]:
    """The export of ``folder``'s job, in this process: timings, memory and its error."""
    from keras_edge import exporter  # the exporter, and below TensorFlow: only in this process

    job = json.loads((folder / JOB).read_text(encoding="utf-8"))
    if job["source"] not in SOURCES:
        raise UsageError(f"Expected a job source from {SOURCES}, got {job['source']!r}")
    exporter.import_tensorflow()
    exporter.import_keras()
    model: Any = job["model"]
    if job["source"] == "object":  # a model object cannot cross processes: built again, seeded
        model = build(job["case"]).model
    calib = _load_arrays(folder / "calib.npz", job["x_dict"])
    x_val = _load_arrays(folder / "val_x.npz", job["x_dict"])
    y_val = _load_arrays(folder / "val_y.npz", job["y_dict"])
    shutil.rmtree(job["dist"], ignore_errors=True)  # no stale artifacts of an earlier run
    reset = _reset_peak()
    before = (_status_kib("VmRSS") or 0) / 1024
    error = None
    started = time.perf_counter()
    try:
        exporter.export(
            model,
            job["dist"],
            quantize="all",
            calibration=calib,
            validation=(x_val, y_val),
            head=job["head"],
            threshold=job["threshold"],
            custom_objects=job["custom_objects"],
        )
    except Exception as exc:  # UnsupportedModelError and friends, or a converter's fault
        error = one_line(exc)
        logger.info("export of %s raised %s", job["case"], error, exc_info=True)
    export_s = time.perf_counter() - started
    hwm = _status_kib("VmHWM") if reset else None
    return {
        "case": job["case"],
        "export_s": export_s,
        "peak_rss_mib": hwm / 1024 if hwm is not None else _maxrss_mib(),
        "rss_before_mib": before or None,
        "peak_method": PEAK_RESET if hwm is not None else PEAK_WHOLE,
        "error": error,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m keras_edge.benchmarks.coverage_export FOLDER``: run the job, write the result."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / JOB).is_file():
        sys.stderr.write(f"usage: python -m {MODULE} FOLDER (holding {JOB}); got {args}\n")
        return 2
    folder = Path(args[0])
    result = export_job(folder)
    (folder / RESULT).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
