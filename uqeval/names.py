"""The names every layer shares: the ignore label, the measures, the domains and roles.

This module imports nothing, so a metric or a report can name a measure or the ID
domain without pulling in the store (zarr, xarray) or the kernels (numba).
"""

from __future__ import annotations

#: Label value of a pixel a rater did not label.
IGNORE_LABEL = 255
#: The three uncertainty measures, in report order: aleatoric, epistemic, total.
MEASURES = ("au", "eu", "tu")
#: The in-distribution domain; every other domain is an OOD shift.
ID_DOMAIN = "id"
#: The split of all OOD images pooled (no OOD domain may use this name).
POOLED_OOD = "ood"
#: Role of the images that parameters (Platt scaling, τ, the EU scale) are fitted on.
CALIBRATION = "calibration"
#: Role of the images that are scored.
TEST = "test"
#: The roles an image of a cube can have.
ROLES = (CALIBRATION, TEST)
#: The ``aggregation`` of result rows whose metric is computed on maps, not image scores.
NO_AGGREGATION = "none"
#: The split of every test image, ID and OOD together (failure detection).
ALL_TEST = "all"
#: What a store of volumes is scored per: each volume as an image, or each z-slice.
UNITS = ("volume", "slice")
#: The image scores computed from the samples themselves (pairwise Dice between members,
#: coefficient of variation of the foreground size), scored for OODD and FD beside the
#: measures, never in Δ.
SAMPLE_MEASURES = ("pairwise_dice", "cov")
#: The ``aggregation`` of the rows of :data:`SAMPLE_MEASURES`: their image scores come
#: from the samples, not from a map aggregated.
SAMPLE_AGGREGATION = "samples"
