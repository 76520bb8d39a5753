"""Tests of :mod:`uqeval.metrics.segmentation` against loop-based references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from uqeval import UQEvalError
from uqeval.metrics.segmentation import (
    VolumeSegmentation,
    discrete_samples,
    generalised_energy_distance,
    hungarian_iou,
    overlap_matrix,
    segmentation_quality,
)

IGNORE = 255
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------- references


def reference_overlap(
    a: np.ndarray, b: np.ndarray, n_classes: int, *, background=0, kind="iou", empty=1.0, ignore=IGNORE
) -> float:
    """IoU or Dice of two single masks, one class at a time, by counting pixels."""
    counted = (a != ignore) & (b != ignore)
    scores = []
    for c in range(n_classes):
        if c == background:
            continue
        in_a = (a == c) & counted
        in_b = (b == c) & counted
        union = int((in_a | in_b).sum())
        if union == 0:
            continue
        both = int((in_a & in_b).sum())
        if kind == "iou":
            scores.append(both / union)
        else:
            scores.append(2 * both / (int(in_a.sum()) + int(in_b.sum())))
    return float(np.mean(scores)) if scores else empty


def reference_matrix(first, second, n_classes, **options) -> np.ndarray:
    return np.array([[reference_overlap(a, b, n_classes, **options) for b in second] for a in first])


def reference_ged(samples, raters, n_classes, **options) -> float:
    """``2 E d(S, Y) - E d(S, S') - E d(Y, Y')`` with ``d = 1 - IoU``, by explicit double sums."""

    def mean_distance(xs, ys):
        total = 0.0
        for x in xs:
            for y in ys:
                total += 1.0 - reference_overlap(x, y, n_classes, **options)
        return total / (len(xs) * len(ys))

    return 2 * mean_distance(samples, raters) - mean_distance(samples, samples) - mean_distance(raters, raters)


def brute_force_hungarian(iou: np.ndarray) -> float:
    """Best mean IoU over every perfect matching of the two sets, each repeated up to ``lcm(n, m)``."""
    n, m = iou.shape
    size = math.lcm(n, m)
    rows = [i for i in range(n) for _ in range(size // n)]
    columns = [j for j in range(m) for _ in range(size // m)]
    best = -np.inf
    for order in itertools.permutations(columns):
        best = max(best, sum(iou[i, j] for i, j in zip(rows, order, strict=True)) / size)
    return float(best)


def cube_from_class_maps(maps: np.ndarray, n_classes: int, sharpness: float = 0.9) -> np.ndarray:
    """(eu, au, class, y, x) probabilities whose samples have the argmax ``maps[e, a]``."""
    off = (1 - sharpness) / (n_classes - 1)
    one_hot = np.eye(n_classes, dtype=np.float64)[maps]  # (eu, au, y, x, class)
    probabilities = np.where(one_hot == 1, sharpness, off)
    return np.moveaxis(probabilities, -1, 2).astype(np.float32)


# --------------------------------------------------------------------------- overlap_matrix


def test_doctest_example_by_hand():
    a = np.array([[[0, 1, 1, 0]]])
    b = np.array([[[0, 1, 0, 0]], [[0, 0, 0, 0]]])
    np.testing.assert_allclose(overlap_matrix(a, b, n_classes=2), [[0.5, 0.0]])
    np.testing.assert_allclose(overlap_matrix(a, b, n_classes=2, kind="dice"), [[2 / 3, 0.0]])


@st.composite
def mask_pairs(draw):
    n_classes = draw(st.integers(2, 3))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    values = st.sampled_from([*range(n_classes), IGNORE])
    first = draw(hnp.arrays(np.uint8, (draw(st.integers(1, 3)), height, width), elements=values))
    second = draw(hnp.arrays(np.uint8, (draw(st.integers(1, 3)), height, width), elements=values))
    background = draw(st.integers(0, n_classes - 1))
    return first, second, n_classes, background


@PROPERTY_SETTINGS
@given(mask_pairs(), st.sampled_from(["iou", "dice"]), st.sampled_from([1.0, 0.0, 0.25]))
def test_overlap_matrix_matches_reference(pair, kind, empty):
    first, second, n_classes, background = pair
    options = {"background": background, "kind": kind, "empty": empty}
    got = overlap_matrix(first, second, n_classes, **options)
    assert got.shape == (len(first), len(second))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference_matrix(first, second, n_classes, **options), rtol=0, atol=1e-12)


def test_overlap_matrix_random_masks_with_ignores():
    rng = np.random.default_rng(3)
    for n_classes in (2, 3):
        first = rng.integers(0, n_classes, (4, 12, 9)).astype(np.uint8)
        second = rng.integers(0, n_classes, (3, 12, 9)).astype(np.uint8)
        first[rng.random(first.shape) < 0.1] = IGNORE
        second[rng.random(second.shape) < 0.1] = IGNORE
        for kind in ("iou", "dice"):
            np.testing.assert_allclose(
                overlap_matrix(first, second, n_classes, kind=kind),
                reference_matrix(first, second, n_classes, kind=kind),
                atol=1e-12,
            )


def test_empty_masks_score_empty_and_ignore_is_excluded():
    empty = np.zeros((1, 3, 3), dtype=np.uint8)
    assert overlap_matrix(empty, empty, 2)[0, 0] == 1.0
    assert overlap_matrix(empty, empty, 3, kind="dice", empty=0.5)[0, 0] == 0.5
    # The only foreground pixel of `a` is ignored by `b`: nothing left to compare.
    a = np.array([[[1, 0, 0]]], dtype=np.uint8)
    b = np.array([[[IGNORE, 0, 0]]], dtype=np.uint8)
    assert overlap_matrix(a, b, 2)[0, 0] == 1.0
    assert overlap_matrix(b, a, 2, empty=0.0)[0, 0] == 0.0
    # A class present in one mask only scores 0 and is averaged in; an absent class is not.
    a = np.array([[[1, 1, 2, 0]]], dtype=np.uint8)
    b = np.array([[[1, 0, 0, 0]]], dtype=np.uint8)
    assert overlap_matrix(a, b, 3)[0, 0] == pytest.approx((0.5 + 0.0) / 2)
    assert overlap_matrix(a, b, 4)[0, 0] == pytest.approx((0.5 + 0.0) / 2)


def test_overlap_matrix_rejects_bad_input():
    a = np.zeros((1, 2, 2), dtype=np.uint8)
    with pytest.raises(UQEvalError, match="kind"):
        overlap_matrix(a, a, 2, kind="jaccard")
    with pytest.raises(UQEvalError, match="shapes"):
        overlap_matrix(a, np.zeros((1, 2, 3), dtype=np.uint8), 2)
    with pytest.raises(UQEvalError, match="shapes"):
        overlap_matrix(a[0], a[0], 2)


# --------------------------------------------------------------------------- GED


def test_ged_is_the_formula_with_self_pairs():
    rng = np.random.default_rng(0)
    cross, samples, raters = rng.random((3, 2)), rng.random((3, 3)), rng.random((2, 2))
    expected = 2 * cross.sum() / 6 - samples.sum() / 9 - raters.sum() / 4
    assert generalised_energy_distance(cross, samples, raters) == pytest.approx(expected, abs=1e-14)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_ged_from_masks_matches_direct_computation(n_classes):
    rng = np.random.default_rng(n_classes)
    samples = rng.integers(0, n_classes, (5, 8, 8)).astype(np.uint8)
    raters = rng.integers(0, n_classes, (3, 8, 8)).astype(np.uint8)
    raters[rng.random(raters.shape) < 0.15] = IGNORE
    got = generalised_energy_distance(
        1 - overlap_matrix(samples, raters, n_classes),
        1 - overlap_matrix(samples, samples, n_classes),
        1 - overlap_matrix(raters, raters, n_classes),
    )
    assert got == pytest.approx(reference_ged(samples, raters, n_classes), abs=1e-12)
    assert got > 0


def test_ged_of_identical_sets_is_zero():
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 3, (4, 6, 6)).astype(np.uint8)
    distance = 1 - overlap_matrix(masks, masks, 3)
    assert generalised_energy_distance(distance, distance, distance) == pytest.approx(0.0, abs=1e-14)


# --------------------------------------------------------------------------- Hungarian IoU


@pytest.mark.parametrize("shape", [(4, 2), (3, 3), (2, 4), (3, 2), (2, 3), (1, 3), (4, 4)])
def test_hungarian_iou_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        iou = rng.random(shape)
        assert hungarian_iou(iou) == pytest.approx(brute_force_hungarian(iou), abs=1e-12)


def test_hungarian_iou_repeats_raters_equally():
    # Two samples both closest to rater 0: tiling forces one of them onto rater 1.
    iou = np.array([[0.9, 0.1], [0.8, 0.3]])
    assert hungarian_iou(iou) == pytest.approx((0.9 + 0.3) / 2)
    # 4 samples, 2 raters: each rater takes two samples.
    iou = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    assert hungarian_iou(iou) == pytest.approx((1.0 + 1.0 + 0.0 + 0.5) / 4)


# --------------------------------------------------------------------------- segmentation_quality


def random_cubes(rng, n_images, eu, au, n_classes, size=6):
    maps = rng.integers(0, n_classes, (n_images, eu, au, size, size))
    cubes = np.stack([cube_from_class_maps(m, n_classes) for m in maps])
    return cubes, maps


def test_discrete_samples_are_argmax_of_drawn_members():
    rng = np.random.default_rng(0)
    cubes, maps = random_cubes(rng, 1, 3, 4, 3)
    all_of_them = discrete_samples(cubes[0], 50, np.random.default_rng(0))
    np.testing.assert_array_equal(all_of_them, maps[0].reshape(12, 6, 6))
    chosen = np.sort(np.random.default_rng(5).choice(12, size=5, replace=False))
    np.testing.assert_array_equal(
        discrete_samples(cubes[0], 5, np.random.default_rng(5)), maps[0].reshape(12, 6, 6)[chosen]
    )


def reference_quality(cube_maps, pred, raters, n_classes, image_index, *, n_samples=16, seed=0):
    """Dice, GED and brute-force Hungarian IoU of one image from its sample class maps."""
    flat = cube_maps.reshape(-1, *cube_maps.shape[-2:])
    if len(flat) > n_samples:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(image_index,)))
        flat = flat[np.sort(rng.choice(len(flat), size=n_samples, replace=False))]
    dice = np.mean([reference_overlap(pred, rater, n_classes, kind="dice") for rater in raters])
    ged = reference_ged(flat, raters, n_classes)
    return dice, ged, flat


@pytest.mark.parametrize(("eu", "au"), [(2, 3), (5, 5)])
def test_segmentation_quality_matches_reference(eu, au):
    rng = np.random.default_rng(eu * au)
    n_classes = 3
    cubes, maps = random_cubes(rng, 4, eu, au, n_classes)
    pred = cubes.mean(axis=(1, 2)).argmax(axis=1).astype(np.uint8)
    labels = rng.integers(0, n_classes, (4, 3, 6, 6)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    indices = np.array([7, 3, 0, 11])
    quality = segmentation_quality(cubes, pred, labels, indices, n_samples=16, seed=4)
    for i in range(4):
        dice, ged, samples = reference_quality(maps[i], pred[i], labels[i], n_classes, int(indices[i]), seed=4)
        assert len(samples) == min(16, eu * au)
        assert quality.dice[i] == pytest.approx(dice, abs=1e-12)
        assert quality.ged[i] == pytest.approx(ged, abs=1e-12)
        iou = reference_matrix(samples, labels[i], n_classes)
        assert quality.hungarian_iou[i] == pytest.approx(hungarian_iou(iou), abs=1e-12)


def test_segmentation_quality_hungarian_against_brute_force_small():
    rng = np.random.default_rng(8)
    cubes, maps = random_cubes(rng, 3, 2, 2, 2)  # 4 samples against 2 raters
    pred = maps[:, 0, 0].astype(np.uint8)
    labels = rng.integers(0, 2, (3, 2, 6, 6)).astype(np.uint8)
    quality = segmentation_quality(cubes, pred, labels, np.arange(3))
    for i in range(3):
        iou = reference_matrix(maps[i].reshape(4, 6, 6), labels[i], 2)
        assert quality.hungarian_iou[i] == pytest.approx(brute_force_hungarian(iou), abs=1e-12)


def test_segmentation_quality_is_deterministic_and_independent_of_batching():
    rng = np.random.default_rng(2)
    cubes, _ = random_cubes(rng, 6, 5, 5, 2)
    pred = cubes.mean(axis=(1, 2)).argmax(axis=1).astype(np.uint8)
    labels = rng.integers(0, 2, (6, 3, 6, 6)).astype(np.uint8)
    indices = np.arange(6)
    whole = segmentation_quality(cubes, pred, labels, indices, seed=9)
    again = segmentation_quality(cubes, pred, labels, indices, seed=9)
    parts = [segmentation_quality(cubes[s], pred[s], labels[s], indices[s], seed=9) for s in (slice(0, 2), slice(2, 6))]
    reversed_order = segmentation_quality(cubes[::-1], pred[::-1], labels[::-1], indices[::-1], seed=9)
    for name in ("dice", "ged", "hungarian_iou"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(again, name))
        np.testing.assert_array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in parts]))
        np.testing.assert_array_equal(getattr(whole, name), getattr(reversed_order, name)[::-1])
    other_seed = segmentation_quality(cubes, pred, labels, indices, seed=10)
    assert not np.array_equal(whole.ged, other_seed.ged)  # 16 of 25 samples: the draw matters
    np.testing.assert_array_equal(whole.dice, other_seed.dice)  # Dice uses pred only


def test_segmentation_quality_uses_every_sample_when_there_are_few():
    rng = np.random.default_rng(4)
    cubes, _ = random_cubes(rng, 2, 2, 3, 2)
    pred = np.zeros((2, 6, 6), dtype=np.uint8)
    labels = rng.integers(0, 2, (2, 3, 6, 6)).astype(np.uint8)
    first = segmentation_quality(cubes, pred, labels, np.arange(2), seed=0)
    second = segmentation_quality(cubes, pred, labels, np.arange(2), seed=123)
    np.testing.assert_array_equal(first.ged, second.ged)
    np.testing.assert_array_equal(first.hungarian_iou, second.hungarian_iou)


def test_segmentation_quality_of_empty_prediction_and_raters():
    maps = np.zeros((1, 2, 2, 5, 5), dtype=np.int64)
    cubes = cube_from_class_maps(maps[0], 2)[None]
    pred = np.zeros((1, 5, 5), dtype=np.uint8)
    labels = np.zeros((1, 3, 5, 5), dtype=np.uint8)
    quality = segmentation_quality(cubes, pred, labels, np.arange(1))
    assert quality.dice[0] == 1.0
    assert quality.ged[0] == 0.0
    assert quality.hungarian_iou[0] == 1.0
    # One rater draws an object the prediction misses: Dice (1 + 1 + 0) / 3.
    labels[0, 2, 1, 1] = 1
    quality = segmentation_quality(cubes, pred, labels, np.arange(1), empty=1.0)
    assert quality.dice[0] == pytest.approx(2 / 3)
    assert segmentation_quality(cubes, pred, labels, np.arange(1), empty=0.0).dice[0] == pytest.approx(0.0)


def test_ged_is_zero_when_samples_equal_raters():
    rng = np.random.default_rng(6)
    raters = rng.integers(0, 3, (4, 6, 6))
    cubes = cube_from_class_maps(raters.reshape(2, 2, 6, 6), 3)[None]
    quality = segmentation_quality(cubes, raters[:1].astype(np.uint8), raters[None].astype(np.uint8), np.arange(1))
    assert quality.ged[0] == pytest.approx(0.0, abs=1e-12)
    assert quality.hungarian_iou[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- volumes (n, z, y, x)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_overlap_of_volumes_is_the_volumetric_iou_and_dice(n_classes):
    from sklearn.metrics import f1_score, jaccard_score

    rng = np.random.default_rng(70 + n_classes)
    first = rng.integers(0, n_classes, (2, 5, 7, 9)).astype(np.uint8)
    second = np.where(rng.random((3, 5, 7, 9)) < 0.3, rng.integers(0, n_classes, (3, 5, 7, 9)), first[0])
    second = second.astype(np.uint8)
    second[rng.random(second.shape) < 0.1] = IGNORE
    foreground = list(range(1, n_classes))
    for kind, sklearn_score in (("iou", jaccard_score), ("dice", f1_score)):
        matrix = overlap_matrix(first, second, n_classes, kind=kind)
        np.testing.assert_allclose(matrix, reference_matrix(first, second, n_classes, kind=kind), rtol=1e-12)
        for i, j in itertools.product(range(2), range(3)):
            counted = second[j] != IGNORE
            expected = sklearn_score(second[j][counted], first[i][counted], labels=foreground, average=None).mean()
            assert matrix[i, j] == pytest.approx(expected, rel=1e-12)


def test_overlap_counts_volumes_in_blocks_exactly(monkeypatch):
    from uqeval.metrics import segmentation

    rng = np.random.default_rng(8)
    first = rng.integers(0, 3, (3, 4, 5, 6)).astype(np.uint8)
    second = rng.integers(0, 3, (2, 4, 5, 6)).astype(np.uint8)
    second[0, 1] = IGNORE
    whole = overlap_matrix(first, second, 3)
    whole_dice = overlap_matrix(first, second, 3, kind="dice")
    np.testing.assert_allclose(whole, reference_matrix(first, second, 3), rtol=1e-12)
    monkeypatch.setattr(segmentation, "OVERLAP_BLOCK", 7)  # 120 voxels in 18 blocks, the last one short
    np.testing.assert_array_equal(overlap_matrix(first, second, 3), whole)
    np.testing.assert_array_equal(overlap_matrix(first, second, 3, kind="dice"), whole_dice)


def test_segmentation_quality_of_volumes_matches_reference():
    rng = np.random.default_rng(12)
    n_classes, eu, au = 3, 2, 3
    maps = rng.integers(0, n_classes, (2, eu, au, 3, 4, 5))
    cubes = np.stack([cube_from_class_maps(m, n_classes) for m in maps])  # (image, eu, au, class, z, y, x)
    assert cubes.shape == (2, eu, au, n_classes, 3, 4, 5)
    pred = cubes.mean(axis=(1, 2)).argmax(axis=1).astype(np.uint8)
    labels = rng.integers(0, n_classes, (2, 2, 3, 4, 5)).astype(np.uint8)  # 4 samples against 2 raters
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    indices = np.array([4, 9])
    quality = segmentation_quality(cubes, pred, labels, indices, n_samples=4, seed=3)
    for i in range(2):
        samples = maps[i].reshape(eu * au, 3, 4, 5)
        rng_i = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(int(indices[i]),)))
        samples = samples[np.sort(rng_i.choice(len(samples), size=4, replace=False))]
        np.testing.assert_array_equal(
            discrete_samples(
                cubes[i], 4, np.random.default_rng(np.random.SeedSequence(3, spawn_key=(int(indices[i]),)))
            ),
            samples,
        )
        dice = np.mean([reference_overlap(pred[i], rater, n_classes, kind="dice") for rater in labels[i]])
        assert quality.dice[i] == pytest.approx(dice, abs=1e-12)
        assert quality.ged[i] == pytest.approx(reference_ged(samples, labels[i], n_classes), abs=1e-12)
        iou = reference_matrix(samples, labels[i], n_classes)
        assert quality.hungarian_iou[i] == pytest.approx(brute_force_hungarian(iou), abs=1e-12)


@pytest.mark.parametrize("cuts", [[2], [1, 3], [1, 2, 3, 4]])
def test_a_volume_gathered_by_slabs_scores_as_whole(cuts):
    """Dice, GED and HM-IoU of a volume added slab by slab: the same samples are drawn, and
    the overlap counts of the slabs add up to the whole volume's."""
    rng = np.random.default_rng(5)
    cube = rng.dirichlet(np.ones(3), size=(3, 2, 5, 6, 7)).transpose(0, 1, 5, 2, 3, 4).astype(np.float32)
    pred = cube.mean(axis=(0, 1)).argmax(axis=0)
    labels = rng.integers(0, 3, size=(4, 5, 6, 7))
    labels[rng.random(labels.shape) < 0.1] = 255
    whole = segmentation_quality(cube[None], pred[None], labels[None], np.array([7]), n_samples=4, seed=3)
    gathered = VolumeSegmentation(7, 3, n_samples=4, seed=3)
    edges = [0, *cuts, 5]
    for start, stop in itertools.pairwise(edges):
        gathered.add(cube[..., start:stop, :, :], pred[start:stop], labels[:, start:stop])
    result = gathered.result()
    for name in ("dice", "ged", "hungarian_iou"):
        np.testing.assert_allclose(getattr(result, name), getattr(whole, name), rtol=1e-12, err_msg=name)


# --------------------------------------------------------------------------- conventions by name


def scipy_matched_iou(iou: np.ndarray, matching: str) -> float:
    """The matching written with scipy directly: the LCM-repeated or the rectangular matrix."""
    from scipy.optimize import linear_sum_assignment

    n, m = iou.shape
    if matching == "lcm":
        size = math.lcm(n, m)
        iou = np.tile(iou, (size // n, size // m))
    rows, columns = linear_sum_assignment(-iou)
    return float(iou[rows, columns].mean())


@PROPERTY_SETTINGS
@given(n=st.integers(1, 6), m=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_hungarian_matchings_equal_scipy(n, m, seed):
    iou = np.random.default_rng(seed).random((n, m))
    for matching in ("lcm", "rectangular"):
        assert hungarian_iou(iou, matching=matching) == pytest.approx(scipy_matched_iou(iou, matching), abs=1e-12)


def test_rectangular_matching_uses_each_rater_at_most_once():
    iou = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    assert hungarian_iou(iou, matching="rectangular") == pytest.approx((0.9 + 0.3) / 2)
    # lcm 6: each sample twice, each rater three times: both copies of sample 0 and one of
    # sample 1 take rater 0 (0.9 + 0.9 + 0.8), the rest rater 1 (0.2 + 0.3 + 0.3).
    assert hungarian_iou(iou) == pytest.approx(3.4 / 6)
    with pytest.raises(UQEvalError, match="matching is 'square'"):
        hungarian_iou(iou, matching="square")


def reference_pairs(first, second, empty_pair):
    """IoU per pair with plain numpy: binary foreground class 1; NaN for two empty masks when skipped."""
    values = np.empty((len(first), len(second)))
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            union = np.sum((a == 1) | (b == 1))
            values[i, j] = np.sum((a == 1) & (b == 1)) / union if union else (np.nan if empty_pair == "skip" else 1.0)
    return values


@pytest.mark.parametrize("empty_pair", ["count", "skip"])
@pytest.mark.parametrize("matching", ["lcm", "rectangular"])
def test_segmentation_quality_conventions_match_plain_numpy(empty_pair, matching):
    """Samples and raters with empty masks among them: GED leaves skipped pairs out of each
    expectation, HM-IoU matches them as perfect and leaves them out of its mean."""
    rng = np.random.default_rng(2)
    samples = (rng.random((4, 6, 6)) < 0.3).astype(np.int64)
    samples[0] = 0
    samples[1] = 0
    labels = (rng.random((3, 6, 6)) < 0.3).astype(np.uint8)
    labels[0] = 0
    cube = cube_from_class_maps(samples.reshape(2, 2, 6, 6), 2)
    pred = samples[2].astype(np.uint8)
    quality = segmentation_quality(
        cube[None], pred[None], labels[None], np.arange(1), n_samples=4, empty_pair=empty_pair, matching=matching
    )
    cross = reference_pairs(samples, labels, empty_pair)
    within_samples = reference_pairs(samples, samples, empty_pair)
    within_raters = reference_pairs(labels, labels, empty_pair)
    expected = 2 * np.nanmean(1 - cross) - np.nanmean(1 - within_samples) - np.nanmean(1 - within_raters)
    assert quality.ged[0] == pytest.approx(expected, abs=1e-12)
    from scipy.optimize import linear_sum_assignment

    n, m = cross.shape
    matrix = np.tile(cross, (math.lcm(n, m) // n, math.lcm(n, m) // m)) if matching == "lcm" else cross
    rows, columns = linear_sum_assignment(-np.nan_to_num(matrix, nan=1.0))
    assert quality.hungarian_iou[0] == pytest.approx(np.nanmean(matrix[rows, columns]), abs=1e-12)
    gathered = VolumeSegmentation(0, 2, n_samples=4, empty_pair=empty_pair, matching=matching)
    gathered.add(cube[:, :, :, None], pred[None], labels[:, None])
    np.testing.assert_allclose(gathered.result().ged, quality.ged, rtol=1e-12)
    np.testing.assert_allclose(gathered.result().hungarian_iou, quality.hungarian_iou, rtol=1e-12)


def test_skipping_every_pair_leaves_the_image_undefined():
    cube = cube_from_class_maps(np.zeros((1, 2, 4, 4), dtype=np.int64), 2)
    labels = np.zeros((1, 2, 4, 4), dtype=np.uint8)
    pred = np.zeros((1, 4, 4), dtype=np.uint8)
    quality = segmentation_quality(cube[None], pred, labels, np.arange(1), empty_pair="skip")
    assert np.isnan(quality.ged[0]) and np.isnan(quality.hungarian_iou[0])
    assert quality.dice[0] == 1.0  # the Dice of pred keeps empty_iou
    with pytest.raises(UQEvalError, match="empty_pair is 'drop'"):
        segmentation_quality(cube[None], pred, labels, np.arange(1), empty_pair="drop")
