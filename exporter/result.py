"""What ``export()`` returns: the manifest it wrote, the parity table as the CLI prints it, and
the variants that failed their gate.

A failed gate is a result, not an exception, in Python: a training script that exports gets
the table and decides. ``raise_for_gate()`` (or ``export(..., strict=True)``) raises the
:class:`ParityError` that ``keras-edge export`` exits 3 with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from keras_edge.exporter.errors import ParityError
from keras_edge.runtime.manifest import MANIFEST_NAME, Head, Manifest, Variant
from keras_edge.runtime.report import calibration_summary, format_table, gate_summary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """An export that was written: ``manifest`` as in ``out/manifest.json``; ``failed``, the
    variants that missed their gate (written, marked failed, never the default); ``refused``,
    the variants not written and why. ``print(result)`` prints the table ``keras-edge export``
    prints."""

    manifest: Manifest
    out: Path
    failed: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, manifest: Manifest, out: str | Path) -> ExportResult:
        """The result of the export that wrote ``manifest`` to ``out``."""
        failed = tuple(vid for vid, v in manifest.variants.items() if not v.passed)
        return cls(manifest=manifest, out=Path(out), failed=failed, refused=dict(manifest.refused))

    @property
    def passed(self) -> bool:
        """True when every variant written passed its gate."""
        return not self.failed

    @property
    def variants(self) -> dict[str, Variant]:
        return self.manifest.variants

    @property
    def default_variant(self) -> str | None:
        return self.manifest.default_variant

    @property
    def head(self) -> Head:
        return self.manifest.head

    @property
    def table(self) -> str:
        """The parity table, the gate's line and the calibration line, as the CLI prints them."""
        m = self.manifest
        return format_table(m) + gate_summary(m) + calibration_summary(m)

    def __str__(self) -> str:
        return self.table

    def gate_error(self) -> ParityError | None:
        """The :class:`ParityError` naming each failed variant and why, or None if all passed."""
        if not self.failed:
            return None
        data = next(
            (v.parity.data for v in self.manifest.variants.values() if v.parity is not None), None
        )
        where = f" on {data}" if data else ""
        lines = [
            f"  {vid}: {'; '.join(self.variants[vid].parity.failures)}"  # type: ignore[union-attr]
            for vid in self.failed
        ]
        return ParityError(
            f"{len(self.failed)} variant(s) failed the parity gate{where}; they are marked "
            f"failed in {self.out / MANIFEST_NAME} and never made the default:\n" + "\n".join(lines),
            failed=list(self.failed),
        )

    def raise_for_gate(self) -> None:
        """Raise the :class:`ParityError` (exit code 3 in the CLI) when a variant failed its
        gate; return None when every variant passed."""
        error = self.gate_error()
        if error is not None:
            raise error
