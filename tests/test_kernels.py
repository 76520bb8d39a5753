"""The decomposition kernel's fast value checks against the exact, value-by-value ones.

The kernel tracks the checks as integer reductions of float bit patterns and re-checks
a block value by value only when those look odd; whatever the input, its statistics
must equal :func:`uqeval.checks.value_stats` on the same values.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uqeval import _kernels
from uqeval.checks import reduce_block_stats, value_stats

PROPERTY_SETTINGS = settings(max_examples=80, deadline=None)

#: Values that a broken store may hold, each breaking the contract differently or not
#: at all (-0.0 and 0.0 are valid; 7e4 is finite but sums past the fast path's bound).
ODD_VALUES = [np.nan, np.inf, -np.inf, -1e-3, -0.0, 0.0, 1.5, 7e4, 1e-40, 3.0e38]


def kernel_stats(values: np.ndarray, pixel_block: int) -> np.ndarray:
    """``decompose_kernel``'s value statistics of ``(image, eu, au, class, pixel)`` values."""
    n_images, _, _, n_classes, n_pixels = values.shape
    x = _kernels.as_kernel_input(np.ascontiguousarray(values))
    au = np.empty((n_images, n_pixels), dtype=np.float32)
    stats = np.empty((n_images, -(-n_pixels // pixel_block), 4))
    _kernels.decompose_kernel(
        x,
        au,
        au.copy(),
        au.copy(),
        np.empty((n_images, n_classes, n_pixels), dtype=np.float32),
        np.empty((n_images, n_pixels), dtype=np.uint8),
        stats,
        np.float32(0.0),
        pixel_block,
    )
    return reduce_block_stats(stats)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@PROPERTY_SETTINGS
@given(
    n_members=st.integers(1, 3),
    n_samples=st.integers(1, 5),
    n_classes=st.integers(2, 4),
    n_pixels=st.integers(1, 200),
    pixel_block=st.sampled_from([16, 64, 1024]),
    odd=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(ODD_VALUES)), max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_checks_equal_the_exact_ones(dtype, n_members, n_samples, n_classes, n_pixels, pixel_block, odd, seed):
    rng = np.random.default_rng(seed)
    shape = (2, n_members, n_samples, n_classes, n_pixels)
    values = rng.dirichlet(np.ones(n_classes), size=(2, n_members, n_samples, n_pixels))
    values = np.ascontiguousarray(np.moveaxis(values, -1, 3), dtype=dtype)
    flat = values.reshape(-1)
    with np.errstate(over="ignore"):
        for index, value in odd:
            flat[index % flat.size] = value
    want = value_stats(values.reshape(*shape[:4], 1, n_pixels))
    got = kernel_stats(values, pixel_block)
    np.testing.assert_array_equal(got, want)


def test_negative_zero_is_valid_and_takes_the_exact_path():
    values = np.full((1, 2, 2, 2, 300), 0.5, dtype=np.float32)
    values[0, 1, 0, :, 17] = [-0.0, 1.0]
    got = kernel_stats(values, 64)
    np.testing.assert_array_equal(got, [[0, 0.0, 1.0, 1.0]])
    assert np.signbit(got[0, 1])  # the exact minimum: -0.0, which is not below 0


@pytest.mark.parametrize(
    ("n_images", "n_pixels", "n_threads", "block"),
    [
        (8, 128 * 128, 2, 16384),  # one block per image: 8 tasks for 2 threads
        (1, 128 * 128, 2, 4096),  # one image: split so that each thread gets two tasks
        (1, 512 * 512, 2, 16384),  # large images: the longest block
        (1, 100, 2, 1024),  # tiny: never below the smallest block
        (3, 100 * 131, 2, 6592),  # 2 blocks per image, a multiple of 64
    ],
)
def test_decompose_block(n_images, n_pixels, n_threads, block):
    assert _kernels.decompose_block(n_images, n_pixels, n_threads) == block


@pytest.mark.slow  # compiles the kernels for a generic CPU in a fresh process: about 30 s
def test_without_f16c_float16_is_widened_by_bit_arithmetic(tmp_path):
    """With numba compiling for a generic CPU, the kernels take the bit-arithmetic path;
    its maps equal those of the same cube in float32, and its checks the exact ones."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from uqeval import _kernels
        from uqeval.checks import value_stats
        from uqeval.decomposition import decompose_batch
        from test_kernels import kernel_stats

        assert not _kernels.HALF_CONVERSION
        rng = np.random.default_rng(3)
        cube = rng.dirichlet(np.ones(3), size=(2, 3, 4, 9, 11)).transpose(0, 1, 2, 5, 3, 4)
        half = np.ascontiguousarray(cube, dtype=np.float16)
        ours = decompose_batch(half, [0, 1])
        wide = decompose_batch(half.astype(np.float32), [0, 1])
        for name in ("au", "eu", "tu", "mean", "pred"):
            np.testing.assert_array_equal(ours[name], wide[name])
        bad = half.reshape(2, 3, 4, 3, 99).copy()
        bad[1, 2, 3, 0, 50] = np.inf
        bad[0, 0, 1, 2, 7] = np.nan
        np.testing.assert_array_equal(kernel_stats(bad, 16), value_stats(bad.reshape(2, 3, 4, 3, 1, 99)))
        print("ok")
        """
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)}
    tests = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-c", script, str(tests)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
