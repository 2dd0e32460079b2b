"""The three packages respect their layers: ``benchmarks -> exporter -> runtime`` and
``benchmarks -> runtime``, no arrow back, no cycle, and the console script imports a
subcommand's package only when that subcommand runs. Names are ``keras_edge.*``, so a user's
own ``runtime/`` or ``benchmarks/`` folder cannot shadow them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"keras_edge.runtime": "runtime", "keras_edge.exporter": "exporter",
            "keras_edge.benchmarks": "benchmarks", "keras_edge": "keras_edge"}  # fmt: skip
# What each package may import of keras-edge: the layers, bottom up.
ALLOWED = {
    "keras_edge.runtime": {"keras_edge.runtime"},
    "keras_edge.exporter": {"keras_edge.runtime", "keras_edge.exporter"},
    "keras_edge.benchmarks": {"keras_edge.runtime", "keras_edge.exporter", "keras_edge.benchmarks"},
}
HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx"}


def _package(module: str) -> str:
    return next(p for p in PACKAGES if module == p or module.startswith(p + "."))


def _modules() -> dict[str, Path]:
    """Every module of the packages, subpackages included (``keras_edge.runtime.batch.*``)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            out[".".join((package, *parts[: -1 if parts[-1] == "__init__" else None]))] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the keras_edge modules it imports (at module level or inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("keras_edge")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_edge"):
                assert node.level == 0, f"{name}: use absolute keras_edge imports"
                for alias in node.names:  # `from keras_edge.exporter import golden`: a module
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else str(node.module))
        graph[name] = targets - {name}
    return graph


def test_no_arrow_upward_and_no_cycle():
    graph = import_graph()
    for module, targets in graph.items():
        package = _package(module)
        if package == "keras_edge":  # the dispatcher at the top may reach every layer
            continue
        upward = {t for t in targets if _package(t) not in ALLOWED[package]}
        assert not upward, f"{module} imports {sorted(upward)} against the layers"
    state: dict[str, int] = {}  # no cycle among modules either: a depth-first search

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_benchmarks_use_only_the_exporters_public_api():
    from keras_edge import exporter

    for path in (REPO / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = getattr(node, "module", None) or ""
            if isinstance(node, ast.ImportFrom) and module.startswith("keras_edge.exporter"):
                assert module == "keras_edge.exporter", f"{path.name} imports {module}"
                assert all(a.name in exporter.__all__ for a in node.names), path.name


def test_import_keras_edge_loads_no_exporter_and_no_tensorflow():
    code = (
        "import json, sys, keras_edge; keras_edge.__version__; keras_edge.load; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(proc.stdout)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded
    assert not [m for m in loaded if m.startswith(("keras_edge.exporter", "keras_edge.bench"))]


# A child that runs the console script's main() and then reports what it imported.
CHILD = (
    "import json, sys\n"
    "from keras_edge.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    "sys.exit(code)\n"
)


def run_cli_child(*args: str, cwd: Path | None = None, python: str = sys.executable):
    """(exit code, stdout before the module list, stderr, modules the command imported)."""
    proc = subprocess.run([python, "-c", CHILD, *args], capture_output=True, text=True, cwd=cwd)
    out, _, modules = proc.stdout.rpartition("\nMODULES ")
    return proc.returncode, out, proc.stderr, set(json.loads(modules)) if modules else set()


def foreign(modules: set[str], *prefixes: str) -> list[str]:
    """The heavy modules (TensorFlow, Keras, tf2onnx, onnx) and ``prefixes`` in ``modules``."""
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(prefixes))


@pytest.mark.parametrize("command", ["predict", "inspect", "verify"])
def test_device_commands_import_neither_exporter_nor_benchmarks(command, seed_all, tmp_path):
    folder = str(seed_all[0])
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    args = {"predict": [folder, str(tmp_path / "x.npy")], "inspect": [folder], "verify": [folder]}
    code, _, err, modules = run_cli_child(command, *args[command])
    assert code == 0, err
    assert "keras_edge.runtime" in modules
    assert foreign(modules, "keras_edge.exporter", "keras_edge.benchmarks") == []


def test_export_imports_no_benchmarks_code(seed_dir, tmp_path):
    out = str(tmp_path / "d")
    code, _, err, modules = run_cli_child(
        "export", str(seed_dir / "seed.keras"), "--out", out, "--formats", "onnx"
    )
    assert code == 0, err
    assert "keras_edge.exporter.export" in modules and "tensorflow" in modules
    assert not [m for m in modules if m.startswith("keras_edge.benchmarks")]


def test_version():
    from keras_edge import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "keras_edge", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"keras-edge {__version__}"


@pytest.mark.parametrize("command", ["inspect", "predict"])
def test_output_into_head_ends_quietly(command, seed_all, tmp_path):
    # `keras-edge inspect DIR | head -3`, and predict of 200,000 rows into `head -1`, which
    # closes the pipe while predict is still writing.
    np.save(tmp_path / "x.npy", np.zeros((200_000, 2), np.float32))
    args = [str(seed_all[0])] + ([str(tmp_path / "x.npy")] if command == "predict" else [])
    proc = subprocess.run(
        f"set -o pipefail; {sys.executable} -m keras_edge {command} {' '.join(args)} | head -3",
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("shadow", ["runtime", "benchmarks", "exporter"])
def test_a_users_folder_does_not_shadow_the_package(shadow, tmp_path):
    # A folder of that name in the working directory, as a user's project may have; importing
    # it raises. keras_edge.* must still load our package from where it is installed.
    (tmp_path / shadow).mkdir()
    (tmp_path / shadow / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    code = (
        "import json, keras_edge.runtime, keras_edge.benchmarks.cli, keras_edge.exporter\n"
        "print(json.dumps([keras_edge.runtime.__file__, keras_edge.benchmarks.__file__]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runtime_file, benchmarks_file = json.loads(proc.stdout)
    assert not runtime_file.startswith(str(tmp_path)) and not benchmarks_file.startswith(str(tmp_path))
    assert Path(runtime_file).parent.name == "runtime"
    cli = subprocess.run(
        [sys.executable, "-m", "keras_edge", "inspect", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert cli.returncode == 0 and "manifest" in cli.stdout, cli.stderr
