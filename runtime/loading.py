"""Load a variant from an exported folder, or a lone ``.onnx`` / ``.tflite`` artifact.

``load()`` reads the manifest, resolves the device, chooses the variant (the one asked for, or
the default that passed its gate and whose engine is installed here), checks the artifact's
hash, builds one engine, checks the decision record embedded in the artifact against the
manifest, and returns a :class:`~keras_edge.runtime.classifier.Classifier`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from keras_edge.runtime import embedded
from keras_edge.runtime.classifier import Classifier
from keras_edge.runtime.engines import (
    LITERT_ACCELERATORS,
    ONNX_PROVIDERS,
    engine_installed,
    make_engine,
    missing_engine,
)
from keras_edge.runtime.errors import (
    ArtifactError,
    DeviceUnavailableError,
    InputError,
    UnknownVariantError,
)
from keras_edge.runtime.golden import check_classifier, raise_on_failure, read_golden
from keras_edge.runtime.manifest import Manifest, Variant, read_checked
from keras_edge.runtime.report import export_order

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "auto", *(d for d in ONNX_PROVIDERS if d != "cpu"), *LITERT_ACCELERATORS)
# ``auto``'s preference among ONNX Runtime's accelerators. TensorRT is left to be asked for by
# name: it builds an engine when a session starts, which takes minutes on a new model.
AUTO_ORDER = ("cuda", "rocm", "directml", "coreml", "openvino", "qnn")
# A lone artifact, loaded without its folder: its format by suffix.
ARTIFACT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}


def device_format(device: str) -> str | None:
    """The artifact format an accelerator needs (None: the CPU runs both)."""
    if device in LITERT_ACCELERATORS:
        return "tflite"
    return None if device == "cpu" else "onnx"


def resolve_device(device: str, formats: set[str]) -> str:
    """``device`` checked; ``auto`` becomes the best accelerator ONNX Runtime offers here for
    an onnx variant (among ``formats``), else ``cpu``. LiteRT's gpu/npu are not probed by
    ``auto`` (compiling for them is the only test, and costs a model compilation): ask for
    them by name."""
    if not isinstance(device, str) or device not in DEVICES:
        raise DeviceUnavailableError(f"Expected device from {list(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    if "onnx" in formats and engine_installed("onnx"):
        import onnxruntime as ort

        offered = set(ort.get_available_providers())
        for candidate in AUTO_ORDER:
            if ONNX_PROVIDERS[candidate] in offered:
                logger.info("device auto: %s (ONNX Runtime offers %s)", candidate, sorted(offered))
                return candidate
    logger.info("device auto: cpu (no accelerator found for %s)", sorted(formats))
    return "cpu"


def _choose_variant(manifest: Manifest, requested: str | None, device: str = "cpu") -> Variant:
    needs = device_format(device)
    if requested is not None:
        if requested in manifest.refused:
            raise UnknownVariantError(
                f"Variant {requested!r} was not written by the export: {manifest.refused[requested]}"
                f"; this manifest has {sorted(manifest.variants)}"
            )
        if requested not in manifest.variants:
            raise UnknownVariantError(
                f"Unknown variant {requested!r}; this manifest has {sorted(manifest.variants)}"
            )
        chosen = manifest.variants[requested]
        if not chosen.passed:
            why = "; ".join(chosen.parity.failures) if chosen.parity is not None else "unchecked"
            logger.warning(
                "variant %r failed its parity gate at export (%s); loading it because it was asked "
                "for by name: its decisions may differ from the Keras model's",
                requested, why,
            )  # fmt: skip
        if needs is not None and chosen.format != needs:
            able = sorted(v for v, info in manifest.variants.items() if info.format == needs)
            raise DeviceUnavailableError(
                f"Variant {requested!r} is {chosen.format}, but device {device!r} runs {needs} "
                f"variants: one of {able}"
            )
        return chosen
    # The export's order: tflite before onnx, fp32 before quantized (never the JSON's order).
    passed = sorted((v for v in manifest.variants.values() if v.passed), key=export_order)
    if not passed:
        raise UnknownVariantError(
            f"No variant passed its parity gate; the manifest lists {sorted(manifest.variants)} "
            f"(ask for one by name to load it anyway)"
        )
    candidates = [v for v in passed if needs is None or v.format == needs]
    if not candidates:
        raise DeviceUnavailableError(
            f"Device {device!r} runs {needs} variants, and none passed in this export: it has "
            f"{sorted(v.id for v in passed)}"
        )
    default = manifest.variants.get(manifest.default_variant or "")
    if default in candidates and engine_installed(default.format):  # type: ignore[operator]
        return default  # type: ignore[return-value]
    for variant in candidates:
        if engine_installed(variant.format):
            if default is not None and default in candidates:
                logger.warning(
                    "default variant %r cannot run here (%s); loading %r instead",
                    default.id, missing_engine(default.format), variant.id,
                )  # fmt: skip
            else:
                logger.info("device %s runs %s variants: loading %r", device, needs, variant.id)
            return variant
    # Nothing can run: report the first candidate's missing engine.
    return candidates[0]


def read_artifact(folder: Path, variant: Variant) -> bytes:
    """The artifact's bytes, after checking they are the bytes the manifest describes."""
    path = folder / variant.file
    root = folder.resolve()
    if root not in path.resolve().parents:
        raise ArtifactError(f"Variant {variant.id!r}: file {variant.file!r} leaves {str(folder)!r}")
    if not path.is_file():
        raise ArtifactError(f"Variant {variant.id!r}: expected the file {str(path)!r}, found none")
    data, digest = read_checked(path, variant.sha256)
    if digest is not None:
        raise ArtifactError(
            f"Variant {variant.id!r}: {variant.file!r} has sha256 {digest}, the manifest "
            f"expects {variant.sha256}; the file is corrupt or was replaced"
        )
    return data


def load(
    folder: str | Path,
    variant: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    verify: bool = False,
) -> Classifier:
    """Load a variant from an exported folder, or a lone ``.onnx`` / ``.tflite`` artifact.

    Args:
        folder: the folder holding ``manifest.json`` and the artifacts; or one artifact file,
            which decides as its folder does from the record embedded in it.
        variant: a variant id (e.g. ``"onnx-int8"``). ``None`` takes the manifest's default,
            or the first variant that passed its gate and whose engine is installed here.
        device: ``"cpu"``; ``"auto"`` (the best accelerator found, else the CPU; see
            ``clf.device`` and ``clf.providers``); ONNX Runtime's ``"cuda"``, ``"tensorrt"``,
            ``"rocm"``, ``"openvino"``, ``"coreml"``, ``"directml"``, ``"qnn"``; LiteRT's
            ``"gpu"``, ``"npu"``. Without ``variant``, the first passing variant whose engine
            can run there. An accelerator that is not there raises
            :class:`DeviceUnavailableError` listing what is; never a silent CPU.
        threads: intra-op threads for the engine; ``None`` is 1 on both engines (see
            ``DEFAULT_THREADS``: calls of a few samples, and no oversubscription when many
            threads share a classifier).
        verify: run the export's golden set through the loaded variant first (a few hundred
            calls, milliseconds for small models) and raise :class:`VerificationError` if this
            machine's engine no longer decides as the export did (see ``keras-edge verify``).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InputError(f"Expected threads to be a positive integer or None, got {threads!r}")
    folder = Path(folder)
    if folder.suffix in ARTIFACT_SUFFIXES and folder.is_file():
        if variant is not None or verify:
            raise InputError(
                f"Expected no variant= or verify= for the lone artifact {str(folder)!r} (it is "
                f"one variant, and its golden set stays in its folder), got variant={variant!r}, "
                f"verify={verify!r}"
            )
        return _load_artifact(folder, device, threads)
    manifest = Manifest.read(folder)
    device = resolve_device(device, {v.format for v in manifest.variants.values() if v.passed})
    chosen = _choose_variant(manifest, variant, device)
    names = [spec.name for spec in manifest.inputs]
    data = read_artifact(folder, chosen)
    engine = make_engine(chosen.format, data, device, threads, names)
    inside = (
        embedded.read_onnx(engine.session) if chosen.format == "onnx" else embedded.read_tflite(data)
    )
    if inside is not None:  # artifacts exported before keras-edge 0.2 carry none
        embedded.check_agrees(inside, manifest, chosen)
    clf = Classifier(manifest, chosen, engine, device)
    logger.info("loaded variant %r on %s (%s)", chosen.id, device, ", ".join(clf.providers))
    if verify:
        raise_on_failure([check_classifier(clf, read_golden(folder, manifest))])
    return clf



def _load_artifact(path: Path, device: str, threads: int | None) -> Classifier:
    """A lone artifact: the manifest it needs is rebuilt from the record embedded in it."""
    fmt = ARTIFACT_SUFFIXES[path.suffix]
    if not engine_installed(fmt):  # the record is read with the engine's own schema
        raise missing_engine(fmt)
    device = resolve_device(device, {fmt})
    if device_format(device) not in (None, fmt):
        raise DeviceUnavailableError(
            f"Device {device!r} runs {device_format(device)} artifacts, got {str(path)!r}"
        )
    data = path.read_bytes()
    # ONNX Runtime reads the record from a session; LiteRT's needs the inputs' order first.
    engine = make_engine(fmt, data, device, threads) if fmt == "onnx" else None
    inside = embedded.read(fmt, data, engine)
    manifest, chosen = embedded.manifest_of(path, data, fmt, inside)
    names = [spec.name for spec in manifest.inputs]
    if engine is None:
        engine = make_engine(fmt, data, device, threads, names)
    elif sorted(engine.input_names) != sorted(names):
        raise ArtifactError(f"Expected inputs {names} in {str(path)!r}, got {engine.input_names}")
    else:
        engine.input_names, engine.input_name = names, names[0]  # the record's order
    clf = Classifier(manifest, chosen, engine, device)
    logger.info("loaded the lone artifact %s as %r on %s", path, chosen.id, device)
    return clf
