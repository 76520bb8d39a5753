"""Kendall & Gal entropy decomposition of sample cubes into AU, EU and TU maps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import xarray as xr

from uqeval import _kernels
from uqeval.checks import check_decomposable, raise_for_value_stats, reduce_block_stats
from uqeval.errors import UQEvalError
from uqeval.precision import EU_FLOOR

#: Dims of one image's sample cube, in storage order.
CUBE_DIMS = ("eu", "au", "class", "y", "x")
#: Dims of one volume's sample cube, in storage order.
VOLUME_CUBE_DIMS = ("eu", "au", "class", "z", "y", "x")
#: Dims of a cube before its spatial dims.
SAMPLE_DIMS = ("eu", "au", "class")
#: Name of the leading dim of a batch of cubes.
IMAGE_DIM = "image"


def decompose(x: np.ndarray | xr.DataArray, *, check: bool = True, spatial: int | None = None) -> xr.Dataset:
    r"""Split the uncertainty of sample cubes into aleatoric, epistemic and total parts.

    With ``p[e, a, c]`` the probability of class ``c`` in sample ``a`` of member ``e``
    at one pixel, ``m_e = mean_a p[e, a]`` and ``m = mean_e m_e``:

    .. math::

        TU = H(m), \quad AU = \frac{1}{E}\sum_e H(m_e), \quad
        EU = (TU - AU) \cdot \mathbb{1}[TU - AU \ge \varepsilon],
        \quad H(q) = -\sum_c q_c \ln q_c \ (0 \ln 0 = 0)

    in nats. EU is the mutual information between prediction and member; it is
    non-negative by Jensen's inequality. Below the floor ``ε`` =
    :data:`uqeval.precision.EU_FLOOR` (2⁻¹⁸ ≈ 3.8e-6 nats, above the float32
    accumulation's measured error) EU is exactly 0: members that agree give EU = 0,
    not a rounding residue that would pose as signal. So ``TU = AU + EU`` holds to
    within ``ε``.

    Parameters
    ----------
    x : numpy array or xarray.DataArray
        Probabilities, float16/float32/float64, dims ``(eu, au, class, y, x)`` or
        ``(image, eu, au, class, y, x)``, or volumes ``(image, eu, au, class, z, y,
        x)`` (one volume ``(eu, au, class, z, y, x)`` with ``spatial=3``). A DataArray
        is matched by dim name (any order, any extra leading dims; with a ``z`` dim it
        holds volumes) and may be numpy- or dask-backed; a dask input gives a lazy
        result computed block by block (volumes keep their chunks along ``z``: the
        decomposition is per voxel).
    check : bool
        Raise :class:`~uqeval.UQEvalError` naming the image when a value is NaN, inf or
        negative, or a sample does not sum to 1 over ``class``. Costs nothing extra:
        the statistics come out of the same pass.
    spatial : int, optional
        For a numpy array: 2 (images) or 3 (volumes) spatial dims at its end. Default:
        5 or 6 dims are images, 7 dims volumes; a single volume needs ``spatial=3``.

    Returns
    -------
    xarray.Dataset
        ``au``, ``eu``, ``tu`` (..., [z,] y, x) float32 in nats; ``mean`` (..., class,
        [z,] y, x) float32, the Bayesian model average; ``pred`` (..., [z,] y, x) uint8, its argmax
        (first class on ties). With ``eu = 1`` the ``au`` samples are treated as the
        members (the study's "no EU" convention), so ``AU = mean_a H(p_a)`` and ``EU``
        is the mutual information over samples; ``attrs["eu_convention"]`` says which
        applied.

    Raises
    ------
    UQEvalError
        For ``eu = au = 1`` (a deterministic model has no decomposition), fewer than
        two classes, a dtype that is not floating, or bad values (see ``check``).

    See Also
    --------
    scipy.stats.entropy : ``H`` of one distribution, the reference used in the tests.
    """
    if isinstance(x, xr.DataArray):
        return _decompose_dataarray(x, check=check)
    array = np.asarray(x)
    if spatial not in (None, 2, 3):
        raise UQEvalError(f"decompose: `spatial` is {spatial!r}; expected 2 (y, x) or 3 (z, y, x)")
    n_spatial = spatial if spatial is not None else (3 if array.ndim == 7 else 2)
    cube_dims = CUBE_DIMS if n_spatial == 2 else VOLUME_CUBE_DIMS
    if array.ndim not in (len(cube_dims), len(cube_dims) + 1):
        # Without `spatial`, the message of a store of images, as it always was.
        dims = CUBE_DIMS if spatial is None else cube_dims
        expected = f"{dims} or ({IMAGE_DIM}, {', '.join(dims)})"
        raise UQEvalError(
            f"decompose: expected dims {expected}, got an array with {array.ndim} dims of shape {array.shape}"
        )
    single = array.ndim == len(cube_dims)
    batch = array[None] if single else array
    ids = ["cube"] if single else list(range(batch.shape[0]))
    maps = decompose_batch(batch, ids, check=check)
    dataset = _to_dataset(maps, leading=() if single else (IMAGE_DIM,), squeeze=single)
    return dataset


def decompose_batch(
    cubes: np.ndarray, image_ids: Sequence[object], *, check: bool = True, eu_floor: float = EU_FLOOR
) -> dict[str, np.ndarray]:
    """Decompose ``(image, eu, au, class, y, x)`` or ``(image, eu, au, class, z, y, x)``
    numpy cubes; return plain arrays.

    The engine under :func:`decompose`: ``au``, ``eu``, ``tu``, ``pred`` (image, [z,] y, x),
    ``mean`` (image, class, [z,] y, x) and ``eu_convention``; the kernel sees every
    pixel (voxel) alike, so a volume is decomposed as its voxels. ``image_ids`` only names images
    in error messages. ``eu_floor`` (nats) is there to measure the raw rounding error
    (``benchmarks/eu_floor.py`` passes 0); scoring always uses the default.
    """
    if cubes.dtype.kind != "f":
        raise UQEvalError(f"decompose: probabilities must be floating point, got dtype {cubes.dtype}")
    if cubes.ndim not in (6, 7):
        raise UQEvalError(f"decompose: expected (image, eu, au, class, [z,] y, x) cubes, got shape {cubes.shape}")
    n_images, n_members, n_samples, n_classes = cubes.shape[:4]
    spatial = cubes.shape[4:]
    check_decomposable(n_members, n_samples, n_classes, "decompose")
    convention = "members"
    if n_members == 1:
        cubes = cubes.reshape(n_images, n_samples, 1, n_classes, *spatial)
        n_members, n_samples = n_samples, 1
        convention = "samples-as-members"
    n_pixels = math.prod(spatial)
    flat = np.ascontiguousarray(cubes).reshape(n_images, n_members, n_samples, n_classes, n_pixels)
    kernel_input = _kernels.as_kernel_input(flat)
    au = np.empty((n_images, n_pixels), dtype=np.float32)
    eu = np.empty_like(au)
    tu = np.empty_like(au)
    mean = np.empty((n_images, n_classes, n_pixels), dtype=np.float32)
    pred = np.empty((n_images, n_pixels), dtype=np.uint8 if n_classes <= 256 else np.int16)
    pixel_block = _kernels.decompose_block(n_images, n_pixels, numba.get_num_threads())
    stats = np.empty((n_images, -(-n_pixels // pixel_block), 4))
    kernel = _kernels.two_class_decompose_kernel if n_classes == 2 else _kernels.decompose_kernel
    kernel(kernel_input, au, eu, tu, mean, pred, stats, np.float32(eu_floor), pixel_block)
    if check:
        raise_for_value_stats(reduce_block_stats(stats), image_ids)
    shape = (n_images, *spatial)
    return {
        "au": au.reshape(shape),
        "eu": eu.reshape(shape),
        "tu": tu.reshape(shape),
        "mean": mean.reshape(n_images, n_classes, *spatial),
        "pred": pred.reshape(shape),
        "eu_convention": convention,
    }


_ATTRS = {
    "au": {"long_name": "aleatoric uncertainty", "units": "nat"},
    "eu": {"long_name": "epistemic uncertainty", "units": "nat"},
    "tu": {"long_name": "total uncertainty", "units": "nat"},
    "mean": {"long_name": "mean predicted probability"},
    "pred": {"long_name": "predicted class (argmax of mean)"},
}


def threading_layer() -> str:
    """numba's threading layer that the decomposition kernels run under.

    ``"omp"`` and ``"tbb"`` let two threads run parallel kernels at once;
    ``"workqueue"`` (used when neither OpenMP nor TBB is installed) does not. numba
    chooses the layer when the first parallel kernel runs, so a tiny decomposition is
    run first if none has.
    """
    try:
        return numba.threading_layer()
    except ValueError:
        _kernels.value_stats_kernel(np.zeros((1, 1, 2, 1), dtype=np.float32), np.empty((1, 1, 4)))
        return numba.threading_layer()


def _to_dataset(maps: dict, leading: tuple[str, ...], squeeze: bool) -> xr.Dataset:
    def take(array: np.ndarray) -> np.ndarray:
        return array[0] if squeeze else array

    n_spatial = maps["au"].ndim - len(leading) - (1 if squeeze else 0)
    spatial = VOLUME_CUBE_DIMS[3:] if n_spatial == 3 else CUBE_DIMS[3:]
    map_dims = (*leading, *spatial)
    data_vars = {
        name: xr.Variable(map_dims, take(maps[name]), attrs=_ATTRS[name]) for name in ("au", "eu", "tu", "pred")
    }
    data_vars["mean"] = xr.Variable((*leading, "class", *spatial), take(maps["mean"]), attrs=_ATTRS["mean"])
    return xr.Dataset(data_vars, attrs={"eu_convention": maps["eu_convention"]})


def _decompose_dataarray(array: xr.DataArray, *, check: bool) -> xr.Dataset:
    cube_dims = VOLUME_CUBE_DIMS if "z" in array.dims else CUBE_DIMS
    missing = [dim for dim in cube_dims if dim not in array.dims]
    if missing:
        raise UQEvalError(
            f"decompose: DataArray {array.name or ''!s} lacks dim(s) {missing}; expected {cube_dims} (got {array.dims})"
        )
    leading = tuple(dim for dim in array.dims if dim not in cube_dims)
    array = array.transpose(*leading, *cube_dims)
    if array.chunks is None:
        return _decompose_numpy_dataarray(array, leading, check=check)
    # Whole cubes per block, except along `z`: the decomposition is per voxel, so slabs stay slabs.
    array = array.chunk({dim: -1 for dim in cube_dims if dim != "z"})
    template = _template(array, leading)
    return xr.map_blocks(_decompose_numpy_dataarray, array, args=(leading,), kwargs={"check": check}, template=template)


def _decompose_numpy_dataarray(array: xr.DataArray, leading: tuple[str, ...], *, check: bool) -> xr.Dataset:
    values = np.asarray(array.values)
    lead_shape = values.shape[: len(leading)]
    batch = values.reshape(-1, *values.shape[len(leading) :])
    ids = _image_ids(array, leading)
    maps = decompose_batch(batch, ids, check=check)
    for name in ("au", "eu", "tu", "pred", "mean"):
        maps[name] = maps[name].reshape(*lead_shape, *maps[name].shape[1:])
    dataset = _to_dataset(maps, leading, squeeze=False)
    coords = {name: coord for name, coord in array.coords.items() if set(coord.dims) <= set(dataset.dims)}
    return dataset.assign_coords(coords)


def _image_ids(array: xr.DataArray, leading: tuple[str, ...]) -> list[object]:
    if not leading:
        return ["cube"]
    if len(leading) == 1 and leading[0] in array.coords:
        return list(array.coords[leading[0]].values)
    return [tuple(int(i) for i in index) for index in np.ndindex(*array.shape[: len(leading)])]


def _template(array: xr.DataArray, leading: tuple[str, ...]) -> xr.Dataset:
    import dask.array as da

    lead_chunks = array.chunks[: len(leading)]
    lead_shape = array.shape[: len(leading)]
    first_spatial = len(leading) + len(SAMPLE_DIMS)
    spatial_shape = array.shape[first_spatial:]
    spatial_chunks = array.chunks[first_spatial:]
    n_classes = array.sizes["class"]
    n_members, n_samples = array.sizes["eu"], array.sizes["au"]
    check_decomposable(n_members, n_samples, n_classes, "decompose")

    def empty(extra: tuple[int, ...], dtype) -> da.Array:
        chunks = (*lead_chunks, *extra[: len(extra) - len(spatial_shape)], *spatial_chunks)
        return da.empty((*lead_shape, *extra), chunks=chunks, dtype=dtype)

    maps = {
        "au": empty(spatial_shape, np.float32),
        "eu": empty(spatial_shape, np.float32),
        "tu": empty(spatial_shape, np.float32),
        "pred": empty(spatial_shape, np.uint8 if n_classes <= 256 else np.int16),
        "mean": empty((n_classes, *spatial_shape), np.float32),
        "eu_convention": "members" if n_members > 1 else "samples-as-members",
    }
    dataset = _to_dataset(maps, leading, squeeze=False)
    coords = {name: coord for name, coord in array.coords.items() if set(coord.dims) <= set(dataset.dims)}
    return dataset.assign_coords(coords)
