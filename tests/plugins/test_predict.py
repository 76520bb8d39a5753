"""Every valid (AU, EU) combination trains, predicts a cube, and that cube scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uqeval
from uqeval.errors import UQEvalError
from uqeval.plugins import plugin_manager
from uqeval_torch import writing as writing_module
from uqeval_torch.predict import predict, prediction_samples
from uqeval_torch.run import RunSettings
from uqeval_torch.train import train

DATA = {"size": 16, "n_train": 16, "n_calibration": 4, "n_test": 6}
COMBINATIONS = [
    ("softmax", "ensemble"),
    ("ssn", "none"),
    ("ssn", "ensemble"),
    ("prob_unet", "none"),
    ("prob_unet", "ensemble"),
    ("diffusion", "none"),
    ("diffusion", "ensemble"),
    ("tta", "none"),
    ("tta", "ensemble"),
]


def run_settings(au: str, eu: str, **changes) -> RunSettings:
    values = {
        "au": au,
        "eu": eu,
        "data": "synthetic",
        "data_options": DATA,
        "size": "tiny",
        "epochs": 2,
        "members": 2 if eu == "ensemble" else 1,
        "batch_size": 8,
        "seed": 3,
    }
    return RunSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One trained run per combination (2 epochs of 2 steps)."""
    root = tmp_path_factory.mktemp("runs")
    for au, eu in COMBINATIONS:
        train(run_settings(au, eu), root / f"{au}-{eu}", device="cpu")
    return root


@pytest.mark.parametrize(("au", "eu"), COMBINATIONS)
def test_every_combination_writes_a_cube_that_scores(runs, tmp_path, au, eu):
    store = tmp_path / "cube.zarr"
    summary = predict(runs / f"{au}-{eu}", store, samples=3, device="cpu")
    members = 2 if eu == "ensemble" else 1
    samples = 1 if au == "softmax" else 3  # a deterministic method's samples are all the same map
    assert (summary.eu, summary.au) == (members, samples)
    cube = uqeval.open_cube(store)
    # 4 calibration + 6 test ID images, then the 6 test images under each of the 4 shifts.
    sizes = {"image": 34, "eu": members, "au": samples, "class": 2, "y": 16, "x": 16, "rater": 4, "channel": 1}
    assert cube.sizes == sizes
    assert cube.attrs["au_method"] == au and cube.attrs["eu_method"] == eu
    assert cube.attrs["dataset"] == "synthetic" and cube.attrs["seed"] == 3
    assert cube.attrs["class_names"] == ["background", "shape"]
    assert cube.attrs["schema"] == 1 and cube.attrs["background"] == 0
    assert list(cube["role"].values[:10]) == ["calibration"] * 4 + ["test"] * 6
    assert sorted(set(cube["domain"].values)) == ["blur", "contrast", "id", "jpeg", "noise"]
    probabilities = cube["probs"].values.astype(np.float64)
    np.testing.assert_allclose(probabilities.sum(axis=3), 1.0, atol=2e-3)
    # The labels are the dataset's, image by image.
    dataset = plugin_manager().dataset("synthetic", DATA)
    expected = list(prediction_samples(dataset))
    assert list(cube["image"].values) == [sample.image_id for sample in expected]
    np.testing.assert_array_equal(cube["labels"].values, np.stack([sample.labels for sample in expected]))
    np.testing.assert_array_equal(cube["input"].values, np.stack([sample.image for sample in expected]))
    if samples > 1:  # a stochastic AU method's samples differ
        assert np.abs(np.diff(probabilities, axis=2)).max() > 1e-4
    if members > 1:  # ensemble members differ
        assert np.abs(np.diff(probabilities, axis=1)).max() > 1e-4
    scores = uqeval.score(store)
    oodd = scores.to_dataframe().query("task == 'oodd' and metric == 'auroc'")
    assert set(oodd["split"]) >= {"noise", "blur", "contrast", "jpeg"}
    assert oodd["value"].between(0, 1).all()


def test_default_samples_and_members(runs, tmp_path):
    summary = predict(runs / "ssn-ensemble", tmp_path / "cube.zarr", device="cpu", batch_size=40)
    assert (summary.eu, summary.au) == (2, 10)
    assert uqeval.open_cube(tmp_path / "cube.zarr")["probs"].shape[1:3] == (2, 10)


def test_prediction_is_deterministic(runs, tmp_path):
    first = predict(runs / "prob_unet-none", tmp_path / "a.zarr", samples=2, device="cpu").store
    second = predict(runs / "prob_unet-none", tmp_path / "b.zarr", samples=2, device="cpu").store
    np.testing.assert_array_equal(uqeval.open_cube(first)["probs"].values, uqeval.open_cube(second)["probs"].values)


@pytest.mark.parametrize(("how", "written"), [("interrupted", 15), ("killed", 12)])
def test_an_interrupted_prediction_resumes_to_the_same_store(runs, tmp_path, monkeypatch, how, written):
    run = runs / "diffusion-ensemble"
    options = {"samples": 2, "batch_size": 5, "chunk_images": 4, "device": "cpu"}
    whole = predict(run, tmp_path / "whole.zarr", **options).store

    real = writing_module.draw_members
    calls = []

    def crash_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(writing_module, "draw_members", crash_on_the_fourth_batch)
        if how == "killed":  # no cleanup runs: only the writer's whole chunks reached the disk
            patch.setattr(writing_module.CubeWriter, "__exit__", lambda *args: None)
        with pytest.raises(KeyboardInterrupt):
            predict(run, tmp_path / "broken.zarr", **options)
    with pytest.raises(UQEvalError, match="incomplete"):
        uqeval.open_cube(tmp_path / "broken.zarr")
    # 3 batches of 5 = 15 images were accepted; whole chunks of 4 hold 12 of them. A killed
    # run resumes inside the fourth batch (image 13), which is redone and partly written.
    summary = predict(run, tmp_path / "broken.zarr", **options)
    assert summary.resumed_from == written
    for name in ("probs", "labels", "image", "domain", "role"):
        np.testing.assert_array_equal(
            uqeval.open_cube(whole)[name].values, uqeval.open_cube(tmp_path / "broken.zarr")[name].values
        )


def test_another_runs_store_is_not_resumed(runs, tmp_path):
    predict(runs / "ssn-none", tmp_path / "cube.zarr", samples=2, device="cpu")
    with pytest.raises(UQEvalError, match=r"au_method = 'ssn', not 'diffusion'.*overwrite"):
        predict(runs / "diffusion-none", tmp_path / "cube.zarr", samples=2, device="cpu")
    replaced = predict(runs / "diffusion-none", tmp_path / "cube.zarr", samples=2, device="cpu", overwrite=True)
    assert uqeval.open_cube(replaced.store).attrs["au_method"] == "diffusion"


def test_more_members_than_trained_is_refused(runs, tmp_path):
    with pytest.raises(UQEvalError, match="2 trained members; cannot predict with 5"):
        predict(runs / "ssn-ensemble", tmp_path / "cube.zarr", members=5, device="cpu")
    with pytest.raises(UQEvalError, match="deterministic"):
        predict(runs / "softmax-ensemble", tmp_path / "cube.zarr", members=1, device="cpu")
    assert not (tmp_path / "cube.zarr").exists()


def test_a_domain_the_writer_would_refuse_stops_prediction_before_any_image(runs, tmp_path, monkeypatch):
    from uqeval_torch.data.synthetic import SyntheticDataset

    monkeypatch.setattr(SyntheticDataset, "domains", ("id", "blur", "ood"))
    monkeypatch.setattr(writing_module, "draw_members", lambda *args, **kwargs: pytest.fail("an image was predicted"))
    with pytest.raises(UQEvalError, match=r"^dataset 'synthetic': domain 'ood' of 1 image is a reserved name"):
        predict(runs / "ssn-none", tmp_path / "cube.zarr", samples=2, device="cpu")
    assert not (tmp_path / "cube.zarr").exists()


def test_another_dataset_configuration_can_be_predicted(runs, tmp_path):
    summary = predict(
        runs / "ssn-none",
        tmp_path / "cube.zarr",
        data_options={"n_calibration": "2", "n_test": "2", "shifts": "fixed", "severity": "0.5"},
        samples=2,
        device="cpu",
    )
    assert summary.n_images == 2 + 2 + 4 * 2
    assert uqeval.open_cube(summary.store).attrs["data_options"]["severity"] == 0.5


@pytest.mark.parametrize(
    ("bug", "expected"),
    [
        (lambda drawn: torch.log(drawn), "not probabilities over the class dim"),
        (lambda drawn: drawn.transpose(-1, -2)[..., :-1], "returned shape"),
        (lambda drawn: drawn[0], "returned (4, 2, 16, 16)"),
    ],
)
def test_a_plugin_method_that_breaks_the_contract_is_named_and_leaves_no_store(runs, tmp_path, bug, expected):
    from uqeval_torch.au.ssn import SSN

    real, calls = SSN.sample, []

    def buggy_from_the_second_batch(self, model, images, n):
        calls.append(1)
        drawn = real(self, model, images, n)
        return drawn if len(calls) == 1 else bug(drawn)

    store = tmp_path / "cube.zarr"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SSN, "sample", buggy_from_the_second_batch)
        with pytest.raises(UQEvalError) as raised:
            predict(runs / "ssn-none", store, samples=2, device="cpu", batch_size=4)
    message = str(raised.value)
    assert expected in message
    assert "AU method 'ssn' of plugin 'torch' (uqeval-torch" in message
    assert "store them as the logits variable" not in message  # not the CubeWriter message for users
    assert "was removed" in message and not store.exists()
