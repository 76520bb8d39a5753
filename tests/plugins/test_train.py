"""Training runs: the recipe, determinism, checkpoints that resume to the same weights, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from uqeval.errors import UQEvalError
from uqeval_torch.backbone import Backbone
from uqeval_torch.run import RunFolder, RunSettings, components
from uqeval_torch.train import (
    MemberTrainer,
    TrainingData,
    check_combination,
    epoch_plan,
    load_trained,
    train,
    update_ema,
)

TINY_DATA = {"size": 16, "n_train": 12, "n_calibration": 4, "n_test": 4}


def settings(**changes) -> RunSettings:
    values = {
        "au": "diffusion",
        "eu": "none",
        "data": "synthetic",
        "data_options": TINY_DATA,
        "size": "tiny",
        "epochs": 2,
        "members": 1,
        "batch_size": 8,
    }
    return RunSettings(**{**values, **changes})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_run_folder_layout_and_settings(tmp_path):
    run = settings()
    [model] = train(run, tmp_path / "run", device="cpu")
    folder = RunFolder(tmp_path / "run")
    assert folder.read_settings() == run
    assert json.loads(folder.settings_path.read_text())["au"] == "diffusion"
    assert folder.member_path(0).is_file()
    assert not folder.checkpoint_path(0).exists()  # removed once the member is finished
    assert not model.training
    # 12 images in batches of 8, the last partial batch dropped: 1 step per epoch, 2 in all.
    assert torch.load(folder.member_path(0), weights_only=True)["steps"] == 2


def test_training_is_deterministic_for_a_seed(tmp_path):
    first = weights(train(settings(), tmp_path / "a", device="cpu")[0])
    second = weights(train(settings(), tmp_path / "b", device="cpu")[0])
    other = weights(train(settings(seed=1), tmp_path / "c", device="cpu")[0])
    assert_same(first, second)
    assert any(not torch.equal(first[name], other[name]) for name in first)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("au", ["diffusion", "ssn"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, au):
    run = settings(au=au, epochs=3)
    uninterrupted = weights(train(run, tmp_path / "whole", device="cpu")[0])

    folder = RunFolder(tmp_path / "broken")
    folder.start(run)
    parts = components(run)
    data = TrainingData.load(parts.dataset, seed=run.data_seed)
    trainer = MemberTrainer(run, parts, folder, data=data, checkpoint_every=1)

    def crash(model, step, epoch):
        if step == 3:  # mid-epoch: epoch 1, second batch
            raise Interrupted

    with pytest.raises(Interrupted):
        trainer(seed=0, on_step=crash)
    checkpoint = torch.load(folder.checkpoint_path(0), weights_only=True)
    assert checkpoint["step"] == 2
    assert not folder.member_path(0).exists()
    resumed = weights(train(run, tmp_path / "broken", device="cpu")[0])
    assert_same(uninterrupted, resumed)


def test_a_finished_run_is_loaded_not_retrained(tmp_path):
    run = settings()
    first = weights(train(run, tmp_path / "run", device="cpu")[0])
    stamp = RunFolder(tmp_path / "run").member_path(0).stat().st_mtime_ns
    again = weights(train(run, tmp_path / "run", device="cpu")[0])
    assert_same(first, again)
    assert RunFolder(tmp_path / "run").member_path(0).stat().st_mtime_ns == stamp
    loaded_settings, parts, trained = load_trained(tmp_path / "run", device="cpu")
    assert loaded_settings == run and parts.au.name == "diffusion"
    assert_same(first, weights(trained[0]))


def test_ensemble_members_use_consecutive_seeds(tmp_path):
    run = settings(au="softmax", eu="ensemble", members=2, seed=7, epochs=1)
    members = train(run, tmp_path / "run", device="cpu")
    assert len(members) == 2
    folder = RunFolder(tmp_path / "run")
    assert folder.member_path(7).is_file() and folder.member_path(8).is_file()
    first, second = (weights(member) for member in members)
    assert any(not torch.equal(first[name], second[name]) for name in first)


def test_deterministic_au_with_one_member_is_refused(tmp_path):
    run = settings(au="softmax", eu="none")
    with pytest.raises(UQEvalError, match=r"deterministic.*cannot be decomposed.*ensemble"):
        train(run, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UQEvalError, match="deterministic"):
        check_combination(settings(au="softmax", eu="ensemble", members=1), components(settings(au="softmax")))


def test_resuming_with_other_settings_is_refused(tmp_path):
    train(settings(epochs=1), tmp_path / "run", device="cpu")
    with pytest.raises(UQEvalError, match=r"other settings \(epochs: 1 → 2\)"):
        train(settings(epochs=2), tmp_path / "run", device="cpu")


def test_out_must_be_a_new_or_empty_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UQEvalError, match="is a file"):
        train(settings(), tmp_path / "file", device="cpu")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UQEvalError, match="other files"):
        train(settings(), tmp_path / "busy", device="cpu")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"au": "unet"}, "unknown AU method 'unet'; choose one of diffusion, prob_unet, softmax, ssn, tta"),
        ({"eu": "bayes"}, "unknown EU method 'bayes'; choose one of dropout, ensemble, none, swag, swag_diag"),
        ({"data": "kitti"}, "unknown dataset 'kitti'; choose one of chaksu, lidc, synthetic"),
    ],
)
def test_unknown_names_list_the_known_ones(change, message):
    with pytest.raises(UQEvalError) as caught:
        components(settings(**change))
    assert str(caught.value) == message
    assert caught.value.parameter == next(iter(change))  # the setting at fault, for a front end to name


def test_bad_settings_are_refused():
    with pytest.raises(UQEvalError, match="epochs must be at least 1"):
        settings(epochs=0)
    with pytest.raises(UQEvalError, match="unknown size 'huge'"):
        settings(size="huge")


def test_unfinished_members_cannot_be_loaded(tmp_path):
    run = settings()
    RunFolder(tmp_path / "run").start(run)
    with pytest.raises(UQEvalError, match="seed 0 has not finished training"):
        load_trained(tmp_path / "run", device="cpu")
    with pytest.raises(UQEvalError, match="not a training run"):
        load_trained(tmp_path / "nothing", device="cpu")


def test_a_damaged_member_file_is_named(tmp_path):
    run = settings(epochs=1)
    train(run, tmp_path / "run", device="cpu")
    RunFolder(tmp_path / "run").member_path(0).write_bytes(b"not a checkpoint")
    with pytest.raises(UQEvalError, match=r"seed-0\.pt: cannot be read"):
        load_trained(tmp_path / "run", device="cpu")


def test_epoch_plan_orders_every_image_once_and_picks_each_images_own_raters():
    data = TrainingData(
        images=torch.zeros(6, 1, 8, 8),
        labels=torch.zeros(6, 4, 8, 8, dtype=torch.uint8),
        raters=torch.tensor([1, 2, 3, 4, 4, 4]),
    )
    order, raters = epoch_plan(data, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(6))
    assert raters[0] == 0 and (raters < data.raters).all()
    again, _ = epoch_plan(data, seed=3, epoch=0)
    assert torch.equal(order, again)
    seen = {tuple(epoch_plan(data, seed=3, epoch=epoch)[0].tolist()) for epoch in range(5)}
    assert len(seen) > 1  # every epoch shuffles anew
    picks = torch.stack([epoch_plan(data, seed=3, epoch=epoch)[1] for epoch in range(200)])
    assert set(picks[:, 3].tolist()) == {0, 1, 2, 3}  # a random rater per image, all of them in time


def test_training_data_pads_missing_raters_with_ignore():
    parts = components(settings(data_options={**TINY_DATA, "raters": 3}))
    data = TrainingData.load(parts.dataset)
    assert data.images.shape == (12, 1, 16, 16) and data.images.dtype == torch.float32
    assert data.labels.shape == (12, 3, 16, 16) and data.labels.dtype == torch.uint8
    assert data.raters.tolist() == [3] * 12


def test_update_ema_warms_up_then_follows_the_decay():
    ema, model = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
    update_ema(ema, model, 0.999, step=0)  # d = min(0.999, 1/10) = 0.1
    assert ema.weight.item() == pytest.approx(0.9)
    with torch.no_grad():
        ema.weight.fill_(0.0)
    update_ema(ema, model, 0.999, step=100_000)  # d = 0.999
    assert ema.weight.item() == pytest.approx(0.001)


def test_backbone_factory_matches_the_run_size(tmp_path):
    run = settings(au="softmax", eu="ensemble", members=2, epochs=1)
    members = train(run, tmp_path / "run", device="cpu")
    assert members[0].feature_channels == Backbone("tiny").shape.width
