"""The artifacts in the platforms' own clients, with no code of ours between: MediaPipe Tasks'
ImageClassifier (the C++ core of Android, iOS and the web) on every .tflite, OpenVINO's Model
API on every .onnx; and the standard metadata itself (TFLite ``TFLITE_METADATA``, ONNX
``model_info`` keys), through the gate, the tuning, the decision output and re-export."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_edge import exporter, runtime
from keras_edge.exporter import platforms
from keras_edge.runtime.errors import UsageError

SIDE = 24  # the digits, 3x: 24x24x3 camera pixels
BROWSER = Path(__file__).resolve().parent.parent / "browser"
NPM_PACKAGES = ("@mediapipe/tasks-vision", "onnxruntime-web", "playwright-core", "onnxruntime-node")
NODE_SCRIPT = Path(__file__).resolve().parent.parent / "node" / "read_class.js"


def camera_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (n, 24, 24, 3) whole pixel values 0..255, with seeded sensor noise (whole
    values: MediaPipe takes uint8 images, keras-edge gets the same values as float32)."""
    d = load_digits()
    x = np.repeat(np.repeat(d.images[..., None], 3, axis=1), 3, axis=2) * 16.0
    x = np.repeat(x, 3, axis=3) + np.random.default_rng(23).normal(0.0, 8.0, (len(x), SIDE, SIDE, 3))
    return np.clip(x, 0, 255).round().astype(np.float32), d.target


def cnn(units: int, activation: str, rescale: bool = True) -> keras.Model:
    """A small CNN written as keras-io's image classification examples write it."""
    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    h = keras.layers.Rescaling(1.0 / 255)(inputs) if rescale else inputs
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(h))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three exports of every variant: a 3-class softmax classifier (which digit mod 3), and a
    binary sigmoid one (is the digit >= 5?) at 0.5 and at 0.3; and 60 held-out images."""
    x, digit = camera_digits()
    keras.utils.set_random_seed(0)
    three = cnn(3, "softmax")
    three.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    three.fit(x[:1200], digit[:1200] % 3, epochs=15, batch_size=64, verbose=0)
    binary = cnn(1, "sigmoid")
    binary.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    binary.fit(x[:1200], (digit[:1200] >= 5).astype("float32"), epochs=15, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("platforms")
    dists = {}
    for name, model, labels, threshold, y in (
        ("three", three, ["zero", "one", "two"], 0.5, digit % 3),
        ("binary-0.5", binary, ["small", "big"], 0.5, digit >= 5),
        ("binary-0.3", binary, ["small", "big"], 0.3, digit >= 5),
    ):
        dists[name] = root / name
        exporter.export(model, dists[name], quantize="all", calibration=x[:300], labels=labels,
                        validation=(x[1200:1500], y[1200:1500]), threshold=threshold)  # fmt: skip
        if name != "binary-0.5":  # with a class output, for the browser's onnxruntime-web
            dists[f"{name}-class"] = root / f"{name}-class"
            exporter.export(model, dists[f"{name}-class"], formats="onnx", quantize="all",
                            calibration=x[:300], labels=labels, threshold=threshold,
                            validation=(x[1200:1500], y[1200:1500]), with_decision=True)  # fmt: skip
    return dists, x[1500:1560]


def tflite_variants(dist):
    return [vid for vid in runtime.load(dist).manifest.variants if vid.startswith("tflite")]


def expected(clf, x):
    """keras-edge's class and its probability per image (a binary head's negative class: 1 - p)."""
    labels, proba = clf.predict_labels(x), clf.predict_proba(x)
    if clf.head.kind == "binary":
        p = proba[:, 0]
        return labels, np.where(labels == clf.head.labels[1], p, np.float32(1) - p)
    return labels, proba.max(axis=1)


@pytest.mark.parametrize("name", ["three", "binary-0.5", "binary-0.3"])
def test_mediapipe_image_classifier_decides_like_keras_edge(images, name):
    mp = pytest.importorskip("mediapipe", reason="the mediapipe package is not installed here")
    from mediapipe.tasks.python import BaseOptions, vision

    dists, x = images
    seen = set()
    for vid in tflite_variants(dists[name]):
        clf = runtime.load(dists[name], variant=vid)
        labels, scores = expected(clf, x)
        seen |= set(labels)
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(dists[name] / f"{vid}.tflite"))
        )
        with vision.ImageClassifier.create_from_options(options) as classifier:  # defaults only
            for image, label, score in zip(x, labels, scores, strict=True):
                pixels = mp.Image(image_format=mp.ImageFormat.SRGB, data=image.astype(np.uint8))
                result = classifier.classify(pixels)
                decision = result.classifications[0]
                assert decision.head_name == "decision"
                assert [c.category_name for c in decision.categories] == [label], vid
                assert decision.categories[0].score == pytest.approx(score, abs=1e-6), vid
                probability = result.classifications[1]
                assert probability.head_name == "probability"
                if clf.head.kind == "binary":  # its score threshold is keras-edge's rule
                    kept = [c.category_name for c in probability.categories]
                    assert kept == (["big"] if label == "big" else []), vid
    assert len(seen) >= 2, f"the test images are all one class: {seen}"


@pytest.mark.parametrize("kind", ["logit", "multilabel", "confidence"])
def test_mediapipe_on_logits_multilabel_and_a_minimum_confidence(kind, tmp_path):
    """A binary head on logits (``from_logits=True``, as keras-io's examples train), a
    multilabel head with a threshold per label, and a multiclass one with a minimum confidence:
    MediaPipe's decision head gives keras-edge's labels (multilabel: the set of labels above
    their own thresholds; "unknown" where the top probability is not above the minimum) on
    every image; and OpenVINO's Model API the same from the .onnx."""
    mp = pytest.importorskip("mediapipe", reason="the mediapipe package is not installed here")
    from mediapipe.tasks.python import BaseOptions, vision

    x, digit = camera_digits()
    keras.utils.set_random_seed(2)
    if kind == "logit":
        model, y = cnn(1, None), (digit >= 5).astype("float32")
        model.compile(keras.optimizers.Adam(0.01), keras.losses.BinaryCrossentropy(from_logits=True))
        options = dict(head="logit", labels=["small", "big"], threshold=0.3)
    elif kind == "multilabel":
        model, y = cnn(2, "sigmoid"), np.stack([digit >= 5, digit % 2 == 0], axis=1).astype("float32")
        model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
        options = dict(labels=["big", "even"], threshold=[0.3, 0.6])
    else:
        model, y = cnn(3, "softmax"), digit % 3
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        options = dict(labels=["zero", "one", "two"], min_confidence=0.8)
    model.fit(x[:1200], y[:1200], epochs=15, batch_size=64, verbose=0)
    result = exporter.export(model, tmp_path / "d", quantize="int8",
                             calibration=x[:300], validation=(x[1200:1500], y[1200:1500]),
                             **options)  # fmt: skip
    held_out = x[1500:1560]
    seen = set()
    for vid in [v for v in result.manifest.variants if v.startswith("tflite")]:
        labels = runtime.load(tmp_path / "d", variant=vid).predict_labels(held_out)
        seen |= {str(label) for label in labels}
        settings = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(tmp_path / "d" / f"{vid}.tflite"))
        )
        with vision.ImageClassifier.create_from_options(settings) as classifier:
            for image, label in zip(held_out, labels, strict=True):
                pixels = mp.Image(image_format=mp.ImageFormat.SRGB, data=image.astype(np.uint8))
                decision = classifier.classify(pixels).classifications[0]
                got = [c.category_name for c in decision.categories]
                assert sorted(got) == sorted(label if kind == "multilabel" else [label]), vid
    if kind == "confidence":
        assert "unknown" in seen and len(seen) >= 3, seen
    _model_api_agrees(tmp_path / "d", held_out)


def _model_api_agrees(dist, x):
    """OpenVINO Model API's ClassificationModel on each .onnx of ``dist``: keras-edge's labels."""
    pytest.importorskip("model_api", reason="openvino-model-api is not installed here")
    from model_api.adapters import OpenvinoAdapter, create_core
    from model_api.models import ClassificationModel

    for vid in [v for v in runtime.load(dist).manifest.variants if v.startswith("onnx")]:
        clf = runtime.load(dist, variant=vid)
        labels = clf.predict_labels(x)
        # OpenVINO's CPU plugin computes in bf16 where the CPU has it, unless told f32
        adapter = OpenvinoAdapter(create_core(), str(dist / f"{vid}.onnx"), device="CPU",
                                  plugin_config={"INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
        model = ClassificationModel.create_model(adapter, preload=True)
        # BGR, as OpenCV reads images and the Model API takes them (the file says to reverse)
        bgr = np.ascontiguousarray(x[..., ::-1]).astype(np.uint8)
        answers = [model(image).top_labels for image in bgr]
        if clf.head.kind == "multilabel":  # every label above its own threshold
            assert [sorted(a.name for a in got) for got in answers] == [sorted(w) for w in labels], vid
        else:
            assert [got[0].name for got in answers] == list(labels), vid


def _metadata(path):
    """The TFLITE_METADATA flatbuffer of a .tflite, parsed with MediaPipe's own generated
    schema code, and the files of its zip."""
    pytest.importorskip("mediapipe", reason="the mediapipe package is not installed here")
    from ai_edge_litert import schema_py_generated as schema
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta

    data = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    entry = next(m for m in model.metadata if m.name in (b"TFLITE_METADATA", "TFLITE_METADATA"))
    blob = bytes(model.buffers[entry.buffer].data)
    assert meta.ModelMetadata.ModelMetadataBufferHasIdentifier(blob, 0)
    files = zipfile.ZipFile(io.BytesIO(data))
    return meta.ModelMetadataT.InitFromPackedBuf(bytearray(blob), 0), {
        n: files.read(n).decode() for n in files.namelist()
    }


def _decision_output(path, x):
    """The file's decision output, row by row, in LiteRT's own interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (image,), out = interpreter.get_input_details(), interpreter.get_output_details()
    decision = next(d for d in out if d["name"] == "keras_edge_decision")
    rows = []
    for row in x:
        interpreter.set_tensor(image["index"], row[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(decision["index"])[0])
    return np.array(rows)


def _threshold(tensor):
    units = [u for u in tensor.processUnits or [] if u.optionsType == 3]  # ScoreThresholdingOptions
    return units[0].options.globalScoreThreshold if units else None


def test_metadata_survives_tuning_gate_decision_and_reexport(tmp_path):
    """Tuned thresholds, --with-decision and an int8 variant: each file's metadata carries its
    own threshold in MediaPipe's rule, the labels, the normalization read off the data (no
    Rescaling in this model: values in [0, 1] are pixels / 255), and exporting again gives the
    same bytes."""
    x, digit = camera_digits()
    x, y = x / 255.0, (digit >= 5).astype("float32")
    keras.utils.set_random_seed(1)
    model = cnn(1, "sigmoid", rescale=False)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    model.fit(x[:1000], y[:1000], epochs=8, batch_size=64, verbose=0)
    kwargs = dict(formats=["tflite", "onnx"], quantize="int8", calibration=x[:200],
                  validation=(x[1000:1300], y[1000:1300]), tune="f1", tune_data=(x[1300:], y[1300:]),
                  labels=["small", "big"], with_decision=True)  # fmt: skip
    first = exporter.export(model, tmp_path / "a", **kwargs)
    exporter.export(model, tmp_path / "b", **kwargs)
    manifest = first.manifest
    for vid, variant in manifest.variants.items():
        name = variant.file
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), vid
        assert variant.parity.passed, vid
        if variant.format != "tflite":
            continue
        meta, files = _metadata(tmp_path / "a" / name)
        assert meta.minParserVersion == b"1.0.0" and meta.version == vid.encode()
        image = meta.subgraphMetadata[0].inputTensorMetadata[0]
        norm = image.processUnits[0].options
        assert (list(norm.mean), list(norm.std)) == ([0.0], [255.0])
        decision, probability, klass = meta.subgraphMetadata[0].outputTensorMetadata
        assert (decision.name, probability.name, klass.name) == (b"decision", b"probability", b"class")
        t = np.float32(variant.threshold)
        assert _threshold(probability) == np.nextafter(t, np.float32(np.inf))  # p > t as p >= next
        assert _threshold(decision) == np.finfo(np.float32).tiny
        assert files == {"labels_decision.txt": "small\nbig\n", "labels_probability.txt": "big\n"}
        archive = zipfile.ZipFile(io.BytesIO(data := (tmp_path / "a" / name).read_bytes()))
        for info in archive.infolist():  # offsets from the file's start, as TFLite Support writes
            assert data[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
        clf = runtime.load(tmp_path / "a", variant=vid)  # the runtime ignores the decision output
        assert clf.threshold == variant.threshold
        scores = _decision_output(tmp_path / "a" / name, x[1300:])
        np.testing.assert_array_equal(scores.argmax(axis=1), clf.predict(x[1300:]))
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "a" / "onnx-int8.onnx"))
    keys = session.get_modelmeta().custom_metadata_map
    assert keys["model_info mean_values"] == "0.0 0.0 0.0"
    assert keys["model_info scale_values"] == "255.0 255.0 255.0"
    assert keys["model_info reverse_input_channels"] == "True"
    tuned = {v.threshold for v in manifest.variants.values()}
    assert tuned != {0.5}, f"tuning left every threshold at 0.5: {tuned}"


def test_onnx_keys_for_the_model_api(images):
    ort = pytest.importorskip("onnxruntime")
    dists, _ = images
    for name, labels, threshold in (("three", "zero one two", None), ("binary-0.3", "small big", "0.3")):
        session = ort.InferenceSession(str(dists[name] / "onnx-fp32.onnx"))
        keys = session.get_modelmeta().custom_metadata_map
        assert keys["model_info model_type"] == "Classification"
        assert keys["model_info labels"] == labels
        assert keys.get("model_info confidence_threshold") == threshold
        assert session.get_outputs()[0].name == "keras_edge_decision"


@pytest.mark.parametrize("name", ["three", "binary-0.5", "binary-0.3"])
def test_openvino_model_api_returns_keras_edge_labels(images, name):
    dists, x = images
    _model_api_agrees(dists[name], x)


def test_input_normalization_is_checked():
    assert platforms.parse_normalization("127.5/127.5") == ((127.5,), (127.5,))
    assert platforms.parse_normalization("1,2,3/4,5,6") == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert platforms.parse_normalization("0/58,57,57") == ((0.0, 0.0, 0.0), (58.0, 57.0, 57.0))
    for bad in ("127.5", "a/b", "0/0", "1,2/3,4,5", "1,2/3,4", "nan/1"):
        with pytest.raises(UsageError, match="input-normalization"):
            platforms.parse_normalization(bad)


@pytest.fixture(scope="module")
def npm_modules(tmp_path_factory):
    """The browser libraries from npm (no install scripts: nothing is fetched but the packages),
    in ``$KERAS_EDGE_NODE_MODULES`` when set (a cache between runs)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed here")
    cache = Path(os.environ.get("KERAS_EDGE_NODE_MODULES", tmp_path_factory.mktemp("npm")))
    modules = cache / "node_modules"
    if not all((modules / name).is_dir() for name in NPM_PACKAGES):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                        "--prefix", str(cache), *NPM_PACKAGES], check=True,
                       capture_output=True, timeout=600)  # fmt: skip
    return modules


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}  # fmt: skip

    def log_message(self, *args):  # the test's output stays the test's
        pass


def test_a_browser_decides_like_keras_edge(images, npm_modules, tmp_path):
    """Headless Chromium loads a page from localhost that runs MediaPipe Tasks for the web on
    each .tflite and onnxruntime-web on each .onnx with a class output, both from npm with their
    wasm served from the same origin; their classes are keras-edge's on every image."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it)")
    dists, x = images
    site = tmp_path / "site"
    site.mkdir()
    for name in ("page.html", "page.mjs"):
        shutil.copy(BROWSER / name, site / name)
    (site / "node_modules").symlink_to(npm_modules)
    (site / "images.bin").write_bytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    tflite = {f"{name}/{vid}": runtime.load(dists[name], variant=vid)
              for name in ("three", "binary-0.3") for vid in tflite_variants(dists[name])}  # fmt: skip
    onnx = {f"{name}/{vid}": runtime.load(dists[name], variant=vid)
            for name in ("three-class", "binary-0.3-class")
            for vid in runtime.load(dists[name]).manifest.variants}  # fmt: skip
    for name in ("three", "binary-0.3", "three-class", "binary-0.3-class"):
        (site / name).symlink_to(dists[name])
    cases = {
        "images": {"file": "images.bin", "shape": list(x.shape)},
        "mediapipe": [{"id": case, "model": f"{case}.tflite"} for case in tflite],
        "onnx": [{"id": case, "model": f"{case}.onnx"} for case in onnx],
    }
    (site / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
        proc = subprocess.run(["node", str(BROWSER / "drive.cjs"), str(npm_modules), url, chromium],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[:3000]
    answers = json.loads(proc.stdout)
    for case, clf in tflite.items():
        labels, scores = expected(clf, x)
        heads = answers["mediapipe"][case]
        # The wasm build's kernels are not x86's: scores within 1e-5 in float; quantized
        # activations (dynamic, int8) within half an int8 step (1/512)
        step = 1e-5 if case.endswith(("fp32", "fp16")) else 1 / 512
        for got, label, score in zip(heads, labels, scores, strict=True):
            assert got[0]["head"] == "decision" and [c[0] for c in got[0]["categories"]] == [label], case
            assert got[0]["categories"][0][1] == pytest.approx(score, abs=step), case
    for case, clf in onnx.items():
        assert answers["onnx"][case]["classes"] == list(clf.predict_labels(x)), case
        t = answers["onnx"][case]["threshold"]
        assert (None if t is None else float(t)) == clf.threshold, case


def test_a_nodejs_client_reads_an_image_models_labels_threshold_and_class(images, npm_modules, tmp_path):
    """onnxruntime-node (the binding an Electron or server app uses) on each .onnx with a class
    output: the class, and the labels and threshold from the file's ``model_info`` keys."""
    dists, x = images
    (tmp_path / "x.f32").write_bytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    for name in ("three-class", "binary-0.3-class"):
        for vid in runtime.load(dists[name]).manifest.variants:
            proc = subprocess.run(
                ["node", str(NODE_SCRIPT), str(dists[name] / f"{vid}.onnx"), str(tmp_path / "x.f32"),
                 str(len(x)), ",".join(str(d) for d in x.shape[1:])],
                capture_output=True, text=True, timeout=300,
                env={**os.environ, "NODE_PATH": str(npm_modules)},
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            answer = json.loads(proc.stdout)
            clf = runtime.load(dists[name], variant=vid)
            assert answer["labels"] == list(clf.predict_labels(x)), vid
            t = answer["confidence_threshold"]
            assert (None if t is None else float(t)) == clf.threshold == answer["threshold"], vid


def _spec(model):
    from keras_edge.runtime.records import InputSpec

    return [InputSpec(name="image", shape=(None, *model.inputs[0].shape[1:]), dtype="float32")]


def test_normalization_is_read_from_the_models_own_preprocessing():
    """keras-io's way (augmentation, then Rescaling, in a Sequential of their own) and a Keras
    application that rescales inside: the app feeds raw pixels (mean 0, std 1), whatever the
    data's range."""
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)])
    inputs = keras.Input((SIDE, SIDE, 3))
    h = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(augment(inputs))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    keras_io = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    application = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=3, include_preprocessing=True,
        minimalistic=True,
    )  # fmt: skip
    sequential = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.RandomFlip(),
                                   keras.layers.Normalization(mean=120.0, variance=900.0),
                                   keras.layers.Flatten(), keras.layers.Dense(1)])  # fmt: skip
    cases = ((keras_io, "Rescaling"), (application, "Rescaling"), (sequential, "Normalization"))
    for model, layer in cases:
        x = np.random.default_rng(0).uniform(0, 1, (4, *model.inputs[0].shape[1:])).astype("float32")
        norm = platforms.normalizations(model, _spec(model), [x], "validation", None)["image"]
        assert (norm.mean, norm.std) == ((0.0,), (1.0,)), norm
        assert layer in norm.source


@pytest.mark.parametrize("low, high, given, expected", [
    (0.0, 1.0, None, ((0.0,), (255.0,))),
    (-1.0, 1.0, None, ((127.5,), (127.5,))),
    (0.0, 255.0, None, ((0.0,), (1.0,))),
    (0.0, 1.0, ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)), ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))),
])  # fmt: skip
def test_normalization_without_preprocessing_layers(low, high, given, expected):
    model = cnn(3, "softmax", rescale=False)
    x = np.linspace(low, high, 2 * SIDE * SIDE * 3, dtype=np.float32).reshape(2, SIDE, SIDE, 3)
    norm = platforms.normalizations(model, _spec(model), [x], "validation", given)["image"]
    assert (norm.mean, norm.std) == expected, norm


def test_given_normalization_wins_and_must_fit_the_channels(caplog):
    model = cnn(3, "softmax")  # with its own Rescaling: what the user says still wins, said
    x = np.zeros((2, SIDE, SIDE, 3), np.float32)
    norm = platforms.normalizations(model, _spec(model), [x], "validation", ((0.0,), (255.0,)))
    assert (norm["image"].mean, norm["image"].std) == ((0.0,), (255.0,))
    assert "starts with its own Rescaling" in caplog.text
    gray = keras.Model(*(lambda i: (i, keras.layers.Dense(1)(keras.layers.Flatten()(i))))(
        keras.Input((SIDE, SIDE, 1))))  # fmt: skip
    spec = _spec(gray)
    with pytest.raises(UsageError, match=r"input 'image' \(1 channel\(s\)\), got 3"):
        platforms.normalizations(gray, spec, [x[..., :1]], "validation", ((1.0, 2.0, 3.0),) * 2)


def test_a_keras_2_models_rescaling_is_found():
    import tf_keras

    inputs = tf_keras.Input((SIDE, SIDE, 3))
    h = tf_keras.layers.Flatten()(tf_keras.layers.Rescaling(1.0 / 255)(inputs))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(h))
    assert platforms._leading_layer(model, 0) == "Rescaling"


def test_normalization_without_data_says_raw_pixels_and_warns(caplog):
    model = cnn(3, "softmax", rescale=False)
    x = np.zeros((2, SIDE, SIDE, 3), np.float32)
    norm = platforms.normalizations(model, _spec(model), [x], "synthetic", None)["image"]
    assert (norm.mean, norm.std) == ((0.0,), (1.0,))
    assert "--input-normalization" in caplog.text


def test_mediapipe_gets_one_decision_head_per_head(tmp_path):
    """A model with a dict of outputs (a binary head at 0.3, a multiclass one with a minimum
    confidence): MediaPipe's heads ``decision/<name>`` give each head's ``predict_labels``."""
    mp = pytest.importorskip("mediapipe", reason="the mediapipe package is not installed here")
    from mediapipe.tasks.python import BaseOptions, vision

    x, digit = camera_digits()
    keras.utils.set_random_seed(4)
    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    even = keras.layers.Dense(1, activation="sigmoid", name="even")(h)
    model = keras.Model(inputs, {"even": even, "digit": keras.layers.Dense(3, activation="softmax")(h)})
    y = {"even": (digit % 2 == 0).astype("float32"), "digit": digit % 3}
    model.compile(keras.optimizers.Adam(0.01), {"even": "binary_crossentropy",
                                                "digit": "sparse_categorical_crossentropy"})  # fmt: skip
    model.fit(x[:1200], {k: v[:1200] for k, v in y.items()}, epochs=15, batch_size=64, verbose=0)
    result = exporter.export(
        model, tmp_path / "d", formats="tflite", quantize="int8", calibration=x[:300],
        validation=(x[1200:1500], {k: v[1200:1500] for k, v in y.items()}),
        labels={"even": ["odd", "even"], "digit": ["zero", "one", "two"]}, threshold={"even": 0.3},
        min_confidence={"digit": 0.7},
    )  # fmt: skip
    held_out = x[1500:1560]
    for vid in result.manifest.variants:
        labels = runtime.load(tmp_path / "d", variant=vid).predict_labels(held_out)
        settings = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(tmp_path / "d" / f"{vid}.tflite"))
        )
        with vision.ImageClassifier.create_from_options(settings) as classifier:
            for i, image in enumerate(held_out):
                pixels = mp.Image(image_format=mp.ImageFormat.SRGB, data=image.astype(np.uint8))
                heads = {h.head_name: [c.category_name for c in h.categories]
                         for h in classifier.classify(pixels).classifications}  # fmt: skip
                for head, names in labels.items():
                    assert heads[f"decision/{head}"] == [names[i]], (vid, head)


def test_an_accelerator_gets_the_file_without_its_decision_outputs(images):
    """LiteRT's CompiledModel (the GPU/NPU path, on its CPU here) is given the model without the
    decision outputs and the boolean ops only they need, which an accelerator may refuse: the
    probabilities and decisions stay the CPU path's."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_edge.runtime.classifier import Classifier
    from keras_edge.runtime.litert_engine import CompiledModelEngine, without_decided

    dists, x = images
    for vid in ("tflite-fp32", "tflite-int8"):
        data = (dists["binary-0.3"] / f"{vid}.tflite").read_bytes()
        bare = schema.ModelT.InitFromPackedBuf(bytearray(without_decided(data)), 0).subgraphs[0]
        names = [t.name.decode() for t in bare.tensors]
        (only,) = bare.outputs  # the probabilities
        assert not names[only].startswith("keras_edge"), vid
        left = {names[o] for op in bare.operators for o in op.outputs}
        assert not any(name.startswith("keras_edge_decided") for name in left), vid
        cpu = runtime.load(dists["binary-0.3"], variant=vid)
        variant = cpu.manifest.variants[vid]
        compiled = Classifier(cpu.manifest, variant, CompiledModelEngine(data, device="cpu"), "cpu")
        np.testing.assert_array_equal(compiled.predict_proba(x), cpu.predict_proba(x))
        np.testing.assert_array_equal(compiled.predict(x), cpu.predict(x))
