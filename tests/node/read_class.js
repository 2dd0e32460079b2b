// A non-Python consumer: reads an exported .onnx with onnxruntime-node, runs it on the inputs
// in a raw float32 file, and prints the embedded keras-edge threshold and the "class" output,
// as label names (the record's labels), and the standard "model_info" threshold (OpenVINO's key).
// usage: node read_class.js MODEL.onnx INPUTS.f32 ROWS FEATURES
// (FEATURES: the number of features, or one row's shape as a comma list, 24,24,3 for images)
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
  const props = metadata(bytes);
  const record = JSON.parse(props.keras_edge);
  const raw = fs.readFileSync(inputs);
  const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const session = await ort.InferenceSession.create(bytes);
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, [Number(rows), ...features.split(",").map(Number)]) };
  const result = await session.run(feeds, ["class"]);
  const classes = Array.from(result["class"].data, (v) => Number(v));
  // The class indexes the head's labels; -1 is "unknown" (below the minimum confidence).
  const labels = classes.map((c) => (c < 0 ? "unknown" : record.head.labels[c]));
  const standard = props["model_info confidence_threshold"] ?? null;
  console.log(JSON.stringify({ threshold: record.head.threshold, rule: record.decision_rule, classes,
                               labels, confidence_threshold: standard }));
}
main().catch((err) => { console.error(err.message); process.exit(1); });
