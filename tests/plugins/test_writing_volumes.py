"""Your own 3D network to a store of volumes: TTA flips along z, y, x, the writing loop
member by member, and the sliding window inside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import uqeval
from uqeval import UQEvalError, VolumeWriter
from uqeval_torch import writing
from uqeval_torch.sources import (
    Ensemble,
    MCDropout,
    SingleModel,
    Softmax,
    TestTimeAugmentation,
    draw_samples,
    flips_and_rotations,
    volume_flips,
)
from uqeval_torch.writing import write_cube

#: Asymmetric (z, y, x), so that a transform that swapped axes could not go unnoticed.
SHAPE = (4, 7, 5)


def conv3d_net(seed: int, *, kernel: int = 3, dropout: float = 0.0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv3d(1, 6, kernel, padding=kernel // 2), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout3d(dropout))
    layers.append(nn.Conv3d(6, classes, 1))
    return nn.Sequential(*layers)


def volumes(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def batches(n_batches: int = 3, per_batch: int = 2, raters: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": volumes(per_batch, seed=k),
            "labels": torch.from_numpy(rng.integers(0, 3, (per_batch, raters, *SHAPE))),
            "domain": ["id", "noise"][:per_batch] + ["id"] * (per_batch - 2),
            "role": "calibration" if k == 0 else "test",
            "image_id": [f"case-{k}-{i}" for i in range(per_batch)],
        }
        for k in range(n_batches)
    ]


# --- test-time augmentation of volumes -------------------------------------------------------------


def test_the_eight_volume_flips_are_distinct_and_each_its_own_inverse():
    tensor = torch.arange(2 * 3 * np.prod(SHAPE), dtype=torch.float32).reshape(2, 3, *SHAPE)
    transforms = volume_flips()
    assert [transform.name for transform in transforms] == [
        "identity",
        "flip z",
        "flip y",
        "flip x",
        "flip z y",
        "flip z x",
        "flip y x",
        "flip z y x",
    ]
    outputs = {tuple(transform.forward(tensor).flatten().tolist()) for transform in transforms}
    assert len(outputs) == 8
    for transform in transforms:
        assert transform.forward(tensor).shape == tensor.shape
        torch.testing.assert_close(transform.inverse(transform.forward(tensor)), tensor, rtol=0, atol=0)
    torch.testing.assert_close(transforms[1].forward(tensor), tensor.flip(2), rtol=0, atol=0)  # z is dim 2


def test_tta_on_volumes_uses_the_eight_flips_whatever_the_shape():
    au = TestTimeAugmentation()
    assert au.default_samples == 8
    assert [t.name for t in au.chosen(SHAPE, 8)] == [t.name for t in volume_flips()]
    assert len(au.chosen((6, 6), 8)) == 8 and au.chosen((6, 6), 8)[4].name == flips_and_rotations()[4].name
    with pytest.raises(UQEvalError, match="draws 1 to 8 samples"):
        au.chosen(SHAPE, 9)


def test_a_flip_equivariant_3d_network_gives_zero_tta_disagreement():
    """1 × 1 × 1 convolutions, and a 3 × 3 × 3 kernel symmetric under every flip, commute
    with the flips: every TTA sample is the identity's, so AU from TTA is exactly zero."""
    symmetric = conv3d_net(2)
    with torch.no_grad():
        kernel = symmetric[0].weight
        kernel.copy_(sum(kernel.flip(dims) for dims in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]))
    for network in (conv3d_net(1, kernel=1), symmetric):
        draws = draw_samples(SingleModel(network), TestTimeAugmentation(), volumes())
        assert tuple(draws.shape) == (3, 1, 8, 3, *SHAPE)
        torch.testing.assert_close(draws, draws[:, :, :1].expand_as(draws), rtol=0, atol=1e-6)
        # With one member the samples are the members: their disagreement, EU, is exactly 0.
        assert float(uqeval.decompose(draws.numpy())["eu"].max()) == 0.0


def test_each_tta_sample_is_the_flipped_prediction_flipped_back():
    network = conv3d_net(3)  # not flip-equivariant
    images = volumes(2)
    draws = draw_samples(SingleModel(network), TestTimeAugmentation(), images)
    flipped_dims = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]  # of (batch, channel, z, y, x)

    def flip(tensor: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return tensor.flip(dims) if dims else tensor

    with torch.no_grad():
        for index, dims in enumerate(flipped_dims):
            expected = flip(torch.softmax(network(flip(images, dims)), dim=1), dims)
            torch.testing.assert_close(draws[:, 0, index], expected, rtol=0, atol=1e-6)
    assert (draws - draws[:, :, :1]).abs().max() > 1e-3


# --- the writing loop ---------------------------------------------------------------------------------


def test_volumes_are_written_member_by_member_and_read_back(tmp_path, monkeypatch):
    pieces: list[tuple[int, tuple[int, ...]]] = []
    real = VolumeWriter.write_member

    def recording(self, member, values):
        pieces.append((member, np.shape(values)))
        return real(self, member, values)

    monkeypatch.setattr(VolumeWriter, "write_member", recording)
    monkeypatch.setattr(uqeval.CubeWriter, "append", lambda *args, **kwargs: pytest.fail("a whole cube was appended"))
    eu, au = MCDropout(conv3d_net(1, dropout=0.5), members=3), TestTimeAugmentation(samples=4)
    store = write_cube(eu, au, batches(), tmp_path / "c.zarr", progress=False, spacing=(2.5, 0.8, 0.8))
    assert pieces == [(member, (4, 3, *SHAPE)) for _ in range(6) for member in range(3)]

    cube = uqeval.open_cube(store, check_values=True)
    assert dict(cube["probs"].sizes) == {"image": 6, "eu": 3, "au": 4, "class": 3, "z": 4, "y": 7, "x": 5}
    assert cube.attrs["spacing"] == [2.5, 0.8, 0.8]
    assert list(cube["image"].values) == [f"case-{k}-{i}" for k in range(3) for i in range(2)]
    assert list(cube["role"].values) == ["calibration"] * 2 + ["test"] * 4
    assert list(cube["domain"].values) == ["id", "noise"] * 3
    np.testing.assert_array_equal(cube["labels"].values, np.concatenate([b["labels"].numpy() for b in batches()]))
    np.testing.assert_array_equal(cube["input"].values, np.concatenate([b["image"].numpy() for b in batches()]))
    assert cube["input"].dims == ("image", "channel", "z", "y", "x")
    probs = cube["probs"].values.astype(np.float64)
    assert np.abs(np.diff(probs, axis=1)).max() > 1e-3  # members differ
    assert np.abs(np.diff(probs, axis=2)).max() > 1e-3  # TTA samples differ
    # The store holds what draw_samples draws for the same volumes (float16 rounding apart).
    for number, batch in enumerate(batches()):
        drawn = draw_samples(eu, au, batch["image"]).numpy()
        np.testing.assert_allclose(probs[2 * number : 2 * number + 2], drawn, atol=1e-3)


def test_an_ensemble_of_3d_networks_with_softmax(tmp_path):
    eu = Ensemble([conv3d_net(1), conv3d_net(2)])
    store = write_cube(eu, Softmax(), batches(2), tmp_path / "c.zarr", progress=False, write_input=False)
    cube = uqeval.open_cube(store)
    assert dict(cube["probs"].sizes) == {"image": 4, "eu": 2, "au": 1, "class": 3, "z": 4, "y": 7, "x": 5}
    assert "input" not in cube
    with torch.no_grad():
        expected = torch.softmax(conv3d_net(2)(batches(2)[1]["image"][1:]), dim=1)[0].numpy()
    np.testing.assert_allclose(cube["probs"].values[3, 1, 0], expected, atol=1e-3)


def test_an_interrupted_write_of_volumes_resumes_to_the_same_store(tmp_path, monkeypatch):
    def sources():
        return MCDropout(conv3d_net(1, dropout=0.5), members=2), TestTimeAugmentation(samples=3)

    whole = write_cube(*sources(), batches(3), tmp_path / "whole.zarr", progress=False)
    real, calls = writing.draw_volume, []

    def crash_in_the_fifth_volume(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writing, "draw_volume", crash_in_the_fifth_volume)
    with pytest.raises(KeyboardInterrupt):
        write_cube(*sources(), batches(3), tmp_path / "broken.zarr", progress=False)
    monkeypatch.undo()
    assert uqeval.CubeWriter.progress(tmp_path / "broken.zarr").n_images == 4
    write_cube(*sources(), batches(3), tmp_path / "broken.zarr", progress=False)
    for name in ("probs", "labels", "domain", "image", "input"):
        np.testing.assert_array_equal(
            uqeval.open_cube(whole)[name].values, uqeval.open_cube(tmp_path / "broken.zarr")[name].values
        )


def test_the_sliding_window_of_a_pointwise_network_writes_the_whole_volume_result(tmp_path):
    eu, au = Ensemble([conv3d_net(1, kernel=1), conv3d_net(2, kernel=1)]), TestTimeAugmentation(samples=4)
    whole = write_cube(eu, au, batches(2), tmp_path / "whole.zarr", progress=False)
    windowed = write_cube(
        eu, au, batches(2), tmp_path / "windowed.zarr", progress=False, patch_size=(3, 4, 8), overlap=0.5
    )
    cube = uqeval.open_cube(windowed)
    assert (cube.attrs["patch_size"], cube.attrs["overlap"]) == ([3, 4, 8], 0.5)
    np.testing.assert_allclose(
        cube["probs"].values.astype(np.float64),
        uqeval.open_cube(whole)["probs"].values.astype(np.float64),
        atol=1e-3,  # float16 storage
    )
    # A 3×3×3 network is patched: its windows' edges differ from the whole volume's.
    draws = draw_samples(SingleModel(conv3d_net(3)), au, volumes(1), patch_size=(2, 4, 3))
    assert (draws - draw_samples(SingleModel(conv3d_net(3)), au, volumes(1))).abs().max() > 1e-3


def test_bad_volume_batches_are_refused_with_their_number(tmp_path):
    eu = Ensemble([conv3d_net(1), conv3d_net(2)])
    good = batches(2)
    images_after_volumes = [good[0], {"image": torch.rand(2, 1, 7, 5)}]
    with pytest.raises(UQEvalError, match=r"batch 1: images \(2, 1, 7, 5\) \(batch, channel, y, x\), but the store"):
        write_cube(eu, Softmax(), images_after_volumes, tmp_path / "c.zarr", progress=False)
    assert not (tmp_path / "c.zarr").exists()
    wrong_labels = [good[0], {**good[1], "labels": good[1]["labels"][..., :3]}]
    with pytest.raises(UQEvalError, match=r"batch 1: labels must be \(batch, rater, z, y, x\)"):
        write_cube(eu, Softmax(), wrong_labels, tmp_path / "c.zarr", progress=False)
    other_size = [good[0], {**good[1], "image": torch.rand(2, 1, 4, 7, 6), "labels": None}]
    with pytest.raises(UQEvalError, match=r"batch 1: the sources drew cubes of shape \(1, 3, 4, 7, 6\)"):
        write_cube(eu, Softmax(), other_size, tmp_path / "c.zarr", progress=False)
    with pytest.raises(UQEvalError, match=r"patch_size \(4, 4\) has 2 sizes, but the images"):
        write_cube(eu, Softmax(), good, tmp_path / "c.zarr", progress=False, patch_size=(4, 4))
    assert not (tmp_path / "c.zarr").exists()


def test_a_3d_model_that_returns_2d_maps_is_named(tmp_path):
    class Squashed(nn.Module):
        def forward(self, x):
            return torch.cat([x, -x], dim=1).mean(dim=2)  # lost z

    expected = r"expected \(batch=1, class ≥ 2, z=4, y=7, x=5\) class scores for every voxel"
    with pytest.raises(UQEvalError, match=expected):
        write_cube(SingleModel(Squashed()), TestTimeAugmentation(), batches(1), tmp_path / "c.zarr", progress=False)
