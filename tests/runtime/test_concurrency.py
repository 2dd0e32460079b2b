"""One classifier shared by many threads answers as a serial run does, on every variant; a
classifier pickles and works in a process pool; both engines default to one thread."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from keras_edge import runtime
from keras_edge.runtime.engines import DEFAULT_THREADS

THREADS = 16
CALLS = 1_600


def _batches(x: np.ndarray) -> list[np.ndarray]:
    """CALLS calls of 1 to 7 samples: every thread's interpreter also resizes as it goes."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 8, CALLS)
    starts = rng.integers(0, len(x) - 8, CALLS)
    return [x[s : s + k] for s, k in zip(starts, sizes, strict=True)]


@pytest.mark.parametrize(
    "vid", ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32", "onnx-int8"]
)
def test_one_classifier_shared_by_16_threads_answers_as_serial(seed_all, wide_inputs, vid):
    folder, _, _ = seed_all
    clf = runtime.load(folder, variant=vid)
    batches = _batches(wide_inputs)
    serial_labels = [clf.predict(b) for b in batches]
    serial_proba = [clf.predict_proba(b) for b in batches]
    with ThreadPoolExecutor(THREADS) as pool:
        labels = list(pool.map(clf.predict, batches))
        proba = list(pool.map(clf.predict_proba, batches))
        names = list(pool.map(clf.predict_labels, batches))
    for i, b in enumerate(batches):
        np.testing.assert_array_equal(labels[i], serial_labels[i], f"call {i}, batch {len(b)}")
        np.testing.assert_array_equal(proba[i], serial_proba[i], f"call {i}, batch {len(b)}")
        np.testing.assert_array_equal(names[i], np.asarray(clf.classes_)[serial_labels[i]])


def test_a_threshold_set_while_threads_predict_applies_whole(fp32_export, wide_inputs):
    clf = runtime.load(fp32_export, variant="tflite-fp32")
    batches = _batches(wide_inputs)
    expected = {t: [clf.predict_proba(b)[:, 0] > np.float32(t) for b in batches] for t in (0.3, 0.7)}

    def call(i: int) -> bool:
        if i % 100 == 0:
            clf.threshold = 0.3 if (i // 100) % 2 else 0.7
        got = clf.predict(batches[i]).astype(bool)
        return any(np.array_equal(got, expected[t][i]) for t in expected)

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(call, range(len(batches))))


def _score(clf: runtime.Classifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, object, dict]:
    """In the worker: the decisions, and a batch as Ray, Spark or Dask would hand it over."""
    batch = clf.score_batch({"a": x[:, 0], "b": x[:, 1]})
    return clf.predict(x), clf.predict_proba(x), clf.threshold, batch


@pytest.mark.parametrize("vid", ["tflite-int8", "onnx-fp32"])
def test_a_pickled_classifier_works_in_a_process_pool(seed_all, wide_inputs, vid):
    folder, _, _ = seed_all
    clf = runtime.load(folder, variant=vid)
    clf.threshold = 0.35  # travels with it
    again = pickle.loads(pickle.dumps(clf))
    assert (again.variant, again.threshold, again.device) == (vid, 0.35, "cpu")
    np.testing.assert_array_equal(again.predict(wide_inputs), clf.predict(wide_inputs))
    chunks = np.array_split(wide_inputs, 4)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(_score, [clf] * len(chunks), chunks))
    for chunk, (labels, proba, threshold, batch) in zip(chunks, results, strict=True):
        assert threshold == 0.35
        np.testing.assert_array_equal(labels, clf.predict(chunk))
        np.testing.assert_array_equal(proba, clf.predict_proba(chunk))
        np.testing.assert_array_equal(batch["class"], labels)  # at the threshold it travelled with
        np.testing.assert_array_equal(batch["probability"], proba[:, 0])


def test_a_lone_artifact_pickles(seed_all, wide_inputs, tmp_path):
    folder, _, _ = seed_all
    (tmp_path / "m.onnx").write_bytes((folder / "onnx-int8.onnx").read_bytes())
    clf = runtime.load(tmp_path / "m.onnx")
    (tmp_path / "m.onnx").unlink()  # the bytes travel, not the path
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(wide_inputs), clf.predict(wide_inputs))


def test_both_engines_default_to_one_thread(fp32_export):
    assert DEFAULT_THREADS == 1
    onnx = runtime.load(fp32_export, variant="onnx-fp32")
    assert onnx.engine.session.get_session_options().intra_op_num_threads == 1
    tflite = runtime.load(fp32_export, variant="tflite-fp32")
    assert tflite.engine._threads == 1
    two = runtime.load(fp32_export, variant="onnx-fp32", threads=2)
    assert two.engine.session.get_session_options().intra_op_num_threads == 2
