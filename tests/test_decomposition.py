"""Tests of :func:`uqeval.decompose` against an independent float64 reference."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
import scipy.stats
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import uqeval
from uqeval import UQEvalError, decompose
from uqeval.precision import EU_FLOOR

CUBE_DIMS = ("eu", "au", "class", "y", "x")
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------- reference


def reference_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """``H(p) = -Σ p ln p`` over ``axis`` in float64, with ``0 ln 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return -np.where(p > 0, p * np.log(safe), 0.0).sum(axis=axis)


def reference_member_means(cube: np.ndarray) -> np.ndarray:
    """``m_e = mean_a p[e, a]`` in float64, ``(..., eu, class, y, x)``; samples as members when eu == 1."""
    p = np.asarray(cube, dtype=np.float64)
    if p.shape[-5] == 1:
        p = np.swapaxes(p, -5, -4)  # (..., au, 1, class, y, x): samples become members
    return p.mean(axis=-4)


def reference_decompose(cube: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 reference for ``(..., eu, au, class, y, x)`` cubes.

    With ``eu == 1`` the ``au`` samples are the members (the "no EU" convention).
    """
    member_mean = reference_member_means(cube)  # (..., eu, class, y, x)
    mean = member_mean.mean(axis=-4)  # (..., class, y, x)
    tu = reference_entropy(mean, axis=-3)
    au = reference_entropy(member_mean, axis=-3).mean(axis=-3)
    eu = np.maximum(tu - au, 0.0)
    return {"au": au, "eu": eu, "tu": tu, "mean": mean}


def test_reference_entropy_matches_scipy():
    rng = np.random.default_rng(0)
    rows = [
        rng.dirichlet(np.ones(5)),
        np.array([0.0, 0.25, 0.0, 0.75, 0.0]),
        np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
        np.full(5, 0.2),
    ]
    p = np.stack(rows, axis=1)  # class first
    expected = np.array([scipy.stats.entropy(row) for row in rows])
    np.testing.assert_allclose(reference_entropy(p, axis=0), expected, rtol=0, atol=1e-14)
    assert reference_entropy(p, axis=0)[2] == 0.0
    np.testing.assert_allclose(reference_entropy(p, axis=0)[3], math.log(5), atol=1e-14)


def test_reference_no_eu_convention_is_samples_as_members():
    """The reference itself: eu == 1 gives AU = mean_a H(p_a), TU = H(mean_a p_a)."""
    rng = np.random.default_rng(1)
    cube = np.moveaxis(rng.dirichlet(np.ones(3), size=(1, 4, 2, 3)), -1, 2)  # (1, 4, 3, 2, 3)
    ref = reference_decompose(cube)
    samples = cube[0]  # (au, class, y, x)
    np.testing.assert_allclose(ref["au"], reference_entropy(samples, axis=1).mean(0), atol=1e-15)
    np.testing.assert_allclose(ref["tu"], reference_entropy(samples.mean(0), axis=0), atol=1e-15)
    assert (ref["eu"] > 1e-3).any()


# --------------------------------------------------------------------------- strategies


def _make_probs(rng: np.random.Generator, kind: str, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """Probabilities of shape ``(*shape, class)`` in float64 of the given kind."""
    if kind == "soft":
        alpha = rng.uniform(0.3, 3.0)
        return rng.dirichlet(np.full(n_classes, alpha), size=shape)
    if kind == "tiny_dirichlet":
        # Many values underflow to exact zeros (in float64 or after the cast).
        return rng.dirichlet(np.full(n_classes, 0.01), size=shape)
    if kind == "onehot_mix":
        soft = rng.dirichlet(np.ones(n_classes), size=shape)
        onehot = np.eye(n_classes)[rng.integers(0, n_classes, size=shape)]
        return np.where(rng.random(shape)[..., None] < 0.5, onehot, soft)
    if kind == "rounded":
        soft = rng.dirichlet(np.full(n_classes, 0.7), size=shape)
        onehot = np.eye(n_classes)[soft.argmax(-1)]
        return np.where(rng.random(shape)[..., None] < 0.3, onehot, soft)
    if kind == "identical":
        # Every member and sample alike: EU is zero up to rounding (exercises the clamp).
        one = rng.dirichlet(np.ones(n_classes), size=shape[-2:])
        return np.broadcast_to(one, (*shape, n_classes)).copy()
    raise AssertionError(kind)


@st.composite
def cubes(draw, dtype) -> np.ndarray:
    """Random cubes ``([image,] eu, au, class, y, x)`` of the given dtype."""
    n_members = draw(st.integers(1, 4))
    n_samples = draw(st.integers(1 if n_members > 1 else 2, 4))
    n_classes = draw(st.integers(2, 4))
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n_images = draw(st.sampled_from([None, 1, 2]))
    kind = draw(st.sampled_from(["soft", "tiny_dirichlet", "onehot_mix", "rounded", "identical"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lead = () if n_images is None else (n_images,)
    probs = _make_probs(rng, kind, (*lead, n_members, n_samples, height, width), n_classes)
    cube = np.moveaxis(probs, -1, -3).astype(dtype)  # class before y, x
    assert np.isfinite(cube).all()
    return cube


def _check_against_reference(cube: np.ndarray, ds: xr.Dataset) -> None:
    ref = reference_decompose(cube.astype(np.float64))
    for name in ("au", "eu", "tu", "mean"):
        assert ds[name].dtype == np.float32
        np.testing.assert_allclose(ds[name].values, ref[name], rtol=0, atol=1e-5, err_msg=name)
    top_two = np.sort(ref["mean"], axis=-3)[..., -2:, :, :]
    clear = (top_two[..., 1, :, :] - top_two[..., 0, :, :]) > 1e-4
    expected_pred = ref["mean"].argmax(axis=-3)
    np.testing.assert_array_equal(ds["pred"].values[clear], expected_pred[clear])


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_matches_float64_reference(dtype, data):
    cube = data.draw(cubes(dtype))
    ds = decompose(cube)
    _check_against_reference(cube, ds)
    expected = "members" if cube.shape[-5] > 1 else "samples-as-members"
    assert ds.attrs["eu_convention"] == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_decomposition_identities(dtype, data):
    cube = data.draw(cubes(dtype))
    ds = decompose(cube)
    au, eu, tu = ds.au.values, ds.eu.values, ds.tu.values
    n_classes = cube.shape[-3]
    assert (tu >= au - 1e-6).all()
    assert (eu >= 0).all()
    assert (au >= 0).all()
    # H(q) <= s ln(C / s) for q >= 0 summing to s; s = 1 gives ln C. float16 storage
    # moves the sums off 1 by up to ~5e-4, so the bound uses the actual sums.
    member_sums = reference_member_means(cube).sum(axis=-3)  # (..., eu, y, x)
    au_bound = (member_sums * np.log(n_classes / member_sums)).mean(axis=-3)
    total_sum = member_sums.mean(axis=-3)
    tu_bound = total_sum * np.log(n_classes / total_sum)
    assert (au <= au_bound + 1e-6).all()
    assert (tu <= tu_bound + 1e-6).all()
    if dtype == np.float32:
        assert (au <= math.log(n_classes) + 1e-6).all()
        assert (tu <= math.log(n_classes) + 1e-6).all()
    # EU = TU - AU (in the kernel's float64, then rounded) where that is at least the
    # floor, else exactly 0: TU = AU + EU to within the floor plus float32 rounding.
    difference = tu.astype(np.float64) - au.astype(np.float64)
    kept = eu > 0
    assert (difference[kept] >= EU_FLOOR - 1e-6).all()
    assert (difference[~kept] < EU_FLOOR + 1e-6).all()
    np.testing.assert_allclose(eu[kept], difference[kept], rtol=0, atol=2e-7)
    np.testing.assert_allclose(au + eu, tu, rtol=0, atol=EU_FLOOR + 1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_invariant_under_member_and_sample_permutations(dtype, data):
    cube = data.draw(cubes(dtype))
    member_order = np.array(data.draw(st.permutations(range(cube.shape[-5]))))
    sample_order = np.array(data.draw(st.permutations(range(cube.shape[-4]))))
    permuted = np.take(np.take(cube, member_order, axis=-5), sample_order, axis=-4)
    original, shuffled = decompose(cube), decompose(permuted)
    for name in ("au", "eu", "tu", "mean"):
        np.testing.assert_allclose(shuffled[name].values, original[name].values, rtol=0, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- conventions


def _random_cube(shape: tuple[int, ...], seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Soft probabilities of shape ``(..., eu, au, class, y, x)``."""
    rng = np.random.default_rng(seed)
    *lead, n_classes, height, width = shape
    probs = rng.dirichlet(np.ones(n_classes), size=(*lead, height, width))
    return np.moveaxis(probs, -1, -3).astype(dtype)


def test_no_eu_convention_treats_samples_as_members():
    cube = _random_cube((1, 5, 3, 4, 6), seed=3)
    ds = decompose(cube)
    assert ds.attrs["eu_convention"] == "samples-as-members"
    samples = cube[0].astype(np.float64)  # (au, class, y, x)
    expected_au = reference_entropy(samples, axis=1).mean(axis=0)
    expected_tu = reference_entropy(samples.mean(axis=0), axis=0)
    np.testing.assert_allclose(ds.au.values, expected_au, atol=1e-5)
    np.testing.assert_allclose(ds.tu.values, expected_tu, atol=1e-5)
    np.testing.assert_allclose(ds.eu.values, np.maximum(expected_tu - expected_au, 0), atol=1e-5)
    # Not the "single member" reading, which would give EU = 0 everywhere.
    assert (ds.eu.values > 1e-3).any()
    # The same numbers as a cube with the samples as members.
    as_members = decompose(np.swapaxes(cube, 0, 1).copy())
    assert as_members.attrs["eu_convention"] == "members"
    for name in ("au", "eu", "tu", "mean"):
        np.testing.assert_allclose(ds[name].values, as_members[name].values, atol=1e-6)


def test_convention_with_members():
    ds = decompose(_random_cube((3, 1, 2, 2, 2)))
    assert ds.attrs["eu_convention"] == "members"
    ds = decompose(_random_cube((2, 2, 3, 2, 2)))
    assert ds.attrs["eu_convention"] == "members"


def test_no_eu_convention_through_dask():
    cube = _random_cube((4, 1, 3, 2, 3, 3), seed=5)
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS)).chunk({"image": 2})
    ds = decompose(array)
    assert ds.attrs["eu_convention"] == "samples-as-members"
    computed = ds.compute()
    assert computed.attrs["eu_convention"] == "samples-as-members"
    ref = reference_decompose(cube)
    np.testing.assert_allclose(computed.au.values, ref["au"], atol=1e-5)
    np.testing.assert_allclose(computed.eu.values, ref["eu"], atol=1e-5)


# --------------------------------------------------------------------------- errors


def test_deterministic_cube_raises():
    with pytest.raises(UQEvalError, match="deterministic"):
        decompose(_random_cube((1, 1, 3, 4, 4)))


def test_deterministic_cube_raises_for_dataarray_and_dask():
    cube = _random_cube((2, 1, 1, 3, 4, 4))
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS))
    with pytest.raises(UQEvalError, match="deterministic"):
        decompose(array)
    with pytest.raises(UQEvalError, match="deterministic"):
        decompose(array.chunk({"image": 1}))


def test_single_class_raises():
    with pytest.raises(UQEvalError, match="class"):
        decompose(np.ones((2, 2, 1, 3, 3), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, bool])
def test_non_float_dtype_raises(dtype):
    cube = np.zeros((2, 2, 2, 3, 3), dtype=dtype)
    cube[:, :, 0] = 1
    with pytest.raises(UQEvalError, match="floating"):
        decompose(cube)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 2, 2, 3, 2, 2, 4, 4), (3,)])
def test_wrong_ndim_raises(shape):
    with pytest.raises(UQEvalError, match=f"{len(shape)} dims"):
        decompose(np.full(shape, 0.5, dtype=np.float32))


def test_dataarray_missing_dim_raises():
    array = xr.DataArray(_random_cube((2, 2, 3, 4, 4)), dims=("eu", "au", "klass", "y", "x"))
    with pytest.raises(UQEvalError, match="class"):
        decompose(array)


# --------------------------------------------------------------------------- shapes and dims


def test_single_cube_dims_and_dtypes():
    cube = _random_cube((2, 3, 4, 5, 6))
    ds = decompose(cube)
    for name in ("au", "eu", "tu"):
        assert ds[name].dims == ("y", "x")
        assert ds[name].shape == (5, 6)
        assert ds[name].dtype == np.float32
    assert ds["mean"].dims == ("class", "y", "x")
    assert ds["mean"].shape == (4, 5, 6)
    assert ds["mean"].dtype == np.float32
    assert ds["pred"].dims == ("y", "x")
    assert ds["pred"].dtype == np.uint8
    _check_against_reference(cube, ds)


def test_batch_dims_and_dtypes():
    cube = _random_cube((3, 2, 3, 4, 5, 6), dtype=np.float64)
    ds = decompose(cube)
    for name in ("au", "eu", "tu", "pred"):
        assert ds[name].dims == ("image", "y", "x")
        assert ds[name].shape == (3, 5, 6)
    for name in ("au", "eu", "tu", "mean"):
        assert ds[name].dtype == np.float32
    assert ds["mean"].dims == ("image", "class", "y", "x")
    assert ds["mean"].shape == (3, 4, 5, 6)
    _check_against_reference(cube, ds)
    # Each image decomposes on its own.
    single = decompose(cube[1])
    for name in ("au", "eu", "tu", "mean", "pred"):
        np.testing.assert_array_equal(ds[name].values[1], single[name].values)


def test_mean_sums_to_one_and_pred_is_its_argmax():
    cube = _random_cube((2, 2, 3, 5, 5, 7), seed=11)
    ds = decompose(cube)
    np.testing.assert_allclose(ds["mean"].values.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(ds["pred"].values, ds["mean"].values.argmax(axis=1))


def test_pred_takes_first_class_on_ties():
    cube = np.full((2, 2, 3, 2, 2), 1 / 3, dtype=np.float32)
    np.testing.assert_array_equal(decompose(cube).pred.values, 0)
    cube = np.zeros((2, 2, 3, 2, 2), dtype=np.float32)
    cube[:, :, 1:] = 0.5
    np.testing.assert_array_equal(decompose(cube).pred.values, 1)


def _image_dataarray(cube: np.ndarray, ids: list[str]) -> xr.DataArray:
    """A DataArray with its dims in a scrambled order and string image ids."""
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ids})
    return array.transpose("x", "class", "image", "au", "y", "eu")


def test_dataarray_in_any_dim_order_with_string_ids():
    cube = _random_cube((3, 2, 3, 4, 5, 6), seed=2)
    ids = ["img-a", "img-b", "img-c"]
    ds = decompose(_image_dataarray(cube, ids))
    expected = decompose(cube)
    assert ds.au.dims == ("image", "y", "x")
    assert ds["mean"].dims == ("image", "class", "y", "x")
    assert ds.image.values.tolist() == ids
    for name in ("au", "eu", "tu", "mean", "pred"):
        np.testing.assert_array_equal(ds[name].values, expected[name].values)
    _check_against_reference(cube, ds)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dask_input_is_lazy_and_identical(dtype):
    cube = _random_cube((5, 2, 3, 3, 6, 7), seed=4, dtype=dtype)
    ids = [f"img-{i}" for i in range(5)]
    array = _image_dataarray(cube, ids).chunk({"image": 2})
    ds = decompose(array)
    assert ds.au.chunks is not None
    assert ds["mean"].chunks is not None
    assert ds.au.chunks[0] == (2, 2, 1)
    computed = ds.compute()
    expected = decompose(cube)
    assert computed.image.values.tolist() == ids
    for name in ("au", "eu", "tu", "mean", "pred"):
        assert computed[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(computed[name].values, expected[name].values, err_msg=name)


def test_dask_array_inside_dataarray_without_image_coordinate():
    cube = _random_cube((4, 3, 2, 2, 3, 3), seed=6)
    array = xr.DataArray(da.from_array(cube, chunks=(1, 3, 2, 2, 3, 3)), dims=("image", *CUBE_DIMS))
    ds = decompose(array)
    assert ds.tu.chunks is not None
    np.testing.assert_array_equal(ds.tu.values, decompose(cube).tu.values)


# --------------------------------------------------------------------------- bad values


def _bad_value_array(value: float | None, where: tuple = (1, 0, 0, 0, 2, 3)) -> tuple[np.ndarray, list[str]]:
    cube = _random_cube((3, 2, 2, 3, 4, 5), seed=8)
    if value is not None:
        cube[where] = value
    return cube, ["img-a", "img-b", "img-c"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_value_names_the_image(value):
    cube, ids = _bad_value_array(value)
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ids})
    with pytest.raises(UQEvalError, match="NaN or inf") as info:
        decompose(array)
    assert "img-b" in str(info.value)
    assert "img-a" not in str(info.value)


def test_nan_names_the_image_through_dask():
    cube, ids = _bad_value_array(np.nan)
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ids}).chunk({"image": 2})
    ds = decompose(array)  # lazy: nothing computed yet
    with pytest.raises(UQEvalError, match="NaN or inf") as info:
        ds.compute()
    assert "img-b" in str(info.value)


def test_nan_in_numpy_batch_names_the_image_index():
    cube, _ = _bad_value_array(np.nan, where=(2, 1, 1, 2, 0, 0))
    with pytest.raises(UQEvalError, match="image 2 has NaN or inf"):
        decompose(cube)


def test_negative_value_suggests_logits():
    cube, ids = _bad_value_array(-0.25)
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ids})
    with pytest.raises(UQEvalError, match="negative") as info:
        decompose(array)
    assert "logits" in str(info.value)
    assert "img-b" in str(info.value)


def test_values_summing_to_five_suggest_logits():
    cube, ids = _bad_value_array(None)
    cube[2] *= 5
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ids})
    with pytest.raises(UQEvalError, match="sum to 1") as info:
        decompose(array)
    assert "logits" in str(info.value)
    assert "img-c" in str(info.value)


def test_sums_within_tolerance_are_accepted():
    cube = _random_cube((2, 2, 3, 4, 4))
    cube[0, 0, 0] += 0.005  # sums of 1.005
    ds = decompose(cube)
    np.testing.assert_allclose(ds.tu.values, reference_decompose(cube)["tu"], atol=1e-5)


def test_check_false_skips_the_checks():
    cube = _random_cube((3, 2, 2, 3, 4, 5), seed=9)
    cube[1] *= 5  # sums of 5
    cube[2, 0, 0, 0, 1, 1] = np.nan
    with pytest.raises(UQEvalError):
        decompose(cube)
    ds = decompose(cube, check=False)
    ref = reference_decompose(cube)
    # Same formulas, whatever the values.
    for name in ("au", "tu", "mean"):
        np.testing.assert_allclose(ds[name].values[:2], ref[name][:2], rtol=1e-5, atol=1e-4, err_msg=name)
    assert np.isnan(ds.tu.values[2, 1, 1])
    assert np.isnan(ds.au.values[2, 1, 1])
    np.testing.assert_allclose(ds.au.values[2, 0, 0], ref["au"][2, 0, 0], atol=1e-5)
    # Also through the DataArray and dask paths.
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS))
    lazy = decompose(array.chunk({"image": 1}), check=False).compute()
    np.testing.assert_array_equal(lazy.au.values[:2], ds.au.values[:2])


# --------------------------------------------------------------------------- block boundaries


def test_large_cube_crosses_pixel_blocks():
    # 100 × 131 = 13,100 pixels: several pixel blocks of the decomposition (and 13 of
    # 1024 of the value checks), each with a partial last one.
    import numba

    from uqeval import _kernels

    height, width = 100, 131
    block = _kernels.decompose_block(3, height * width, numba.get_num_threads())
    assert (height * width) % block != 0
    assert height * width > block
    assert (height * width) % _kernels.PIXEL_BLOCK != 0
    assert height * width > 12 * _kernels.PIXEL_BLOCK
    rng = np.random.default_rng(12)
    probs = rng.dirichlet(np.full(3, 0.5), size=(3, 2, 3, height, width))
    probs[0, 0, 0, :50] = np.eye(3)[rng.integers(0, 3, size=(50, width))]
    cube = np.moveaxis(probs, -1, 3).astype(np.float32)
    ds = decompose(cube)
    _check_against_reference(cube, ds)

    # A bad value in the very last pixel (last, partial block) of the last image.
    bad = cube.copy()
    bad[2, 1, 2, 1, height - 1, width - 1] = np.nan
    with pytest.raises(UQEvalError, match="image 2 has NaN or inf values at 1 pixel"):
        decompose(bad)
    # And a negative value in the first pixel of a middle block of image 1.
    bad = cube.copy()
    flat_index = 7 * _kernels.PIXEL_BLOCK
    bad[1, 0, 0, 0, flat_index // width, flat_index % width] = -1e-3
    with pytest.raises(UQEvalError, match="image 1 has negative"):
        decompose(bad)


def test_large_cube_float16_and_dask():
    cube = _random_cube((3, 2, 2, 4, 128, 128), seed=13, dtype=np.float16)
    array = xr.DataArray(cube, dims=("image", *CUBE_DIMS), coords={"image": ["a", "b", "c"]})
    ds = decompose(array.chunk({"image": 2})).compute()
    _check_against_reference(cube, ds)


def test_public_name():
    assert uqeval.decompose is decompose


@pytest.mark.parametrize("way", ["bits", "f16c", "exact"])
def test_every_float16_bit_pattern_widens_exactly(way):
    # The kernels widen float16 by the CPU's conversion (F16C) or by bit arithmetic;
    # every finite pattern must give the float32 that numpy gives, bit for bit (signed
    # zeros and subnormals included). Bit arithmetic maps inf and NaN above every
    # finite half, so that a sample's sum sends the block to the exact checks; the
    # exact checks' widening makes them NaN.
    import numba

    from uqeval import _kernels

    if way == "f16c" and not _kernels.HALF_CONVERSION:
        pytest.skip("this CPU (or numba's target) has no F16C")
    convert = {
        "bits": _kernels._half_bits_to_float,
        "f16c": _kernels._half_to_float,
        "exact": _kernels._widen_exact,
    }[way]

    @numba.njit
    def widen(row):
        out = np.empty(row.shape[0], dtype=np.float32)
        for i in range(row.shape[0]):
            out[i] = convert(row[i])
        return out

    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    want = patterns.view(np.float16).astype(np.float32)
    finite = np.isfinite(want)
    got = widen(patterns)
    np.testing.assert_array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))
    if way == "bits":
        assert (np.abs(got[~finite]) >= 65536).all() and np.abs(want[finite]).max() < 65536
    elif way == "f16c":
        np.testing.assert_array_equal(got[~finite], want[~finite])  # inf as inf, NaN as NaN
    else:
        assert np.isnan(got[~finite]).all()


# --------------------------------------------------------------------------- the EU floor


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@PROPERTY_SETTINGS
@given(
    n_members=st.integers(2, 40),
    n_samples=st.integers(1, 12),
    n_classes=st.integers(2, 12),
    concentration=st.sampled_from([0.05, 1.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_identical_members_give_eu_exactly_zero(dtype, n_members, n_samples, n_classes, concentration, seed):
    """One member copied E times has no epistemic part: EU is exactly 0 at every pixel,
    not a rounding residue (the float32 sums would leave up to ~1e-6 without the floor)."""
    rng = np.random.default_rng(seed)
    member = rng.dirichlet(np.full(n_classes, concentration), size=(n_samples, 6, 7)).astype(dtype)
    member = np.moveaxis(member, -1, -3)[None]  # (1, au, class, y, x)
    cube = np.repeat(member, n_members, axis=0)
    maps = decompose(cube, check=False)
    assert (maps.eu.values == 0.0).all()
    np.testing.assert_allclose(maps.tu.values, maps.au.values, rtol=0, atol=EU_FLOOR)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_eu_error_without_the_floor_is_far_below_it(dtype):
    """The raw error of EU against float64 (floor off) is below EU_FLOOR / 4 for many members
    and classes: the floor removes rounding, not signal (benchmarks/eu_floor.py maps it out)."""
    rng = np.random.default_rng(7)
    for n_members, n_samples, n_classes in ((2, 30, 10), (100, 2, 10), (300, 1, 5)):
        probs = rng.dirichlet(np.full(n_classes, 1.0), size=(2, n_members, n_samples, 8, 8)).astype(dtype)
        cube = np.moveaxis(probs, -1, -3)
        cube = (cube / cube.astype(np.float64).sum(axis=-3, keepdims=True)).astype(dtype)
        raw = uqeval.decomposition.decompose_batch(cube, [0, 1], check=False, eu_floor=0.0)
        reference = reference_decompose(cube)
        assert np.abs(raw["eu"] - reference["eu"]).max() < EU_FLOOR / 4, (n_members, n_samples, n_classes)
        floored = uqeval.decomposition.decompose_batch(cube, [0, 1], check=False)
        small = reference["eu"] < EU_FLOOR / 2
        assert (floored["eu"][small] == 0).all()
        np.testing.assert_array_equal(
            floored["eu"][~small & (raw["eu"] >= EU_FLOOR)], raw["eu"][~small & (raw["eu"] >= EU_FLOOR)]
        )


# --------------------------------------------------------------------------- volumes


def _random_volumes(n_images: int = 2, seed: int = 5, dtype=np.float16) -> np.ndarray:
    """Soft probabilities ``(image, eu, au, class, z, y, x)``: eu 3, au 2, 3 classes, 4 × 5 × 6 voxels."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(3, 0.5), size=(n_images, 3, 2, 4, 5, 6))
    return np.moveaxis(probs, -1, 3).astype(dtype)


def test_volumes_match_the_float64_reference_and_their_slices_bit_for_bit():
    volumes = _random_volumes()
    maps = decompose(volumes)
    assert maps["au"].dims == ("image", "z", "y", "x") and maps["mean"].dims == ("image", "class", "z", "y", "x")
    # The reference works on (..., eu, au, class, y, x): z goes in front and back.
    as_slices = np.moveaxis(volumes, 4, 1)  # (image, z, eu, au, class, y, x)
    reference = reference_decompose(as_slices.astype(np.float64))
    for name in ("au", "eu", "tu"):
        np.testing.assert_allclose(maps[name].values, reference[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(maps["mean"].values, np.moveaxis(reference["mean"], 2, 1), rtol=0, atol=1e-6)
    # Per voxel: a volume's maps are those of its slices decomposed as 2D images, exactly.
    slices = decompose(as_slices.reshape(-1, *as_slices.shape[2:]))
    for name in ("au", "eu", "tu", "pred"):
        np.testing.assert_array_equal(maps[name].values, slices[name].values.reshape(maps[name].shape))
    np.testing.assert_array_equal(maps["mean"].values, np.moveaxis(slices["mean"].values.reshape(2, 4, 3, 5, 6), 2, 1))


def test_one_volume_needs_spatial_3():
    volume = _random_volumes(1)[0]
    single = decompose(volume, spatial=3)
    assert single["eu"].dims == ("z", "y", "x") and single["mean"].dims == ("class", "z", "y", "x")
    np.testing.assert_array_equal(single["tu"].values, decompose(volume[None])["tu"].values[0])
    # Six dims without `spatial` are a batch of images, as they always were.
    assert decompose(volume, check=False)["eu"].dims == ("image", "y", "x")
    with pytest.raises(UQEvalError, match=r"`spatial` is 4; expected 2 \(y, x\) or 3 \(z, y, x\)"):
        decompose(volume, spatial=4)
    with pytest.raises(UQEvalError, match=r"expected dims \('eu', 'au', 'class', 'z', 'y', 'x'\)"):
        decompose(volume[0], spatial=3)


def test_dask_volumes_keep_their_z_slabs_and_match_numpy():
    volumes = _random_volumes(3)
    array = xr.DataArray(
        da.from_array(volumes, chunks=(1, 3, 2, 3, 2, 5, 6)),
        dims=("image", "eu", "au", "class", "z", "y", "x"),
        coords={"image": ["a", "b", "c"]},
    )
    lazy = decompose(array)
    assert lazy["eu"].chunks == ((1, 1, 1), (2, 2), (5,), (6,))
    assert lazy["mean"].chunks == ((1, 1, 1), (3,), (2, 2), (5,), (6,))
    computed = lazy.compute()
    eager = decompose(volumes)
    for name in ("au", "eu", "tu", "pred", "mean"):
        np.testing.assert_array_equal(computed[name].values, eager[name].values)
    assert computed["image"].values.tolist() == ["a", "b", "c"]


def test_dask_volumes_name_the_volume_with_a_bad_value():
    volumes = _random_volumes(2).astype(np.float32)
    volumes[1, 0, 0, 0, 3, 1, 1] = np.nan
    array = xr.DataArray(
        da.from_array(volumes, chunks=(1, 3, 2, 3, 2, 5, 6)),
        dims=("image", "eu", "au", "class", "z", "y", "x"),
        coords={"image": ["a", "b"]},
    )
    with pytest.raises(UQEvalError, match=r"image 'b' has NaN or inf values at 1 pixel"):
        decompose(array).compute()


def test_decompose_batch_of_volumes_keeps_the_spatial_shape():
    from uqeval.decomposition import decompose_batch

    maps = decompose_batch(_random_volumes(2), ["a", "b"])
    assert maps["eu"].shape == (2, 4, 5, 6) and maps["mean"].shape == (2, 3, 4, 5, 6)
    with pytest.raises(UQEvalError, match=r"expected \(image, eu, au, class, \[z,\] y, x\) cubes"):
        decompose_batch(_random_volumes(1)[0, 0], ["a"])
