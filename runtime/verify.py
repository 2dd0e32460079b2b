"""``verify()``: every variant of an export, checked on this machine against its golden set
(see :mod:`keras_edge.runtime.golden` for what is checked and why)."""

from __future__ import annotations

import logging
from pathlib import Path

from keras_edge.runtime.classifier import load
from keras_edge.runtime.engines import engine_installed, missing_engine
from keras_edge.runtime.errors import UnknownVariantError, UsageError
from keras_edge.runtime.golden import Check, check_classifier, read_golden
from keras_edge.runtime.manifest import Manifest
from keras_edge.runtime.report import export_order

logger = logging.getLogger(__name__)


def verify(
    folder: str | Path,
    variants: list[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> list[Check]:
    """Check every variant of ``folder`` (or those named) whose engine is installed here."""
    manifest = Manifest.read(folder)
    ids = (
        [v.id for v in sorted(manifest.variants.values(), key=export_order)]
        if variants is None
        else variants
    )
    unknown = [vid for vid in ids if vid not in manifest.variants]
    if unknown:
        raise UnknownVariantError(
            f"Unknown variant(s) {unknown}; this manifest has {sorted(manifest.variants)}"
        )
    golden = read_golden(folder, manifest)
    checks = []
    for vid in ids:
        v = manifest.variants[vid]
        if not v.passed:
            checks.append(Check(vid, v.precision, "failed at export"))
        elif not engine_installed(v.format) and variants is None:
            checks.append(Check(vid, v.precision, "skipped", failures=(str(missing_engine(v.format)),)))
        else:
            clf = load(folder, variant=vid, device=device, threads=threads)
            checks.append(check_classifier(clf, golden))
            logger.info("verified %s: %s", vid, checks[-1].status)
    if all(c.status in ("skipped", "failed at export") for c in checks):
        raise UsageError(
            f"Expected at least one variant to verify in {str(folder)!r}, got none that passed "
            f"at export and can run here: {[(c.variant, c.status) for c in checks]}"
        )
    return checks
