"""The bootstrap intervals (uqeval.scoring.bootstrap): strata, reproducibility, the
interval holding its value, AUROC's against DeLong's standard error, and the files."""

from __future__ import annotations

import math

import numpy as np
import pytest

import uqeval
from uqeval.names import ID_DOMAIN, TEST
from uqeval.scoring.bootstrap import resample_indices
from uqeval.scoring.tabulate import tabulate

N_RESAMPLES = 400
ROW_KEY = ("task", "split", "measure", "aggregation", "metric")


def test_resamples_stay_in_their_stratum_and_depend_on_the_seed_only():
    domains = np.array(["id"] * 5 + ["blur"] * 3 + ["id"] * 2)
    roles = np.array([TEST] * 8 + ["calibration"] * 2)
    indices = resample_indices(domains, roles, 300, seed=3)
    assert indices.shape == (300, 10)
    # every resample keeps each (domain, role) stratum's count, and draws from all of it
    assert (domains[indices] == domains).all() and (roles[indices] == roles).all()
    assert set(indices[:, :5].ravel()) == set(range(5)) and set(indices[:, 5:8].ravel()) == {5, 6, 7}
    assert np.array_equal(indices, resample_indices(domains, roles, 300, seed=3))
    assert not np.array_equal(indices, resample_indices(domains, roles, 300, seed=4))
    # the images' order within the store does not change a stratum's draws
    shuffled = np.r_[5:8, 0:5, 8:10]
    again = resample_indices(domains[shuffled], roles[shuffled], 300, seed=3)
    assert np.array_equal(shuffled[again[:, 3:8]], indices[:, :5])


def delong_standard_error(positives: np.ndarray, negatives: np.ndarray) -> float:
    """DeLong et al. (1988): the standard error of the AUROC from its structural components."""
    psi = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return math.sqrt(v10.var(ddof=1) / positives.size + v01.var(ddof=1) / negatives.size)


@pytest.fixture(scope="module")
def bootstrapped(synthetic_store):
    store = synthetic_store("entangled", n_images=64, size=16, eu=2, au=2, raters=2)
    return store, uqeval.score(store, aggregations=["mean", "border"], bootstrap=N_RESAMPLES, seed=3)


def test_every_interval_holds_its_value_and_a_rerun_gives_the_same(bootstrapped):
    store, scores = bootstrapped
    assert scores.bootstrap.n == N_RESAMPLES and scores.to_dict()["bootstrap"]["seed"] == 3
    for row in [*scores.results, *scores.entanglement]:
        value = row.get("value", row.get("delta"))
        if math.isnan(value):
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
        else:
            assert row["ci_low"] <= value <= row["ci_high"], row
    assert any(row["ci_low"] < row["ci_high"] for row in scores.results)
    # the same seed, read in other batches: the very same intervals; the values are those without a bootstrap
    again = uqeval.score(store, aggregations=["mean", "border"], bootstrap=N_RESAMPLES, seed=3, batch_bytes=2**16)
    assert again.results == scores.results and again.entanglement == scores.entanglement
    plain = uqeval.score(store, aggregations=["mean", "border"])
    assert plain.results == [{k: v for k, v in row.items() if not k.startswith("ci_")} for row in scores.results]
    assert "bootstrap" not in plain.to_dict() and plain.bootstrap is None


def test_auroc_interval_is_about_delong(bootstrapped):
    _, scores = bootstrapped
    test = scores.roles == TEST
    checked = 0
    for row in scores.results:
        if row["metric"] != "auroc" or row["split"] in ("ood",) or not 0.55 < row["value"] < 0.95:
            continue
        if row["aggregation"] == "samples":  # pairwise_dice, cov: image scores of the samples themselves
            values = scores.images.sample_scores[row["measure"]]
        else:
            values = scores.images.scores[row["aggregation"]][row["measure"]]
        positives = values[test & (scores.domains == row["split"])]
        negatives = values[test & (scores.domains == ID_DOMAIN)]
        half_width = (row["ci_high"] - row["ci_low"]) / 2
        ratio = half_width / (1.96 * delong_standard_error(positives, negatives))
        assert 0.6 <= ratio <= 1.6, (row, ratio)
        checked += 1
    assert checked >= 2


def test_oodd_and_fd_of_all_resamples_at_once_are_those_of_each_resample(bootstrapped):
    _, scores = bootstrapped
    indices = resample_indices(scores.domains, scores.roles, N_RESAMPLES, seed=3)
    resampled = scores.bootstrap
    for resample in (0, 7):
        again = tabulate(
            scores.images.take(indices[resample]),
            scores.domains,
            scores.roles,
            fitted=scores.fitted,
            tasks=[uqeval.plugin_manager().task(name) for name in ("oodd", "fd")],
            aggregations=["mean", "border"],
            primary="mean",
            conventions=scores.conventions,
        )
        for row in again.results:
            index = resampled.result_keys.index(tuple(row[key] for key in ROW_KEY))
            assert resampled.results[index, resample] == pytest.approx(row["value"], abs=1e-12)
        for row in again.entanglement:
            index = resampled.entanglement_keys.index((row["task"], row["split"]))
            assert resampled.entanglement["delta"][index, resample] == pytest.approx(row["delta"], abs=1e-12)
