"""EU sources × AU sources for any ``nn.Module``, and the one writing loop that stores them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import uqeval
from uqeval import UQEvalError
from uqeval_torch import writing
from uqeval_torch.sources import (
    Ensemble,
    MCDropout,
    Sampler,
    SingleModel,
    Softmax,
    TestTimeAugmentation,
    draw_samples,
    flips_and_rotations,
    gaussian_noise,
    intensity,
)
from uqeval_torch.writing import write_cube

SIZE = 8


def conv_net(seed: int, *, dropout: float = 0.0, norm: bool = False, kernel: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 6, kernel, padding=kernel // 2)]
    if norm:
        layers.append(nn.BatchNorm2d(6))
    layers.append(nn.ReLU())
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    layers.append(nn.Conv2d(6, 3, 1))
    return nn.Sequential(*layers)


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def batches(n_batches: int = 3, per_batch: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": images(per_batch, seed=k),
            "labels": torch.from_numpy(rng.integers(0, 3, (per_batch, 2, SIZE, SIZE))),
            "domain": ["id"] * (per_batch // 2) + ["noise"] * (per_batch - per_batch // 2),
            "role": "test",
        }
        for k in range(n_batches)
    ]


def stochastic_sampler(model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
    """A user's own sampler: logits plus gaussian noise, n softmax maps."""
    logits = model(images)
    return torch.stack([torch.softmax(logits + torch.randn_like(logits), dim=1) for _ in range(n)])


EU_SOURCES = {
    "ensemble": lambda: Ensemble([conv_net(1), conv_net(2), conv_net(3)]),
    "dropout": lambda: MCDropout(conv_net(1, dropout=0.5, norm=True), members=3),
    "single": lambda: SingleModel(conv_net(1)),
}
AU_SOURCES = {
    "softmax": Softmax,
    "tta": lambda: TestTimeAugmentation(samples=4),
    "sampler": lambda: Sampler(stochastic_sampler, samples=4),
}


@pytest.mark.parametrize("eu_name", list(EU_SOURCES))
@pytest.mark.parametrize("au_name", list(AU_SOURCES))
def test_every_eu_source_composes_with_every_au_source(tmp_path, eu_name, au_name):
    eu, au = EU_SOURCES[eu_name](), AU_SOURCES[au_name]()
    store = tmp_path / "cube.zarr"
    if eu_name == "single" and au_name == "softmax":
        with pytest.raises(UQEvalError, match="SingleModel with Softmax is deterministic"):
            write_cube(eu, au, batches(), store, progress=False)
        assert not store.exists()
        return
    assert write_cube(eu, au, batches(), store, progress=False) == store
    cube = uqeval.open_cube(store, check_values=True)
    probs = cube["probs"].values.astype(np.float64)
    assert probs.shape == (12, eu.default_members, au.default_samples, 3, SIZE, SIZE)
    if eu.default_members > 1:  # members differ
        assert np.abs(np.diff(probs, axis=1)).max() > 1e-3
    if au.default_samples > 1:  # samples differ
        assert np.abs(np.diff(probs, axis=2)).max() > 1e-3
    assert cube.attrs["eu_source"] == type(eu).__name__ and cube.attrs["au_source"] == type(au).__name__
    assert list(cube["domain"].values[:4]) == ["id", "id", "noise", "noise"]
    np.testing.assert_array_equal(cube["labels"].values[:4], batches()[0]["labels"].numpy())


def test_overwrite_refuses_a_folder_it_did_not_write(tmp_path):
    """``overwrite=True`` replaces only a store uqeval wrote; a refusal must not remove the folder either."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("my thesis\n")
    with pytest.raises(UQEvalError, match=f"^{victim}: .*uqeval replaces only a cube store it wrote"):
        write_cube(EU_SOURCES["ensemble"](), Softmax(), batches(), victim, progress=False, overwrite=True)
    assert [path.name for path in victim.iterdir()] == ["thesis.tex"]
    store = write_cube(EU_SOURCES["ensemble"](), Softmax(), batches(1), tmp_path / "c.zarr", progress=False)
    assert write_cube(EU_SOURCES["ensemble"](), Softmax(), batches(2), store, progress=False, overwrite=True) == store
    assert uqeval.open_cube(store).sizes["image"] == 8


def test_a_written_store_scores(tmp_path):
    store = write_cube(
        EU_SOURCES["dropout"](), TestTimeAugmentation(samples=3), batches(), tmp_path / "c.zarr", progress=False
    )
    scores = uqeval.score(store, tasks=["oodd"], aggregations=["border", "mean"])
    auroc = scores.to_dataframe().query("task == 'oodd' and metric == 'auroc'")["value"]
    assert auroc.between(0, 1).all() and len(auroc) >= 3


# --- test-time augmentation ---------------------------------------------------------------------


@pytest.mark.parametrize("square", [True, False])
def test_every_transform_is_inverted_exactly(square):
    tensor = torch.arange(2 * 3 * 4 * (4 if square else 6), dtype=torch.float32).reshape(2, 3, 4, 4 if square else 6)
    transforms = flips_and_rotations(square)
    assert len(transforms) == (8 if square else 4)
    outputs = {tuple(transform.forward(tensor).flatten().tolist()) for transform in transforms}
    assert len(outputs) == len(transforms)  # all different transforms
    for transform in transforms:
        assert transform.forward(tensor).shape == tensor.shape
        torch.testing.assert_close(transform.inverse(transform.forward(tensor)), tensor, rtol=0, atol=0)


def test_a_flip_equivariant_network_gives_identical_tta_samples():
    pointwise = SingleModel(conv_net(4, kernel=1))
    draws = draw_samples(pointwise, TestTimeAugmentation(), images())
    assert draws.shape[2] == 8
    torch.testing.assert_close(draws, draws[:, :, :1].expand_as(draws), rtol=0, atol=1e-6)
    # A 3×3 network is not equivariant: its samples differ.
    draws = draw_samples(SingleModel(conv_net(4)), TestTimeAugmentation(), images())
    assert (draws - draws[:, :, :1]).abs().max() > 1e-3


def test_intensity_and_noise_perturbations():
    au = TestTimeAugmentation([*flips_and_rotations()[:1], intensity(1.2, 0.1), gaussian_noise(0.2)])
    model = SingleModel(conv_net(5, kernel=1))
    first, again = (draw_samples(model, au, images(), seed=3) for _ in range(2))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # seeded: the same noise
    assert (first[:, :, 1] - first[:, :, 0]).abs().max() > 1e-3  # intensity changed the output
    assert (first[:, :, 2] - first[:, :, 0]).abs().max() > 1e-3  # noise did
    assert (draw_samples(model, au, images(), seed=4)[:, :, 2] - first[:, :, 2]).abs().max() > 1e-4


def test_tta_refuses_more_samples_than_transforms():
    with pytest.raises(UQEvalError, match="only 2 transforms"):
        TestTimeAugmentation(flips_and_rotations()[:2], samples=3)
    with pytest.raises(UQEvalError, match="non-square"):
        draw_samples(SingleModel(conv_net(1)), TestTimeAugmentation(samples=8), torch.rand(1, 1, 8, 6))


# --- MC dropout ---------------------------------------------------------------------------------


class ThirdPartyDropout(nn.Dropout2d):
    """A subclass, as libraries define them."""


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.drop = nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), ThirdPartyDropout(0.3)
        self.batch_norm, self.alpha = nn.BatchNorm2d(4), nn.AlphaDropout(0.1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.alpha(self.batch_norm(self.drop(self.norm(self.conv(x))))))


def test_mc_dropout_samples_exactly_the_dropout_layers_and_leaves_the_model_alone():
    model = Block()
    model.train()
    running_mean = model.batch_norm.running_mean.clone()
    source = MCDropout(model, members=3)
    assert source.n_dropout_layers == 2  # the subclass and AlphaDropout
    members = list(source.members(seed=0))
    assert not any(module.training for member in members for module in member.modules())
    draws = draw_samples(source, Softmax(), images())
    torch.testing.assert_close(model.batch_norm.running_mean, running_mean)  # eval mode: stats untouched
    assert (draws[:, 1] - draws[:, 0]).abs().max() > 1e-3
    assert all(module.training for module in model.modules())  # your model's modes are its own
    with torch.no_grad():  # without masks a member is the network in evaluation mode
        for layer in (model.drop, model.alpha):
            layer.p = 0.0
        expected = torch.softmax(model.eval()(images()), dim=1)
        torch.testing.assert_close(draw_samples(source, Softmax(), images())[:, 2, 0], expected)


def test_mc_dropout_refuses_a_model_without_dropout():
    with pytest.raises(UQEvalError, match="Sequential has no dropout module"):
        MCDropout(conv_net(1), members=3)
    with pytest.raises(UQEvalError, match="positive integer"):
        MCDropout(conv_net(1, dropout=0.2), members=0)


def test_fixed_masks_make_each_member_one_thinned_network():
    """A pointwise network is flip-equivariant; with fixed channel masks a member's TTA
    samples are then identical, while members differ."""
    source = MCDropout(conv_net(6, dropout=0.5, kernel=1), members=4)
    draws = draw_samples(source, TestTimeAugmentation(samples=4), images())
    assert (draws - draws[:, :, :1]).abs().max() < 1e-6
    assert (draws[:, 1:] - draws[:, :1]).abs().max() > 1e-3


def test_a_members_mask_is_the_same_for_every_image_and_batch_size():
    source = MCDropout(conv_net(6, dropout=0.5), members=3)
    whole = draw_samples(source, Softmax(), images(5))
    part = draw_samples(source, Softmax(), images(5)[3:])
    torch.testing.assert_close(part, whole[3:], rtol=0, atol=1e-6)


def test_fixed_masks_leave_the_models_own_randomness_alone():
    source = MCDropout(conv_net(6, dropout=0.5, kernel=1), members=2)
    draws = draw_samples(source, Sampler(stochastic_sampler, samples=3), images())
    assert (draws[:, :, 1:] - draws[:, :, :1]).abs().max() > 1e-3
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    member = next(source.members(seed=0))
    with torch.no_grad():
        member(images())
    torch.testing.assert_close(torch.rand(3), expected)  # a member's call leaves the global generator as it was


# --- errors name the culprit ----------------------------------------------------------------------


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.conv(x).permute(0, 2, 3, 1)  # channels last: a common mistake


class Logits(nn.Module):
    def forward(self, x):
        return torch.cat([x, -x], dim=1) * 5


@pytest.mark.parametrize(
    ("eu", "au", "expected"),
    [
        (lambda: Ensemble([Transposed(), Transposed()]), Softmax, r"model Transposed \(member 0 of Ensemble\)"),
        (lambda: SingleModel(Logits(), outputs="probabilities"), TestTimeAugmentation, "not probabilities"),
        (
            lambda: SingleModel(conv_net(1)),
            lambda: Sampler(lambda model, images, n: model(images), samples=3, name="my_ssn"),
            r"Sampler \(my_ssn\): sample\(\) on member 0",
        ),
    ],
)
def test_a_model_that_breaks_the_contract_is_named_and_nothing_is_left(tmp_path, eu, au, expected):
    store = tmp_path / "cube.zarr"
    with pytest.raises(UQEvalError, match=expected):
        write_cube(eu(), au(), batches(), store, progress=False)
    assert not store.exists()


def test_bad_batches_are_refused_with_their_number(tmp_path):
    good = batches(2)
    bad = [good[0], {"image": good[1]["image"], "labels": good[1]["labels"][:, :, :4]}]
    with pytest.raises(UQEvalError, match="batch 1: labels must be"):
        write_cube(EU_SOURCES["ensemble"](), Softmax(), bad, tmp_path / "c.zarr", progress=False)
    assert not (tmp_path / "c.zarr").exists()
    with pytest.raises(UQEvalError, match="batch 0: a dict batch needs the key 'image'"):
        write_cube(EU_SOURCES["ensemble"](), Softmax(), [{"images": 1}], tmp_path / "c.zarr", progress=False)


# --- the loop: data loaders, checkpoints, resuming --------------------------------------------------


class Scans(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return {
            "image": images(1, seed=index)[0],
            "labels": torch.full((SIZE, SIZE), index % 3, dtype=torch.uint8),  # one rater
            "domain": "id" if index < 6 else "blur",
            "image_id": f"scan-{index}",
        }


def test_a_data_loader_of_dicts_and_an_ensemble_of_checkpoints(tmp_path):
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"member-{seed}.pt")
        torch.save({"state_dict": conv_net(seed).state_dict(), "epoch": 3}, paths[-1])
    eu = Ensemble.from_checkpoints(paths, lambda: conv_net(0))
    store = write_cube(eu, Softmax(), DataLoader(Scans(), batch_size=4), tmp_path / "c.zarr", progress=False)
    cube = uqeval.open_cube(store)
    assert list(cube["image"].values) == [f"scan-{index}" for index in range(10)]
    assert list(cube["domain"].values) == ["id"] * 6 + ["blur"] * 4
    assert cube["labels"].shape == (10, 1, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.softmax(conv_net(2)(images(1, seed=7)), dim=1)[0].numpy()
    np.testing.assert_allclose(cube["probs"].values[7, 1, 0], expected, atol=1e-3)  # float16 store
    with pytest.raises(UQEvalError, match="does not fit"):
        Ensemble.from_checkpoints(paths, lambda: conv_net(0, kernel=1))


def test_an_interrupted_write_resumes_to_the_same_store(tmp_path, monkeypatch):
    def sources():
        return MCDropout(conv_net(1, dropout=0.5), members=2), TestTimeAugmentation(samples=3)

    whole = write_cube(*sources(), batches(5, 3), tmp_path / "whole.zarr", progress=False, chunk_images=2)
    real, calls = writing.draw_members, []

    def crash_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writing, "draw_members", crash_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        write_cube(*sources(), batches(5, 3), tmp_path / "broken.zarr", progress=False, chunk_images=2)
    monkeypatch.undo()
    with pytest.raises(UQEvalError, match="incomplete"):
        uqeval.open_cube(tmp_path / "broken.zarr")
    write_cube(*sources(), batches(5, 3), tmp_path / "broken.zarr", progress=False, chunk_images=2)
    for name in ("probs", "labels", "domain"):
        np.testing.assert_array_equal(
            uqeval.open_cube(whole)[name].values, uqeval.open_cube(tmp_path / "broken.zarr")[name].values
        )


def test_the_input_images_are_stored_unless_asked_not_to(tmp_path):
    written = write_cube(EU_SOURCES["ensemble"](), Softmax(), batches(2), tmp_path / "a.zarr", progress=False)
    cube = uqeval.open_cube(written)
    expected = np.concatenate([batch["image"].numpy() for batch in batches(2)])
    np.testing.assert_array_equal(cube["input"].values, expected)
    assert cube["input"].dims == ("image", "channel", "y", "x")
    bare = write_cube(
        EU_SOURCES["ensemble"](), Softmax(), batches(2), tmp_path / "b.zarr", progress=False, write_input=False
    )
    assert "input" not in uqeval.open_cube(bare)
    np.testing.assert_array_equal(uqeval.open_cube(bare)["probs"].values, cube["probs"].values)
