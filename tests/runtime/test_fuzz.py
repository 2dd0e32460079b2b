"""Hostile files: an artifact whose bytes were changed and whose manifest hash was updated to
match (a buggy or hostile build) ends in a typed error or an answer, never a crash. Every
variant's file is mutated (bits flipped, truncated, a chunk spliced elsewhere), each case
loaded and run in a process of its own (forked from a server that imported only the runtime),
and the outcomes counted: signals apart from typed errors, untyped errors apart from both."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
from collections import Counter
from pathlib import Path

import numpy as np

PER_VARIANT = 25  # x 8 variants: 200 cases, about 10 s


def _mutants(folder: Path, work: Path) -> list[tuple[str, str, str]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    rng, cases = random.Random(0), []
    for vid, v in sorted(manifest["variants"].items()):
        data = (folder / v["file"]).read_bytes()
        for k in range(PER_VARIANT):
            kind, b = ("flip", "truncate", "splice")[k % 3], bytearray(data)
            if kind == "flip":
                for _ in range(rng.choice([1, 4, 32])):
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            elif kind == "truncate":
                b = b[: rng.randrange(len(b))]
            else:
                n = rng.randrange(1, 256)
                at, to = rng.randrange(len(b) - n), rng.randrange(len(b) - n)
                b[to : to + n] = data[at : at + n]
            case = work / f"{vid}-{k}"
            case.mkdir()
            (case / v["file"]).write_bytes(bytes(b))
            edited = json.loads(json.dumps(manifest))
            edited["variants"][vid].update(sha256=hashlib.sha256(b).hexdigest(), bytes=len(b))
            (case / "manifest.json").write_text(json.dumps(edited))
            cases.append((str(case), vid, kind))
    return cases


def _one(folder: str, vid: str, x: np.ndarray, answers: multiprocessing.SimpleQueue) -> None:
    from keras_edge import runtime
    from keras_edge.runtime.errors import KerasEdgeError

    try:
        clf = runtime.load(folder, variant=vid)
        clf.predict(x), clf.predict(x[:1]), clf.predict_proba(x)
        answers.put("answer")
    except KerasEdgeError:
        answers.put("typed error")
    except Exception as exc:  # what the test is looking for
        answers.put(f"untyped {type(exc).__name__}: {exc}")


def test_mutated_artifacts_end_in_typed_errors_or_answers_never_crashes(seed_all, tmp_path, capsys):
    folder, _, _ = seed_all
    cases = _mutants(folder, tmp_path)
    x = np.random.default_rng(0).normal(0, 1, (5, 2)).astype(np.float32)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["keras_edge.runtime", "onnxruntime", "ai_edge_litert.interpreter"])
    outcomes: dict[tuple[str, str, str], str] = {}
    for case in cases:
        answers = context.SimpleQueue()
        process = context.Process(target=_one, args=(*case[:2], x, answers))
        process.start()
        process.join(120)
        if process.is_alive():
            process.kill()
            outcomes[case] = "hang"
        else:  # a signal while running, or after answering (a heap freed twice at exit)
            answer = answers.get() if not answers.empty() else "no answer"
            crashed = process.exitcode != 0
            outcomes[case] = f"crash (exit {process.exitcode}) after {answer}" if crashed else answer
    counts = Counter(o.split(":")[0] for o in outcomes.values())
    with capsys.disabled():
        print(f"\n{len(cases)} mutated artifacts: {dict(counts)}")
    fine = ("answer", "typed error")
    bad = {f"{Path(c[0]).name} ({c[2]})": o for c, o in outcomes.items() if o not in fine}
    assert not bad, bad
    assert counts["typed error"] > len(cases) // 2 and counts["answer"] > 0  # both paths exercised


def _rewire(data: bytes) -> bytes:
    """The damage the fuzz found LiteRT running into heap corruption: one operator's output
    index changed to a tensor already written (in the fuzz, op 6 of tflite-fp16 writing over
    tensor 10). Here: the last operator's output made the graph's input."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(data, 0).Subgraphs(0)
    op = graph.Operators(graph.OperatorsLength() - 1)
    field = op._tab.Offset(8)  # Operator.outputs
    at = op._tab.Vector(field)
    out = bytearray(data)
    out[at : at + 4] = int(graph.Inputs(0)).to_bytes(4, "little", signed=True)
    return bytes(out)


def test_an_operator_writing_over_a_written_tensor_is_refused_at_load(seed_all, tmp_path):
    folder, manifest, _ = seed_all
    for vid in ("tflite-fp32", "tflite-fp16", "tflite-int8"):
        case = tmp_path / vid
        case.mkdir()
        damaged = _rewire((folder / manifest.variants[vid].file).read_bytes())
        (case / manifest.variants[vid].file).write_bytes(damaged)
        edited = json.loads((folder / "manifest.json").read_text())
        edited["variants"][vid].update(sha256=hashlib.sha256(damaged).hexdigest(), bytes=len(damaged))
        (case / "manifest.json").write_text(json.dumps(edited))
        from keras_edge import runtime
        from keras_edge.runtime.errors import ArtifactError

        try:
            runtime.load(case, variant=vid)
        except ArtifactError as exc:
            assert "writes tensor" in str(exc) and "already written" in str(exc), exc
        else:
            raise AssertionError(f"{vid}: a rewired operator output was loaded")
