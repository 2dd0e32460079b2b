"""What an export is asked to do: every argument of :func:`keras_edge.exporter.export` in one
frozen object, checked in one place before anything is read, converted or written."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from keras_edge.exporter import mixed
from keras_edge.exporter import plot as plotting
from keras_edge.exporter.custom_objects import CustomCode
from keras_edge.exporter.errors import CalibrationError
from keras_edge.exporter.head_check import HEADS as HEAD_CHOICES
from keras_edge.runtime.errors import UsageError

logger = logging.getLogger(__name__)

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = ("fp16", "dynamic", "int8")
HEADS = HEAD_CHOICES

# Progress callback: (step, total, message).
Progress = Callable[[int, int, str], None]


def parse_quantize(value: str | Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """('fp16,int8' | ['all'] | None) -> (quantizations, asked for 'all')."""
    if value is None:
        return (), False
    if not isinstance(value, (str, list, tuple)) or not all(
        isinstance(v, str) for v in ([value] if isinstance(value, str) else value)
    ):
        raise UsageError(f"Expected quantize= a comma list or a list of strings, got {value!r}")
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if "all" in items:
        return QUANTIZATIONS, True
    return tuple(dict.fromkeys(items)), False


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"Expected {name}=True or False, got {value!r}")


def _number(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UsageError(f"Expected {name}= a number or None, got {value!r}")


def _names(name: str, value: Any) -> tuple[str, ...] | None:
    """A list of names as a tuple of strings; a bare string (which would split into letters) or
    anything but a list of strings is refused."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) for v in value
    ):
        raise UsageError(f"Expected {name}= a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ExportOptions:
    """Every choice of an export (the data and the model are its inputs, not options).

    Build it with :meth:`create` from ``export()``'s arguments as a user passes them (strings,
    lists, None); the fields are then normalized tuples and numbers.

    formats: any of ``"tflite"``, ``"onnx"``.
    quantize: any of ``"fp16"``, ``"dynamic"``, ``"int8"``, or ``"all"``; fp32 is always made.
    threshold: the decision threshold (a list for multilabel), rule ``p > threshold``.
    head: ``"auto"`` (read from a sigmoid/softmax), or what the output holds: ``"binary"``
        (1 sigmoid unit), ``"multilabel"`` (k sigmoid units), ``"multiclass"`` (k softmax
        units), ``"logit"`` (logits), ``"regression"`` (values). A declaration must agree with
        a sigmoid/softmax the model ends in; on a linear-looking output it is checked against
        the Keras model's outputs on the parity data (HeadContradictionError, exit 2).
    labels: the class names (one per output unit; two for a binary head).
    safe_mode: Keras safe mode when loading a file; ``False`` allows Lambda layers.
    custom_objects: the user code the model needs (custom layers, losses, activations):
        ``.py`` files or dotted module names, imported in order before the model is loaded
        (safe mode stays on), or a dict ``{name: object}`` passed to Keras as it is; the
        manifest records each (a file by name and SHA-256).
    min_agreement: overrides every precision's minimum label agreement.
    int8_io: give ``tflite-int8`` int8 input and output (for integer-only targets).
    tune: a threshold objective (``"f1"``, ``"fbeta:2"``, ``"youden"``, ``"balanced-accuracy"``,
        ``"mcc"``, ``"precision>=0.9"``, ``"recall>=0.95"``, ``"cost:fp=1,fn=20"``): the
        Keras model's threshold, then every variant's own, tuned on labelled data.
    with_decision: give every artifact a second output, ``class`` (int64), decided in the
        graph with the variant's own threshold (argmax for multiclass); a model with several
        heads gets one per head, ``class_<head name>``, none for a regression head.
    min_confidence: for a multiclass head, the top probability a sample needs for a class;
        at or below it the class is -1 ("unknown"). It is the head's threshold: ``tune``
        tunes it, with "correct answer" as the positive (``precision>=0.99``: the most
        answers kept with at least 99% of the kept ones right).
    plot: with ``tune``, draw the objective against the threshold for Keras and each
        variant, the chosen points marked, to this .png/.svg/.pdf (needs matplotlib).
    int8_fallback: ``"auto"``: a full-int8 variant that misses its gate is made again with
        the fewest layers kept in float that pass it (mixed precision; the manifest's
        ``fallback`` lists them and what was tried); ``"none"``: it fails as it is.
    force: export into a non-empty folder that is not a previous export (files with the
        export's names are replaced, the others kept); without it, a UsageError.
    allow_constant: export a model whose Keras output is (nearly) constant on the parity
        data, with a warning; without it, ConstantOutputError (exit 3) before converting.
    feature_names: the names of the model's features (one input of shape (None, k)), kept
        in the manifest and every artifact so that files' columns are matched by name. By
        default, the columns of a pandas DataFrame given as calibration or validation data.
    input_normalization: what an app does to 0-255 pixels before a float image input, written
        into the TFLite metadata for MediaPipe: ``"MEAN/STD"`` (each a number or a comma list
        per channel, ``"127.5/127.5"``) or a pair of tuples. By default: none needed when the
        model starts with its own ``Rescaling``/``Normalization``, else read off the data's
        range (see :func:`keras_edge.exporter.platforms.normalizations`).
    require_data: refuse (UsageError, exit 2, nothing written) an export that has neither
        validation nor calibration data, instead of gating on the synthetic probe set.
    strict: raise :class:`ParityError` when a variant fails its gate (as ``keras-edge
        export`` exits 3); without it, the failed variants are in the result's ``failed``
        and a warning names them.
    """

    formats: tuple[str, ...] = FORMATS
    quantize: tuple[str, ...] = ()
    all_quantizations: bool = False  # asked for "all": int8 is skipped, not refused, without data
    threshold: float | tuple[float, ...] | dict[str, Any] = 0.5  # a dict: one per head, by name
    head: str | dict[str, str] = "auto"
    labels: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None
    safe_mode: bool = True
    custom_objects: CustomCode = field(default_factory=CustomCode)
    min_agreement: float | None = None
    int8_io: bool = False
    # checked with the head: it is a multiclass head's
    min_confidence: float | dict[str, float] | None = None
    int8_fallback: str = "auto"
    tune: str | None = None
    with_decision: bool = False
    plot: Path | None = None
    force: bool = False
    allow_constant: bool = False
    feature_names: tuple[str, ...] | None = None
    input_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    require_data: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise UsageError(f"Expected formats from {FORMATS}, got {list(self.formats)}")
        if any(q not in QUANTIZATIONS for q in self.quantize):
            raise UsageError(
                f"Expected quantizations from {QUANTIZATIONS} (or 'all'), got {list(self.quantize)}"
            )
        _number("min_agreement", self.min_agreement)  # min_confidence: checked with the head
        for name in ("tune", "int8_fallback"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"Expected {name}= a string, got {value!r}")
        heads = self.head.values() if isinstance(self.head, dict) else [self.head]
        if any(h not in HEADS for h in heads):
            raise UsageError(
                f"Expected head from {HEADS} (or a dict of them by output name), got {self.head!r}"
            )
        if self.min_agreement is not None and not (0.0 <= self.min_agreement <= 1.0):
            raise UsageError(f"Expected --min-agreement between 0 and 1, got {self.min_agreement}")
        if self.int8_fallback not in mixed.FALLBACKS:
            raise UsageError(
                f"Expected --int8-fallback from {mixed.FALLBACKS}, got {self.int8_fallback!r}"
            )
        for name in ("safe_mode", "int8_io", "with_decision", "force", "allow_constant",
                     "require_data", "strict", "all_quantizations"):  # fmt: skip
            _flag(name, getattr(self, name))
        if self.tune is not None:
            from keras_edge.exporter.tuning import Objective

            Objective.parse(self.tune)  # a bad objective is refused before anything is read
        plotting.check(self.plot, self.tune)

    @classmethod
    def create(cls, **arguments: Any) -> ExportOptions:
        """The options from ``export()``'s keyword arguments as a user passes them."""
        unknown = sorted(set(arguments) - {f.name for f in fields(cls)} - {"quantize"})
        if unknown:
            raise UsageError(f"Expected export options from {sorted(f.name for f in fields(cls))}, "
                             f"got {unknown}")  # fmt: skip
        quantize, asked_all = parse_quantize(arguments.pop("quantize", None))
        threshold = _per_head("threshold", arguments.pop("threshold", 0.5), _threshold)
        formats = arguments.pop("formats", FORMATS)
        formats = (formats,) if isinstance(formats, str) else _names("formats", formats)
        plot = arguments.pop("plot", None)
        if plot is not None and not isinstance(plot, (str, Path)):
            raise UsageError(f"Expected plot= a file path, got {plot!r}")
        return cls(
            formats=formats or (),
            quantize=quantize,
            all_quantizations=asked_all,
            threshold=threshold,
            labels=_per_head("labels", arguments.pop("labels", None), lambda v: _names("labels", v)),
            plot=None if plot is None else Path(plot),
            feature_names=_names("feature_names", arguments.pop("feature_names", None)),
            input_normalization=_normalization(arguments.pop("input_normalization", None)),
            custom_objects=CustomCode.parse(arguments.pop("custom_objects", None)),
            **arguments,
        )

    def without_int8(self, calibration: Any) -> ExportOptions:
        """Full int8 needs calibration data: refused when asked for by name without it; as part
        of "all", left out with a warning."""
        if "int8" not in self.quantize or calibration is not None:
            return self
        if not self.all_quantizations:
            raise CalibrationError(
                "Full-int8 variants need calibration data (--calibration FILE, or calibration= "
                "in Python) drawn from the inputs the device will see; got none. keras-edge "
                "never calibrates on random numbers"
            )
        logger.warning("skipping the int8 variants: no calibration data was given")
        return replace(self, quantize=tuple(q for q in self.quantize if q != "int8"))

    def variant_ids(self) -> list[tuple[str, str, str]]:
        """(id, format, precision) in a fixed order: formats, then fp32 before quantized."""
        precisions = ["fp32", *[q for q in QUANTIZATIONS if q in self.quantize]]
        return [(f"{fmt}-{p}", fmt, p) for fmt in FORMATS if fmt in self.formats for p in precisions]


def _normalization(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``input_normalization=`` as ``(mean, std)`` tuples: from ``"MEAN/STD"`` or a pair."""
    from keras_edge.exporter.platforms import parse_normalization

    if value is None:
        return None
    if isinstance(value, str):
        return parse_normalization(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        as_text = "/".join(",".join(str(v) for v in (p if isinstance(p, (list, tuple)) else [p]))
                           for p in value)  # fmt: skip
        return parse_normalization(as_text)
    raise UsageError(f"Expected input_normalization= 'MEAN/STD' or (mean, std), got {value!r}")


def _threshold(value: Any) -> float | tuple[float, ...]:
    try:
        if isinstance(value, (list, tuple)):
            return tuple(float(t) for t in value)
        return float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"Expected a threshold number or list, got {value!r}") from exc


def _per_head(name: str, value: Any, one: Any) -> Any:
    """``one(value)``, or for a dict by head name (a model with several outputs) one per head."""
    if not isinstance(value, dict):
        return one(value)
    if not all(isinstance(k, str) and k for k in value):
        raise UsageError(f"Expected {name}= a dict by head (output) name, got keys {list(value)}")
    return {k: one(v) for k, v in value.items()}
