"""The machine a benchmark ran on, recorded in its JSON so that a comparison of two runs can say
which machines it compares. Versions come from package metadata: nothing is imported to read
them, so a device without TensorFlow records its absence without paying for the attempt."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# (key in the JSON, distribution name, top-level module): always recorded, None when absent.
ALWAYS = (
    ("keras-edge", "keras-edge", "keras_edge"),
    ("numpy", "numpy", "numpy"),
    ("onnxruntime", "onnxruntime", "onnxruntime"),
    ("ai-edge-litert", "ai-edge-litert", "ai_edge_litert"),
)
# Recorded only where installed (a device has neither).
IF_INSTALLED = (("tensorflow", "tensorflow", "tensorflow"), ("keras", "keras", "keras"))
ENGINES = ("onnxruntime", "ai-edge-litert")


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _version(dist: str, module: str) -> str | None:
    """The installed version of ``dist``, or of whichever distribution provides ``module``
    (TensorFlow installs as ``tensorflow-cpu``, ONNX Runtime as ``onnxruntime-gpu``, ...)."""
    for name in (dist, *_distributions().get(module, [])):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe() -> dict[str, Any]:
    """CPU model, cores, OS, Python and the versions that decide the figures."""
    versions: dict[str, str | None] = {key: _version(d, m) for key, d, m in ALWAYS}
    for key, dist, module in IF_INSTALLED:
        found = _version(dist, module)
        if found is not None:
            versions[key] = found
    os_name = platform.platform()
    return {
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "os": os_name,
        "platform": os_name,  # the key older JSON files have
        "python": platform.python_version(),
        "versions": versions,
    }


def summary(machine: dict[str, Any]) -> str:
    """One line: CPU, cores, OS and engine versions (of this run or of an older JSON, whose
    absent packages read ``"absent"``)."""
    versions = machine.get("versions") or {}
    engines = [
        f"{name} {versions[name]}"
        for name in (*ENGINES, "tensorflow")
        if versions.get(name) not in (None, "absent")
    ]
    os_name = machine.get("os") or machine.get("platform") or "unknown OS"
    return (
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores, {os_name}, "
        f"{', '.join(engines) or 'no engine recorded'}"
    )
