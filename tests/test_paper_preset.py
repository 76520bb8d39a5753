"""``--preset paper`` against an independent implementation of the study's conventions, written
from their description in docs/metrics.md (not from the study's code):

- AMB: the variance of the raters' class *indices*, NCC as Σ(g − ḡ)(u − ū) / (N σ_g σ_u) with
  σ of ddof 1, 0 for a constant map, the mean over images; ``ood`` the mean over domains;
- CAL: Platt scaling on (rater, pixel) pairs binned on 256 log-spaced bins of U over
  [1e-12, 1e2], scikit-learn's sigmoid calibration (Platt's smoothed targets) on each bin's
  correct and wrong pairs at its mean U; ACE over pairs on 20 bins; CAL Δ on ``ood`` from the
  mean over domains of TU's ACE and of each domain's min(AU ACE, EU ACE);
- the EU/AU collapse ratio on ``ood``: the mean over domains of each domain's ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import _sigmoid_calibration

import uqeval

MEASURES = ("au", "eu", "tu")
OOD_DOMAINS = ("blur", "noise")


def delta(correct: float, wrong: float, lower_is_better: bool = False) -> float:
    sign = -1.0 if lower_is_better else 1.0
    return sign * (math.atan2(correct, wrong) - math.pi / 4) / (math.pi / 4)


def write_store(path, probs, labels, domains, roles):
    n_images, eu, au, n_classes, height, width = probs.shape
    writer = uqeval.CubeWriter(
        path, n_classes=n_classes, eu=eu, au=au, height=height, width=width, raters=labels.shape[1], dtype="float32"
    )
    writer.append(
        probs, labels, domain=list(domains), role=list(roles), image_ids=[f"case{i}" for i in range(n_images)]
    )
    writer.close()
    return path


def layout(n_calibration: int, n_test: int, n_ood: int) -> tuple[list[str], list[str]]:
    domains = ["id"] * (n_calibration + n_test) + [name for name in OOD_DOMAINS for _ in range(n_ood)]
    roles = ["calibration"] * n_calibration + ["test"] * (len(domains) - n_calibration)
    return domains, roles


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@pytest.fixture(scope="module")
def three_class_store(tmp_path_factory):
    """3 classes; raters disagree between 0 and 2 (non-adjacent) and between 1 and 2."""
    rng = np.random.default_rng(27)
    domains, roles = layout(10, 8, 6)
    n, size = len(domains), 16
    truth = rng.integers(0, 3, size=(n, size, size))
    shift = np.array([0.0 if d == "id" else (1.0 if d == "blur" else 2.0) for d in domains]).reshape(n, 1, 1, 1, 1, 1)
    logits = 2.5 * np.eye(3)[truth].transpose(0, 3, 1, 2)[:, None, None] + rng.normal(
        0, 1.0, size=(n, 3, 2, 3, size, size)
    ) * (1 + shift)
    probs = softmax(logits, axis=3).astype(np.float32)
    labels = np.repeat(truth[:, None], 3, axis=1)
    flip = rng.random(labels.shape) < 0.25
    other = np.where(labels == 2, rng.choice([0, 1], size=labels.shape), 2)  # 0↔2 and 1↔2
    labels = np.where(flip, other, labels).astype(np.uint8)
    path = tmp_path_factory.mktemp("paper") / "three.zarr"
    return write_store(path, probs, labels, domains, roles)


@pytest.fixture(scope="module")
def rare_errors_store(tmp_path_factory):
    """2 classes; on the calibration images only the 14 pixels of highest TU are wrong (every rater),
    so TU separates correct and wrong calibration pairs; test images have errors where TU is high."""
    rng = np.random.default_rng(28)
    domains, roles = layout(12, 8, 6)
    n, size = len(domains), 20
    foreground = np.zeros((n, size, size), dtype=bool)
    foreground[:, 5:15, 5:15] = True
    base = np.where(foreground, 2.0, -2.0)[:, None, None]
    spread = np.array([0.3 if d == "id" else 0.8 for d in domains])[:, None, None, None, None]
    logit = base + rng.normal(0, 1.0, size=(n, 4, 2, size, size)) * spread
    probs = np.stack([1 - 1 / (1 + np.exp(-logit)), 1 / (1 + np.exp(-logit))], axis=3).astype(np.float32)
    maps = uqeval.decompose(probs)
    pred, tu = maps["pred"].values, maps["tu"].values
    labels = np.repeat(pred[:, None], 3, axis=1).astype(np.uint8)
    calibration = np.flatnonzero(np.array(roles) == "calibration")
    tu_calibration = np.where(np.isin(np.arange(n), calibration)[:, None, None], tu, -np.inf)
    for flat in np.argsort(tu_calibration, axis=None)[-14:]:  # 14 pixels × 3 raters of 4,800 pixels
        image, y, x = np.unravel_index(flat, tu.shape)
        labels[image, :, y, x] = 1 - pred[image, y, x]
    for image in np.flatnonzero(np.array(roles) == "test"):
        wrong = rng.random((3, size, size)) < np.clip(tu[image] / math.log(2), 0, 1)[None] * 0.6
        labels[image] = np.where(wrong, 1 - pred[image][None], pred[image][None])
    path = tmp_path_factory.mktemp("paper") / "rare.zarr"
    return write_store(path, probs, labels, domains, roles)


def study_maps(path):
    cube = uqeval.open_cube(path)
    maps = uqeval.decompose(cube.probs.values)
    arrays = {name: maps[name].values for name in (*MEASURES, "pred")}
    return arrays, cube.labels.values.astype(np.int64), cube.domain.values, cube.role.values


def study_splits(domains, roles):
    test = roles == "test"
    return {"id": test & (domains == "id"), **{name: test & (domains == name) for name in OOD_DOMAINS}}


def study_ncc(g: np.ndarray, u: np.ndarray) -> float:
    g, u = g.astype(np.float64).ravel(), u.astype(np.float64).ravel()
    sigma_g, sigma_u = g.std(ddof=1), u.std(ddof=1)
    if sigma_g == 0 or sigma_u == 0:
        return 0.0
    return float(((g - g.mean()) * (u - u.mean())).sum() / (g.size * sigma_g * sigma_u))


def study_platt(u: np.ndarray, labels: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of uqeval's σ(b − a·U) from the study's binned fit."""
    pairs_u = np.broadcast_to(u[:, None], labels.shape).ravel().astype(np.float64)
    correct = (labels == pred[:, None]).ravel()
    edges = np.logspace(-12, 2, num=257)
    bins = np.clip(np.digitize(pairs_u, edges) - 1, 0, 255)
    features, targets, weights = [], [], []
    for b in np.unique(bins):
        inside = bins == b
        mean_u = pairs_u[inside].mean()
        for target, count in ((1.0, correct[inside].sum()), (0.0, (~correct[inside]).sum())):
            if count:
                features.append(-mean_u)
                targets.append(target)
                weights.append(float(count))
    a, b = _sigmoid_calibration(np.array(features), np.array(targets), sample_weight=np.array(weights))
    return -float(a), -float(b)


def study_ace(u: np.ndarray, labels: np.ndarray, pred: np.ndarray, fit: tuple[float, float]) -> float:
    """ACE over (rater, pixel) pairs, 20 bins on [0, 1 + 1e-8]."""
    slope, intercept = fit
    confidence = 1 / (1 + np.exp(-(intercept - slope * np.broadcast_to(u[:, None], labels.shape).astype(np.float64))))
    correct = (labels == pred[:, None]).astype(np.float64)
    bins = np.digitize(confidence.ravel(), np.linspace(0.0, 1.0 + 1e-8, 21)) - 1
    count = np.bincount(bins, minlength=21)
    used = count > 0
    accuracy = np.bincount(bins, weights=correct.ravel(), minlength=21)[used] / count[used]
    mean_confidence = np.bincount(bins, weights=confidence.ravel(), minlength=21)[used] / count[used]
    return float(np.abs(accuracy - mean_confidence).mean())


def test_amb_of_the_paper_preset_is_the_studys(three_class_store):
    arrays, labels, domains, roles = study_maps(three_class_store)
    scores = uqeval.score(three_class_store, tasks=["amb"], preset="paper")
    per_split = {}
    for split, chosen in study_splits(domains, roles).items():
        per_split[split] = {}
        for measure in MEASURES:
            values = [study_ncc(np.var(labels[i], axis=0), arrays[measure][i]) for i in np.flatnonzero(chosen)]
            per_split[split][measure] = float(np.mean(values))
            assert scores.value("amb", split, measure, "ncc") == pytest.approx(per_split[split][measure], abs=1e-6)
    ood = {measure: np.mean([per_split[name][measure] for name in OOD_DOMAINS]) for measure in MEASURES}
    for measure in MEASURES:
        assert scores.value("amb", "ood", measure, "ncc") == pytest.approx(ood[measure], abs=1e-6)
    assert scores.delta("amb", "id") == pytest.approx(delta(per_split["id"]["au"], per_split["id"]["eu"]), abs=1e-5)
    assert scores.delta("amb", "ood") == pytest.approx(delta(ood["au"], ood["eu"]), abs=1e-5)
    # The default is the class-symmetric map, which differs here (raters pick non-adjacent classes).
    default = uqeval.score(three_class_store, tasks=["amb"])
    assert abs(default.value("amb", "id", "au", "ncc") - per_split["id"]["au"]) > 1e-3


def test_amb_of_the_paper_preset_moves_when_classes_are_renumbered(three_class_store, tmp_path):
    """Swapping classes 1 and 2 (labels and probabilities) leaves the default NCC alone but not the study's."""
    cube = uqeval.open_cube(three_class_store)
    order = [0, 2, 1]
    swapped = write_store(
        tmp_path / "swapped.zarr",
        cube.probs.values[:, :, :, order],
        np.choose(cube.labels.values, order).astype(np.uint8),
        cube.domain.values,
        cube.role.values,
    )
    before, after = (uqeval.score(path, tasks=["amb"]) for path in (three_class_store, swapped))
    paper_before, paper_after = (
        uqeval.score(path, tasks=["amb"], preset="paper") for path in (three_class_store, swapped)
    )
    for measure in MEASURES:
        assert after.value("amb", "id", measure, "ncc") == pytest.approx(
            before.value("amb", "id", measure, "ncc"), abs=1e-9
        )
    moved = [
        abs(paper_after.value("amb", "id", m, "ncc") - paper_before.value("amb", "id", m, "ncc")) for m in MEASURES
    ]
    assert max(moved) > 1e-2


def test_cal_of_the_paper_preset_is_the_studys(rare_errors_store):
    arrays, labels, domains, roles = study_maps(rare_errors_store)
    scores = uqeval.score(rare_errors_store, tasks=["cal"], preset="paper")
    fitting = (domains == "id") & (roles == "calibration")
    fits = {
        measure: study_platt(arrays[measure][fitting], labels[fitting], arrays["pred"][fitting]) for measure in MEASURES
    }
    for measure in MEASURES:
        fitted = scores.fitted.platt[measure]
        assert (fitted.slope, fitted.intercept) == pytest.approx(fits[measure], rel=1e-4)
    ace = {}
    for split, chosen in study_splits(domains, roles).items():
        ace[split] = {
            m: study_ace(arrays[m][chosen], labels[chosen], arrays["pred"][chosen], fits[m]) for m in MEASURES
        }
        for measure in MEASURES:
            assert scores.value("cal", split, measure, "ace") == pytest.approx(ace[split][measure], abs=1e-4)
    wrong_id = min(ace["id"]["au"], ace["id"]["eu"])
    assert scores.delta("cal", "id") == pytest.approx(delta(ace["id"]["tu"], wrong_id, lower_is_better=True), abs=1e-3)
    u_correct = np.mean([ace[name]["tu"] for name in OOD_DOMAINS])
    u_wrong = np.mean([min(ace[name]["au"], ace[name]["eu"]) for name in OOD_DOMAINS])
    [row] = [row for row in scores.entanglement if row["task"] == "cal" and row["split"] == "ood"]
    assert row["u_correct"] == pytest.approx(u_correct, abs=1e-4)
    assert row["u_wrong"] == pytest.approx(u_wrong, abs=1e-4)
    assert row["delta"] == pytest.approx(delta(u_correct, u_wrong, lower_is_better=True), abs=1e-3)


def test_the_default_fit_on_rare_separated_errors_is_finite_and_noted(rare_errors_store):
    scores = uqeval.score(rare_errors_store, tasks=["cal"])
    fit = scores.fitted.platt["tu"]
    assert math.isfinite(fit.slope) and 0 < fit.slope < 1e3
    assert any("separates correct and wrong" in str(note) for note in scores.notes)
    arrays, labels, domains, roles = study_maps(rare_errors_store)
    fitting = (domains == "id") & (roles == "calibration")
    x = -arrays["tu"][fitting].astype(np.float64).ravel()
    w = (labels[fitting] == arrays["pred"][fitting][:, None]).mean(axis=1).ravel()
    a, b = _sigmoid_calibration(np.r_[x, x], np.r_[np.ones(x.size), np.zeros(x.size)], sample_weight=np.r_[w, 1 - w])
    assert (fit.slope, fit.intercept) == pytest.approx((-a, -b), rel=1e-4)


def test_collapse_on_ood_is_the_mean_of_the_domains_under_the_paper_preset(three_class_store):
    arrays, _, domains, roles = study_maps(three_class_store)
    scores = uqeval.score(three_class_store, tasks=["amb"], preset="paper")
    rows = {row["split"]: row for row in scores.collapse}
    ratios = []
    for name, chosen in study_splits(domains, roles).items():
        ratio = arrays["eu"][chosen].mean(axis=(1, 2)).mean() / arrays["au"][chosen].mean(axis=(1, 2)).mean()
        assert rows[name]["eu_over_au"] == pytest.approx(ratio, rel=1e-6)
        if name != "id":
            ratios.append(ratio)
    assert rows["ood"]["eu_over_au"] == pytest.approx(np.mean(ratios), rel=1e-6)
    pooled = uqeval.score(three_class_store, tasks=["amb"])
    ood = roles == "test"
    ood &= domains != "id"
    expected = arrays["eu"][ood].mean() / arrays["au"][ood].mean()
    assert {row["split"]: row for row in pooled.collapse}["ood"]["eu_over_au"] == pytest.approx(expected, rel=1e-6)


def test_per_image_ace_of_the_paper_preset_scores_all_correct_images_as_the_study(rare_errors_store, tmp_path):
    """With ace_scope="per-image" (the study's Chaksu tables) an image every rater labels as predicted
    counts as all wrong in its own ACE: the study binarises the correctness of one class to 0."""
    cube = uqeval.open_cube(rare_errors_store)
    arrays, labels, domains, roles = study_maps(rare_errors_store)
    perfect = np.flatnonzero((domains == "id") & (roles == "test"))[:2]
    labels[perfect] = arrays["pred"][perfect][:, None]
    path = write_store(tmp_path / "perfect.zarr", cube.probs.values, labels.astype(np.uint8), domains, roles)
    conventions = uqeval.conventions.preset("paper").replace(ace_scope="per-image")
    scores = uqeval.score(path, tasks=["cal"], conventions=conventions)
    chosen = (domains == "id") & (roles == "test")
    for measure in MEASURES:
        fit = scores.fitted.platt[measure]
        per_image = []
        for image in np.flatnonzero(chosen):
            study_labels = labels[image : image + 1]
            value = study_ace(
                arrays[measure][image : image + 1],
                study_labels,
                arrays["pred"][image : image + 1],
                (fit.slope, fit.intercept),
            )
            if (study_labels == arrays["pred"][image][None, None]).all():  # label_binarize of one class: all 0
                value = study_ace(
                    arrays[measure][image : image + 1],
                    1 - study_labels,
                    arrays["pred"][image : image + 1],
                    (fit.slope, fit.intercept),
                )
            per_image.append(value)
        assert scores.value("cal", "id", measure, "ace") == pytest.approx(np.mean(per_image), abs=1e-6)
    default_scope = uqeval.score(path, tasks=["cal"], conventions=conventions.replace(all_correct_image="correct"))
    assert default_scope.value("cal", "id", "tu", "ace") < scores.value("cal", "id", "tu", "ace")
