// Runs every case of cases.json on the test images and leaves the answers in window.__result
// (or the first error in window.__error):
// - MediaPipe Tasks' ImageClassifier, created from the .tflite as it is (default options, CPU):
//   each head's categories, as an app gets them.
// - onnxruntime-web (wasm): the "class" output, with the labels (keras-edge's record) and the
//   threshold (the model_info key) read from the file's own metadata_props, which ONNX Runtime's
//   JavaScript API does not expose: a few lines of protobuf reading below.
import { FilesetResolver, ImageClassifier } from "./node_modules/@mediapipe/tasks-vision/vision_bundle.mjs";
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

async function bytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function images(data, [n, h, w, c]) {
  const pixels = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
  const out = [];
  for (let i = 0; i < n; i++) {
    const rgba = new Uint8ClampedArray(h * w * 4);
    for (let p = 0; p < h * w; p++) {
      for (let k = 0; k < 3; k++) rgba[p * 4 + k] = pixels[(i * h * w + p) * c + (c === 3 ? k : 0)];
      rgba[p * 4 + 3] = 255;
    }
    out.push({ image: new ImageData(rgba, w, h), floats: pixels.slice(i * h * w * c, (i + 1) * h * w * c) });
  }
  return out;
}

// ModelProto.metadata_props (field 14): StringStringEntryProto {key: 1, value: 2}.
function metadataProps(buf) {
  let pos = 0;
  const varint = () => {
    let value = 0, shift = 0, b;
    do { b = buf[pos++]; value += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
    return value;
  };
  const skip = (wire) => {
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 2) { const length = varint(); pos += length; }
    else if (wire === 5) pos += 4;
    else throw new Error(`unexpected protobuf wire type ${wire}`);
  };
  const text = (start, end) => new TextDecoder().decode(buf.subarray(start, end));
  const props = {};
  while (pos < buf.length) {
    const tag = varint(), field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 14 && wire === 2) {
      const end = varint() + pos;
      let key = "", value = "";
      while (pos < end) {
        const inner = varint(), f = Math.floor(inner / 8);
        const len = varint(), start = pos;
        pos += len;
        if (f === 1) key = text(start, pos); else if (f === 2) value = text(start, pos);
      }
      props[key] = value;
    } else skip(wire);
  }
  return props;
}

async function main() {
  const cases = await (await fetch("cases.json")).json();
  const shots = images(await bytes(cases.images.file), cases.images.shape);
  const result = { mediapipe: {}, onnx: {} };
  const fileset = await FilesetResolver.forVisionTasks("./node_modules/@mediapipe/tasks-vision/wasm");
  for (const { id, model } of cases.mediapipe) {
    const classifier = await ImageClassifier.createFromOptions(fileset, {
      baseOptions: { modelAssetPath: model, delegate: "CPU" }, runningMode: "IMAGE",
    });
    result.mediapipe[id] = shots.map(({ image }) => classifier.classify(image).classifications.map(
      (head) => ({ head: head.headName, categories: head.categories.map((c) => [c.categoryName, c.score]) })));
    classifier.close();
  }
  ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  ort.env.wasm.numThreads = 1;
  for (const { id, model } of cases.onnx) {
    const file = await bytes(model);
    const props = metadataProps(file);
    // The class indexes the head's labels (keras-edge's record); -1: below the minimum confidence.
    // (model_info labels names the decision output's columns: "unknown" first where there is one.)
    const labels = JSON.parse(props.keras_edge).head.labels;
    const session = await ort.InferenceSession.create(file, { executionProviders: ["wasm"] });
    const [h, w, c] = cases.images.shape.slice(1);
    const classes = [];
    for (const { floats } of shots) {
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", floats, [1, h, w, c]) });
      const index = Number(out["class"].data[0]);
      classes.push(index < 0 ? "unknown" : labels[index]);
    }
    result.onnx[id] = { classes, threshold: props["model_info confidence_threshold"] ?? null };
  }
  window.__result = result;
}

main().catch((error) => { window.__error = String(error && error.stack || error); });
