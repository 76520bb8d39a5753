"""Synthetic sample cubes whose truth is known by construction.

Each image holds one elliptical object (and, with three classes, a core inside it)
whose border lies somewhere in a range, and sometimes a small satellite blob that
only some samples show. A model is simulated by drawing its ``eu`` members × ``au``
samples as soft masks whose spread is chosen per scenario (below). The raters are
then drawn so that the truth is known: each labels a pixel as the model's mean
prediction with probability ``σ(k (ln C − U))`` (:func:`rater_agreement`), and as the
runner-up class otherwise, where ``U`` is TU — or, in the ``entangled`` scenario, EU.
So TU is, by construction, exactly Platt-calibrated and the raters disagree where
the model is uncertain; on hallucinated blobs the raters are unanimous (pixel by
pixel), so blobs hold no ambiguity, only ignorance.

``disentangled``
    The samples of every member span the border's whole range (AU follows the
    raters' disagreement); members disagree only about blobs, each believed
    confidently by a random subset of members: now and then a small one on
    in-distribution images, several larger ones on OOD images (EU flags OOD and,
    with AU, makes TU the calibrated measure).
``entangled``
    Each member covers only a slice of the border's range, so members disagree in
    the ambiguous band, and the raters follow that disagreement (EU carries the
    ambiguity and the calibration); AU carries a texture unrelated to the raters,
    and on OOD images the hallucinated blobs vary between *samples* (AU rises on OOD)
    while EU does not.
``collapsed``
    Members are copies of one model up to a 1 % jitter (EU ≈ 0); ambiguity and the
    OOD blobs live in the samples, so AU carries everything.
``no-eu``
    ``eu = 1``: only samples, with the ambiguity and the OOD blobs among them.

Domains are ``id`` and the shifts ``blur`` (few, large blobs) and ``noise`` (many
small blobs); a third of the ID images have the role ``calibration``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqeval.cube import CubeWriter
from uqeval.errors import UQEvalError

SCENARIOS = ("disentangled", "entangled", "collapsed", "no-eu")
#: What each scenario's model does, in a few words (``uqeval demo`` prints them).
SCENARIO_SUMMARIES = {
    "disentangled": "samples carry the ambiguity; members disagree only about OOD blobs",
    "entangled": "members carry the ambiguity; samples vary on OOD images",
    "collapsed": "members are copies (EU ≈ 0); the samples carry everything",
    "no-eu": "one member, whose samples are taken as members: EU is their disagreement",
}
OOD_DOMAINS = ("blur", "noise")
#: Width of a soft edge, in pixels.
EDGE = 0.6
#: Slope ``k`` of the raters' agreement curve, see :func:`rater_agreement`.
RATER_SLOPE = 13.0
#: In the entangled scenario the raters follow EU, scaled by this to span TU's range.
ENTANGLED_EU_GAIN = 3.0
#: Fewest slices of a synthetic volume.
MIN_DEPTH = 4
#: Scenarios whose hallucinated balls, in volumes, are seen by fewer than half of the
#: members or samples, so that they never change ``pred`` (see docs/synthetic.md).
KEEP_PRED_IN_VOLUMES = frozenset({"collapsed", "entangled"})


@dataclass(frozen=True)
class _Shift:
    """Hallucinated blobs of one OOD domain: how many and how large (fraction of size)."""

    count: tuple[int, int]
    radius: tuple[float, float]


_SHIFTS = {"blur": _Shift(count=(2, 4), radius=(0.07, 0.13)), "noise": _Shift(count=(5, 9), radius=(0.035, 0.07))}


def image_plan(n_images: int) -> list[tuple[str, str]]:
    """``(domain, role)`` of each image: every other image is ID (a third of those
    have the role calibration), the rest alternate over the OOD domains, so any
    prefix of the store is mixed."""
    if n_images < 1:
        raise UQEvalError(f"synth: `images` must be at least 1, got {n_images}")
    plan = []
    n_ood = 0
    for index in range(n_images):
        if index % 2 == 0:
            plan.append(("id", "calibration" if index % 6 == 0 else "test"))
        else:
            plan.append((OOD_DOMAINS[n_ood % len(OOD_DOMAINS)], "test"))
            n_ood += 1
    return plan


def synthesize_image(
    rng: np.random.Generator,
    scenario: str,
    domain: str,
    *,
    size: int = 64,
    n_classes: int = 2,
    eu: int = 5,
    au: int = 8,
    raters: int = 4,
    shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image: probabilities ``(eu, au, class, y, x)`` float32 and rater labels
    ``(rater, y, x)`` uint8; with ``shape = (z, y, x)`` one volume, ``(eu, au, class,
    z, y, x)`` and ``(rater, z, y, x)``.

    A volume holds the same world in 3D: an ellipsoid turned about ``z`` (a core
    inside it with three classes), a satellite ball beside it in the ``(y, x)`` plane,
    hallucinated balls on OOD volumes, whose radii scale with the mean of ``y`` and
    ``x`` as the discs of an image scale with its size. In ``collapsed`` and
    ``entangled`` volumes (:data:`KEEP_PRED_IN_VOLUMES`) fewer than half of the samples
    of each member see an OOD ball, so it never changes ``pred``: a ball that did would
    add more 6-neighbour border pairs than uncertainty, and the ``border`` scores of
    both AU and EU would fall on OOD volumes, leaving the sign of Δ OODD to chance.
    ``shape = (size, size)`` (or None) gives the image of the default, bit for bit.
    """
    _check_scenario_and_classes(scenario, n_classes)
    if scenario == "no-eu":
        eu = 1
    shape = (size, size) if shape is None else tuple(int(n) for n in shape)
    volume = len(shape) == 3
    extent = np.array(shape)
    #: Blob radii are fractions of this many pixels: the image's size, a volume's mean of y and x.
    scale = float(np.mean(extent[-2:])) if len(shape) == 3 else shape[-1]
    grids = np.meshgrid(*(np.arange(n, dtype=np.float32) + 0.5 for n in shape), indexing="ij")
    spatial = (None,) * len(shape)

    # The object: an ellipse (ellipsoid); `distance` is 1 on its nominal border.
    centre = rng.uniform(0.35, 0.65, len(shape)) * extent
    radii = rng.uniform(0.14, 0.26, len(shape)) * extent
    angle = rng.uniform(0, np.pi)
    dy, dx = grids[-2] - centre[-2], grids[-1] - centre[-1]
    u = (np.cos(angle) * dy + np.sin(angle) * dx) / radii[-2]
    v = (-np.sin(angle) * dy + np.cos(angle) * dx) / radii[-1]
    if len(shape) == 2:
        distance = np.sqrt(u**2 + v**2)
    else:
        distance = np.sqrt(u**2 + v**2 + ((grids[0] - centre[0]) / radii[0]) ** 2)
    edge = EDGE / radii.mean()  # soft-edge width in units of `distance`
    ambiguity = rng.uniform(0.03, 0.3)  # half-width of the raters' relative border range
    core_ambiguity = rng.uniform(0.03, 0.3)
    satellite = None
    if rng.random() < 0.4:
        offset = rng.uniform(1.3, 1.6) * radii[-2:].mean()
        theta = rng.uniform(0, 2 * np.pi)
        direction = np.zeros(len(shape))
        direction[-2:] = np.sin(theta), np.cos(theta)
        satellite = _disc(grids, centre + offset * direction, 0.35 * radii.mean())

    # Where each member's samples put the borders: quantiles of the raters' range.
    quantiles = (np.arange(au) + 0.5) / au
    if scenario == "entangled":
        quantiles = (np.arange(eu)[:, None] + quantiles[None, :]) / eu  # a slice per member
    else:
        quantiles = np.broadcast_to(quantiles, (eu, au))
    scales = 1 - ambiguity + 2 * ambiguity * quantiles
    core_scales = 1 - core_ambiguity + 2 * core_ambiguity * quantiles
    has_satellite = quantiles < rng.uniform(0.25, 0.75)

    foreground = _sigmoid((scales[(..., *spatial)] - distance) / edge)  # (eu, au, *shape)
    if satellite is not None:
        foreground = np.where(has_satellite[(..., *spatial)], np.maximum(foreground, satellite), foreground)
    probs = np.zeros((eu, au, n_classes, *shape), dtype=np.float32)
    if n_classes == 3:
        core = _sigmoid((0.5 * core_scales[(..., *spatial)] - distance) / edge)
        probs[:, :, 2] = foreground * core
        probs[:, :, 1] = foreground * (1 - core)
    else:
        probs[:, :, 1] = foreground
    probs[:, :, 0] = 1 - foreground

    # OOD: hallucinated blobs; who believes them depends on the scenario.
    blobs: list[np.ndarray] = []
    if domain != "id":
        shift = _SHIFTS.get(domain, _SHIFTS["noise"])
        for _ in range(rng.integers(shift.count[0], shift.count[1] + 1)):
            centre = _background_point(rng, distance, extent)
            blob = _disc(grids, centre, rng.uniform(*shift.radius) * scale, soft=False)
            keep_pred = volume and scenario in KEEP_PRED_IN_VOLUMES
            believers = _believers(rng, scenario, eu, au, keep_pred=keep_pred)
            _paint(probs, blob, believers, rng.integers(1, n_classes))
            blobs.append(blob > 0.5)
    elif scenario == "disentangled":
        # In distribution: now and then some members see a small blob the rest do not.
        for _ in range(rng.integers(0, 3)):
            centre = _background_point(rng, distance, extent)
            blob = _disc(grids, centre, rng.uniform(0.02, 0.045) * scale, soft=False)
            _paint(probs, blob, _believers(rng, scenario, eu, au), rng.integers(1, n_classes))
            blobs.append(blob > 0.5)

    if scenario == "entangled":
        # Sample noise that follows a texture of its own, not the raters; stronger on OOD.
        strength = (0.25 if domain == "id" else 0.5) * _smooth_field(rng, shape)
        weights = rng.uniform(0, 1, (1, au, 1, *(1,) * len(shape))) * strength  # the same for every member
        probs = (1 - weights) * probs + weights / n_classes
    elif scenario == "collapsed":
        jitter = np.moveaxis(rng.dirichlet(np.ones(n_classes), (eu, 1, *shape)), -1, 2)
        probs = 0.99 * probs + 0.01 * jitter
    mean = probs.mean(axis=(0, 1))
    total = _entropy(mean)
    if scenario == "entangled":
        # The raters disagree where the members do: they follow EU, not TU.
        member_entropy = _entropy(np.moveaxis(probs.mean(axis=1), 1, 0)).mean(axis=0)
        uncertainty = ENTANGLED_EU_GAIN * np.maximum(total - member_entropy, 0)
    else:
        uncertainty = total
    labels = _calibrated_raters(rng, mean, uncertainty, blobs, raters)
    return probs.astype(np.float32), labels


def make_synthetic_cube(
    path: str | os.PathLike[str],
    scenario: str = "disentangled",
    *,
    n_images: int = 96,
    seed: int = 0,
    size: int = 64,
    n_classes: int = 2,
    eu: int = 5,
    au: int = 8,
    raters: int = 4,
    shape: tuple[int, ...] | None = None,
    overwrite: bool = False,
    progress=None,
) -> Path:
    """Write a synthetic cube store through :class:`~uqeval.CubeWriter`.

    Deterministic given ``seed``: image ``k`` draws from its own stream of
    ``numpy.random.SeedSequence(seed)``, so it does not depend on batch sizes.

    Parameters
    ----------
    path : the store to write.
    scenario : one of :data:`SCENARIOS`.
    n_images : images in all; see :func:`image_plan` for their domains and roles.
    seed : the random seed.
    size : height and width in pixels (of images; see ``shape``).
    n_classes : 2 (background, object) or 3 (background, object, core).
    eu, au : members and samples per member (``no-eu`` forces ``eu = 1``).
    raters : label maps per image.
    shape : ``(z, y, x)``: a store of volumes of that many voxels (each at least
        :data:`MIN_DEPTH` slices and ``y``, ``x`` at least 8), written through
        ``CubeWriter(depth=z)``; the same scenarios with balls for discs (see
        :func:`synthesize_image`). ``(y, x)`` with ``y == x`` is ``size``. Default: 2D
        images of ``size``.
    progress : optional callable ``progress(n_done)`` called after each image.

    Returns
    -------
    pathlib.Path of the store.
    """
    _check_scenario_and_classes(scenario, n_classes)
    if scenario == "no-eu":
        eu = 1
    elif eu < 2:
        raise UQEvalError(f"synth: scenario {scenario!r} needs eu >= 2 members, got {eu}")
    if au < 2:
        raise UQEvalError(f"synth: `au` must be at least 2 samples, got {au}")
    if raters < 2:
        raise UQEvalError(f"synth: `raters` must be at least 2 (their disagreement is the ambiguity), got {raters}")
    if size < 8:
        raise UQEvalError(f"synth: `size` must be at least 8 pixels, got {size}")
    depth, height, width = None, size, size
    if shape is not None:
        shape = _checked_shape(shape)
        if len(shape) == 3:
            depth = shape[0]
        height, width = shape[-2:]
        size = width
    plan = image_plan(n_images)
    streams = np.random.SeedSequence(seed).spawn(n_images)
    class_names = ["background", "object", "core"][:n_classes]
    with CubeWriter(
        path,
        n_classes=n_classes,
        eu=eu,
        au=au,
        height=height,
        width=width,
        depth=depth,
        raters=raters,
        au_method=f"synthetic-{scenario}",
        eu_method="none" if scenario == "no-eu" else "synthetic-members",
        model=f"synthetic-{scenario}",
        dataset="synthetic",
        seed=seed,
        class_names=class_names,
        background=0,
        attrs={"scenario": scenario},
        overwrite=overwrite,
    ) as writer:
        for index, ((domain, role), stream) in enumerate(zip(plan, streams, strict=True)):
            rng = np.random.default_rng(stream)
            probs, labels = synthesize_image(
                rng,
                scenario,
                domain,
                size=size,
                n_classes=n_classes,
                eu=eu,
                au=au,
                raters=raters,
                shape=None if depth is None else shape,
            )
            writer.append(probs[None], labels[None], domain=domain, role=role, image_ids=[f"{domain}-{index:05d}"])
            if progress is not None:
                progress(index + 1)
    return Path(path)


def _checked_shape(shape: object) -> tuple[int, ...]:
    """``shape`` as ``(z, y, x)`` (volumes) or ``(size, size)`` (images), checked."""
    try:
        values = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        values = ()
    if len(values) not in (2, 3) or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) for n in values
    ):
        raise UQEvalError(f"synth: `shape` is {shape!r}; expected (z, y, x) for volumes, e.g. (8, 24, 32)")
    values = tuple(int(n) for n in values)
    if len(values) == 2 and values[0] != values[1]:
        raise UQEvalError(f"synth: `shape` {values} is 2D but not square; synthetic images are `size` × `size`")
    if min(values[-2:]) < 8 or (len(values) == 3 and values[0] < MIN_DEPTH):
        raise UQEvalError(
            f"synth: `shape` {values} is too small; y and x need at least 8 voxels"
            + (f" and z at least {MIN_DEPTH}" if len(values) == 3 else "")
        )
    return values


def _check_scenario_and_classes(scenario: str, n_classes: int) -> None:
    if scenario not in SCENARIOS:
        raise UQEvalError(f"synth: unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if n_classes not in (2, 3):
        raise UQEvalError(f"synth: `classes` must be 2 or 3, got {n_classes}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


def _disc(grids: list[np.ndarray], centre: np.ndarray, radius: float, *, soft: bool = True) -> np.ndarray:
    """A disc (a ball in a volume), 1 inside and 0 outside, with a soft edge or a hard one.

    Hallucinated blobs are hard: a member that sees one is sure of it, so the blob
    adds disagreement between members and no aleatoric entropy of its own.
    """
    if len(grids) == 2:
        distance = np.hypot(grids[0] - centre[0], grids[1] - centre[1])
    else:
        distance = np.sqrt(sum((grid - at) ** 2 for grid, at in zip(grids, centre, strict=True)))
    if not soft:
        return (distance < radius).astype(np.float32)
    return _sigmoid((radius - distance) / EDGE)


def _believers(rng: np.random.Generator, scenario: str, eu: int, au: int, *, keep_pred: bool = False) -> np.ndarray:
    """Which (member, sample) pairs see a hallucinated blob.

    With ``keep_pred`` (the OOD balls of volumes, see :data:`KEEP_PRED_IN_VOLUMES`) fewer
    than half of them do, so that the blob never changes the mean prediction.
    """
    if keep_pred:
        return _minority_believers(rng, scenario, eu, au)
    share = rng.uniform(0.2, 0.8)
    if scenario == "disentangled":
        return np.repeat(_some_but_not_all(rng, eu, share)[:, None], au, axis=1)
    samples = _some_but_not_all(rng, au, share)
    if scenario == "entangled":
        return rng.random((eu, au)) < share
    return np.broadcast_to(samples, (eu, au))  # collapsed, no-eu: shared by all members


def _minority_believers(rng: np.random.Generator, scenario: str, eu: int, au: int) -> np.ndarray:
    """Believers of a blob that leaves the mean prediction as it was: in ``disentangled``
    fewer than half of the members (all their samples); otherwise fewer than half of the
    samples of every member: the same samples in ``collapsed`` and ``no-eu``, and in
    ``entangled`` as many but other ones per member, so that every member's mean over its
    samples is the same (the blob adds AU, not EU)."""
    if scenario == "disentangled":
        members = np.zeros(eu, dtype=bool)
        members[rng.choice(eu, max(1, (eu - 1) // 2), replace=False)] = True
        return np.repeat(members[:, None], au, axis=1)
    count = max(1, (au - 1) // 2)
    chosen = np.zeros((eu, au), dtype=bool)
    for member in range(eu if scenario == "entangled" else 1):
        chosen[member, rng.choice(au, count, replace=False)] = True
    if scenario != "entangled":
        chosen[:] = chosen[0]
    return chosen


def _some_but_not_all(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A random subset holding about ``share`` of ``n``, never empty and never all."""
    chosen = rng.random(n) < share
    first, second = rng.choice(n, 2, replace=False)
    chosen[first], chosen[second] = True, False
    return chosen


def _background_point(rng: np.random.Generator, distance: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """A point well outside the object (tries a few draws, then takes the last)."""
    for _ in range(20):
        point = rng.uniform(0.1, 0.9, len(extent)) * extent
        if distance[tuple(int(at) for at in point)] > 1.5:
            break
    return point


def _paint(probs: np.ndarray, blob: np.ndarray, believers: np.ndarray, label: int) -> None:
    """Mix a confident blob of class ``label`` into the chosen (member, sample) pairs."""
    for e, a in zip(*np.nonzero(believers), strict=True):
        probs[e, a] *= 1 - blob
        probs[e, a, label] += blob


def rater_agreement(total_uncertainty: np.ndarray, n_classes: int) -> np.ndarray:
    """Probability that a rater agrees with the reference prediction: ``σ(k (ln C − TU))``.

    The synthetic world's Platt curve (``k`` = :data:`RATER_SLOPE`): certain pixels are
    labelled as predicted, maximally uncertain ones are a coin toss.
    """
    return _sigmoid(RATER_SLOPE * (np.log(n_classes) - total_uncertainty))


def _calibrated_raters(
    rng: np.random.Generator,
    reference: np.ndarray,
    uncertainty: np.ndarray,
    blobs: list[np.ndarray],
    n_raters: int,
) -> np.ndarray:
    """Rater label maps under which ``uncertainty`` is exactly Platt-calibrated.

    ``reference`` is the model's (class, y, x) mean prediction. Each rater labels a
    pixel as its argmax with probability :func:`rater_agreement` of ``uncertainty``
    (TU, or EU in the entangled scenario) and as the runner-up class otherwise,
    independently: their disagreement is the ambiguity. On a blob the raters are
    unanimous — all agree with the model at a pixel, with that probability, or none
    does — so a blob carries the model's ignorance and no ambiguity.
    """
    n_classes = reference.shape[0]
    ranked = np.argsort(-reference, axis=0, kind="stable")
    best, runner_up = ranked[0].astype(np.uint8), ranked[1].astype(np.uint8)
    agreement = rater_agreement(uncertainty, n_classes)
    agrees = rng.random((n_raters, *agreement.shape)) < agreement
    for blob in blobs:
        agrees[:, blob] = rng.random(int(blob.sum())) < agreement[blob]
    return np.where(agrees, best, runner_up)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random field in [0, 1] over ``shape``: a few random plane waves."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float32) / n for n in shape), indexing="ij")
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(4):
        frequency = rng.uniform(1, 4, len(shape))
        phase = rng.uniform(0, 2 * np.pi)
        wave = frequency[0] * grids[0]
        for weight, grid in zip(frequency[1:], grids[1:], strict=True):
            wave = wave + weight * grid
        field += np.sin(2 * np.pi * wave + phase)
    return (field - field.min()) / (field.max() - field.min() + 1e-12)
