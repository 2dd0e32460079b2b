"""The export's last step, once the release is installed: its result, or the error the command
line exits 1 or 3 with; and the names an export owns in its folder."""

from __future__ import annotations

import logging
from pathlib import Path

from keras_edge.exporter import plot as plotting
from keras_edge.exporter.errors import PartialExportError
from keras_edge.exporter.options import FORMATS, QUANTIZATIONS, ExportOptions
from keras_edge.exporter.pipeline import EXTENSIONS, Pipeline
from keras_edge.exporter.refusals import LOGS
from keras_edge.exporter.result import ExportResult
from keras_edge.runtime.golden import GOLDEN_NAME
from keras_edge.runtime.manifest import MANIFEST_NAME
from keras_edge.runtime.report import REPORT_NAME

logger = logging.getLogger(__name__)


def own_names() -> set[str]:
    """Every name an export writes into its folder, whichever variants it made."""
    ids = [f"{fmt}-{precision}" for fmt in FORMATS for precision in ("fp32", *QUANTIZATIONS)]
    files = {f"{vid}{EXTENSIONS[vid.split('-')[0]]}" for vid in ids}
    return files | {MANIFEST_NAME, REPORT_NAME, GOLDEN_NAME, LOGS}


def outcome(pipeline: Pipeline, out: Path, options: ExportOptions) -> ExportResult:
    """The result of an installed export; raises where the CLI exits 1 (a converter fault),
    or 3 with ``strict`` (a failed gate)."""
    if pipeline.plan and options.plot is not None and pipeline.job.tuning is not None:
        partial = options.plot.with_name(f".{options.plot.name}.partial{options.plot.suffix}")
        plotting.draw(pipeline.job.tuning, partial, pipeline.job.head.labels)
        partial.replace(options.plot)  # drawn before a failed gate is raised
    faults, refused = pipeline.faults, pipeline.refused
    if faults:
        raise PartialExportError(
            f"{len(faults)} variant(s) could not be made ({', '.join(faults)}); the other "
            f"{len(pipeline.checked)} were written to {out} and its manifest says why for each: "
            + "; ".join(f"{vid}: {refused[vid]}" for vid in faults),
            failed=faults,
        )
    result = ExportResult.of(pipeline.manifest, out)
    if result.failed:
        if options.strict:
            result.raise_for_gate()
        logger.warning(
            "%d variant(s) failed the parity gate (%s): written, marked failed in the manifest, "
            "never the default; the result's table says why", len(result.failed),
            ", ".join(result.failed),
        )  # fmt: skip
    logger.info("exported %d variant(s) to %s; default %s", len(pipeline.checked), out,
                pipeline.manifest.default_variant)  # fmt: skip
    return result
