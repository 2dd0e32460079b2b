"""Start-up of one target, measured in a fresh process: import + load, first call, peak RSS.

:func:`measure_startup` starts ``python -c CHILD TARGET FOLDER [--keras MODEL] [--threads N]``,
which prints one JSON line (``--keras`` is for the Keras targets only). The clock starts when
this module is imported, before the target's engine and TensorFlow, so every target pays for its
own imports: TensorFlow for the Keras targets, one engine for the others.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def _peak_rss_mb() -> float:
    """This process's peak resident set. On Linux, VmHWM: ``ru_maxrss`` survives ``exec`` and
    would report the parent's peak (the benchmark process, TensorFlow loaded) for every child."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# The fresh process of one start-up measurement: python -c CHILD TARGET FOLDER [OPTIONS].
CHILD = "import sys\nfrom keras_edge.benchmarks.startup import child\nsys.exit(child(sys.argv[1:]))\n"
# Modules a runtime target must not load: the converter stack and the exporter.
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "keras_edge.exporter")


def _child(
    target: str,
    folder: str,
    keras_model: str | None,
    threads: int | None,
    custom_objects: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load ``target``, call it once on one sample; the figures since this module's import."""
    if target.startswith("keras-export-"):
        # Keras's own exports are the per-call comparison only: their start-up is the engine's.
        raise SystemExit(f"no start-up figures for {target}: it is timed per call only")
    if target.startswith("keras-"):
        call, shape = _keras_call(target, keras_model, threads, custom_objects)
        convert = None
    else:
        call, convert, shape = _runtime_call(target, folder, threads)
    import numpy as np

    loaded = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    if convert is not None:
        x = convert(x)
    t0 = time.perf_counter_ns()
    call(x)
    first_ns = time.perf_counter_ns() - t0
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    return {
        "target": target,
        "load_s": loaded - T0,
        "first_call_us": first_ns / 1e3,
        "peak_rss_mb": _peak_rss_mb(),
        "heavy_modules": heavy,
    }


def _keras_call(
    target: str, keras_model: str | None, threads: int | None, custom_objects: tuple[str, ...] = ()
) -> tuple[Callable[[Any], Any], tuple[int, ...]]:
    """The Keras target's call and its input's feature shape, loaded with TensorFlow and Keras
    directly, as a user of the Keras model would: the figure is what TensorFlow + Keras cost,
    not the exporter's wrappers. The user code the model needs (``custom_objects``: .py files
    or module names) is imported first, as the user's own program would, and counted."""
    if keras_model is None:
        raise SystemExit(f"start-up of {target} needs --keras MODEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from keras_edge.benchmarks.targets import limit_tensorflow_threads

    limit_tensorflow_threads(tf, threads)
    import keras

    objects: dict[str, Any] = {}
    if custom_objects:
        from keras_edge.exporter import import_custom_objects

        objects = import_custom_objects(list(custom_objects))
    model = keras.models.load_model(keras_model, compile=False, custom_objects=objects or None)
    if target == "keras-predict":
        call = lambda x: model.predict(x, verbose=0)  # noqa: E731
    elif target == "keras-predict-on-batch":
        call = model.predict_on_batch
    else:
        fn = tf.function(lambda x: model(x, training=False))
        call = lambda x: fn(x).numpy()  # noqa: E731
    return call, tuple(int(d) for d in model.inputs[0].shape[1:])


def _runtime_call(
    target: str, folder: str, threads: int | None
) -> tuple[Callable[[Any], Any], Callable[[Any], Any] | None, tuple[int, ...]]:
    """A variant's ``predict`` (``VARIANT``) or bare engine call (``VARIANT:raw``), the input
    transform of the bare call (None for ``predict``), and the input's feature shape."""
    from keras_edge import runtime

    variant = target.removesuffix(":raw")
    if target.endswith(":raw"):
        from keras_edge.benchmarks.targets import bare_call
        from keras_edge.runtime.engines import make_engine
        from keras_edge.runtime.loading import read_artifact

        manifest = runtime.Manifest.read(folder)
        v = manifest.variants[variant]
        engine = make_engine(v.format, read_artifact(Path(folder), v), "cpu", threads)
        call, convert = bare_call(engine, 1)
        return call, convert, manifest.input.feature_shape
    clf = runtime.load(folder, variant=variant, threads=threads)
    return clf.predict, None, clf.manifest.input.feature_shape


def measure_startup(
    target: str,
    folder: Path,
    keras_model: Path | None,
    threads: int | None,
    timeout: float = 600,
    custom_objects: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one target's start-up in a fresh interpreter and return its figures; the Keras
    targets import ``custom_objects`` (.py files or module names) before loading the model."""
    cmd = [sys.executable, "-c", CHILD, target, str(folder)]
    if keras_model is not None:
        cmd += ["--keras", str(keras_model)]
    for source in custom_objects:
        cmd += ["--custom-objects", source]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"start-up of {target} failed: {proc.stderr.strip()[-500:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall  # interpreter start included
    result["threads"] = threads
    return result


def child(argv: list[str]) -> int:
    """The fresh process's entry: measure one target and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="keras-edge start-up child")
    parser.add_argument("target")
    parser.add_argument("folder")
    parser.add_argument("--keras", help="the Keras model (the keras-* targets only)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--custom-objects", action="append", default=[])
    args = parser.parse_args(argv)
    figures = _child(args.target, args.folder, args.keras, args.threads, tuple(args.custom_objects))
    print(json.dumps(figures))
    return 0
