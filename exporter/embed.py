"""Write the decision record (:mod:`keras_edge.runtime.embedded`) into an artifact's bytes:
ONNX ``metadata_props``, TFLite ``Model.metadata``. Both stay byte-reproducible: the record is
sorted JSON, and re-serializing is deterministic."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from keras_edge.exporter import _tf
from keras_edge.runtime.embedded import KEY, encode

logger = logging.getLogger(__name__)


def into_onnx(data: bytes, record: dict[str, Any]) -> bytes:
    onnx = _tf.module("onnx")
    model = onnx.load_from_string(data)
    kept = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=KEY, value=encode(record))
    return model.SerializeToString(deterministic=True)


def into_tflite(data: bytes, record: dict[str, Any]) -> bytes:
    schema = _tf.module("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    put_metadata(model, KEY, encode(record).encode("utf-8"))
    return pack_tflite(model, len(data))


def put_metadata(model: Any, name: str, blob: bytes) -> None:
    """Make ``blob`` (in a new buffer) the TFLite ``ModelT``'s metadata entry ``name``, in
    place of any entry of that name."""
    schema = _tf.module("ai_edge_litert.schema_py_generated")
    model.metadata = [m for m in (model.metadata or []) if m.name not in (name, name.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata.append(entry)


def pack_tflite(model: Any, size_hint: int) -> bytes:
    """A TFLite ``ModelT`` (the schema's object API) back to flatbuffer bytes."""
    flatbuffers = _tf.module("flatbuffers")
    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
