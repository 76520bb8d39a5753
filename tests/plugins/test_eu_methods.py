"""The EU methods MC dropout, SWAG and SWAG-D: members that differ, moments that survive
an interruption, one SWAG run that serves three methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import uqeval
from uqeval.errors import UQEvalError
from uqeval_torch.eu.swag import SWAGMoments
from uqeval_torch.predict import predict
from uqeval_torch.run import RunFolder, RunSettings, components
from uqeval_torch.study import FAMILY, study_grid
from uqeval_torch.train import MemberTrainer, TrainingData, load_trained, train

TINY_DATA = {"size": 16, "n_train": 12, "n_calibration": 4, "n_test": 4}


def settings(**changes) -> RunSettings:
    values = {
        "au": "softmax",
        "eu": "swag",
        "data": "synthetic",
        "data_options": TINY_DATA,
        "size": "tiny",
        "epochs": 3,
        "members": 3,
        "batch_size": 8,
    }
    return RunSettings(**{**values, **changes})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


# --------------------------------------------------------------------------- SWAG's moments


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(3))
        self.b = torch.nn.Parameter(torch.zeros(2, 2))


def test_moments_are_the_mean_second_moment_and_deviations_of_the_last_snapshots():
    rng = np.random.default_rng(0)
    snapshots = [rng.normal(size=3) for _ in range(6)]
    collector = SWAGMoments(snapshots=4)
    model = Toy()
    for epoch, value in enumerate(snapshots):
        model.a.data = torch.tensor(value, dtype=torch.float32)
        collector.epoch_end(model, epoch, len(snapshots))
    kept = np.array(snapshots[-4:])  # the last 4 epochs only
    assert collector.count == 4
    np.testing.assert_allclose(collector.mean["a"].numpy(), kept.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(collector.square["a"].numpy(), (kept**2).mean(axis=0), rtol=1e-5)
    running = [kept[: k + 1].mean(axis=0) for k in range(4)]  # deviation from the mean as updated
    for deviation, value, mean in zip(collector.deviations, kept, running, strict=True):
        np.testing.assert_allclose(deviation["a"].numpy(), value - mean, rtol=1e-5, atol=1e-6)


def test_draws_have_the_swag_covariance():
    """Σ = diag(max(sq − mean², floor)) + D Dᵀ / (K − 1), checked on 40,000 draws."""
    rng = np.random.default_rng(1)
    collector = SWAGMoments(snapshots=5)
    model = Toy()
    for epoch in range(5):
        model.a.data = torch.tensor(rng.normal(size=3), dtype=torch.float32)
        collector.epoch_end(model, epoch, 5)
    generator = torch.Generator().manual_seed(0)
    for low_rank in (True, False):
        draws = torch.stack([collector.draw(generator, low_rank=low_rank)["a"] for _ in range(40_000)]).numpy()
        mean = collector.mean["a"].numpy()
        variance = np.maximum(collector.square["a"].numpy() - mean**2, 1e-30)
        expected = np.diag(variance)
        if low_rank:
            columns = np.stack([deviation["a"].numpy() for deviation in collector.deviations])
            expected = expected + columns.T @ columns / (len(columns) - 1)
        np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.03)
        np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.04 * np.abs(expected).max())


# --------------------------------------------------------------------------- training and prediction


def test_swag_collection_does_not_change_training_and_one_run_serves_three_methods(tmp_path):
    run = settings(au="ssn")
    swag = train(run, tmp_path / "swag", device="cpu")
    plain = train(settings(au="ssn", eu="none", members=1), tmp_path / "plain", device="cpu")[0]
    reference, collected = weights(plain), weights(swag[0])
    assert reference.keys() == collected.keys()
    assert all(torch.equal(reference[name], collected[name]) for name in reference)
    assert swag.moments.count == 3  # 3 epochs < 30 snapshots: every epoch
    stores = {}
    for eu in ("swag", "swag_diag", "none"):
        members = None if eu == "none" else 3
        summary = predict(tmp_path / "swag", tmp_path / f"{eu}.zarr", eu=eu, members=members, samples=2, device="cpu")
        stores[eu] = uqeval.open_cube(summary.store)
        assert stores[eu].attrs["eu_method"] == eu
    for eu in ("swag", "swag_diag"):
        probs = stores[eu].probs.values
        assert probs.shape[1] == 3
        assert not np.array_equal(probs[:, 0], probs[:, 1])  # members differ
    assert not np.array_equal(stores["swag"].probs.values, stores["swag_diag"].probs.values)
    # `none` from the SWAG run is the plain run's cube: the same EMA weights, the same noise.
    predict(tmp_path / "plain", tmp_path / "plain.zarr", samples=2, device="cpu")
    np.testing.assert_array_equal(stores["none"].probs.values, uqeval.open_cube(tmp_path / "plain.zarr").probs.values)
    with pytest.raises(UQEvalError, match="cannot be predicted as 'ensemble'"):
        predict(tmp_path / "swag", tmp_path / "ensemble.zarr", eu="ensemble", device="cpu")
    with pytest.raises(UQEvalError, match="deterministic"):
        train(settings(), tmp_path / "softmax", device="cpu")
        predict(tmp_path / "softmax", tmp_path / "none.zarr", eu="none", device="cpu")  # softmax + one member


def test_an_interrupted_swag_run_resumes_with_its_moments(tmp_path):
    run = settings(au="ssn", epochs=4, members=2, batch_size=6)  # 2 steps per epoch
    whole = train(run, tmp_path / "whole", device="cpu")

    folder = RunFolder(tmp_path / "broken")
    folder.start(run)
    parts = components(run)
    trainer = MemberTrainer(run, parts, folder, data=TrainingData.load(parts.dataset), checkpoint_every=1)

    class Interrupted(Exception):
        pass

    def crash(model, step, epoch):
        if step == 5:  # epoch 2, after two snapshots were collected
            raise Interrupted

    with pytest.raises(Interrupted):
        trainer(seed=0, on_step=crash, collector=SWAGMoments())
    assert torch.load(folder.checkpoint_path(0), weights_only=True)["collector"]["count"] == 2
    resumed = train(run, tmp_path / "broken", device="cpu")
    assert resumed.moments.count == whole.moments.count == 4
    for name, mean in whole.moments.mean.items():
        assert torch.equal(mean, resumed.moments.mean[name])
        assert torch.equal(whole.moments.square[name], resumed.moments.square[name])
    # And a finished run loaded for prediction gets its moments back.
    _, _, loaded = load_trained(tmp_path / "broken", device="cpu")
    assert all(torch.equal(whole.moments.mean[name], loaded.moments.mean[name]) for name in whole.moments.mean)


def test_a_one_epoch_swag_run_finishes_serves_none_and_refuses_swag_draws(tmp_path):
    """The shared SWAG run saves what it has (1 snapshot); `none` predicts from it, and
    only `swag` and `swag_diag`, which need 2 snapshots, refuse, before writing a store."""
    trained = train(settings(au="ssn", epochs=1), tmp_path / "run", device="cpu")
    assert trained.moments.count == 1
    assert "too few to predict as swag or swag_diag" in trained.note
    assert RunFolder(tmp_path / "run").member_path(0).is_file()
    summary = predict(tmp_path / "run", tmp_path / "none.zarr", eu="none", samples=2, device="cpu")
    assert uqeval.open_cube(summary.store).probs.shape[1:3] == (1, 2)
    for eu in ("swag", "swag_diag"):
        expected = (
            f"EU method '{eu}' needs at least 2 epochs to collect its moments; "
            "the run has 1 snapshot(s): train with --epochs 2 or more"
        )
        with pytest.raises(UQEvalError) as raised:
            predict(tmp_path / "run", tmp_path / f"{eu}.zarr", eu=eu, members=2, samples=2, device="cpu")
        assert str(raised.value) == expected
        assert not (tmp_path / f"{eu}.zarr").exists()


def test_mc_dropout_members_differ_and_the_rest_is_in_eval_mode(tmp_path):
    run = settings(eu="dropout", epochs=1, batch_size=4)  # 3 steps move the zero-initialised head
    summary = predict_run(run, tmp_path)
    probs = uqeval.open_cube(summary).probs.values
    assert probs.shape[1] == 3
    assert not np.array_equal(probs[:, 0], probs[:, 1])
    _, parts, trained = load_trained(tmp_path / "run", device="cpu")
    members = list(parts.eu.members(trained, n=2, seed=0))
    norms = [module for module in members[0].modules() if isinstance(module, torch.nn.GroupNorm)]
    assert norms and not any(module.training for module in norms)
    image = torch.zeros(1, 1, 16, 16)
    with torch.no_grad():
        assert not torch.equal(members[0](image), members[1](image))


def predict_run(run: RunSettings, tmp_path) -> str:
    train(run, tmp_path / "run", device="cpu")
    return str(predict(tmp_path / "run", tmp_path / "cube.zarr", device="cpu").store)


@pytest.mark.parametrize("au", ["ssn", "prob_unet", "diffusion"])
@pytest.mark.parametrize("eu", ["dropout", "swag_diag"])
def test_every_au_method_composes_with_the_new_eu_methods(tmp_path, au, eu):
    run = settings(au=au, eu=eu, epochs=2, members=2, data_options={**TINY_DATA, "n_test": 2})
    train(run, tmp_path / "run", device="cpu")
    summary = predict(tmp_path / "run", tmp_path / "cube.zarr", samples=2, device="cpu")
    probs = uqeval.open_cube(summary.store).probs.values
    assert probs.shape[1:3] == (2, 2)
    assert not np.array_equal(probs[:, 0], probs[:, 1])
    scores = uqeval.score(summary.store)
    assert not math.isnan(scores.value("oodd", "ood", "eu", "auroc"))


# --------------------------------------------------------------------------- the whole grid


def test_all_19_combinations_train_predict_and_score_on_the_cpu(tmp_path):
    """Every AU × EU pair of the study, in tiny size, through the same runs `uqeval study`
    shares: EU members differ (AU samples, for `none`), and every store scores."""
    trained: dict[tuple[str, str], str] = {}
    for au, eu in study_grid():
        family = FAMILY[eu]
        if (au, family) not in trained:
            run = tmp_path / f"{au}+{family}"
            # softmax + swag is predicted as swag and swag_diag only; 2 members trains a 2-network ensemble.
            train(settings(au=au, eu=family, epochs=2, members=2), run, device="cpu")
            trained[(au, family)] = str(run)
        store = tmp_path / f"{au}+{eu}.zarr"
        members = None if eu == "none" else 2
        summary = predict(trained[(au, family)], store, eu=eu, members=members, samples=2, device="cpu")
        probs = uqeval.open_cube(summary.store).probs.values
        if eu == "none":
            assert probs.shape[1:3] == (1, 2), (au, eu)
            assert not np.array_equal(probs[:, 0, 0], probs[:, 0, 1]), f"{au}+none: AU samples are equal"
        else:
            assert probs.shape[1] == 2, (au, eu)
            assert not np.array_equal(probs[:, 0], probs[:, 1]), f"{au}+{eu}: EU members are equal"
        scores = uqeval.score(summary.store, tasks=["oodd"], aggregations=["border", "mean"])
        assert not math.isnan(scores.value("oodd", "ood", "tu", "auroc")), (au, eu)
    assert len(trained) == 12
