"""A tiny study on `synthetic`: a softmax ensemble's EU sees the fixed noise shift."""

from __future__ import annotations

import uqeval
from uqeval_torch.predict import predict
from uqeval_torch.run import RunSettings
from uqeval_torch.train import train


def test_softmax_ensemble_eu_detects_the_noise_shift(tmp_path):
    settings = RunSettings(
        au="softmax",
        eu="ensemble",
        data="synthetic",
        # The dataset's fixed noise (0.25 absolute) is ~3x the study's (0.1-0.5 of the image's
        # std), strong enough for 3 members trained for 15 steps to see.
        data_options={"size": 32, "n_train": 96, "n_calibration": 16, "n_test": 32, "shifts": "fixed"},
        size="tiny",
        epochs=5,
        members=3,
        # The study's network zero-initialises its last convs; in the 15 steps of this test
        # the study's learning rate (1e-4) barely moves them, 3e-3 trains a usable model.
        learning_rate=3e-3,
    )
    train(settings, tmp_path / "run", device="cpu")
    store = predict(tmp_path / "run", tmp_path / "cube.zarr", device="cpu").store
    scores = uqeval.score(store, tasks=["oodd"], aggregations=["border", "mean"])
    table = scores.to_dataframe().query("task == 'oodd' and metric == 'auroc' and aggregation == 'mean'")
    auroc = table.set_index(["split", "measure"])["value"]
    # Members trained from different seeds disagree more on noisy images than on clean ones.
    assert auroc["noise", "eu"] > 0.75, auroc.to_dict()
