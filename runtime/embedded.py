"""The decision inside the artifact: what a lone ``.onnx`` or ``.tflite`` file needs to decide
as its export folder does, with no manifest beside it.

Every artifact carries one JSON record under the key ``keras_edge``: the manifest's format
version, the model's name and hashes, its inputs, the head (kind, output, labels) with this
variant's own threshold, and the decision rule. In an ONNX file it is an entry of
``metadata_props`` (read with ONNX Runtime's ``custom_metadata_map``); in a TFLite file a
``Model.metadata`` entry pointing at a buffer (read with the flatbuffers schema that
ai-edge-litert ships). Neither needs TensorFlow or the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from keras_edge.runtime.errors import ArtifactError, ManifestError

logger = logging.getLogger(__name__)

KEY = "keras_edge"


def record(manifest: Any, variant: Any) -> dict[str, Any]:
    """The record for ``variant`` of ``manifest`` (a :class:`Manifest` and a :class:`Variant`)."""
    head = manifest.head.with_threshold(variant.threshold).to_dict()  # this variant's
    return {
        "decision_rule": manifest.decision_rule,
        "format_version": manifest.format_version,
        "head": head,
        "inputs": [spec.to_dict() for spec in manifest.inputs],
        "model": manifest.model.to_dict(),
        "variant": {"format": variant.format, "id": variant.id, "precision": variant.precision},
    }


def encode(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def read_onnx(session: Any) -> dict[str, Any] | None:
    """The record of a loaded ONNX Runtime session, or None for an artifact without one."""
    try:
        text = session.get_modelmeta().custom_metadata_map.get(KEY)
    except UnicodeDecodeError as exc:  # a damaged file: its metadata is not UTF-8
        raise ArtifactError(
            f"Expected UTF-8 metadata in the ONNX artifact, got bytes that are not: {exc}"
        ) from exc
    return None if text is None else _decode(text, "ONNX metadata_props")


def read_tflite(model: bytes) -> dict[str, Any] | None:
    """The record of TFLite flatbuffer bytes, or None for an artifact without one."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        root = schema.Model.GetRootAsModel(model, 0)
        for i in range(root.MetadataLength()):
            entry = root.Metadata(i)
            if entry.Name() == KEY.encode():
                data = root.Buffers(entry.Buffer()).DataAsNumpy()
                text = data.tobytes().decode("utf-8") if isinstance(data, np.ndarray) else ""
                return _decode(text, "TFLite metadata")
    except (IndexError, ValueError, UnicodeDecodeError) as exc:  # a malformed flatbuffer
        raise ArtifactError(f"Could not read the TFLite file's metadata: {exc}") from exc
    return None


def read(fmt: str, data: bytes, engine: Any = None) -> dict[str, Any] | None:
    """The record of an artifact: from the ONNX Runtime ``engine``'s session, or the bytes."""
    return read_onnx(engine.session) if fmt == "onnx" else read_tflite(data)


def manifest_of(path: Path, data: bytes, fmt: str, inside: dict[str, Any] | None) -> tuple[Any, Any]:
    """The one-variant manifest a lone artifact's record describes: (Manifest, Variant)."""
    from keras_edge.runtime.manifest import Head, InputSpec, Manifest, ModelInfo, Variant

    if inside is None:
        raise ArtifactError(
            f"Expected a keras-edge decision record inside {str(path)!r}, found none (an export "
            f"before keras-edge 0.2, or another tool's file); load its export folder instead"
        )
    try:
        head = Head.from_dict(inside["head"])
        info = inside["variant"]
        variant = Variant(
            id=str(info["id"]),
            file=path.name,
            format=fmt,
            precision=str(info["precision"]),
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            threshold=head.threshold,
        )
        manifest = Manifest(
            model=ModelInfo.from_dict(inside["model"]),
            inputs=tuple(InputSpec.from_dict(spec) for spec in inside["inputs"]),
            head=head,
            variants={variant.id: variant},
            default_variant=variant.id,
            format_version=inside["format_version"],
            decision_rule=inside["decision_rule"],
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"Malformed keras-edge record inside {str(path)!r}: {exc!r}") from exc
    return manifest, variant


def _decode(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"Expected a JSON keras-edge record in the {where}, got {text[:80]!r}"
        ) from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"Expected a JSON object in the {where}, got {type(data).__name__}")
    return data


def check_agrees(embedded: dict[str, Any], manifest: Any, variant: Any) -> None:
    """Refuse an artifact whose embedded decision differs from its manifest's, naming both."""
    expected = record(manifest, variant)
    for key in ("format_version", "decision_rule", "head", "inputs"):
        if embedded.get(key) != expected[key]:
            raise ManifestError(
                f"Variant {variant.id!r}: the artifact's embedded {key} is {embedded.get(key)!r}, "
                f"the manifest says {expected[key]!r}; one of them was changed after the export"
            )


def check_tflite_structure(model: bytes) -> None:
    """Refuse a TFLite flatbuffer whose tables point outside themselves, before LiteRT reads
    it: LiteRT checks little, and some damaged files corrupt its heap (an abort when the
    interpreter is freed, after a typed error). Checked: buffer, opcode and tensor indices in
    range, and every constant tensor's data exactly as long as its shape and type say."""
    from ai_edge_litert import schema_py_generated as schema

    sizes = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2, schema.TensorType.INT32: 4,
             schema.TensorType.INT8: 1, schema.TensorType.UINT8: 1, schema.TensorType.INT64: 8,
             schema.TensorType.BOOL: 1, schema.TensorType.INT16: 2}  # fmt: skip
    try:
        root = schema.Model.GetRootAsModel(model, 0)
        buffers, codes = root.BuffersLength(), root.OperatorCodesLength()
        for g in range(root.SubgraphsLength()):
            graph = root.Subgraphs(g)
            _check_tensors(root, graph, sizes, buffers)
            _check_data_flow(root, graph, codes, main=g == 0)
    except ArtifactError as exc:
        raise ArtifactError(f"Expected a well-formed TFLite file, got a damaged one: {exc}") from exc
    except Exception as exc:  # offsets outside the file: flatbuffers raises what it hits
        raise ArtifactError(f"Expected a well-formed TFLite file, got one that is not: {exc}") from exc


def _check_tensors(root: Any, graph: Any, sizes: dict[int, int], buffers: int) -> None:
    """Every tensor of ``graph`` names one of the ``buffers``, and a constant's data is exactly
    as long as its shape and type say."""
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        index = tensor.Buffer()
        if not 0 <= index < buffers:
            raise ArtifactError(f"tensor {t} names buffer {index} of {buffers}")
        length = root.Buffers(index).DataLength()
        size = sizes.get(tensor.Type())
        if length and size is not None:
            expected = int(np.prod(tensor.ShapeAsNumpy(), dtype=np.int64)) * size
            if length != expected:
                raise ArtifactError(
                    f"tensor {t} holds {length} bytes, its shape and type need {expected}"
                )


def _check_data_flow(root: Any, graph: Any, codes: int, main: bool) -> None:
    """Data flow: each operator reads tensors that hold constants, are the graph's inputs or
    state, or that an earlier operator wrote; it writes tensors nobody wrote before. A flipped
    output index that makes an operator write over a constant or another operator's output
    passes every check of :func:`_check_tensors`, and LiteRT then runs it and corrupts its heap
    (an abort when the interpreter is freed). ``main``: the main graph; control-flow subgraphs
    are fed by their callers, so only their indices are checked. ``codes``: the model's number
    of operator codes."""
    count = graph.TensorsLength()
    written = set(graph.InputsAsNumpy().tolist())
    for t in range(count):
        tensor = graph.Tensors(t)
        buffer = root.Buffers(tensor.Buffer())
        # Constant data inside the flatbuffer, or past it (Buffer.offset, for files over
        # 2 GB); a zero-element constant (an empty shape) has no bytes at all.
        stored = buffer.DataLength() or buffer.Offset() > 1
        empty = tensor.ShapeLength() and 0 in tensor.ShapeAsNumpy().tolist()
        if tensor.IsVariable() or stored or empty:
            written.add(t)
    constant = set(written) - set(graph.InputsAsNumpy().tolist())
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        if not 0 <= op.OpcodeIndex() < codes:
            raise ArtifactError(f"operator {o} names opcode {op.OpcodeIndex()} of {codes}")
        for i in [*op.InputsAsNumpy().tolist(), *op.OutputsAsNumpy().tolist()]:
            if not -1 <= i < count:
                raise ArtifactError(f"operator {o} names tensor {i} of {count}")
        if main:
            for i in op.InputsAsNumpy().tolist():
                if i != -1 and i not in written:
                    raise ArtifactError(f"operator {o} reads tensor {i} before it is written")
        for i in op.OutputsAsNumpy().tolist():
            if i == -1:
                continue  # an optional output left out
            if i in constant or (main and i in written):
                raise ArtifactError(f"operator {o} writes tensor {i}, already written")
            written.add(i)
