"""Parameters fitted on the calibration images: each one an entry of :data:`FITTED_QUANTITIES`.

A run fits in two phases. The runner first reads the batches that hold the images
fitted on (:attr:`FitSetup.images`); their maps are spilled, and the quantities are
fitted; then every batch is scored with the fits in hand (:mod:`uqeval.scoring.engine`).
Each quantity is accumulated in one of two *looks* at the images fitted on:

- ``read``: by whoever reads the batch (a thread here, or a dask worker), from the
  batch as read — its probabilities and its decomposed maps — before anything is
  fitted. Each batch's sums travel back to the engine, which merges them in source order.
- ``spilled``: by the engine, from the spilled maps, in source order, after the
  ``read`` fits: the maps are seen as they will be scored (EU rescaled by ``r``),
  and :attr:`FitSetup.earlier` holds the ``read`` fits. A quantity may ask for
  another look at the spilled maps (its optional ``another_look``): the next look
  adds to the quantities that asked only, and hands each what it asked with in
  :attr:`FitSetup.again`. :class:`PAvPUThresholds` finds its exact quantile in two
  looks that keep counts only.

Sums are always combined in source order, so that a fit does not depend on which
worker finished first, nor on how the images are batched.

A new fitted quantity is one new entry: a class with the methods of
:class:`FittedQuantity`, added to :data:`FITTED_QUANTITIES`. A temperature chosen
from a grid, say, would sum per batch the negative log-likelihood of the calibration
pixels at each temperature of the grid (sums that add up over batches) and fit the best
one (:class:`TemperatureScaling` solves for ``T`` exactly instead). Its shape, with a
stand-in for the likelihood:

>>> from dataclasses import dataclass
>>> GRID = np.array([0.5, 1.0, 2.0])
>>> @dataclass(frozen=True)
... class Temperature:
...     name: str = "temperature"  # the key in Fitted and in fitted.json
...     look: str = "read"  # sums from the batches as read, on the workers
...     default: float = 1.0  # when it is not fitted
...
...     def wanted(self, setup):
...         return True  # in uqeval: a convention that asks for it
...
...     def empty(self, setup):
...         return np.zeros(len(GRID))
...
...     def add(self, sums, images, setup):
...         sums += [((images.maps["tu"] - t) ** 2).sum() for t in GRID]  # the stand-in
...         return sums
...
...     def merge(self, sums, other):
...         return sums + other
...
...     def fit(self, sums, setup):
...         return float(GRID[np.argmin(sums)])
...
...     def to_json(self, parameters):
...         return parameters  # None: not written to fitted.json
>>> temperature = Temperature()
>>> images = FitImages({"tu": np.full((1, 2, 2), 1.8)}, raters=None)
>>> per_batch = [temperature.add(temperature.empty(None), images, None) for _ in range(3)]
>>> temperature.fit(functools.reduce(temperature.merge, per_batch), None)
2.0

Listed in :data:`FITTED_QUANTITIES`, it is fitted whenever ``wanted``, written to
``fitted.json``, and read where it is used with ``fitted["temperature"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Protocol

import numpy as np

from uqeval.conventions import Conventions
from uqeval.errors import UQEvalError
from uqeval.image_statistics import rescaled
from uqeval.metrics.ambiguity import RaterStatistics
from uqeval.metrics.calibration import BinnedPlattTable, PlattFit, PlattTable, platt_table
from uqeval.metrics.order_statistics import KeySelection, high_key_counts, select
from uqeval.metrics.pavpu import accurate
from uqeval.metrics.predictive import TemperatureData, TemperatureFit
from uqeval.names import MEASURES

#: Where a quantity is accumulated: from each batch as read, or from the spilled maps after the ``read`` fits.
Look = Literal["read", "spilled"]


@dataclass(frozen=True)
class Fitted:
    """Parameters fitted on the calibration images, by quantity name.

    ``fitted[name]`` is the parameters of the quantity ``name`` of
    :data:`FITTED_QUANTITIES`, or its default when it was not fitted.

    Attributes
    ----------
    parameters : mapping
        The fitted parameters by quantity name (those not fitted are absent).
    n_images : int
        Images fitted on.
    images_from : str
        ``calibration`` or, when the store has no calibration images, ``test``.
    """

    parameters: Mapping[str, Any] = field(default_factory=dict)
    n_images: int = 0
    images_from: str = "calibration"

    def __getitem__(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        for quantity in FITTED_QUANTITIES:
            if quantity.name == name:
                return quantity.default
        raise KeyError(f"no fitted quantity is named {name!r}")

    @property
    def eu_scale(self) -> float:
        """``r`` of EU rescaling (1 when off)."""
        return self["eu_scale"]

    @property
    def thresholds(self) -> Mapping[str, float]:
        """``τ`` per measure, for the ``threshold`` aggregation (empty when not fitted)."""
        return self["thresholds"]

    @property
    def pavpu_thresholds(self) -> Mapping[str, float]:
        """PAvPU's ``τ`` per measure (empty when not fitted)."""
        return self["pavpu_thresholds"]

    @property
    def temperature(self) -> TemperatureFit | None:
        """Temperature scaling of the mean prediction (None when not fitted)."""
        return self["temperature"]

    @property
    def platt(self) -> Mapping[str, PlattFit]:
        """:class:`~uqeval.metrics.calibration.PlattFit` per measure (empty when not fitted)."""
        return self["platt"]

    def to_dict(self) -> dict:
        """The contents of ``fitted.json``."""
        written = {"images_from": self.images_from, "n_images": self.n_images}
        for quantity in FITTED_QUANTITIES:
            value = quantity.to_json(self[quantity.name])
            if value is not None:
                written[quantity.name] = value
        return written


@dataclass(frozen=True, eq=False)
class FitSetup:
    """What the fits of one run need besides the images.

    Attributes
    ----------
    conventions : Conventions
    images : (source image,) bool
        The images fitted on.
    images_from : str
        ``calibration``, or ``test`` when the source has no ID calibration images.
    background : int
    thresholds : bool
        A fitted aggregation (``threshold``) is scored, so ``τ`` is fitted.
    platt : bool
        CAL is scored, so Platt scaling is fitted.
    temperature : bool
        ``pq`` is scored, so temperature scaling is fitted (the spilled maps then hold
        ``mean`` and the raters' ``labels``).
    earlier : Fitted
        The ``read`` fits, for the quantities of the ``spilled`` look (empty before).
    again : mapping
        In a further ``spilled`` look, by the name of each quantity that asked for it,
        what its ``another_look`` returned after the look before; empty in the first.
    """

    conventions: Conventions
    images: np.ndarray
    images_from: str = "calibration"
    background: int = 0
    thresholds: bool = False
    platt: bool = False
    temperature: bool = False
    earlier: Fitted = field(default_factory=Fitted)
    again: Mapping[str, Any] = field(default_factory=dict)

    @property
    def wanted(self) -> tuple[FittedQuantity, ...]:
        """The quantities this run fits (none without an image to fit on)."""
        if not self.images.any():
            return ()
        return tuple(quantity for quantity in FITTED_QUANTITIES if quantity.wanted(self))

    @property
    def looking(self) -> tuple[FittedQuantity, ...]:
        """The quantities this ``spilled`` look adds to: every wanted one of that look,
        or in a further look those that asked for it (:attr:`again`)."""
        spilled = [quantity for quantity in self.wanted if quantity.look == "spilled"]
        return tuple(quantity for quantity in spilled if not self.again or quantity.name in self.again)


@dataclass(frozen=True)
class FitImages:
    """The images fitted on of one batch (image axis first).

    Attributes
    ----------
    maps : dict
        ``au``, ``eu``, ``tu``, ``pred`` (image, y, x); for the ``spilled`` look, as
        they will be scored (EU rescaled), and with temperature scaling also ``mean``
        (image, class, y, x) and the raters' ``labels`` (image, rater, y, x).
    raters : RaterStatistics or None
        Without rater labels, None.
    cubes : (batch image, eu, au, class, y, x) or None
        The ``read`` look only, and only when the source holds probabilities: the
        probabilities of *every* image of the batch (copying out those fitted on
        would double the batch's memory); ``chosen`` picks those fitted on.
    chosen : (batch image,) bool or None
        Which of the batch's images are fitted on (with ``cubes``).
    """

    maps: Mapping[str, np.ndarray]
    raters: RaterStatistics | None
    cubes: np.ndarray | None = None
    chosen: np.ndarray | None = None


class FittedQuantity(Protocol):
    """One parameter (or set of them) fitted on the calibration images.

    Attributes
    ----------
    name : str
        Its key in :class:`Fitted` and in ``fitted.json``.
    look : {"read", "spilled"}
        Whether its sums come from each batch as read (on the workers, before any
        fit) or from the spilled maps, after the ``read`` fits (see the module).
    default
        Its parameters when it is not fitted (immutable).

    Notes
    -----
    A ``spilled`` quantity that needs more than one look at the spilled maps has one
    more method, ``another_look(sums, setup)``: called after each look with that look's
    summed sums, it returns None to be fitted on them, or what the next look needs to
    know, which becomes ``setup.again[name]`` there (``empty`` and ``add`` see it);
    ``fit`` gets the last look's sums and setup.
    """

    name: str
    look: Look
    default: Any

    def wanted(self, setup: FitSetup) -> bool:
        """Whether this run fits it."""

    def empty(self, setup: FitSetup) -> Any:
        """Sums of no image."""

    def add(self, sums: Any, images: FitImages, setup: FitSetup) -> Any:
        """``sums`` with the images of one batch added (it may update ``sums`` and return it)."""

    def merge(self, sums: Any, other: Any) -> Any:
        """The sums of two sets of images, ``other`` after ``sums`` in source order (it may update ``sums``)."""

    def fit(self, sums: Any, setup: FitSetup) -> Any:
        """The parameters fitted on the sums of every image fitted on."""

    def to_json(self, parameters: Any) -> Any:
        """The parameters as written to ``fitted.json``; None: not written."""


def eu_scale(total_au: float, total_eu: float) -> float:
    """``r = ΣAU / ΣEU`` over the calibration pixels, for EU rescaling."""
    if total_eu <= 0:
        raise UQEvalError("EU rescaling: EU is 0 on every calibration pixel, so it cannot be rescaled")
    return float(total_au) / float(total_eu)


@dataclass(frozen=True)
class EUScale:
    """``r = ΣAU / ΣEU`` of EU rescaling (``EU' = r·EU``), from the maps as decomposed.

    Sums: the per-image ``ΣAU`` and ``ΣEU`` (float64) of each batch, so that the totals
    do not depend on how the images are batched.
    """

    name: str = "eu_scale"
    look: Look = "read"
    default: float = 1.0

    def wanted(self, setup: FitSetup) -> bool:
        return setup.conventions.rescale_eu

    def empty(self, setup: FitSetup) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [], []

    def add(self, sums, images: FitImages, setup: FitSetup):
        for totals, measure in zip(sums, ("au", "eu"), strict=True):
            maps = images.maps[measure]
            totals.append(np.sum(maps, axis=tuple(range(1, maps.ndim)), dtype=np.float64))
        return sums

    def merge(self, sums, other):
        for totals, more in zip(sums, other, strict=True):
            totals.extend(more)
        return sums

    def fit(self, sums, setup: FitSetup) -> float:
        au, eu = (float(np.sum(np.concatenate(totals))) for totals in sums)
        return eu_scale(au, eu)

    def to_json(self, parameters: float) -> float:
        return parameters


def member_background_fractions(cubes: np.ndarray, background: int = 0) -> np.ndarray:
    """(image, member) share of pixels that each EU member's mean prediction puts in
    ``background``: the argmax over classes of ``mean_a p[e, a]`` (first class on ties).

    ``cubes`` is (image, eu, au, class, [z,] y, x); with ``eu = 1`` the samples are the
    members, as in the decomposition.
    """
    n_images, n_members, n_samples = cubes.shape[:3]
    if n_members == 1:
        cubes = cubes.reshape(n_images, n_samples, 1, *cubes.shape[3:])
    fractions = np.empty(cubes.shape[:2])
    for member in range(cubes.shape[1]):
        member_mean = cubes[:, member].mean(axis=1, dtype=np.float32)
        predicted = member_mean.argmax(axis=1) == background
        fractions[:, member] = predicted.mean(axis=tuple(range(1, predicted.ndim)))
    return fractions


@dataclass(frozen=True)
class ThresholdLevel:
    """``q``, the quantile level of ``τ``: the mean background fraction of the images
    fitted on (of ``pred``, and with the ``members`` threshold fraction of each EU
    member's prediction too). Not written: ``fitted.json`` holds ``τ``.

    Sums: the background fractions of each batch, flattened image by image.
    """

    name: str = "threshold_level"
    look: Look = "read"
    default: None = None

    def wanted(self, setup: FitSetup) -> bool:
        return setup.thresholds

    def empty(self, setup: FitSetup) -> list[np.ndarray]:
        return []

    def add(self, sums, images: FitImages, setup: FitSetup):
        background = images.maps["pred"] == setup.background
        fractions = background.mean(axis=tuple(range(1, background.ndim)))[:, None]
        if setup.conventions.threshold_fraction == "members":
            if images.cubes is None:
                raise UQEvalError(
                    "threshold_fraction 'members' needs each member's prediction, so the probabilities; "
                    "these maps come without them"
                )
            members = member_background_fractions(images.cubes, setup.background)[images.chosen]
            fractions = np.concatenate([fractions, members], axis=1)
        sums.append(fractions.ravel())
        return sums

    def merge(self, sums, other):
        sums.extend(other)
        return sums

    def join_slabs(self, parts: Sequence[list[np.ndarray]], planes: Sequence[int]) -> list[np.ndarray]:
        """The sums of one volume read in z-slabs (one part per slab of ``planes`` planes):
        its fractions are the slabs' weighted by their planes."""
        weights = np.asarray(planes, dtype=np.float64)
        fractions = np.stack([part[0] for part in parts])
        return [weights @ fractions / weights.sum()]

    def fit(self, sums, setup: FitSetup) -> float:
        return float(np.concatenate(sums).mean())

    def to_json(self, parameters: float) -> None:
        return None


@dataclass(frozen=True)
class Thresholds:
    """``τ = quantile(U, q)`` per measure over every pixel of the images fitted on,
    pooled (``numpy.quantile`` with the conventions' method), for the ``threshold``
    aggregation; ``q`` is :class:`ThresholdLevel`'s.

    Sums: the pixels themselves, an exact quantile needs them (4 bytes per pixel and
    measure).
    """

    name: str = "thresholds"
    look: Look = "spilled"
    default: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def wanted(self, setup: FitSetup) -> bool:
        return setup.thresholds

    def empty(self, setup: FitSetup) -> dict[str, list[np.ndarray]]:
        return {measure: [] for measure in MEASURES}

    def add(self, sums, images: FitImages, setup: FitSetup):
        for measure in MEASURES:
            sums[measure].append(np.asarray(images.maps[measure], dtype=np.float32).ravel())
        return sums

    def merge(self, sums, other):
        for measure in MEASURES:
            sums[measure].extend(other[measure])
        return sums

    def fit(self, sums, setup: FitSetup) -> dict[str, float]:
        if not sums["au"]:
            raise UQEvalError("aggregation 'threshold': no calibration images to fit τ on")
        level = setup.earlier["threshold_level"]
        method = setup.conventions.quantile_method
        return {
            measure: float(np.quantile(np.concatenate(sums[measure]), level, method=method)) for measure in MEASURES
        }

    def to_json(self, parameters: Mapping[str, float]) -> dict[str, float]:
        return dict(parameters)


@dataclass(frozen=True)
class PlattScaling:
    """Platt scaling per measure, ``c = σ(b - a·U)``, fitted with Platt's smoothed targets
    on the pixels with a rater, as the conventions' ``platt`` says; empty when no pixel
    has one.

    Sums: a :class:`~uqeval.metrics.calibration.PlattTable` (or, for the study's binned
    fit, a :class:`~uqeval.metrics.calibration.BinnedPlattTable`) per measure, so memory
    does not grow with the pixels.
    """

    name: str = "platt"
    look: Look = "spilled"
    default: Mapping[str, PlattFit] = field(default_factory=lambda: MappingProxyType({}))

    def wanted(self, setup: FitSetup) -> bool:
        return setup.platt

    def empty(self, setup: FitSetup) -> dict[str, PlattTable | BinnedPlattTable]:
        return {measure: platt_table(setup.conventions.platt) for measure in MEASURES}

    def add(self, sums, images: FitImages, setup: FitSetup):
        if images.raters is None:
            raise UQEvalError("calibration: Platt scaling needs rater labels")
        for measure in MEASURES:
            sums[measure].add(images.maps[measure], images.raters.agree, images.raters.valid)
        return sums

    def merge(self, sums, other):
        for measure in MEASURES:
            sums[measure].merge(other[measure])
        return sums

    def fit(self, sums, setup: FitSetup) -> dict[str, PlattFit]:
        if sums["au"].n_pixels == 0:
            return {}
        # The three fits are independent and numpy releases the GIL in their array work.
        with ThreadPoolExecutor(max_workers=len(MEASURES), thread_name_prefix="uqeval-platt") as pool:
            fits = pool.map(lambda table: table.fit(), [sums[measure] for measure in MEASURES])
            return dict(zip(MEASURES, fits, strict=True))

    def to_json(self, parameters: Mapping[str, PlattFit]) -> dict[str, dict]:
        return {
            measure: {"slope": fit.slope, "intercept": fit.intercept, "n_pixels": fit.n_pixels}
            for measure, fit in parameters.items()
        }


@dataclass(frozen=True)
class PAvPUThresholds:
    """PAvPU's ``τ`` per measure (:func:`~uqeval.metrics.pavpu.pavpu_threshold`): the
    quantile of ``U`` over the pixels with a rater of the images fitted on, at ``q`` =
    the fraction of those pixels that are accurate (``w ≥ 0.5``), with the conventions'
    quantile method; on the maps as scored (EU rescaled). Fitted with CAL; empty when
    no pixel has a rater.

    Exact in two ``spilled`` looks that keep counts only
    (:mod:`uqeval.metrics.order_statistics`), so memory does not grow with the pixels.
    Sums of the first look: the accurate and counted pixels, and per measure the
    counts of the upper 16 bits of ``U``'s sort keys; ``another_look`` then picks per
    measure the buckets that hold the order statistics numpy's quantile reads
    (:class:`~uqeval.metrics.order_statistics.KeySelection`). Sums of the second: per
    measure the counts of the lower 16 bits within those buckets.
    """

    name: str = "pavpu_thresholds"
    look: Look = "spilled"
    default: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def wanted(self, setup: FitSetup) -> bool:
        return setup.platt

    def empty(self, setup: FitSetup) -> dict[str, Any]:
        selections = setup.again.get(self.name)
        if selections is None:
            return {"accurate": 0, "pixels": 0, **dict.fromkeys(MEASURES, 0)}
        return dict.fromkeys(selections, 0)

    def add(self, sums, images: FitImages, setup: FitSetup):
        if images.raters is None:
            raise UQEvalError("PAvPU needs rater labels")
        counted = images.raters.valid > 0
        selections = setup.again.get(self.name)
        if selections is None:
            sums["accurate"] += int(np.count_nonzero(accurate(images.raters.agree, images.raters.valid)))
            sums["pixels"] += int(np.count_nonzero(counted))
        for measure in MEASURES:
            u = np.asarray(images.maps[measure], dtype=np.float32)[counted]
            if selections is None:
                sums[measure] = sums[measure] + high_key_counts(u)
            else:
                sums[measure] = sums[measure] + selections[measure].low_key_counts(u)
        return sums

    def merge(self, sums, other):
        # Counts and count arrays; 0 stands for the counts of no pixel.
        return {key: sums[key] + other[key] for key in sums}

    def another_look(self, sums, setup: FitSetup) -> dict[str, KeySelection] | None:
        """After the first look (with a counted pixel): per measure, the buckets to count next."""
        if self.name in setup.again or sums["pixels"] == 0:
            return None
        level = sums["accurate"] / sums["pixels"]
        method = setup.conventions.quantile_method
        return {measure: select(sums[measure], level, method) for measure in MEASURES}

    def fit(self, sums, setup: FitSetup) -> dict[str, float]:
        selections = setup.again.get(self.name)
        if selections is None:  # no counted pixel
            return {}
        return {measure: selections[measure].quantile(sums[measure]) for measure in MEASURES}

    def to_json(self, parameters: Mapping[str, float]) -> dict[str, float] | None:
        return dict(parameters) if parameters else None


@dataclass(frozen=True)
class TemperatureScaling:
    """``T`` of temperature scaling of the mean prediction, ``softmax(ln max(m, 10⁻⁷) / T)``,
    fitted on the (rater, pixel) pairs of the images fitted on
    (:meth:`~uqeval.metrics.predictive.TemperatureData.fit`); None when no pixel has a rater.

    Sums: a :class:`~uqeval.metrics.predictive.TemperatureData`, which keeps each
    counted pixel's mean prediction (float32) so that ``T`` is exact.
    """

    name: str = "temperature"
    look: Look = "spilled"
    default: None = None

    def wanted(self, setup: FitSetup) -> bool:
        return setup.temperature

    def empty(self, setup: FitSetup) -> TemperatureData:
        return TemperatureData()

    def add(self, sums, images: FitImages, setup: FitSetup):
        if "labels" not in images.maps:
            raise UQEvalError("temperature scaling needs the mean prediction and rater labels")
        sums.add(images.maps["mean"], images.maps["labels"])
        return sums

    def merge(self, sums, other):
        return sums.merge(other)

    def fit(self, sums, setup: FitSetup) -> TemperatureFit | None:
        return sums.fit() if sums.n_pairs else None

    def to_json(self, parameters: TemperatureFit | None) -> dict | None:
        if parameters is None:
            return None
        return {"temperature": parameters.temperature, "n_pairs": parameters.n_pairs, "nll": parameters.nll}


#: Every fitted quantity, in the order of ``fitted.json``.
FITTED_QUANTITIES: tuple[FittedQuantity, ...] = (
    EUScale(),
    ThresholdLevel(),
    Thresholds(),
    PlattScaling(),
    PAvPUThresholds(),
    TemperatureScaling(),
)


def read_sums(
    setup: FitSetup,
    maps: Mapping[str, np.ndarray],
    raters: RaterStatistics | None,
    cubes: np.ndarray | None,
    chosen: np.ndarray,
) -> dict[str, Any]:
    """The ``read`` look at one batch: its sums of each wanted quantity, by name.

    Parameters
    ----------
    maps, raters, cubes
        The whole batch, as read and decomposed.
    chosen : (batch image,) bool
        Its images fitted on.
    """
    quantities = [quantity for quantity in setup.wanted if quantity.look == "read"]
    if not quantities or not chosen.any():
        return {}
    images = FitImages(
        {measure: maps[measure][chosen] for measure in (*MEASURES, "pred")},
        None if raters is None else raters.select(chosen),
        cubes,
        chosen,
    )
    return {quantity.name: quantity.add(quantity.empty(setup), images, setup) for quantity in quantities}


def fit(
    setup: FitSetup,
    batch_sums: Sequence[Mapping[str, Any]],
    spilled: Callable[[], Iterable[tuple[Mapping[str, np.ndarray], RaterStatistics | None]]],
    spilled_sums: Callable[[FitSetup], Iterable[Mapping[str, Any]]] | None = None,
) -> Fitted:
    """Fit every wanted quantity on the images fitted on.

    Parameters
    ----------
    batch_sums : sequence of dict
        The ``read`` sums of each fitting batch (:func:`read_sums`), in source order.
    spilled : callable
        Yields the maps and rater statistics of the images fitted on of each fitting
        batch, in source order, as decomposed (called only when a ``spilled``
        quantity is wanted).
    spilled_sums : callable, optional
        ``spilled_sums(setup)`` gives instead the ``spilled`` sums (by quantity name) of
        each part of the images fitted on, in source order, summed where the images are
        read (volumes read in z-slabs: :mod:`uqeval.scoring.streaming`); ``setup``
        holds the ``read`` fits.

    Each ``spilled`` look calls ``spilled`` (or ``spilled_sums``) anew: once, and once
    more for each further look a quantity asks for (:class:`FittedQuantity`).
    """
    quantities = setup.wanted
    if not quantities:
        return Fitted()
    parameters: dict[str, Any] = {}
    for quantity in quantities:
        if quantity.look == "read":
            parts = [sums[quantity.name] for sums in batch_sums if quantity.name in sums]
            total = functools.reduce(quantity.merge, parts, quantity.empty(setup))
            parameters[quantity.name] = quantity.fit(total, setup)
    n_images = int(setup.images.sum())
    setup = replace(setup, earlier=Fitted(dict(parameters), n_images, setup.images_from))
    while setup.looking:
        totals = _spilled_look(setup, spilled, spilled_sums)
        again = {}
        for quantity in setup.looking:
            another_look = getattr(quantity, "another_look", None)
            wish = None if another_look is None else another_look(totals[quantity.name], setup)
            if wish is None:
                parameters[quantity.name] = quantity.fit(totals[quantity.name], setup)
            else:
                again[quantity.name] = wish
        if not again:
            break
        setup = replace(setup, again=again)
    return Fitted(parameters, n_images, setup.images_from)


def _spilled_look(
    setup: FitSetup,
    spilled: Callable[[], Iterable[tuple[Mapping[str, np.ndarray], RaterStatistics | None]]],
    spilled_sums: Callable[[FitSetup], Iterable[Mapping[str, Any]]] | None,
) -> dict[str, Any]:
    """One ``spilled`` look's sums of each quantity it adds to (:attr:`FitSetup.looking`), summed in source order."""
    looking = setup.looking
    totals = {quantity.name: quantity.empty(setup) for quantity in looking}
    if spilled_sums is not None:
        for part in spilled_sums(setup):
            for quantity in looking:
                totals[quantity.name] = quantity.merge(totals[quantity.name], part[quantity.name])
        return totals
    for maps, raters in spilled():
        images = FitImages(rescaled(maps, setup.earlier.eu_scale), raters)
        for quantity in looking:
            totals[quantity.name] = quantity.add(totals[quantity.name], images, setup)
    return totals
