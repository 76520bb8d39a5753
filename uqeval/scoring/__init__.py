"""Scoring: one pipeline from a source of images to :class:`~uqeval.Scores`.

========================  ===================================================
``api``                   :func:`score` and :func:`evaluate`, the ways in
``prepare``               the request checked and resolved; the plan per source
``sources``               a store, a cube Dataset, or maps in memory
``batches``               which chunks are read together
``store_reader``          zarr reads into reused buffers
``runners``               batches on this machine or a dask cluster
``handshake``             a scheduler address checked before dask connects
``batch``                 one batch: decompose, then score with the fits
``fitting``               the fitted parameters, one entry each; ``Fitted``
``spill``                 the fitted-on batches' maps until the fits are known
``engine``                the pass over the batches: fit, then score
``pooling``               per-split sums of calibration tables, in image order
``tabulate``              per-image results → rows, Δ, collapse
========================  ===================================================
"""

from uqeval.scoring.api import evaluate, score

__all__ = ["evaluate", "score"]
