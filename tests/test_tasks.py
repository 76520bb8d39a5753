"""Tests of :func:`uqeval.evaluate` against independent recomputations of every row."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import note_texts
from sklearn.calibration import _sigmoid_calibration
from sklearn.metrics import roc_auc_score, roc_curve

from uqeval import AggregationParameters, Scores, UQEvalError, aggregate, decompose, evaluate
from uqeval.conventions import Conventions, preset
from uqeval.metrics.ambiguity import rater_variance as uqeval_rater_variance
from uqeval.metrics.segmentation import segmentation_quality

IGNORE = 255
MEASURES = ("au", "eu", "tu")
SIZE = 16


# --------------------------------------------------------------------------- synthetic stores


@dataclass
class Store:
    cubes: np.ndarray  # (image, eu, au, class, y, x)
    labels: np.ndarray  # (image, rater, y, x)
    domain: np.ndarray
    role: np.ndarray

    @property
    def maps(self):
        return decompose(self.cubes)

    def arrays(self) -> dict[str, np.ndarray]:
        maps = self.maps
        return {name: maps[name].values for name in (*MEASURES, "pred")}

    def evaluate(self, **options):
        options.setdefault("n_classes", 2)
        return evaluate(self.maps, self.domain, self.role, self.labels, **options)


def make_store(
    layout: list[tuple[str, str, int]], *, seed: int = 0, eu: int = 3, au: int = 4, ignore_rate: float = 0.05
) -> Store:
    """Soft-mask cubes: a disc per image, member shifts (larger off the ID domain), sample noise; 3 raters."""
    rng = np.random.default_rng(seed)
    domain = np.array([d for d, _, count in layout for _ in range(count)], dtype=object)
    role = np.array([r for _, r, count in layout for _ in range(count)], dtype=object)
    n_images = len(domain)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cubes = np.empty((n_images, eu, au, 2, SIZE, SIZE), dtype=np.float32)
    labels = np.empty((n_images, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(n_images):
        centre = rng.uniform(4, 12, size=2)
        base = rng.uniform(2.5, 6) - np.hypot(yy - centre[0], xx - centre[1])
        spread = 0.6 if domain[i] == "id" else rng.uniform(1.0, 2.5)
        for e in range(eu):
            shift = rng.normal(0, spread, size=(SIZE, SIZE)) * 0.3 + rng.normal(0, spread)
            for a in range(au):
                p = 1 / (1 + np.exp(-(base + shift + rng.normal(0, 0.8, size=(SIZE, SIZE)))))
                cubes[i, e, a, 1] = p
                cubes[i, e, a, 0] = 1 - p
        for rater in range(3):
            labels[i, rater] = base + rng.normal(0, 1.0, size=(SIZE, SIZE)) > 0
    labels[rng.random(labels.shape) < ignore_rate] = IGNORE
    return Store(cubes, labels, domain, role)


STANDARD = [
    ("id", "calibration", 6),
    ("id", "test", 8),
    ("blur", "test", 5),
    ("noise", "test", 5),
    ("noise", "calibration", 1),
]


@pytest.fixture(scope="module")
def store() -> Store:
    return make_store(STANDARD)


@pytest.fixture(scope="module")
def standard(store):
    return store.evaluate()


# --------------------------------------------------------------------------- references


def split_masks(domain, role) -> dict[str, np.ndarray]:
    test = role == "test"
    splits = {"id": test & (domain == "id")}
    for name in sorted(set(domain[test]) - {"id"}):
        splits[name] = test & (domain == name)
    splits["ood"] = test & (domain != "id")
    return splits


def rater_counts(labels, pred):
    valid = (labels != IGNORE).sum(axis=1)
    agree = (labels == pred[:, None]).sum(axis=1)
    return agree, valid


def reference_ncc(labels_image, u_image, n_classes=2, factor=False):
    """(Pearson r, state) of one image: ``scored``, ``constant`` or ``none`` (no pixel with a rater);
    with ``factor``, r times (N − 1)/N over its N pixels with a rater (the study's)."""
    counted = labels_image != IGNORE
    valid = counted.sum(axis=0)
    keep = valid > 0
    if not keep.any():
        return math.nan, "none"
    fractions = [((labels_image == c) & counted).sum(axis=0)[keep] / valid[keep] for c in range(n_classes)]
    g = 1 - sum(f**2 for f in fractions)
    u = u_image[keep].astype(np.float64)
    if np.ptp(g) == 0 or np.ptp(u) == 0:
        return math.nan, "constant"
    shrink = (g.size - 1) / g.size if factor else 1.0
    return float(np.corrcoef(g, u)[0, 1]) * shrink, "scored"


def reference_mean_ncc(labels, u, chosen, constant="skip", factor=False):
    values, n_constant = [], 0
    for i in np.flatnonzero(chosen):
        r, state = reference_ncc(labels[i], u[i], factor=factor)
        if state == "scored":
            values.append(r)
        elif state == "constant":
            n_constant += 1
            if constant == "zero":
                values.append(0.0)
    return (float(np.mean(values)) if values else math.nan), n_constant


def sklearn_platt(u, agree, valid):
    """(slope, intercept) of ``σ(b - a U)`` by scikit-learn's sigmoid calibration (Platt's smoothed
    targets) of ``-U``, each pixel a positive of weight ``w`` and a negative of weight ``1 - w``."""
    keep = valid > 0
    x = -u[keep].astype(np.float64)
    w = agree[keep] / valid[keep]
    a, b = _sigmoid_calibration(np.r_[x, x], np.r_[np.ones_like(w), np.zeros_like(w)], sample_weight=np.r_[w, 1 - w])
    return -float(a), -float(b)


def reference_calibration_errors(u, agree, valid, fit, bins=20):
    """(ACE, ECE) of pooled pixels with a rater, confidence ``σ(b - a U)``."""
    keep = valid > 0
    confidence = 1 / (1 + np.exp(-(fit.intercept - fit.slope * u[keep].astype(np.float64))))
    w = agree[keep] / valid[keep]
    index = np.minimum(np.floor(confidence * bins).astype(int), bins - 1)
    gaps, counts = [], []
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            gaps.append(abs(w[in_bin].mean() - confidence[in_bin].mean()))
            counts.append(in_bin.sum())
    if not gaps:
        return math.nan, math.nan
    return float(np.mean(gaps)), float(np.dot(gaps, counts) / np.sum(counts))


def delta(u_correct, u_wrong, sign=1.0):
    return sign * (math.atan2(u_correct, u_wrong) - math.pi / 4) / (math.pi / 4)


def fpr95(scores, positive):
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return float(fpr[tpr >= 0.95].min())


def rows_of(evaluation, **fields):
    return [row for row in evaluation.results if all(row[key] == value for key, value in fields.items())]


# --------------------------------------------------------------------------- shape of the result


def test_rows_are_tidy_and_unique(standard):
    assert isinstance(standard, Scores)  # evaluate and score return the same type
    keys = set()
    for row in standard.results:
        assert set(row) == {"task", "split", "measure", "aggregation", "metric", "value"}
        assert isinstance(row["value"], float)
        key = (row["task"], row["split"], row["measure"], row["aggregation"], row["metric"])
        assert key not in keys
        keys.add(key)
        assert standard.value(*key[:3], key[4], key[3]) == row["value"] or math.isnan(row["value"])
    assert {row["task"] for row in standard.results} == {"oodd", "amb", "cal", "fd", "pq"}
    assert standard.n_images == {"id": 8, "blur": 5, "noise": 5}
    assert standard.fitted.n_images == 6
    assert standard.fitted.images_from == "calibration"
    assert any("1 OOD image(s) have role calibration" in note for note in note_texts(standard))
    with pytest.raises(KeyError):
        standard.value("oodd", "id", "eu", "auroc")
    with pytest.raises(KeyError):
        standard.delta("oodd", "id")


# --------------------------------------------------------------------------- OOD detection


def test_oodd_matches_sklearn(store, standard):
    arrays = store.arrays()
    splits = split_masks(store.domain, store.role)
    for measure in MEASURES:
        scores = aggregate("border", arrays[measure], arrays["pred"])
        aurocs, fprs = [], []
        for name in ("blur", "noise"):
            chosen = splits["id"] | splits[name]
            positive = splits[name][chosen]
            aurocs.append(roc_auc_score(positive, scores[chosen]))
            fprs.append(fpr95(scores[chosen], positive))
            assert standard.value("oodd", name, measure, "auroc") == pytest.approx(aurocs[-1], abs=1e-12)
            assert standard.value("oodd", name, measure, "fpr95", "border") == pytest.approx(fprs[-1], abs=1e-12)
        assert standard.value("oodd", "ood", measure, "auroc") == pytest.approx(np.mean(aurocs), abs=1e-12)
        assert standard.value("oodd", "ood", measure, "fpr95") == pytest.approx(np.mean(fprs), abs=1e-12)
    assert not rows_of(standard, task="oodd", split="id")


def test_oodd_ignores_calibration_images(store, standard):
    # Calibration images with extreme uncertainty would change every AUROC if they were scored.
    cubes = store.cubes.copy()
    calibration = store.role == "calibration"
    flat = np.full((2, SIZE, SIZE), 0.5, dtype=np.float32)
    cubes[calibration, 0, :] = flat  # member 0 at p = 0.5, the others confident: high EU and AU
    changed = Store(cubes, store.labels, store.domain, store.role).evaluate(tasks=["oodd"])
    for row in rows_of(standard, task="oodd"):
        key = (row["task"], row["split"], row["measure"], row["metric"], row["aggregation"])
        assert changed.value(*key) == row["value"]


def test_single_ood_domain(store):
    single = make_store([("id", "calibration", 4), ("id", "test", 6), ("fog", "test", 6)], seed=5)
    evaluation = single.evaluate(tasks=["oodd"])
    arrays = single.arrays()
    positive = single.domain[single.role == "test"] == "fog"
    for measure in MEASURES:
        scores = aggregate("border", arrays[measure], arrays["pred"])[single.role == "test"]
        expected = roc_auc_score(positive, scores)
        assert evaluation.value("oodd", "fog", measure, "auroc") == pytest.approx(expected, abs=1e-12)
        assert evaluation.value("oodd", "ood", measure, "auroc") == pytest.approx(expected, abs=1e-12)
    assert evaluation.delta("oodd", "fog") == evaluation.delta("oodd", "ood")
    assert {row["split"] for row in evaluation.entanglement} == {"fog", "ood"}


def test_threshold_aggregation_fitted_on_calibration_images(store):
    evaluation = store.evaluate(tasks=["oodd"], aggregations=["border", "threshold", "mean"])
    arrays = store.arrays()
    calibration = (store.domain == "id") & (store.role == "calibration")
    q = (arrays["pred"][calibration] == 0).mean(axis=(1, 2)).mean()
    splits = split_masks(store.domain, store.role)
    for measure in MEASURES:
        tau = np.quantile(arrays[measure][calibration], q)
        assert evaluation.fitted.thresholds[measure] == pytest.approx(tau, rel=1e-6)  # float32 interpolation
        u = arrays[measure].astype(np.float64)
        above = u >= evaluation.fitted.thresholds[measure]
        counts = above.sum(axis=(1, 2))
        scores = np.where(counts > 0, np.where(above, u, 0).sum(axis=(1, 2)) / np.maximum(counts, 1), 0.0)
        for name in ("blur", "noise"):
            chosen = splits["id"] | splits[name]
            expected = roc_auc_score(splits[name][chosen], scores[chosen])
            assert evaluation.value("oodd", name, measure, "auroc", "threshold") == pytest.approx(expected, abs=1e-12)
        params = AggregationParameters(threshold=evaluation.fitted.thresholds[measure])
        mean_scores = aggregate("mean", arrays[measure], arrays["pred"], params)
        chosen = splits["id"] | splits["blur"]
        expected = roc_auc_score(splits["blur"][chosen], mean_scores[chosen])
        assert evaluation.value("oodd", "blur", measure, "auroc", "mean") == pytest.approx(expected, abs=1e-12)
    # Δ uses the conventions' aggregation only.
    assert len([row for row in evaluation.entanglement if row["task"] == "oodd"]) == 3
    border = store.evaluate(tasks=["oodd"])
    assert evaluation.delta("oodd", "ood") == border.delta("oodd", "ood")


# --------------------------------------------------------------------------- ambiguity


@pytest.fixture(scope="module")
def store_with_constant_images() -> Store:
    store = make_store(STANDARD, seed=1)
    labels = store.labels.copy()
    test_id = np.flatnonzero((store.domain == "id") & (store.role == "test"))
    labels[test_id[:2]] = labels[test_id[:2], :1]  # every rater agrees: g is constant (0)
    blur = np.flatnonzero(store.domain == "blur")
    labels[blur[0]] = IGNORE  # no pixel with a rater: never scored, never counted
    return Store(store.cubes, labels, store.domain, store.role)


@pytest.mark.parametrize("preset_name", ["default", "paper"])
def test_amb_matches_corrcoef_with_constant_images(store_with_constant_images, preset_name):
    store = store_with_constant_images
    conventions = preset(preset_name)
    evaluation = store.evaluate(conventions=conventions)
    arrays = store.arrays()
    per_domain: dict[str, list[float]] = {measure: [] for measure in MEASURES}
    for split, chosen in split_masks(store.domain, store.role).items():
        values = {}
        for measure in MEASURES:
            expected, n_constant = reference_mean_ncc(
                store.labels,
                arrays[measure],
                chosen,
                conventions.ncc_constant,
                factor=conventions.ncc_factor == "n-1-over-n",
            )
            if split not in ("id", "ood"):
                per_domain[measure].append(expected)
            if split == "ood" and preset_name == "paper":  # the study's tables: the mean over OOD domains
                expected = float(np.nanmean(per_domain[measure]))
            values[measure] = expected
            assert evaluation.value("amb", split, measure, "ncc") == pytest.approx(expected, abs=1e-6)
            assert evaluation.value("amb", split, measure, "ncc_constant") == n_constant
        assert evaluation.delta("amb", split) == pytest.approx(delta(values["au"], values["eu"]), abs=1e-5)
    assert evaluation.value("amb", "id", "au", "ncc_constant") == 2
    assert evaluation.value("amb", "blur", "au", "ncc_constant") == 0
    action = "left out" if preset_name == "default" else "scored 0"
    assert any(note.startswith("amb: 2 id image(s)") and action in note for note in note_texts(evaluation))


def test_amb_skip_and_zero_differ_by_the_constant_images(store_with_constant_images):
    skip = store_with_constant_images.evaluate(tasks=["amb"])
    zero = store_with_constant_images.evaluate(tasks=["amb"], conventions=Conventions(ncc_constant="zero"))
    n_scored = 8 - 2
    for measure in MEASURES:
        assert zero.value("amb", "id", measure, "ncc") == pytest.approx(
            skip.value("amb", "id", measure, "ncc") * n_scored / (n_scored + 2), abs=1e-12
        )
        assert zero.value("amb", "blur", measure, "ncc") == skip.value("amb", "blur", measure, "ncc")


# --------------------------------------------------------------------------- calibration


def test_platt_matches_sklearn_on_id_calibration_pixels(store, standard):
    arrays = store.arrays()
    agree, valid = rater_counts(store.labels, arrays["pred"])
    fitting = (store.domain == "id") & (store.role == "calibration")
    for measure in MEASURES:
        slope, intercept = sklearn_platt(arrays[measure][fitting], agree[fitting], valid[fitting])
        fit = standard.fitted.platt[measure]
        assert fit.slope == pytest.approx(slope, rel=1e-4)
        assert fit.intercept == pytest.approx(intercept, rel=1e-4)
        assert fit.n_pixels == int((valid[fitting] > 0).sum())
        assert fit.slope > 0


def test_ace_and_ece_match_numpy(store, standard):
    arrays = store.arrays()
    agree, valid = rater_counts(store.labels, arrays["pred"])
    for split, chosen in split_masks(store.domain, store.role).items():
        values = {}
        for measure in MEASURES:
            fit = standard.fitted.platt[measure]
            ace, ece = reference_calibration_errors(arrays[measure][chosen], agree[chosen], valid[chosen], fit)
            values[measure] = ace
            assert standard.value("cal", split, measure, "ace") == pytest.approx(ace, abs=1e-10)
            assert standard.value("cal", split, measure, "ece") == pytest.approx(ece, abs=1e-10)
        expected = delta(values["tu"], min(values["au"], values["eu"]), sign=-1.0)
        assert standard.delta("cal", split) == pytest.approx(expected, abs=1e-9)
        row = next(r for r in standard.entanglement if r["task"] == "cal" and r["split"] == split)
        assert row["wrong"] == min(("au", "eu"), key=values.get)


def test_per_image_ace_scope(store):
    evaluation = store.evaluate(tasks=["cal"], conventions=Conventions(ace_scope="per-image"))
    arrays = store.arrays()
    agree, valid = rater_counts(store.labels, arrays["pred"])
    for split, chosen in split_masks(store.domain, store.role).items():
        for measure in MEASURES:
            fit = evaluation.fitted.platt[measure]
            per_image = [
                reference_calibration_errors(arrays[measure][[i]], agree[[i]], valid[[i]], fit)
                for i in np.flatnonzero(chosen)
            ]
            ace, ece = np.nanmean(per_image, axis=0)
            assert evaluation.value("cal", split, measure, "ace") == pytest.approx(ace, abs=1e-10)
            assert evaluation.value("cal", split, measure, "ece") == pytest.approx(ece, abs=1e-10)


def test_entirely_correct_image_has_accuracy_one():
    store = make_store([*STANDARD, ("clean", "test", 1)], seed=2)
    pred = store.arrays()["pred"]
    labels = store.labels.copy()
    labels[-1] = pred[-1][None]  # every rater agrees with the prediction everywhere
    store = Store(store.cubes, labels, store.domain, store.role)
    evaluation = store.evaluate(tasks=["cal"])
    for measure in MEASURES:
        reliability = evaluation.reliability[("clean", measure)]  # the split of that image alone
        assert reliability.count.sum() == SIZE * SIZE
        used = reliability.count > 0
        np.testing.assert_allclose(reliability.accuracy[used], 1.0)
        expected = np.mean(1 - reliability.confidence[used])
        assert evaluation.value("cal", "clean", measure, "ace") == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- Δ and collapse


def test_oodd_delta_uses_eu_against_au(standard):
    for split in ("blur", "noise", "ood"):
        eu = standard.value("oodd", split, "eu", "auroc")
        au = standard.value("oodd", split, "au", "auroc")
        row = next(r for r in standard.entanglement if r["task"] == "oodd" and r["split"] == split)
        assert (row["correct"], row["wrong"], row["u_correct"], row["u_wrong"]) == ("eu", "au", eu, au)
        assert standard.delta("oodd", split) == pytest.approx(delta(eu, au), abs=1e-12)
    assert {(r["task"], r["split"]) for r in standard.entanglement} == {
        *(("oodd", s) for s in ("blur", "noise", "ood")),
        *((task, s) for task in ("amb", "cal") for s in ("id", "blur", "noise", "ood")),
        *(("fd", s) for s in ("id", "blur", "noise", "ood", "all")),
    }


def test_collapse_is_mean_eu_over_mean_au(store, standard):
    maps = store.maps
    for row in standard.collapse:
        chosen = split_masks(store.domain, store.role)[row["split"]]
        mean_au = maps.au.values[chosen].astype(np.float64).mean()
        mean_eu = maps.eu.values[chosen].astype(np.float64).mean()
        assert row["mean_au"] == pytest.approx(mean_au, rel=1e-12)
        assert row["mean_eu"] == pytest.approx(mean_eu, rel=1e-12)
        assert row["eu_over_au"] == pytest.approx(mean_eu / mean_au, rel=1e-12)
    assert [row["split"] for row in standard.collapse] == ["id", "blur", "noise", "ood"]


# --------------------------------------------------------------------------- EU rescaling


def test_rescale_eu(store, standard):
    rescaled = store.evaluate(conventions=Conventions(rescale_eu=True))
    arrays = store.arrays()
    calibration = (store.domain == "id") & (store.role == "calibration")
    r = arrays["au"][calibration].astype(np.float64).mean() / arrays["eu"][calibration].astype(np.float64).mean()
    assert rescaled.fitted.eu_scale == pytest.approx(r, rel=1e-9)
    assert r > 2  # the synthetic members barely disagree: a real rescaling
    eu = (arrays["eu"] * np.float32(rescaled.fitted.eu_scale)).astype(np.float32)
    tu = arrays["au"] + eu
    splits = split_masks(store.domain, store.role)
    # OODD: TU' = AU + r·EU is a different score; EU's ranking does not change.
    scores = aggregate("border", tu, arrays["pred"])
    for name in ("blur", "noise"):
        chosen = splits["id"] | splits[name]
        expected = roc_auc_score(splits[name][chosen], scores[chosen])
        assert rescaled.value("oodd", name, "tu", "auroc") == pytest.approx(expected, abs=1e-12)
        assert rescaled.value("oodd", name, "eu", "auroc") == standard.value("oodd", name, "eu", "auroc")
    # AMB: NCC of TU' against the raters.
    for split, chosen in splits.items():
        expected, _ = reference_mean_ncc(store.labels, tu, chosen)
        assert rescaled.value("amb", split, "tu", "ncc") == pytest.approx(expected, abs=1e-6)
    # CAL: Platt of TU' on the calibration pixels.
    agree, valid = rater_counts(store.labels, arrays["pred"])
    slope, intercept = sklearn_platt(tu[calibration], agree[calibration], valid[calibration])
    assert rescaled.fitted.platt["tu"].slope == pytest.approx(slope, rel=1e-4)
    assert rescaled.fitted.platt["tu"].intercept == pytest.approx(intercept, rel=1e-4)
    assert rescaled.fitted.platt["au"] == standard.fitted.platt["au"]
    assert rescaled.value("cal", "id", "tu", "ace") != standard.value("cal", "id", "tu", "ace")
    # Collapse reports the maps as given.
    assert rescaled.collapse == standard.collapse
    assert any(note.startswith("EU rescaled by r =") for note in note_texts(rescaled))
    assert not any(note.startswith("EU rescaled") for note in note_texts(standard))


# --------------------------------------------------------------------------- segmentation rows


def reference_dice(pred, raters):
    scores = []
    for rater in raters:
        counted = rater != IGNORE
        a, b = (pred == 1) & counted, (rater == 1) & counted
        total = int(a.sum() + b.sum())
        scores.append(2 * int((a & b).sum()) / total if total else 1.0)
    return float(np.mean(scores))


def test_segmentation_rows_with_cubes(store, standard):
    conventions = Conventions(seed=3, segmentation_samples=5)
    evaluation = store.evaluate(cubes=store.cubes, conventions=conventions)
    arrays = store.arrays()
    quality = segmentation_quality(
        store.cubes, arrays["pred"], store.labels, np.arange(len(store.cubes)), n_samples=5, seed=3
    )
    for split, chosen in split_masks(store.domain, store.role).items():
        dice = np.mean([reference_dice(arrays["pred"][i], store.labels[i]) for i in np.flatnonzero(chosen)])
        assert evaluation.value("segmentation", split, "none", "dice") == pytest.approx(dice, abs=1e-12)
        for metric in ("ged", "hungarian_iou"):
            expected = getattr(quality, metric)[chosen].mean()
            assert evaluation.value("segmentation", split, "none", metric) == pytest.approx(expected, abs=1e-12)
    assert not rows_of(standard, task="segmentation")
    # Segmentation needs the labels too; without them there is nothing to compare with.
    no_labels = evaluate(store.maps, store.domain, store.role, cubes=store.cubes)
    assert not rows_of(no_labels, task="segmentation")
    assert "segmentation: skipped, the store has no rater labels" in note_texts(no_labels)


def test_cubes_of_the_wrong_shape_raise(store):
    for cubes in (
        store.cubes[:-1],
        store.cubes[..., :-1],
        np.concatenate([store.cubes, store.cubes[:1]]),
        store.cubes[0],
    ):
        with pytest.raises(UQEvalError, match="cubes have shape"):
            store.evaluate(cubes=cubes)


# --------------------------------------------------------------------------- missing data


def test_no_labels_skips_amb_and_cal(store, standard):
    evaluation = evaluate(store.maps, store.domain, store.role)
    assert {row["task"] for row in evaluation.results} == {"oodd"}
    assert "amb: skipped, the store has no rater labels" in note_texts(evaluation)
    assert "cal: skipped, the store has no rater labels" in note_texts(evaluation)
    assert evaluation.fitted.platt == {}
    for row in rows_of(standard, task="oodd"):
        key = (row["task"], row["split"], row["measure"], row["metric"])
        assert evaluation.value(*key) == row["value"]


def test_no_ood_images_skips_oodd(store):
    in_domain = store.domain == "id"
    evaluation = evaluate(
        {name: store.maps[name].values[in_domain] for name in (*MEASURES, "pred")},
        store.domain[in_domain],
        store.role[in_domain],
        store.labels[in_domain],
        n_classes=2,
    )
    assert "oodd: skipped, there are no OOD test images" in note_texts(evaluation)
    # Maps without `mean`: pq has nothing to score.
    assert "pq: skipped, the maps have no mean prediction (`mean`) to score" in note_texts(evaluation)
    assert {row["task"] for row in evaluation.results} == {"amb", "cal", "fd"}
    assert {row["split"] for row in evaluation.results} == {"id", "all"}
    assert evaluation.n_images == {"id": 8}
    # OOD images that all have role calibration leave no OOD test images either.
    role = np.where(store.domain == "id", store.role, "calibration")
    evaluation = evaluate(store.maps, store.domain, role, store.labels, tasks=["oodd"])
    assert "oodd: skipped, there are no OOD test images" in note_texts(evaluation)
    assert not evaluation.results


def test_no_id_images_skips_oodd_and_cal(store):
    ood = store.domain != "id"
    test = store.role == "test"
    evaluation = evaluate(
        store.maps.isel(image=np.flatnonzero(ood & test)),
        store.domain[ood & test],
        labels=store.labels[ood & test],
    )
    warning = note_texts(evaluation)[0]
    assert warning.startswith("warning: no image has the domain 'id' (in-distribution)")
    assert "oodd and cal are skipped (they need ID images)" in warning
    assert not any(note.startswith(("oodd:", "cal:")) for note in note_texts(evaluation))
    assert sum("'id'" in note for note in note_texts(evaluation)) == 1  # one warning, nothing that contradicts it
    assert not any(note.startswith("pq:") for note in note_texts(evaluation))  # no temperature: nothing is fitted
    assert {row["task"] for row in evaluation.results} == {"amb", "fd", "pq"}
    assert "temperature" not in {row["metric"] for row in evaluation.results}


def test_no_calibration_role_fits_on_id_test_images(store):
    test = store.role == "test"
    maps = store.maps.isel(image=np.flatnonzero(test))
    evaluation = evaluate(maps, store.domain[test], None, store.labels[test], aggregations=["border", "threshold"])
    assert "no calibration images: Platt scaling, τ and the EU scale are fitted on the ID test images" in (
        note_texts(evaluation)
    )
    assert evaluation.fitted.images_from == "test"
    in_domain = store.domain[test] == "id"
    assert evaluation.fitted.n_images == int(in_domain.sum())
    arrays = {name: maps[name].values for name in (*MEASURES, "pred")}
    agree, valid = rater_counts(store.labels[test], arrays["pred"])
    for measure in MEASURES:
        slope, intercept = sklearn_platt(arrays[measure][in_domain], agree[in_domain], valid[in_domain])
        assert evaluation.fitted.platt[measure].slope == pytest.approx(slope, rel=1e-4)
        assert evaluation.fitted.platt[measure].intercept == pytest.approx(intercept, rel=1e-4)
        q = (arrays["pred"][in_domain] == 0).mean()
        tau = np.quantile(arrays[measure][in_domain], q)
        assert evaluation.fitted.thresholds[measure] == pytest.approx(tau, rel=1e-6)  # float32 interpolation
    assert evaluation.n_images == {"id": 8, "blur": 5, "noise": 5}


@pytest.mark.parametrize(
    ("options", "match", "parameter"),
    [
        (
            {"tasks": ["oodd", "segmentation"]},
            r"^unknown task\(s\) segmentation; choose from oodd, amb, cal, fd, pq$",
            "tasks",
        ),
        ({"aggregations": ["median"]}, "^unknown aggregation 'median'; choose one of ", "aggregations"),
        ({"conventions": Conventions(aggregation="median")}, "^unknown aggregation 'median'", "aggregations"),
    ],
)
def test_unknown_names_raise(store, options, match, parameter):
    with pytest.raises(UQEvalError, match=match) as raised:
        store.evaluate(**options)
    assert raised.value.parameter == parameter
    assert "--" not in str(raised.value)  # the library names no CLI flag


def test_bad_inputs_raise(store):
    maps = store.maps
    domain = np.where(store.domain == "noise", "ood", store.domain)
    with pytest.raises(UQEvalError, match=r"domain 'ood' of \d+ images is a reserved name"):
        evaluate(maps, domain, store.role)
    for labels in (store.labels[:-1], store.labels[:, :, :, :-1], store.labels[:, 0]):
        with pytest.raises(UQEvalError, match=r"^evaluate: labels have shape") as raised:
            evaluate(maps, store.domain, store.role, labels, n_classes=2)
        assert raised.value.parameter == "labels"
    with pytest.raises(UQEvalError, match="one per image"):
        evaluate(maps, store.domain[:-1], store.role)
    with pytest.raises(UQEvalError, match="unknown role"):
        evaluate(maps, store.domain, np.where(store.role == "test", "val", store.role))
    with pytest.raises(UQEvalError, match="maps lack 'tu'"):
        evaluate(maps.drop_vars("tu"), store.domain, store.role)


# --------------------------------------------------------------------------- equal-mass ACE


def reference_equal_mass_ace(u, agree, valid, fit, bins=20):
    """Sort the pooled pixels by confidence, ``np.array_split`` them into ``bins`` runs."""
    keep = valid > 0
    confidence = 1 / (1 + np.exp(-(fit.intercept - fit.slope * u[keep].astype(np.float64))))
    w = agree[keep] / valid[keep]
    order = np.argsort(confidence, kind="stable")
    runs = [run for run in np.array_split(order, bins) if run.size]
    return float(np.mean([abs(w[run].mean() - confidence[run].mean()) for run in runs]))


def test_equal_mass_ace_matches_array_split_of_sorted_pixels(store, standard):
    """Pooled scope: the histogram groups U to a relative 2**-12, so agreement is to a few 1e-4;
    per-image scope is exact."""
    arrays = store.arrays()
    agree, valid = rater_counts(store.labels, arrays["pred"])
    per_image = store.evaluate(tasks=["cal"], conventions=Conventions(ace_scope="per-image"))
    for split, chosen in split_masks(store.domain, store.role).items():
        for measure in MEASURES:
            fit = standard.fitted.platt[measure]
            expected = reference_equal_mass_ace(arrays[measure][chosen], agree[chosen], valid[chosen], fit)
            assert standard.value("cal", split, measure, "ace_equal_mass") == pytest.approx(expected, abs=5e-4)
            images = [
                reference_equal_mass_ace(arrays[measure][[i]], agree[[i]], valid[[i]], fit)
                for i in np.flatnonzero(chosen)
            ]
            value = per_image.value("cal", split, measure, "ace_equal_mass")
            assert value == pytest.approx(np.mean(images), abs=1e-12)


# --------------------------------------------------------------------------- failure detection


def reference_aurc(scores, risks):
    """Mean over all orders of tied scores, by brute force over tie groups (small inputs) —
    or, with distinct scores, the plain cumulative mean."""
    order = np.argsort(scores, kind="stable")
    scores, risks = np.asarray(scores)[order], np.asarray(risks)[order]
    n = len(scores)
    total, prefix, k = 0.0, 0.0, 0
    for value in np.unique(scores):
        group = risks[scores == value]
        for j in range(1, len(group) + 1):
            total += (prefix + j * group.sum() / len(group)) / (k + j)
        prefix += group.sum()
        k += len(group)
    return total / n


def test_failure_detection_rows_match_a_direct_recomputation(store):
    evaluation = store.evaluate(aggregations=["border", "mean", "threshold"])
    arrays = store.arrays()
    risk = np.array([1 - reference_dice(arrays["pred"][i], store.labels[i]) for i in range(len(store.domain))])
    splits = {**split_masks(store.domain, store.role), "all": store.role == "test"}
    for aggregation in ("border", "mean", "threshold"):
        for split, chosen in splits.items():
            for measure in MEASURES:
                scores = evaluation.images.scores[aggregation][measure][chosen]
                expected = reference_aurc(scores, risk[chosen])
                ideal = reference_aurc(risk[chosen], risk[chosen])
                assert evaluation.value("fd", split, measure, "aurc", aggregation) == pytest.approx(expected, abs=1e-12)
                assert evaluation.value("fd", split, measure, "eaurc", aggregation) == pytest.approx(
                    expected - ideal, abs=1e-12
                )
    # Δ: TU against the better of AU and EU, lower is better, for the conventions' aggregation only.
    for split in splits:
        values = {m: evaluation.value("fd", split, m, "aurc", "border") for m in MEASURES}
        row = next(r for r in evaluation.entanglement if r["task"] == "fd" and r["split"] == split)
        assert (row["correct"], row["wrong"]) == ("tu", min(("au", "eu"), key=values.get))
        assert row["delta"] == pytest.approx(delta(values["tu"], min(values["au"], values["eu"]), -1.0), abs=1e-12)


def test_failure_detection_needs_labels_only(store):
    evaluation = evaluate(store.maps, store.domain, store.role, store.labels, tasks=["fd"], n_classes=2)
    assert {row["task"] for row in evaluation.results} == {"fd"}
    assert evaluation.fitted.platt == {}  # nothing is fitted for FD
    unlabelled = evaluate(store.maps, store.domain, store.role, tasks=["fd"])
    assert not unlabelled.results
    assert "fd: skipped, the store has no rater labels" in note_texts(unlabelled)


# --------------------------------------------------------------------------- the study's conventions


def test_paper_ood_split_is_the_mean_over_domains(store):
    default = store.evaluate()
    paper = store.evaluate(conventions=Conventions(ood_split="domain-mean"))
    for task, metrics in (("amb", ("ncc",)), ("cal", ("ace", "ece", "ace_equal_mass"))):
        for metric in metrics:
            for measure in MEASURES:
                per_domain = [paper.value(task, name, measure, metric) for name in ("blur", "noise")]
                assert paper.value(task, "ood", measure, metric) == pytest.approx(np.mean(per_domain), abs=1e-15)
                assert paper.value(task, "blur", measure, metric) == default.value(task, "blur", measure, metric)
        assert default.value(task, "ood", "au", metrics[0]) != paper.value(task, "ood", "au", metrics[0])
    values = {m: paper.value("amb", "ood", m, "ncc") for m in MEASURES}
    assert paper.delta("amb", "ood") == pytest.approx(delta(values["au"], values["eu"]), abs=1e-12)
    for measure in MEASURES:  # FD too, per aggregation
        per_domain = [paper.value("fd", name, measure, "aurc") for name in ("blur", "noise")]
        assert paper.value("fd", "ood", measure, "aurc") == pytest.approx(np.mean(per_domain), abs=1e-15)
    # OODD's ood is the mean over domains under both conventions.
    assert paper.value("oodd", "ood", "eu", "auroc") == default.value("oodd", "ood", "eu", "auroc")


def test_members_threshold_fraction_averages_every_members_argmax(store):
    conventions = Conventions(threshold_fraction="members")
    evaluation = evaluate(
        store.maps,
        store.domain,
        store.role,
        store.labels,
        aggregations=["border", "threshold"],
        conventions=conventions,
        cubes=store.cubes,
        tasks=["oodd"],
    )
    arrays = store.arrays()
    fitting = (store.domain == "id") & (store.role == "calibration")
    member_means = store.cubes[fitting].mean(axis=2)  # (image, eu, class, y, x)
    fractions = np.concatenate(
        [
            (arrays["pred"][fitting] == 0).mean(axis=(1, 2))[:, None],
            (member_means.argmax(axis=2) == 0).mean(axis=(2, 3)),
        ],
        axis=1,
    )
    for measure in MEASURES:
        tau = np.quantile(arrays[measure][fitting], fractions.mean())
        assert evaluation.fitted.thresholds[measure] == pytest.approx(tau, rel=1e-6)
    default = store.evaluate(aggregations=["border", "threshold"], tasks=["oodd"])
    assert default.fitted.thresholds != evaluation.fitted.thresholds
    with pytest.raises(UQEvalError, match="threshold_fraction 'members' needs each member's prediction"):
        store.evaluate(aggregations=["border", "threshold"], conventions=conventions, tasks=["oodd"])


def test_delta_of_two_zero_scores_follows_the_convention():
    """Every image perfectly segmented and every map 0 outside one ambiguous pixel: FD's
    risks are all 0, so every AURC is 0."""
    store = make_store(STANDARD, seed=3)
    pred = store.arrays()["pred"]
    labels = np.repeat(pred[:, None], 3, axis=1).astype(np.uint8)
    for both_zero, expected in (("nan", math.nan), ("atan2", 1.0)):
        evaluation = evaluate(
            store.maps,
            store.domain,
            store.role,
            labels,
            tasks=["fd"],
            n_classes=2,
            conventions=Conventions(delta_both_zero=both_zero),
        )
        assert evaluation.value("fd", "all", "tu", "aurc") == 0.0
        row = next(r for r in evaluation.entanglement if r["task"] == "fd" and r["split"] == "all")
        assert (row["u_correct"], row["u_wrong"]) == (0.0, 0.0)
        if math.isnan(expected):
            assert math.isnan(row["delta"])
            assert any(note.startswith("fd: Δ on all is undefined") for note in note_texts(evaluation))
        else:
            assert row["delta"] == expected  # −s with s = −1: lower is better


# --------------------------------------------------------------------------- measures that are 0 everywhere


def test_identical_members_give_exact_zeros_and_no_delta():
    """A model whose members agree everywhere (one member copied): EU is exactly 0 at every
    pixel, its NCC images are all constant, its OODD AUROC is exactly 0.5 (all ties) and
    no Δ that compares EU is defined."""
    store = make_store(STANDARD, seed=4)
    collapsed = Store(np.repeat(store.cubes[:, :1], 3, axis=1), store.labels, store.domain, store.role)
    maps = collapsed.arrays()
    assert (maps["eu"] == 0.0).all()
    evaluation = collapsed.evaluate(conventions=Conventions(aggregation="mean"))
    n_test_id = int(((store.domain == "id") & (store.role == "test")).sum())
    assert evaluation.value("amb", "id", "eu", "ncc_constant") == n_test_id
    assert math.isnan(evaluation.value("amb", "id", "eu", "ncc"))
    assert evaluation.value("oodd", "ood", "eu", "auroc") == 0.5
    for row in evaluation.entanglement:  # OODD, AMB, CAL and FD all compare EU
        assert math.isnan(row["delta"]), row
    assert any("EU is 0 at every pixel" in note for note in note_texts(evaluation))
    zero = evaluate(collapsed.maps, collapsed.domain, collapsed.role, collapsed.labels, conventions=preset("paper"))
    assert zero.value("amb", "id", "eu", "ncc") == 0.0  # scored 0 under the study's convention


def test_negative_score_is_noted(store):
    """An EU map that anti-correlates with the raters' disagreement has a negative NCC, and
    Δ leaves [−1, 1]: a note says so."""
    arrays = store.arrays()
    variance = uqeval_rater_variance(store.labels, 2)
    maps = {**arrays, "eu": (1.0 - variance).astype(np.float32)}
    maps["tu"] = maps["au"] + maps["eu"]
    evaluation = evaluate(maps, store.domain, store.role, store.labels, tasks=["amb"], n_classes=2)
    row = next(r for r in evaluation.entanglement if r["split"] == "id")
    assert row["u_wrong"] < 0 and row["delta"] > 1
    notes = [note for note in note_texts(evaluation) if note.startswith("amb: ncc is negative on ")]
    assert len(notes) == 1  # one note for every split
    assert "id (EU -" in notes[0] and "its range is (−5, 3]" in notes[0]


def test_auroc_below_chance_is_explained_once_with_the_other_image_scores(store):
    """EU set to 0 on OOD images ranks them as less uncertain: one note says so and
    gives that measure's ``ood`` AUROC with each image score, ``mean`` included."""
    arrays = store.arrays()
    ood = store.domain != "id"
    maps = {**arrays, "eu": np.where(ood[:, None, None], 0.0, 1.0) * arrays["eu"]}
    maps["tu"] = maps["au"] + maps["eu"]
    evaluation = evaluate(
        maps, store.domain, store.role, store.labels, tasks=["oodd"], aggregations=["sum", "area"], n_classes=2
    )
    notes = [note for note in note_texts(evaluation) if "AUROC below 0.5" in note]
    assert len(notes) == 1
    flagged = [
        (measure, aggregation)
        for measure in MEASURES
        for aggregation in ("sum", "area")
        if evaluation.value("oodd", "ood", measure, "auroc", aggregation=aggregation) < 0.5
        or any(
            evaluation.value("oodd", domain, measure, "auroc", aggregation=aggregation) < 0.5
            for domain in set(store.domain[ood])
        )
    ]
    assert ("eu", "sum") in flagged
    for measure in {measure for measure, _ in flagged}:
        # The mean score's AUROC, from the image means, as the `mean` aggregation gives it.
        mean = evaluate(
            maps, store.domain, store.role, store.labels, tasks=["oodd"], aggregations=["mean"], n_classes=2
        )
        shown = ", ".join(
            f"{aggregation} {value:.3f}"
            for aggregation, value in (
                ("sum", evaluation.value("oodd", "ood", measure, "auroc", aggregation="sum")),
                ("area", evaluation.value("oodd", "ood", measure, "auroc", aggregation="area")),
                ("mean", mean.value("oodd", "ood", measure, "auroc", aggregation="mean")),
            )
        )
        assert f"(ood AUROC by image score: {shown})" in notes[0]
    for measure in set(MEASURES) - {measure for measure, _ in flagged}:
        assert f"{measure.upper()} with" not in notes[0]
    # Every measure higher on every OOD image: every AUROC is 1, and there is no such note.
    higher = {**arrays, **{measure: arrays[measure] + 10.0 * ood[:, None, None] for measure in MEASURES}}
    detected = evaluate(higher, store.domain, store.role, tasks=["oodd"], aggregations=["sum"])
    assert detected.value("oodd", "ood", "eu", "auroc", aggregation="sum") == 1.0
    assert not any("AUROC below 0.5" in note for note in note_texts(detected))


def test_one_rater_skips_ambiguity_with_one_note(store):
    one = store.labels[:, :1]
    evaluation = evaluate(store.arrays(), store.domain, store.role, one, n_classes=2)
    notes = note_texts(evaluation)
    assert [note for note in notes if note.startswith("amb")] == [
        "amb: skipped: ambiguity needs ≥ 2 raters; this store has 1"
    ]
    assert not any(row["task"] == "amb" for row in evaluation.results)
    assert {row["task"] for row in evaluation.results} >= {"oodd", "cal", "fd"}
    two = evaluate(store.arrays(), store.domain, store.role, store.labels[:, :2], n_classes=2)
    assert any(row["task"] == "amb" for row in two.results)
