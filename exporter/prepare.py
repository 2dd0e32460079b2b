"""The export's first stage: read and check everything before anything is converted.

The model is loaded, its inputs and head read, the data checked against them (feature names
matched), the Keras model's own answers on the parity data computed (the reference every
variant is gated against), the threshold tuned when asked, and the calibration's coverage
measured. A bad input fails here, with nothing written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from keras_edge.exporter import (
    _tf,
    custom_objects,
    features,
    head_check,
    parity,
    recurrent,
    sources,
    structure,
    tuning,
)
from keras_edge.exporter import model as model_io
from keras_edge.exporter.calibration import Calibration, coverage_problems
from keras_edge.exporter.calibration import coverage as calibration_coverage
from keras_edge.exporter.errors import ConstantOutputError
from keras_edge.exporter.options import ExportOptions
from keras_edge.runtime.errors import UsageError
from keras_edge.runtime.gate import decide, to_probability
from keras_edge.runtime.manifest import CalibrationInfo, Head, InputSpec, ModelInfo

logger = logging.getLogger(__name__)

# Without validation or calibration data, parity is checked on this documented, seeded probe set.
PROBE_SIZE = 10_000
PROBE_SEED = 0
PROBE_STD = 2.0
# A Keras output that moves less than this across the parity data (per unit, in logits for a
# classifier; relative to its largest value for a regression) is a constant: matching it proves
# nothing.
CONSTANT_SPREAD = 1e-3


@dataclass(frozen=True)
class Job:
    """What the later stages need: the model (and its copy to convert, recurrent layers
    unrolled), its inputs and head, the calibration, the parity inputs and Keras's answers on
    them, the tuning plan, and the calibration's coverage of the parity data."""

    keras_model: Any
    convertible: Any
    specs: tuple[InputSpec, ...]
    head: Head
    info: ModelInfo
    calibration: Calibration | None
    x_check: tuple[np.ndarray, ...]
    reference: parity.Reference
    tuning: tuning.Plan | None
    coverage: CalibrationInfo | None
    problems: tuple[str, ...]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]


@dataclass(frozen=True)
class Data:
    """The data an export is given: calibration inputs, validation ``x`` or ``(x, y)``, tuning
    ``(x, y)``; arrays (a dict or list of them for several inputs) or pandas DataFrames."""

    calibration: Any = None
    validation: Any = None
    tune: Any = None


def prepare(model: Any, options: ExportOptions, data: Data) -> Job:
    """Load ``model`` (a path or a ``keras.Model``) and check it and ``data`` against ``options``."""
    imported = custom_objects.import_code(options.custom_objects)  # before the model is read
    given = sources.resolve(  # a file, a folder or a model object
        model, options.safe_mode, load=lambda path, safe: custom_objects.load(path, safe, imported)
    )
    keras_model = given.model
    shape = structure.read(keras_model)
    specs, data = _named(keras_model, shape, options, data)
    head = model_io.infer_head(
        keras_model,
        options.head,
        list(options.threshold) if isinstance(options.threshold, tuple) else options.threshold,
        list(options.labels) if isinstance(options.labels, tuple) else options.labels,
        from_logits=given.from_logits,
        min_confidence=options.min_confidence,
        structure=shape,
    )
    calib = Calibration.from_array(data.calibration, specs) if data.calibration is not None else None
    x_check, y_val, name, source = _parity_data(specs, data.validation, calib, options.require_data)
    raw = model_io.keras_outputs(keras_model, list(x_check), shape)
    for part, columns in zip(head.heads, head.slices(), strict=True):  # a declared head: fits?
        declared = options.head
        if isinstance(declared, dict):
            declared = declared.get(part.name or "", "auto")
        head_check.check_outputs(declared, part, raw[:, columns], name)
    keras_proba = to_probability(head, raw)
    if y_val is not None:  # one array; for several heads, one per head by name
        y_val = tuning.labels_for(head, y_val, len(x_check[0]), "validation")
    labels = None if y_val is None or head.parts else y_val
    reference = parity.Reference(proba=keras_proba, labels=labels, data=name, source=source)
    plan = tuning.plan(options.tune, data.tune, head, keras_model, specs, x_check, y_val, reference)
    if plan is not None:
        head = head.with_threshold(plan.keras_threshold)
    check_reference(head, reference, options.allow_constant)
    coverage, problems = None, ()
    if calib is not None and "int8" in options.quantize and calib.float_features.shape[1]:
        coverage = calibration_coverage(calib, x_check, name)
        problems = tuple(coverage_problems(coverage))
        for problem in problems:
            logger.warning("calibration: %s", problem)
    # The converters get the model as a list of inputs and one output (several heads side by
    # side), with recurrent loops unrolled in a copy checked here against it; every variant is
    # gated against the model's own answers (``reference``), not the copy's.
    flat = structure.plain(keras_model, shape, specs)
    conversion = recurrent.for_conversion(flat)
    recurrent.check_copy(flat, conversion, x_check)
    info = ModelInfo(
        name=given.name,
        source_sha256=given.sha256,
        keras_version=_tf.version("keras"),
        tensorflow_version=_tf.tensorflow().__version__,
        custom_objects=imported.records,
        unrolled=conversion.unrolled,
    )
    return Job(keras_model, conversion.model, specs, head, info, calib, x_check, reference, plan,
               coverage, problems)  # fmt: skip


def _named(
    keras_model: Any, shape: structure.Structure, options: ExportOptions, data: Data
) -> tuple[tuple[InputSpec, ...], Data]:
    """The model's inputs with their feature names (given, or a DataFrame's columns), and the
    data with every DataFrame's columns put in that order by name."""
    validation_x = data.validation[0] if isinstance(data.validation, tuple) else data.validation
    tune_x = data.tune[0] if isinstance(data.tune, tuple) else None
    names = features.choose(
        options.feature_names,
        {"validation": validation_x, "calibration": data.calibration, "tuning": tune_x},
    )
    specs = model_io.input_specs(keras_model, shape.input_keys)
    if features.one_column_each(specs, names):
        # The structured-data style: one input per column, named as the columns. A table's
        # columns go to the inputs of their names; nothing more to record.
        def ordered(value: Any) -> Any:
            if isinstance(value, tuple):
                return (features.by_input(value[0], names, specs), *value[1:])
            return features.by_input(value, names, specs)

        return specs, Data(ordered(data.calibration), ordered(data.validation), ordered(data.tune))
    specs = features.named(specs, names)

    def ordered(value: Any) -> Any:
        if isinstance(value, tuple):
            return (features.in_order(value[0], names), *value[1:])
        return features.in_order(value, names)

    return specs, Data(ordered(data.calibration), ordered(data.validation), ordered(data.tune))


def _parity_data(
    specs: tuple[InputSpec, ...], validation: Any, calib: Calibration | None, require_data: bool
) -> tuple[tuple[np.ndarray, ...], Any, str, str]:
    """(inputs, labels or None, their name, their source): the validation data; else the
    calibration inputs (what the user said the device will see); else the synthetic probe set."""
    if validation is not None:
        x_val, y_val = validation if isinstance(validation, tuple) else (validation, None)
        x_check = model_io.as_inputs(x_val, specs, "validation")
        return x_check, y_val, f"validation data ({len(x_check[0])} samples)", "validation"
    if calib is not None:
        name = f"calibration data ({len(calib)} samples; give validation data to check more)"
        return calib.xs, None, name, "calibration"
    if require_data:
        raise UsageError(
            "Expected validation or calibration data (--validation FILE or --calibration FILE; "
            "validation= or calibration= in Python) with --require-data, got neither"
        )
    pixels = [s.is_pixels for s in specs]
    drawn = f"N(0, {PROBE_STD:g}^2)" + (" or uniform pixels" if any(pixels) else "")
    drawn = "uniform pixels" if all(pixels) else drawn
    name = (
        f"synthetic probe set ({PROBE_SIZE} samples of {drawn} per feature, seed {PROBE_SEED}), "
        f"not your data"
    )
    logger.warning(
        "no validation or calibration data: every variant is gated on a %s. A pass proves the "
        "conversion on those inputs, not the decisions on the inputs the device will see; give "
        "--validation FILE (validation=) to gate on your data, or --require-data to refuse this",
        name,
    )
    return probe_inputs(specs), None, name, "synthetic"


def probe_inputs(specs: tuple[InputSpec, ...]) -> tuple[np.ndarray, ...]:
    """The probe set: ``PROBE_SIZE`` samples of N(0, ``PROBE_STD``^2) per float input and
    uniform whole numbers over a uint8/int8 input's range (random pixels), seed ``PROBE_SEED``;
    integer ids are not probed at random (they need validation data)."""
    ids = [s.name for s in specs if not s.is_float and not s.is_pixels]
    if ids:
        raise UsageError(
            f"Expected validation or calibration data for a model with integer inputs {ids}: "
            f"random ids prove nothing about the text the device will see"
        )
    rng = np.random.default_rng(PROBE_SEED)

    def probe(spec: InputSpec) -> np.ndarray:
        shape = (PROBE_SIZE, *spec.feature_shape)
        if spec.is_pixels:
            info = np.iinfo(spec.dtype)
            return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(spec.dtype)
        return (rng.standard_normal(shape) * PROBE_STD).astype(np.float32)

    return tuple(probe(s) for s in specs)


def check_reference(head: Head, reference: parity.Reference, allow_constant: bool) -> None:
    """Refuse a parity check that proves nothing: a Keras output that barely moves across the
    data (an untrained backbone answers one constant; every variant then "agrees" with max diff
    0). Warn when every sample gets the same label: the other label was never tested."""
    if head.parts:  # each head on its own columns
        for part, columns in zip(head.parts, head.slices(), strict=True):
            own = replace(reference, proba=reference.proba[:, columns], labels=None,
                          data=f"{reference.data}, head {part.name!r}")  # fmt: skip
            check_reference(part, own, allow_constant)
        return
    proba = reference.proba.astype(np.float64).reshape(len(reference.proba), -1)
    if len(proba) == 0:
        return
    if head.kind == "regression":  # values: relative to their size
        spread = float((proba.max(axis=0) - proba.min(axis=0)).max())
        scale = float(np.abs(proba).max())
    else:  # in logits: a confident model's 0.9999 and 0.99999 differ, a constant's do not
        if head.output == "probability":
            p = np.clip(proba, 1e-12, 1 - 1e-12)
            proba = np.log(p) - np.log1p(-p)
        spread, scale = float((proba.max(axis=0) - proba.min(axis=0)).max()), 1.0
    unit = "" if head.kind == "regression" else " in logits"
    if spread <= CONSTANT_SPREAD * scale:
        message = (
            f"the Keras model's output varies by {spread:.3g}{unit} at most across the {reference.data} "
            f"(expected more than {CONSTANT_SPREAD * scale:.3g}): it answers one constant, so a "
            f"variant agreeing with it proves nothing about the variant (an untrained model? "
            f"inputs not as in training?)"
        )
        if not allow_constant:
            raise ConstantOutputError(
                f"Nothing exported: {message}; pass --allow-constant (allow_constant=True) to "
                f"export it anyway"
            )
        logger.warning("exporting anyway (--allow-constant): %s", message)
    if head.kind != "regression":
        _warn_one_sided(head, reference)


def _warn_one_sided(head: Head, reference: parity.Reference) -> None:
    labels = decide(head, reference.proba, head.threshold)
    for unit in range(labels.shape[1]):
        seen = np.unique(labels[:, unit])
        if len(seen) == 1:
            which = "" if labels.shape[1] == 1 else f" for {head.labels[unit]!r}"
            logger.warning(
                "every sample of the %s is decided %s%s by the Keras model at threshold %s: the "
                "gate never sees the other decision, so it is untested; give validation data "
                "with both sides of the threshold",
                reference.data, int(seen[0]), which, head.threshold,
            )  # fmt: skip
