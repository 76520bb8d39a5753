"""The pq rows of a scored store against an independent implementation of their definitions,
on a 3-class store with ignore labels and 2 raters: every split, pooled and domain means."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import softmax

import uqeval

CLASSES, RATERS, EU, AU, SIZE, IGNORE = 3, 2, 2, 3, 16, 255
LAYOUT = [("id", "calibration", 3), ("id", "test", 3), ("blur", "test", 2), ("noise", "test", 3)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("pq") / "three-classes.zarr"
    probs, labels, domains, roles = [], [], [], []
    for domain, role, count in LAYOUT:
        for _ in range(count):
            base = rng.normal(size=(1, 1, CLASSES, SIZE, SIZE)) * 3
            spread = 0.5 if domain == "id" else 2.0
            logits = base + spread * rng.normal(size=(EU, AU, CLASSES, SIZE, SIZE))
            probs.append(softmax(logits, axis=2).astype(np.float32))
            truth = softmax(base[0, 0] * 1.3, axis=0)
            drawn = (np.cumsum(truth, axis=0) < rng.random((RATERS, 1, SIZE, SIZE))).sum(axis=1)
            image_labels = np.minimum(drawn, CLASSES - 1).astype(np.uint8)
            image_labels[rng.random(image_labels.shape) < 0.15] = IGNORE
            labels.append(image_labels)
            domains.append(domain)
            roles.append(role)
    with uqeval.CubeWriter(path, n_classes=CLASSES, eu=EU, au=AU, height=SIZE, width=SIZE, raters=RATERS) as writer:
        writer.append(np.stack(probs), labels=np.stack(labels), domain=domains, role=roles)
    return path, np.stack(labels), np.array(domains), np.array(roles)


def _metrics(mean: np.ndarray, labels: np.ndarray, temperature: float | None = None) -> dict[str, float]:
    """The definitions, pair by pair, in float64: ``mean`` (image, class, y, x)."""
    pred = mean.argmax(axis=1)
    if temperature is not None:
        mean = softmax(np.log(np.maximum(mean, 1e-7)) / temperature, axis=1)
    brier, nll = [], []
    for rater in range(RATERS):
        label = labels[:, rater]
        labelled = label != IGNORE
        p = np.moveaxis(mean, 1, -1)[labelled]
        onehot = np.eye(CLASSES)[label[labelled]]
        brier.append(((p - onehot) ** 2).sum(axis=1))
        nll.append(-np.log(np.maximum((p * onehot).sum(axis=1), 1e-7)))
    valid = (labels != IGNORE).sum(axis=1)
    w = (labels == pred[:, None]).sum(axis=1)[valid > 0] / valid[valid > 0]
    confidence = mean.max(axis=1)[valid > 0]
    index = np.minimum((confidence * 20).astype(int), 19)
    gaps = [abs(w[index == b].sum() - confidence[index == b].sum()) for b in range(20)]
    return {"brier": np.concatenate(brier).mean(), "nll": np.concatenate(nll).mean(), "ece": sum(gaps) / w.size}


def _temperature(mean: np.ndarray, labels: np.ndarray) -> float:
    def objective(temperature: float) -> float:
        return _metrics(mean, labels, temperature)["nll"]

    return minimize_scalar(objective, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-9}).x


@pytest.mark.parametrize("ood_split", ["pooled", "domain-mean"])
def test_pq_rows_follow_the_definitions_on_every_split(store, ood_split):
    path, labels, domains, roles = store
    scores = uqeval.score(path, tasks=("pq",), conventions=uqeval.Conventions(ood_split=ood_split))
    stored = uqeval.open_cube(path)["probs"].values  # as the store keeps them (float16)
    mean = stored.astype(np.float64).mean(axis=(1, 2))
    calibration = (domains == "id") & (roles == "calibration")
    temperature = _temperature(mean[calibration], labels[calibration])
    fitted = scores.fitted.temperature.temperature
    assert fitted == pytest.approx(temperature, rel=1e-6)
    assert scores.value("pq", "id", "mean", "temperature") == scores.fitted.temperature.temperature
    test = roles == "test"
    splits = {
        "id": test & (domains == "id"),
        "blur": test & (domains == "blur"),
        "noise": test & (domains == "noise"),
        "ood": test & (domains != "id"),
        "all": test,
    }
    expected = {}
    for split, chosen in splits.items():
        values = _metrics(mean[chosen], labels[chosen])
        values |= {f"{name}_ts": value for name, value in _metrics(mean[chosen], labels[chosen], fitted).items()}
        expected[split] = values
    if ood_split == "domain-mean":
        expected["ood"] = {name: (expected["blur"][name] + expected["noise"][name]) / 2 for name in expected["id"]}
    for split, values in expected.items():
        for metric, value in values.items():
            # The engine's mean predictions are float32, these float64.
            assert scores.value("pq", split, "mean", metric) == pytest.approx(value, rel=1e-6, abs=1e-9), (
                split,
                metric,
            )
    assert not scores.entanglement  # pq has no Δ
    assert {row["measure"] for row in scores.results} == {"mean"}
    assert len(scores.results) == 5 * 6 + 1
