"""``verify()``: every variant of an export, checked on this machine against its golden set
(see :mod:`keras_edge.runtime.golden` for what is checked and why).

A variant whose file fails its integrity check (missing, a sha256 other than the manifest's,
an embedded record that disagrees with it, bytes the engine refuses) is a failed check of its
own, with the reason, and the other variants are still checked: one tampered file must not
hide the state of the rest. A tampered manifest or golden set stops everything: nothing can
be checked against them."""

from __future__ import annotations

import logging
from pathlib import Path

from keras_edge.runtime.engines import engine_installed, missing_engine
from keras_edge.runtime.errors import ArtifactError, ManifestError, UnknownVariantError, UsageError
from keras_edge.runtime.golden import Check, check_classifier, read_golden
from keras_edge.runtime.loading import load
from keras_edge.runtime.manifest import Manifest
from keras_edge.runtime.report import export_order

logger = logging.getLogger(__name__)


def verify(
    folder: str | Path,
    variants: list[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> list[Check]:
    """Check every variant of ``folder`` (or those named) whose engine is installed here; one
    :class:`Check` per variant, status ``FAILED`` with the reason for a file that fails its
    integrity check. Raises for a manifest or golden set that cannot be trusted."""
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
            try:
                clf = load(folder, variant=vid, device=device, threads=threads)
            except (ArtifactError, ManifestError) as exc:  # this variant's file, not the export's
                logger.info("variant %s fails its integrity check: %s", vid, exc)
                checks.append(Check(vid, v.precision, "FAILED", failures=(f"integrity: {exc}",)))
                continue
            checks.append(check_classifier(clf, golden))
            logger.info("verified %s: %s", vid, checks[-1].status)
    if all(c.status in ("skipped", "failed at export") for c in checks):
        raise UsageError(
            f"Expected at least one variant to verify in {str(folder)!r}, got none that passed "
            f"at export and can run here: {[(c.variant, c.status) for c in checks]}"
        )
    return checks
