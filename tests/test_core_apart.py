"""The device core of ``keras_edge.runtime`` stays apart from offline batch scoring
(``keras_edge.runtime.batch``: readers, writers, Arrow, streaming, Ray, metrics).

What a device runs, ``keras_edge.load(dir).predict(x)``, ``keras-edge inspect`` and
``keras-edge verify``, imports none of it, nor pyarrow or Ray: proved in a subprocess, by what
lands in ``sys.modules``. And no module of the core imports it, at module level or inside a
function, but through one documented door, ``Classifier.score_batch``: proved on the source,
by walking every import of every core module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.test_layers import run_cli_child

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime"
BATCH = "keras_edge.runtime.batch"
# The one import of batch scoring the core may make: inside this method, when it is called.
DOOR = {("classifier.py", "Classifier.score_batch")}


def offline(modules: set[str] | list[str]) -> list[str]:
    """The modules of batch scoring, pyarrow and Ray among ``modules``."""
    return sorted(
        m for m in modules if m.split(".")[0] in ("pyarrow", "ray") or (m + ".").startswith(BATCH + ".")
    )


PREDICT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras_edge

    folder = sys.argv[1]
    x = np.array([[2.0, 0.0], [-1.0, 0.5], [0.3, -0.2]], np.float32)
    answers = {}
    for variant in (None, "onnx-fp32", "tflite-fp32"):
        clf = keras_edge.load(folder) if variant is None else keras_edge.load(folder, variant=variant)
        answers[clf.variant] = [clf.predict(x).tolist(), clf.predict_proba(x).ravel().tolist(),
                                [str(n) for n in clf.predict_labels(x)]]
    print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))
    """
)


def test_load_and_predict_import_no_batch_scoring(fp32_export):
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(fp32_export)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["answers"]) == {"tflite-fp32", "onnx-fp32"}  # both engines ran
    assert "keras_edge.runtime.classifier" in report["modules"]
    assert offline(report["modules"]) == []


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_inspect_and_verify_import_no_batch_scoring(command, fp32_export):
    code, out, err, modules = run_cli_child(command, str(fp32_export))
    assert code == 0, err
    assert "onnx-fp32" in out
    assert f"keras_edge.runtime.commands.{command}" in modules
    assert offline(modules) == []


def test_configuring_predict_imports_no_batch_scoring():
    # `keras-edge predict --help` builds the parser only: offline scoring waits for a run.
    code = (
        "import json, sys\n"
        "from keras_edge.cli import build_parser\n"
        "build_parser('predict')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(proc.stdout)
    assert "keras_edge.runtime.commands.predict" in modules
    assert offline(modules) == []


def test_predict_runs_through_batch_scoring(fp32_export, tmp_path):
    # The other side of the test above: a run reads its file through keras_edge.runtime.batch.
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    code, out, err, modules = run_cli_child("predict", str(fp32_export), str(tmp_path / "x.npy"))
    assert code == 0, err
    assert out.splitlines()[0] == "probability,class,label"
    assert {f"{BATCH}.readers", f"{BATCH}.stream", f"{BATCH}.writers"} <= modules
    assert not [m for m in modules if m.split(".")[0] in ("pyarrow", "ray")]


def imports_of_batch(path: Path) -> set[tuple[str, str]]:
    """``(file, where)`` for every import of batch scoring in ``path``: ``where`` is the
    dotted name of the function (or class) that holds it, ``TYPE_CHECKING`` in an
    ``if TYPE_CHECKING:`` block (for annotations only), ``<module>`` at module level."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path.name}: use absolute keras_edge imports"
                names = [f"{child.module}.{a.name}" for a in child.names]
            if any(n == BATCH or n.startswith(BATCH + ".") for n in names):
                found.add((path.name, ".".join(scope) or "<module>"))
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
            elif isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                visit(child, [*scope, "TYPE_CHECKING"])
            else:
                visit(child, scope)

    visit(ast.parse(path.read_text()), [])
    return found


def test_the_core_imports_batch_scoring_only_through_its_one_door():
    core = sorted(RUNTIME.glob("*.py"))  # the core: runtime/'s own modules, not its subpackages
    names = {p.name for p in core}
    assert {"classifier.py", "loading.py", "manifest.py", "engines.py", "verify.py"} <= names
    found = set().union(*(imports_of_batch(path) for path in core))
    assert found == DOOR, f"the core imports {BATCH} from {sorted(found - DOOR)}"


def test_inspect_and_verify_modules_import_no_batch_scoring_and_predict_only_when_it_runs():
    commands = RUNTIME / "commands"
    for name in ("inspect.py", "verify.py", "__init__.py"):
        assert imports_of_batch(commands / name) == set(), name
    where = {where for _, where in imports_of_batch(commands / "predict.py")}
    assert "run_predict" in where and where <= {"run_predict", "TYPE_CHECKING"}, where


def test_predicts_bad_row_choices_are_batch_scorings_policies():
    from keras_edge.runtime.batch.scoring import BAD_ROW_POLICIES
    from keras_edge.runtime.commands.predict import BAD_ROW_POLICIES as CHOICES

    assert CHOICES == BAD_ROW_POLICIES
