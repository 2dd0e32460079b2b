"""Offline batch scoring: files, tables and clusters scored with the artifacts that ship to
devices. Never needed on a device, and never imported by the device core (manifest, classifier,
engines, verify), except through its one door, ``Classifier.score_batch``, which imports
:mod:`keras_edge.runtime.batch.table` when it is called.

``keras-edge predict`` streams a file through :mod:`.readers`, :mod:`.stream` and
:mod:`.writers`; ``--ray`` goes through :mod:`.cluster`. pyarrow (the ``batch`` extra) and Ray
(the ``ray`` extra) are imported only when a run needs them.
"""

from keras_edge.runtime.batch.cluster import BatchScorer
from keras_edge.runtime.batch.table import score_batch, score_table

__all__ = ["BatchScorer", "score_batch", "score_table"]
