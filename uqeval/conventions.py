"""Every choice behind a score, in one frozen dataclass with the defaults of docs/metrics.md.

Two runs scored with equal :class:`Conventions` are comparable; ``scores.json`` records
the conventions used. :data:`PRESETS` holds named sets: ``default`` and ``paper`` (the
study's choices where they differ). ``docs/metrics.md`` explains each field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from uqeval.errors import UQEvalError

#: The methods ``numpy.quantile`` accepts.
_QUANTILE_METHODS = frozenset(
    {
        "inverted_cdf",
        "averaged_inverted_cdf",
        "closest_observation",
        "interpolated_inverted_cdf",
        "hazen",
        "weibull",
        "linear",
        "median_unbiased",
        "normal_unbiased",
        "lower",
        "higher",
        "midpoint",
        "nearest",
    }
)


#: The fields with a fixed set of values, and those values (the default first).
_CHOICES = {
    "ncc_constant": ("skip", "zero"),
    "ace_scope": ("pooled", "per-image"),
    "ood_split": ("pooled", "domain-mean"),
    "threshold_fraction": ("mean-prediction", "members"),
    "delta_both_zero": ("nan", "atan2"),
    "platt": ("smoothed", "binned-smoothed"),
    "amb_reference": ("one-hot-variance", "class-index-variance"),
    "ncc_factor": ("none", "n-1-over-n"),
    "cal_ood_delta": ("min-of-means", "domain-min-mean"),
    "all_correct_image": ("correct", "wrong"),
    "empty_pair": ("count", "skip"),
    "hungarian_matching": ("lcm", "rectangular"),
}


@dataclass(frozen=True)
class Conventions:
    """The conventions of aggregation, the task metrics and segmentation quality.

    Attributes
    ----------
    aggregation : str
        Aggregation that turns a map into the image score for OOD detection
        (``border``; any registered name, see :mod:`uqeval.aggregation`).
    patch_size : int
        Side ``k`` of the ``patch_max`` window, clamped to the image along each axis.
    quantile_method : str
        ``numpy.quantile`` method for the threshold ``τ`` of the ``threshold`` aggregation,
        and for PAvPU's ``τ``.
    threshold_fraction : ``"mean-prediction"`` or ``"members"``
        The background fraction ``q`` whose quantile is ``τ``: that of the mean
        prediction's argmax, or (the study's code) the mean of it and of every EU
        member's argmax.
    ncc_constant : ``"skip"`` or ``"zero"``
        Images whose rater variance map or uncertainty map is constant have no Pearson
        correlation: ``skip`` leaves them out of the mean (and counts them), ``zero``
        scores them 0 (the study's code).
    calibration_bins : int
        Equal-width confidence bins on [0, 1] for ACE, ECE and the reliability diagram.
    ace_scope : ``"pooled"`` or ``"per-image"``
        ``pooled`` bins every pixel of a split together; ``per-image`` computes ACE per
        image and averages over images.
    rescale_eu : bool
        The study's proposed mitigation of epistemic collapse: ``EU' = r·EU`` with
        ``r = mean AU / mean EU`` over the calibration images, ``TU' = AU + EU'``.
    segmentation_samples : int
        Discrete samples (argmax of single members' samples) drawn per image for GED and
        Hungarian-matched IoU.
    seed : int
        Seed of that draw; image ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``.
    empty_iou : float
        IoU (and Dice) of two masks that are both empty.
    ood_split : ``"pooled"`` or ``"domain-mean"``
        The ``ood`` split of AMB, CAL and FD: every OOD test image pooled, or (the
        study's tables) the mean of the per-domain values over the OOD domains. OODD's
        ``ood`` is always the mean over domains.
    delta_both_zero : ``"nan"`` or ``"atan2"``
        Δ when both scores are 0: undefined, or (the study's code) what
        ``atan2(0, 0) = 0`` gives, −1 (+1 when lower is better).
    platt : ``"smoothed"`` or ``"binned-smoothed"``
        Platt scaling's fit: over every calibration pixel, each a positive of weight
        ``w`` and a negative of weight ``1 − w``, with Platt's smoothed targets
        ``(N₊ + 1)/(N₊ + 2)`` and ``1/(N₋ + 2)``; or (the study's code) over 256
        log-spaced bins of ``U`` on [1e-12, 1e2], each (rater, pixel) pair a sample at
        its bin's mean ``U``, with the same targets.
    amb_reference : ``"one-hot-variance"`` or ``"class-index-variance"``
        AMB's ground-truth map: ``Σ_c Var_r(1[label_r = c])``, the same however the
        classes are numbered; or (the study's code) ``Var_r(label_r)``, the variance of
        the class indices. Equal up to a factor with two classes.
    ncc_factor : ``"none"`` or ``"n-1-over-n"``
        NCC as the Pearson correlation, or (the study's code) times ``(N − 1)/N``,
        ``N`` the image's pixels: standard deviations with ``ddof = 1``, sums over ``N``.
    cal_ood_delta : ``"min-of-means"`` or ``"domain-min-mean"``
        CAL's ``U_w`` on ``ood`` when ``ood_split="domain-mean"``: the smaller of the
        AU and EU domain means, or (the study's code) the mean over domains of each
        domain's smaller ACE.
    all_correct_image : ``"correct"`` or ``"wrong"``
        Per-image ACE and ECE (``ace_scope="per-image"``) of an image whose every rater
        label equals ``pred``: accuracy 1, or (the study's code) accuracy 0.
    empty_pair : ``"count"`` or ``"skip"``
        GED and Hungarian-matched IoU: a pair of masks that both have no foreground
        counts with IoU ``empty_iou`` (1: PHiSeg's code, and the review's
        recommendation), or is left out of GED's expectations and of the matched mean.
    hungarian_matching : ``"lcm"`` or ``"rectangular"``
        Hungarian-matched IoU: samples and raters both repeated to ``lcm(n, m)`` so that
        each rater is matched equally often, or the ``n × m`` matrix matched as it is
        (``min(n, m)`` pairs).
    """

    aggregation: str = "border"
    patch_size: int = 10
    quantile_method: str = "linear"
    ncc_constant: Literal["skip", "zero"] = "skip"
    calibration_bins: int = 20
    ace_scope: Literal["pooled", "per-image"] = "pooled"
    rescale_eu: bool = False
    segmentation_samples: int = 16
    seed: int = 0
    empty_iou: float = 1.0
    ood_split: Literal["pooled", "domain-mean"] = "pooled"
    threshold_fraction: Literal["mean-prediction", "members"] = "mean-prediction"
    delta_both_zero: Literal["nan", "atan2"] = "nan"
    platt: Literal["smoothed", "binned-smoothed"] = "smoothed"
    amb_reference: Literal["one-hot-variance", "class-index-variance"] = "one-hot-variance"
    ncc_factor: Literal["none", "n-1-over-n"] = "none"
    cal_ood_delta: Literal["min-of-means", "domain-min-mean"] = "min-of-means"
    all_correct_image: Literal["correct", "wrong"] = "correct"
    empty_pair: Literal["count", "skip"] = "count"
    hungarian_matching: Literal["lcm", "rectangular"] = "lcm"

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UQEvalError(
                    f"conventions: {name} is {getattr(self, name)!r}; expected {' or '.join(map(repr, allowed))}"
                )
        for name in ("patch_size", "calibration_bins", "segmentation_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UQEvalError(f"conventions: {name} is {value!r}; expected a positive integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UQEvalError(f"conventions: seed is {self.seed!r}; expected a non-negative integer")
        if not isinstance(self.rescale_eu, bool):
            raise UQEvalError(f"conventions: rescale_eu is {self.rescale_eu!r}; expected True or False")
        if self.quantile_method not in _QUANTILE_METHODS:
            raise UQEvalError(
                f"conventions: quantile_method is {self.quantile_method!r}; expected one of {sorted(_QUANTILE_METHODS)}"
            )
        if not 0.0 <= self.empty_iou <= 1.0:
            raise UQEvalError(f"conventions: empty_iou is {self.empty_iou!r}; expected a value in [0, 1]")
        if self.cal_ood_delta == "domain-min-mean" and self.ood_split != "domain-mean":
            raise UQEvalError(
                "conventions: cal_ood_delta 'domain-min-mean' takes each OOD domain's values, so it needs "
                "ood_split 'domain-mean'"
            )

    def replace(self, **changes: Any) -> Conventions:
        """A copy with some fields changed (validated like the original)."""
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise UQEvalError(f"conventions: unknown field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


#: Named convention sets. ``paper`` differs from ``default`` only where the study's
#: code chose otherwise; ``docs/metrics.md`` lists the differences.
PRESETS: dict[str, Conventions] = {
    "default": Conventions(),
    "paper": Conventions(
        ncc_constant="zero",
        ood_split="domain-mean",
        threshold_fraction="members",
        delta_both_zero="atan2",
        platt="binned-smoothed",
        amb_reference="class-index-variance",
        ncc_factor="n-1-over-n",
        cal_ood_delta="domain-min-mean",
        all_correct_image="wrong",
    ),
}


def preset(name: str) -> Conventions:
    """The conventions of a named preset (``default`` or ``paper``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UQEvalError(f"unknown conventions preset {name!r}; choose one of {sorted(PRESETS)}") from None


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def with_settings(conventions: Conventions, settings: Sequence[str]) -> Conventions:
    """``conventions`` with ``NAME=VALUE`` settings applied, as ``uqeval score --convention`` gives them.

    Values are read as the field's type: integers, numbers, ``true``/``false``, or text.

    >>> with_settings(preset("paper"), ["ace_scope=per-image", "seed=3"]).ace_scope
    'per-image'

    Raises
    ------
    UQEvalError
        With ``parameter="convention"``: a setting without ``=``, an unknown field, or a
        value the field does not take.
    """
    defaults = Conventions()
    names = [field.name for field in dataclasses.fields(Conventions)]
    changes: dict[str, Any] = {}
    for setting in settings:
        name, equals, text = (part.strip() for part in setting.partition("="))
        if not equals or not name:
            raise UQEvalError(f"{setting!r}: expected NAME=VALUE, e.g. ace_scope=per-image", parameter="convention")
        if name not in names:
            raise UQEvalError(
                f"{name!r} is not a convention; the conventions are {', '.join(names)}", parameter="convention"
            )
        kind = type(getattr(defaults, name))
        try:
            if kind is bool:
                if text.lower() not in (*_TRUE, *_FALSE):
                    raise ValueError(text)
                changes[name] = text.lower() in _TRUE
            else:
                changes[name] = kind(text)
        except ValueError:
            raise UQEvalError(f"{name}={text!r}: expected {kind.__name__} value", parameter="convention") from None
    try:
        return conventions.replace(**changes)
    except UQEvalError as error:
        raise UQEvalError(str(error), parameter="convention") from None
