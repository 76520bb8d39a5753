"""End-to-end throughput and peak memory of ``uqeval.score`` on float16 cube stores.

Two measurements (benchmarks/README.md):

1. **Rate**, on two stores of ``--images`` cubes of eu 10 × au 10 × class 2 × 128 × 128
   in float16, written by ``uqeval.CubeWriter`` with its defaults (Blosc LZ4, one image
   per chunk), with three raters' labels, ID calibration/test and one OOD domain:

   * ``random``: uniform random probabilities, which LZ4 barely compresses, so reading
     is cheap and the scorer's own work shows;
   * ``realistic``: smooth probability fields as a segmentation model gives (LZ4 ratio
     about 3.5), so decoding is a real share of the work.

   Contenders, timed round-robin in one process, best of ``--repeats``:

   * ``zarr read + decode``: every chunk of ``probs`` read through zarr in the batches
     the scorer uses (what reading the data the ordinary way costs);
   * ``raw decode``: the chunk files' bytes read and decoded with Blosc straight into
     one buffer, one chunk after another (the decoding itself, without zarr);
   * ``raw decode, N threads``: the same on all cores at once: the machine's limit for
     merely decoding the store;
   * ``uqeval.score``: the whole job with the default tasks (OODD, AMB, CAL with Platt
     scaling, border aggregation), returning the results.

   Ratios ``t_baseline / t_score``. Targets: against ``zarr read + decode`` ≥ 0.7 on the
   random store; against ``raw decode`` ≥ 0.6 on the realistic one. The command line
   (``uqeval score STORE --out DIR`` in a fresh process, report and figures included)
   is timed once per store for information.

2. **Memory.** A store of at least ``--large-gb`` GB of decoded probabilities is
   scored in a fresh process; its peak resident memory (``VmHWM``) must stay below
   1.5 GB. The large store repeats a pool of distinct cubes under new ids, which is
   fast to write and costs the scorer the same as distinct data.

**Volumes.** ``--volume Z,Y,X`` makes both rate stores of ``--images`` volumes (default 8)
of eu 4 × au 2 × class 2 × Z × Y × X float16 (``--eu``, ``--au``), written by ``CubeWriter``
with its defaults (z-slab chunks of about 8 MiB once a volume is larger than that), the
realistic one smooth in all three dims. The raw decode then decodes every chunk of the
grid, slab by slab, into a slot of its own; the targets are the same. The memory of
volumes is measured by ``benchmarks/bench_volume_memory.py``.

The stores live in a temporary folder that was just written, so reads come mostly
from the page cache: the benchmark measures decoding and compute, not the disk.

``--check`` first checks that ``uqeval.score`` decodes the chunk files of a store
written by ``CubeWriter`` directly (``uqeval/scoring/chunk_files.py``) rather than
falling back to zarr's read path, which it does silently for any layout it does not
know (a change of the writer's or zarr's defaults, say). The check counts the images
each array's reads took each way (``uqeval.scoring.chunk_files.READS``); it does not
time them. Then it exits with status 1 if any target is missed.

Run: ``.venv/bin/python benchmarks/bench_score.py [--check]`` (about 3 minutes; writes
about 4 GB to a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from _timing import best_times, print_table
from bench_decompose import volume_shape
from bench_store import make_probs, make_volume_probs, store_bytes
from numcodecs import Blosc

import uqeval
from uqeval.scoring.batches import BATCH_BYTES, batch_ranges
from uqeval.scoring.chunk_files import READS
from uqeval.scoring.sources import cube_source

#: ``t_zarr_read / t_score`` on the random store, and ``t_raw_decode / t_score`` on the realistic one.
RATE_TARGETS = {"random": ("zarr read + decode", 0.7), "realistic": ("raw decode", 0.6)}
MEMORY_TARGET_GB = 1.5
#: Images of the store on which ``--check`` checks the direct path (at most ``--images``).
CHECK_IMAGES = 16


def random_probs(
    n_images: int, seed: int, eu: int = 10, au: int = 10, spatial: tuple[int, ...] = (128, 128)
) -> np.ndarray:
    """Uniform random two-class probabilities (image, eu, au, class 2, *spatial) in float16."""
    rng = np.random.default_rng(seed)
    foreground = rng.random((n_images, eu, au, 1, *spatial), dtype=np.float32)
    return np.concatenate([1 - foreground, foreground], axis=3).astype(np.float16)


def write_store(
    path: Path,
    pool: np.ndarray,
    n_images: int,
    seed: int,
    chunk_images: int | None = None,
    chunk_depth: int | None = None,
) -> None:
    """A cube store of ``n_images`` images (or volumes, for a 7-d ``pool``) cycling through
    ``pool``, with labels, domain and role; ``chunk_images`` images per chunk (default: the
    writer's; volumes larger than its chunk size are chunked in z-slabs, of ``chunk_depth``
    slices when given)."""
    rng = np.random.default_rng(seed)
    n_pool, eu, au, n_classes, *spatial = pool.shape
    depth = spatial[0] if len(spatial) == 3 else None
    foreground = pool[:, :, :, 1].mean(axis=(1, 2))
    raters = 3
    per_append = 8 if depth is None else 1  # whole volumes are large: one at a time
    with uqeval.CubeWriter(
        path,
        n_classes=n_classes,
        eu=eu,
        au=au,
        height=spatial[-2],
        width=spatial[-1],
        depth=depth,
        raters=raters,
        model="bench",
        chunk_images=chunk_images,
        chunk_depth=chunk_depth,
    ) as writer:
        for start in range(0, n_images, per_append):
            indices = np.arange(start, min(start + per_append, n_images))
            source = indices % n_pool
            noise = rng.normal(0, 0.15, (len(indices), raters, *spatial))
            labels = (foreground[source][:, None] + noise > 0.5).astype(np.uint8)
            domain = np.where(indices % 2 == 0, "id", "noise")
            role = np.where((indices % 2 == 0) & (indices % 8 == 0), "calibration", "test")
            writer.append(
                pool[source],
                labels=labels,
                domain=list(domain),
                role=list(role),
                image_ids=[f"image-{i:05d}" for i in indices],
            )


def read_every_chunk(path: Path) -> None:
    """Read and decode all of ``probs`` in the scorer's batches (the baseline)."""
    group = zarr.open_group(path, mode="r")
    probs = group["probs"]
    source = cube_source(uqeval.open_cube(path), path)
    ranges = batch_ranges(source.chunk_sizes, source.bytes_per_image, BATCH_BYTES)
    for start, stop in ranges:
        probs[start:stop]


def peak_memory_gb(path: Path) -> tuple[float, float, float]:
    """Score ``path`` in a fresh process; return (peak RSS in GB, seconds, peak RSS after import in GB).

    The peak is the kernel's high-water mark of the process's resident memory
    (``VmHWM``), which starts afresh at ``exec``; ``ru_maxrss`` would not, since a forked
    child inherits the parent's.
    """
    script = textwrap.dedent(
        f"""
        import time
        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        import uqeval
        baseline = peak()
        start = time.perf_counter()
        uqeval.score({str(path)!r})
        elapsed = time.perf_counter() - start
        print(peak(), elapsed, baseline)
        """
    )
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    peak_kb, elapsed, baseline_kb = output.split()
    return int(peak_kb) / 2**20, float(elapsed), int(baseline_kb) / 2**20


class RawDecoder:
    """The chunk files of ``probs`` read and decoded with Blosc straight into one buffer.

    Written against the zarr v3 format (the chunk keys come from the array's metadata),
    independent of uqeval's own reader. Every chunk of the array's grid is decoded into a
    slot of its own: for chunks along ``image`` only, the slots end to end are the array
    (``out[:n_images]``); a volume chunked in z-slabs has a slot per slab.
    """

    def __init__(self, path: Path) -> None:
        array = zarr.open_group(path, mode="r")["probs"]
        codecs = [codec.to_dict()["name"] for codec in array.metadata.codecs]
        if codecs != ["bytes", "blosc"]:
            raise SystemExit(f"{path}: raw decode expects the codecs bytes + blosc, got {codecs}")
        self.chunk = array.chunks[0]
        grid = [-(-size // chunk) for size, chunk in zip(array.shape, array.chunks, strict=True)]
        self.files = [path / "probs" / array.metadata.encode_chunk_key(key) for key in np.ndindex(*grid)]
        self.out = np.empty((len(self.files) * self.chunk, *array.chunks[1:]), dtype=array.dtype)
        self.codec = Blosc()  # decodes any Blosc frame: the frame's header holds its settings

    def decode(self, number: int) -> None:
        with open(self.files[number], "rb") as file:
            frame = file.read()
        self.codec.decode(frame, out=self.out[number * self.chunk : (number + 1) * self.chunk])

    def serial(self) -> None:
        for number in range(len(self.files)):
            self.decode(number)

    def parallel(self, pool: ThreadPoolExecutor) -> None:
        list(pool.map(self.decode, range(len(self.files))))


def direct_path_problem(store: Path) -> str | None:
    """Score ``store`` and say why its arrays were not all decoded straight from their
    chunk files; None when they were.

    Counted, not timed: :data:`uqeval.scoring.chunk_files.READS` tallies, per array,
    the images read from the chunk files and those read through zarr.
    """
    READS.reset()
    uqeval.score(store)
    reads = READS.by_array()
    if "probs" not in reads:
        return f"{store}: uqeval.score read no `probs` through the store reader (arrays read: {sorted(reads)})"
    fallbacks = [
        f"`{name}`: {count.through_zarr} image(s) and {count.planes_through_zarr} plane(s) through zarr, "
        f"{count.direct} image(s) and {count.direct_planes} plane(s) from its chunk files"
        for name, count in reads.items()
        if count.through_zarr or count.planes_through_zarr or not (count.direct or count.direct_planes)
    ]
    if not fallbacks:
        return None
    group = zarr.open_group(store, mode="r")
    codecs = {name: [codec.to_dict()["name"] for codec in group[name].metadata.codecs] for name in reads}
    return (
        f"{store}: uqeval.score did not take the direct chunk-file path; it read {'; '.join(fallbacks)}. "
        f"The arrays' codecs are {codecs}; uqeval/scoring/chunk_files.py decodes zarr v3 arrays with codecs "
        "bytes (little endian) and optionally blosc, chunked along `image` only, in a local folder. "
        "Did CubeWriter's or zarr's defaults change?"
    )


def check_direct_path(root: Path, pool: np.ndarray, n_images: int, seed: int) -> bool:
    """Write a store as the rate stores are written and report whether scoring it takes the direct path."""
    store = root / "direct-path.zarr"
    write_store(store, pool, n_images, seed)
    problem = direct_path_problem(store)
    if problem is not None:
        print(f"bench_score --check: {problem}", file=sys.stderr)
        return False
    counts = ", ".join(f"`{name}` {count.direct}" for name, count in READS.by_array().items())
    print(f"direct path: uqeval.score read every image from the chunk files ({counts}), none through zarr")
    return True


def time_cli(path: Path, out: Path) -> float:
    """Seconds for ``uqeval score path --out out`` in a fresh process."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "uqeval", "score", str(path), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def measure_rate(root: Path, kind: str, pool: np.ndarray, n_images: int, repeats: int, seed: int) -> bool:
    """Print the throughput table of one store; return whether its target ratio holds."""
    store = root / f"{kind}.zarr"
    write_store(store, pool, n_images, seed)
    decoder = RawDecoder(store)
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as workers:
        times = best_times(
            {
                "zarr read + decode": lambda: read_every_chunk(store),
                "raw decode": decoder.serial,
                f"raw decode, {threads} threads": lambda: decoder.parallel(workers),
                "uqeval.score": lambda: uqeval.score(store),
            },
            repeats=repeats,
        )
    cli = time_cli(store, root / f"{kind}-report")
    decoded = n_images * pool[0].nbytes / 1e9
    noun = "images" if pool.ndim == 6 else f"volumes in {len(decoder.files)} chunks"
    print(
        f"\n{kind} store: {n_images} {noun} of {'×'.join(map(str, pool.shape[1:]))} float16, {decoded:.2f} GB "
        f"decoded, {store_bytes(store) / 1e9:.2f} GB on disk"
    )
    score = times["uqeval.score"]
    rows = [
        [name, f"{seconds:.3f}", f"{n_images / seconds:.1f}", f"{decoded / seconds:.2f}", f"{seconds / score:.2f}"]
        for name, seconds in times.items()
    ]
    rows.append(
        [
            "uqeval score (command line, once)",
            f"{cli:.3f}",
            f"{n_images / cli:.1f}",
            f"{decoded / cli:.2f}",
            f"{cli / score:.2f}",
        ]
    )
    print_table(
        f"Throughput, {kind} store (best of repeats)",
        ["contender", "seconds", "images/s", "GB/s decoded", "t / t_score"],
        rows,
    )
    baseline, target = RATE_TARGETS[kind]
    ratio = times[baseline] / score
    verdict = "ok" if ratio >= target else "MISSED"
    print(f"\nt({baseline}) / t(uqeval.score) = {ratio:.2f} on the {kind} store (target ≥ {target}) {verdict}")
    return ratio >= target


def measure_memory(root: Path, pool: np.ndarray, large_gb: float, seed: int) -> bool:
    """Score a store of ``large_gb`` decoded GB in a fresh process; return whether the peak RSS target holds."""
    n_images = int(np.ceil(large_gb * 1e9 / pool[0].nbytes))
    store = root / "large.zarr"
    start = time.perf_counter()
    write_store(store, pool, n_images, seed)
    written = time.perf_counter() - start
    peak, elapsed, baseline = peak_memory_gb(store)
    print(
        f"\nmemory store: {n_images} images, {n_images * pool[0].nbytes / 1e9:.2f} GB decoded, "
        f"{store_bytes(store) / 1e9:.2f} GB on disk (written in {written:.0f} s)"
    )
    print(f"scored in {elapsed:.1f} s ({n_images / elapsed:.1f} images/s); peak RSS after import {baseline:.2f} GB")
    verdict = "ok" if peak < MEMORY_TARGET_GB else "MISSED"
    print(f"peak RSS {peak:.2f} GB (target < {MEMORY_TARGET_GB} GB) {verdict}")
    return peak < MEMORY_TARGET_GB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="images (volumes) of the rate store (160; 8)")
    parser.add_argument("--pool", type=int, default=None, help="distinct cubes generated (32; 4 volumes)")
    parser.add_argument(
        "--volume",
        type=volume_shape,
        default=None,
        metavar="Z,Y,X",
        help="rate stores of volumes of Z × Y × X voxels instead of 128 × 128 images (no memory "
        "measurement: benchmarks/bench_volume_memory.py measures volumes)",
    )
    parser.add_argument("--eu", type=int, default=None, help="members (10; 4 for volumes)")
    parser.add_argument("--au", type=int, default=None, help="samples per member (10; 2 for volumes)")
    parser.add_argument("--large-gb", type=float, default=4.0, help="decoded size of the memory store (GB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="only measure the rate")
    parser.add_argument("--skip-rate", action="store_true", help="only measure the memory")
    parser.add_argument(
        "--stores", default="random,realistic", help="rate stores, comma-separated: random, realistic (default both)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 if scoring a CubeWriter store does not decode its chunk files directly, "
        "or if a target is missed",
    )
    args = parser.parse_args(argv)
    volumes = args.volume is not None
    n_images = args.images or (8 if volumes else 160)
    n_pool = args.pool or (4 if volumes else 32)
    eu, au = args.eu or (4 if volumes else 10), args.au or (2 if volumes else 10)
    spatial = args.volume or (128, 128)
    if volumes and not args.skip_memory:
        print("volumes: no memory measurement here (benchmarks/bench_volume_memory.py measures it)")
        args.skip_memory = True

    load_before = os.getloadavg()[0]
    if volumes:
        pool = make_volume_probs(n_pool, eu, au, args.volume, args.seed).astype(np.float16)
    else:
        pool = make_probs(n_pool, eu, au, spatial[0], args.seed).astype(np.float16)
    met = True
    with tempfile.TemporaryDirectory(prefix="uqeval-bench-score-") as tmp:
        if args.check and not check_direct_path(Path(tmp), pool, min(n_images, CHECK_IMAGES), args.seed):
            return 1
        for kind in [] if args.skip_rate else args.stores.split(","):
            if kind not in ("realistic", "random"):
                parser.error(f"--stores: unknown store {kind!r}; use random and/or realistic")
            rate_pool = pool if kind == "realistic" else random_probs(n_pool, args.seed, eu, au, spatial)
            met &= measure_rate(Path(tmp), kind, rate_pool, n_images, args.repeats, args.seed)
        if not args.skip_memory:
            met &= measure_memory(Path(tmp), pool, args.large_gb, args.seed)
    print(f"\nload average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
