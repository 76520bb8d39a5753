"""Task metrics, one module per task: OOD detection, ambiguity, calibration (and
PAvPU), failure detection, entanglement and collapse, and segmentation quality."""

from uqeval.metrics.ambiguity import mean_ncc, ncc, rater_disagreement, rater_statistics, rater_variance
from uqeval.metrics.calibration import CalibrationTable, PlattFit, PlattTable, ace, ece, fit_platt, reliability
from uqeval.metrics.entanglement import collapse_ratio, entanglement_delta
from uqeval.metrics.failure import augrc, aurc, eaugrc, eaurc, failure_risk, risk_coverage
from uqeval.metrics.oodd import auroc, fpr_at_tpr, roc_curve
from uqeval.metrics.pavpu import pavpu, pavpu_counts, pavpu_threshold
from uqeval.metrics.segmentation import generalised_energy_distance, hungarian_iou, overlap_matrix

__all__ = [
    "CalibrationTable",
    "PlattFit",
    "PlattTable",
    "ace",
    "augrc",
    "aurc",
    "auroc",
    "collapse_ratio",
    "eaugrc",
    "eaurc",
    "ece",
    "entanglement_delta",
    "failure_risk",
    "fit_platt",
    "fpr_at_tpr",
    "generalised_energy_distance",
    "hungarian_iou",
    "mean_ncc",
    "ncc",
    "overlap_matrix",
    "pavpu",
    "pavpu_counts",
    "pavpu_threshold",
    "rater_disagreement",
    "rater_statistics",
    "rater_variance",
    "reliability",
    "risk_coverage",
    "roc_curve",
]
