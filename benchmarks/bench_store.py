"""Read-back throughput and size of the cube store's encoding, against zarr's default.

Contenders, each holding the same probability cubes (image, eu, au, class, y, x) with the
same chunk shape (``CubeWriter.chunk_images`` images per chunk):

* ``uqeval default``: written by ``uqeval.CubeWriter`` with its defaults (float16 +
  ``uqeval.cube.default_compressor()``), read as ``zarr.open_group(path)["probs"][:]``;
* ``zarr default``: float32 via ``zarr.create_array(path, shape, chunks, dtype="float32")``
  with no ``compressors`` argument (zarr's default, Zstandard), read as ``[:]``;
* alternative codecs on float16, written with zarr directly, to document the choice.

Ratio (benchmarks/README.md): ``t_zarr_default / t_uqeval >= 3``. Throughput is given in GB/s of
float32-equivalent probabilities (number of probabilities x 4 bytes / read time) so that
float16 and float32 stores compare directly. Sizes are bytes on disk.

The data are realistic probability cubes, not white noise: ``p1 = sigmoid(logit)`` with a
smooth, large-amplitude logit field per image (most pixels near 0 or 1) plus smaller
smooth noise per member and per sample; ``p0 = 1 - p1``.

The stores live in a temporary directory that was just written, so reads come from the
page cache: the benchmark measures decoding, not the disk. Every time is the best
(minimum) of ``--repeats`` reads after a warm-up read; contenders are timed round-robin.

Run: ``.venv/bin/python benchmarks/bench_store.py [--check]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from _timing import best_times, print_table
from scipy.ndimage import gaussian_filter

import uqeval
from uqeval.cube import default_compressor

TARGET = 3.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, spatial: int = 2) -> np.ndarray:
    """Gaussian-filtered normal noise over the last ``spatial`` axes, rescaled to unit std."""
    axes = tuple(range(-spatial, 0))
    sigmas = (0,) * (len(shape) - spatial) + (sigma,) * spatial
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigmas)
    return field / field.std(axis=axes, keepdims=True)


def make_probs(n_images: int, eu: int, au: int, size: int, seed: int) -> np.ndarray:
    """Two-class probability cubes (image, eu, au, class, y, x), float32."""
    rng = np.random.default_rng(seed)
    probs = np.empty((n_images, eu, au, 2, size, size), dtype=np.float32)
    for image in range(n_images):
        logit = 8.0 * smooth_noise(rng, (1, 1, size, size), sigma=8.0)  # the image: mostly |logit| > 3
        logit = logit + 1.5 * smooth_noise(rng, (eu, 1, size, size), sigma=6.0)  # member disagreement
        logit = logit + 0.75 * smooth_noise(rng, (eu, au, size, size), sigma=3.0)  # sample noise
        p1 = 1.0 / (1.0 + np.exp(-logit))
        probs[image, :, :, 1] = p1
        probs[image, :, :, 0] = 1.0 - p1
    return probs


def make_volume_probs(n_volumes: int, eu: int, au: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Two-class probability cubes of volumes (image, eu, au, class, z, y, x), float32:
    :func:`make_probs`'s fields, smooth in all three dims."""
    rng = np.random.default_rng(seed)
    probs = np.empty((n_volumes, eu, au, 2, *shape), dtype=np.float32)
    for volume in range(n_volumes):
        logit = 8.0 * smooth_noise(rng, (1, 1, *shape), sigma=8.0, spatial=3)
        logit = logit + 1.5 * smooth_noise(rng, (eu, 1, *shape), sigma=6.0, spatial=3)
        logit = logit + 0.75 * smooth_noise(rng, (eu, au, *shape), sigma=3.0, spatial=3)
        p1 = 1.0 / (1.0 + np.exp(-logit))
        probs[volume, :, :, 1] = p1
        probs[volume, :, :, 0] = 1.0 - p1
    return probs


def store_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def alternative_codecs() -> dict[str, object]:
    """float16 codecs compared with the default; ``None`` stores raw bytes."""
    return {
        "f16 none": None,
        "f16 blosc lz4 shuffle": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "f16 blosc lz4 bitshuffle": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "f16 blosc zstd-1 shuffle": zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        "f16 zstd level 0": zarr.codecs.ZstdCodec(level=0),
    }


def codec_name(array: zarr.Array) -> str:
    """The array's compressors as stored in its metadata, in short."""
    names = []
    for codec in array.compressors:
        config = codec.to_dict().get("configuration", {})
        if isinstance(codec, zarr.codecs.BloscCodec):
            names.append(f"blosc {config['cname']} clevel {config['clevel']} {config['shuffle']}")
        elif isinstance(codec, zarr.codecs.ZstdCodec):
            names.append(f"zstd level {config['level']}")
        else:
            names.append(type(codec).__name__)
    return " + ".join(names) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--eu", type=int, default=10)
    parser.add_argument("--au", type=int, default=10)
    parser.add_argument("--size", type=int, default=128, help="height = width of each image")
    parser.add_argument("--repeats", type=int, default=9, help="timed reads per contender (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit with status 1 if the target ratio is missed")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    probs = make_probs(args.images, args.eu, args.au, args.size, args.seed)
    n_probs = probs.size
    half = probs.astype(np.float16)
    share_near = float(np.mean((probs[:, :, :, 1] < 0.05) | (probs[:, :, :, 1] > 0.95)))

    with tempfile.TemporaryDirectory(prefix="uqeval-bench-store-") as tmp:
        root = Path(tmp)
        paths: dict[str, Path] = {}
        codecs: dict[str, str] = {}

        paths["uqeval default"] = root / "uqeval.zarr"
        with uqeval.CubeWriter(
            paths["uqeval default"], n_classes=2, eu=args.eu, au=args.au, height=args.size, width=args.size
        ) as writer:
            for image in range(args.images):
                writer.append(probs[image : image + 1])
        chunks = (writer.chunk_images, *probs.shape[1:])
        uqeval_array = zarr.open_group(paths["uqeval default"], mode="r")["probs"]
        codecs["uqeval default"] = f"{uqeval_array.dtype}, {codec_name(uqeval_array)}"
        assert uqeval_array.dtype == np.float16 and uqeval_array.chunks == chunks
        expected_codec = default_compressor().to_dict()["configuration"]
        stored_codec = uqeval_array.compressors[0].to_dict()["configuration"]
        assert all(stored_codec[key] == expected_codec[key] for key in ("cname", "clevel", "shuffle")), stored_codec

        paths["zarr default"] = root / "zarr-default.zarr"
        baseline = zarr.create_array(paths["zarr default"], shape=probs.shape, chunks=chunks, dtype="float32")
        baseline[:] = probs
        codecs["zarr default"] = f"float32, {codec_name(baseline)}"

        for name, codec in alternative_codecs().items():
            paths[name] = root / f"{name.replace(' ', '-')}.zarr"
            array = zarr.create_array(paths[name], shape=half.shape, chunks=chunks, dtype="float16", compressors=codec)
            array[:] = half
            codecs[name] = f"float16, {codec_name(array)}"
        del probs

        # Every store must read back exactly what was written.
        for name, path in paths.items():
            if name == "uqeval default":
                values = zarr.open_group(path, mode="r")["probs"][:]
            else:
                values = zarr.open_array(path, mode="r")[:]
            expected = half if values.dtype == np.float16 else half.astype(np.float32)
            if values.dtype == np.float16:
                assert np.array_equal(values.view(np.uint16), expected.view(np.uint16)), name
            else:
                assert np.abs(values - expected).max() <= 1e-3, name

        def reader(name: str, path: Path) -> Callable[[], np.ndarray]:
            if name == "uqeval default":
                return lambda: zarr.open_group(path, mode="r")["probs"][:]
            return lambda: zarr.open_array(path, mode="r")[:]

        times = best_times({name: reader(name, path) for name, path in paths.items()}, args.repeats)
        sizes = {name: store_bytes(path) for name, path in paths.items()}

    raw32 = n_probs * 4
    t_default = times["zarr default"]
    t_uqeval = times["uqeval default"]
    print(
        f"{args.images} images x {half.shape[1:]} = {n_probs / 1e6:.0f} M probabilities "
        f"({raw32 / 1e6:.0f} MB as float32); {share_near:.0%} of p1 within 0.05 of 0 or 1; "
        f"chunks {chunks}; zarr {zarr.__version__}, {os.cpu_count()} CPUs; best of {args.repeats} reads"
    )

    def row(name: str) -> list[str]:
        return [
            name,
            codecs[name],
            f"{times[name] * 1e3:.0f}",
            f"{raw32 / times[name] / 1e9:.2f}",
            f"{sizes[name] / 1e6:.1f}",
            f"{raw32 / sizes[name]:.2f}",
            f"{t_default / times[name]:.2f}",
        ]

    header = ["store", "encoding", "read ms", "GB/s (f32 eq.)", "MB on disk", "f32 bytes / size", "t_zarr_default / t"]
    print_table("uqeval default vs zarr default", header, [row("uqeval default"), row("zarr default")])
    print_table("alternative codecs on float16 (same chunks)", header, [row(name) for name in alternative_codecs()])

    print(f"\n1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work skews times)")
    ratio = t_default / t_uqeval
    status = "ok" if ratio >= TARGET else "MISSED"
    print_table(
        "ratio (benchmarks/README.md)",
        ["ratio", "measured", "target", "status"],
        [["t_zarr_default / t_uqeval (read)", f"{ratio:.2f}", f">= {TARGET:g}", status]],
    )
    if ratio < TARGET:
        meeting = [name for name in alternative_codecs() if t_default / times[name] >= TARGET]
        print(f"\nmissed by {TARGET / ratio:.2f}x (reads need to be {TARGET / ratio:.2f}x faster).")
        for name in meeting:
            print(
                f"  {name} would meet it: {t_default / times[name]:.2f}x at {sizes[name] / 1e6:.1f} MB "
                f"({sizes[name] / sizes['uqeval default']:.2f}x the default's size)"
            )
        if not meeting:
            print("  none of the alternative codecs meets it either.")
        if args.check:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
