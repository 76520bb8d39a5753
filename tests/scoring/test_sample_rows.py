"""The OODD and FD rows of the sample scores (pairwise Dice, CoV) on a 3-class store with
ignore labels, against sklearn's AUROC and AURC written out, from scores computed from
their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference_sample_scores
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

import uqeval
from uqeval.names import ID_DOMAIN, MEASURES, SAMPLE_AGGREGATION, SAMPLE_MEASURES

LAYOUT = [("id", "calibration")] * 2 + [("id", "test")] * 7 + [("blur", "test")] * 5 + [("noise", "test")] * 6


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("samples") / "three-classes.zarr"
    with uqeval.CubeWriter(path, n_classes=3, eu=3, au=2, height=10, width=12, raters=2, dtype="float32") as writer:
        for index, (domain, role) in enumerate(LAYOUT):
            spread = 0.5 if domain == ID_DOMAIN else 1.5 + index % 3
            base = rng.normal(size=(1, 1, 3, 10, 12)) * 2
            logits = base + spread * rng.normal(size=(3, 1, 3, 10, 12)) + rng.normal(size=(3, 2, 3, 10, 12))
            labels = np.repeat(base[0, 0].argmax(axis=0)[None], 2, axis=0).astype(np.uint8)
            labels[rng.random(labels.shape) < 0.15] = 255
            writer.append(softmax(logits, axis=2), labels=labels, domain=domain, role=role)
    scores = uqeval.score(path, tasks=("oodd", "fd"), aggregations=["mean"])
    return scores, uqeval.open_cube(path)["probs"].values


def test_the_image_scores_are_those_of_the_definitions(scored):
    scores, cubes = scored
    expected = reference_sample_scores(cubes)
    assert scores.images.sample_scores.keys() == set(SAMPLE_MEASURES)
    for name in SAMPLE_MEASURES:
        np.testing.assert_allclose(scores.images.sample_scores[name], expected[name], rtol=1e-12, err_msg=name)
    row = scores.image_rows()[0]
    assert (row["pairwise_dice"], row["cov"]) == (expected["pairwise_dice"][0], expected["cov"][0])


def test_oodd_auroc_is_sklearns_per_domain_and_their_mean_on_ood(scored):
    scores, cubes = scored
    expected = reference_sample_scores(cubes)
    test = scores.roles == "test"
    for name in SAMPLE_MEASURES:
        per_domain = []
        for domain in ("blur", "noise"):
            chosen = test & np.isin(scores.domains, [ID_DOMAIN, domain])
            value = roc_auc_score(scores.domains[chosen] == domain, expected[name][chosen])
            assert scores.value("oodd", domain, name, "auroc") == pytest.approx(value, abs=1e-12)
            per_domain.append(value)
        assert scores.value("oodd", "ood", name, "auroc", SAMPLE_AGGREGATION) == pytest.approx(np.mean(per_domain))


def _aurc(scores: np.ndarray, risks: np.ndarray) -> float:
    """Mean over k of the mean risk of the k least uncertain images (no tied scores)."""
    order = np.argsort(scores)
    return float(np.mean(np.cumsum(risks[order]) / np.arange(1, len(order) + 1)))


def test_fd_aurc_is_the_direct_one_on_every_split(scored):
    scores, cubes = scored
    expected = reference_sample_scores(cubes)
    test = scores.roles == "test"
    risk = scores.images.risk
    splits = {"id": scores.domains == ID_DOMAIN, "blur": scores.domains == "blur", "all": test}
    for name in SAMPLE_MEASURES:
        for split, chosen in splits.items():
            images = chosen & test & ~np.isnan(risk)
            assert len(np.unique(expected[name][images])) == images.sum()  # no ties: the direct AURC holds
            value = scores.value("fd", split, name, "aurc")
            assert value == pytest.approx(_aurc(expected[name][images], risk[images]), abs=1e-12)


def test_rows_are_beside_the_measures_and_outside_delta(scored):
    scores, _ = scored
    rows = [row for row in scores.results if row["measure"] in SAMPLE_MEASURES]
    assert {row["aggregation"] for row in rows} == {SAMPLE_AGGREGATION}
    fd_metrics = {row["metric"] for row in scores.results if row["task"] == "fd" and row["measure"] == "tu"}
    for name in SAMPLE_MEASURES:
        assert {row["metric"] for row in rows if row["measure"] == name and row["task"] == "oodd"} == {"auroc", "fpr95"}
        assert {row["metric"] for row in rows if row["measure"] == name and row["task"] == "fd"} == fd_metrics
    assert {row["correct"] for row in scores.entanglement} | {row["wrong"] for row in scores.entanglement} <= set(
        MEASURES
    )
    assert not [note for note in scores.notes if note.kind == "skipped"]
