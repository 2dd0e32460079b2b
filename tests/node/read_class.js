// A non-Python consumer: reads an exported .onnx with onnxruntime-node, runs it on the inputs
// in a raw float32 file, and prints the embedded keras-edge threshold and the "class" output.
// usage: node read_class.js MODEL.onnx INPUTS.f32 ROWS FEATURES
const fs = require("fs");
const ort = require("onnxruntime-node");

// The ONNX file is a protobuf: ModelProto field 14 holds metadata_props entries
// (StringStringEntryProto: key = field 1, value = field 2). Read just those.
function varint(buf, pos) {
  let value = 0, shift = 0, byte;
  do {
    byte = buf[pos++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [value, pos];
}
function fields(buf) {
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = varint(buf, pos);
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { [, pos] = varint(buf, pos); }
    else if (wire === 1) { pos += 8; }
    else if (wire === 5) { pos += 4; }
    else if (wire === 2) {
      let len;
      [len, pos] = varint(buf, pos);
      out.push([field, buf.subarray(pos, pos + len)]);
      pos += len;
    } else { throw new Error("unexpected wire type " + wire); }
  }
  return out;
}
function metadata(buf) {
  const props = {};
  for (const [field, body] of fields(buf)) {
    if (field !== 14) continue;
    const entry = Object.fromEntries(fields(body).map(([f, v]) => [f, v.toString("utf8")]));
    props[entry[1]] = entry[2];
  }
  return props;
}

async function main() {
  const [model, inputs, rows, features] = process.argv.slice(2);
  const bytes = fs.readFileSync(model);
  const record = JSON.parse(metadata(bytes).keras_edge);
  const raw = fs.readFileSync(inputs);
  const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const session = await ort.InferenceSession.create(bytes);
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, [Number(rows), Number(features)]) };
  const result = await session.run(feeds, ["class"]);
  const classes = Array.from(result["class"].data, (v) => Number(v));
  console.log(JSON.stringify({ threshold: record.head.threshold, rule: record.decision_rule, classes }));
}
main().catch((err) => { console.error(err.message); process.exit(1); });
