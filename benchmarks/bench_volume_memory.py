"""Peak resident memory and wall time of ``uqeval score`` on a store of large volumes.

The store (issue 28's memory target): ``--volumes`` volumes (default 3) of eu 4 × au 2 ×
class 2 × 128 × 512 × 512 float16 probabilities (1.07 GB decoded each), two raters'
labels; the first volume is ID calibration, the second ID test, the third OOD test (any
more ID test). It is
written once by ``uqeval.CubeWriter`` slab by slab (:meth:`uqeval.CubeWriter.volume`,
``write_slab``), so writing holds one slab and never a whole volume, and kept in
``--data`` for later runs (its name gives its sizes). The probabilities are smooth:
``p1 = sigmoid(logit)``, the logit a sum of plane waves per volume (large amplitude,
mostly ``|logit| > 3``), per member and per sample (smaller), so Blosc LZ4 compresses
them as it would a model's output.

``uqeval score STORE --out DIR`` then runs in a fresh process. Measured:

* its peak resident memory, the kernel's high-water mark (``VmHWM``) read by the
  process itself just before it exits (a fresh ``exec`` starts it at zero, unlike
  ``ru_maxrss``, which a child inherits from the process that forked it);
* the per-stage picture: a thread of the scoring process samples its resident memory
  (``VmRSS``) every ``--interval`` seconds, with the uqeval functions its main thread
  is in; the samples are grouped by the outermost ``--depth`` of those functions
  (opening the store, fitting, scoring, writing the report and figures);
* its wall time.

Target: peak RSS < 1.2 GB (10^9 bytes) on the default store. ``--check`` exits with
status 1 when it is missed.

Run: ``.venv/bin/python benchmarks/bench_volume_memory.py --data /path/to/folder``
(writes a 1.6 GB store once, 5 minutes on two busy cores; today's scorer takes 2–5
minutes on it), or ``--shape 16,64,64`` to try it in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _timing import print_table
from bench_store import store_bytes

import uqeval

TARGET_BYTES = 1.2e9
#: (domain, role) of the volumes in order; every volume past the first three is ID test.
PLAN = [("id", "calibration"), ("id", "test"), ("noise", "test")]
#: Slices the writer takes per ``write_slab`` call (rounded to whole chunks).
SLAB_SLICES = 8


@dataclass(frozen=True)
class Waves:
    """Plane waves ``sin(2π (f · r / extent) + φ)`` summed over the last axis of each field."""

    frequency: np.ndarray  # (..., wave, 3): cycles over the volume's z, y, x
    phase: np.ndarray  # (..., wave)

    @staticmethod
    def draw(rng: np.random.Generator, lead: tuple[int, ...], n_waves: int, top: float) -> Waves:
        return Waves(rng.uniform(0.5, top, (*lead, n_waves, 3)), rng.uniform(0, 2 * np.pi, (*lead, n_waves)))

    def slab(self, z0: int, z1: int, extent: tuple[int, int, int]) -> np.ndarray:
        """The summed waves on slices ``z0:z1``, ``(*lead, z1 - z0, y, x)`` float32, unit std."""
        bounds = zip((z0, 0, 0), (z1, *extent[1:]), extent, strict=True)
        axes = [np.arange(low, high, dtype=np.float32) / n for low, high, n in bounds]
        lead = self.phase.shape[:-1]
        out = np.zeros((*lead, z1 - z0, extent[1], extent[2]), dtype=np.float32)
        for index in np.ndindex(*lead, self.phase.shape[-1]):
            f = self.frequency[index].astype(np.float32) * np.float32(2 * np.pi)
            angle = f[0] * axes[0][:, None, None] + f[1] * axes[1][None, :, None] + f[2] * axes[2][None, None, :]
            out[index[:-1]] += np.sin(angle + np.float32(self.phase[index]))
        out *= np.float32(np.sqrt(2 / self.phase.shape[-1]))
        return out


@dataclass(frozen=True)
class VolumeField:
    """The logit field of one volume: the volume's own, per member, per sample."""

    volume: Waves
    member: Waves
    sample: Waves
    member_gain: float

    @staticmethod
    def draw(seed: int, eu: int, au: int, ood: bool) -> VolumeField:
        rng = np.random.default_rng(seed)
        return VolumeField(
            volume=Waves.draw(rng, (), 4, 3.0),
            member=Waves.draw(rng, (eu, 1), 2, 4.0),
            sample=Waves.draw(rng, (eu, au), 2, 6.0),
            member_gain=3.0 if ood else 1.5,  # members disagree more on the OOD volume
        )

    def probs(self, z0: int, z1: int, extent: tuple[int, int, int]) -> np.ndarray:
        """``(eu, au, 2, z1 - z0, y, x)`` float32 probabilities of slices ``z0:z1``."""
        logit = 8.0 * self.volume.slab(z0, z1, extent)
        logit = logit + self.member_gain * self.member.slab(z0, z1, extent)
        logit = logit + 0.75 * self.sample.slab(z0, z1, extent)
        p1 = 1.0 / (1.0 + np.exp(-logit))
        return np.stack([1.0 - p1, p1], axis=2)

    def labels(self, raters: int, extent: tuple[int, int, int], seed: int) -> np.ndarray:
        """``(rater, z, y, x)`` uint8: the volume's field, thresholded with each rater's own wave."""
        rater_waves = Waves.draw(np.random.default_rng(seed), (raters,), 1, 2.0)
        out = np.empty((raters, *extent), dtype=np.uint8)
        for z0 in range(0, extent[0], SLAB_SLICES):
            z1 = min(z0 + SLAB_SLICES, extent[0])
            field = 8.0 * self.volume.slab(z0, z1, extent) + 2.0 * rater_waves.slab(z0, z1, extent)
            out[:, z0:z1] = field > 0
        return out


def store_name(n_volumes: int, eu: int, au: int, shape: tuple[int, int, int]) -> str:
    return f"volumes-{n_volumes}-eu{eu}-au{au}-c2-{'x'.join(map(str, shape))}.zarr"


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_volumes(path: Path, n_volumes: int, eu: int, au: int, shape: tuple[int, int, int], seed: int) -> None:
    """Write the store slab by slab: memory holds one slab of every member, and the labels."""
    raters = 2
    with uqeval.CubeWriter(
        path,
        n_classes=2,
        eu=eu,
        au=au,
        depth=shape[0],
        height=shape[1],
        width=shape[2],
        raters=raters,
        model="bench-volume-memory",
        spacing=(2.0, 0.8, 0.8),
        overwrite=True,
    ) as writer:
        step = max(1, SLAB_SLICES // writer.chunk_depth) * writer.chunk_depth
        for number in range(n_volumes):
            domain, role = PLAN[number] if number < len(PLAN) else ("id", "test")
            field = VolumeField.draw(seed + number, eu, au, ood=domain != "id")
            labels = field.labels(raters, shape, seed + 1000 + number)
            with writer.volume(f"volume-{number}", domain=domain, role=role, labels=labels) as volume:
                for z0 in range(0, shape[0], step):
                    volume.write_slab(z0, field.probs(z0, min(z0 + step, shape[0]), shape))


def cached_store(data: Path, n_volumes: int, eu: int, au: int, shape: tuple[int, int, int], seed: int) -> Path:
    """The store in ``data``, written unless a complete one is there already."""
    path = data / store_name(n_volumes, eu, au, shape)
    progress = uqeval.CubeWriter.progress(path)
    if progress is not None and progress.complete and progress.n_images == n_volumes:
        print(f"store: {path} (cached)")
        return path
    data.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_volumes(path, n_volumes, eu, au, shape, seed)
    print(
        f"store: {path} written in {time.perf_counter() - start:.0f} s, slab by slab; "
        f"peak RSS of this process so far {peak_rss_bytes() / 1e9:.2f} GB"
    )
    return path


#: Run in the scoring process: the command line, with a thread that samples the
#: process's resident memory and where in uqeval its main thread is; at exit, the
#: samples and the peak (VmHWM) go to a JSON file.
CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    report, interval, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    sys.argv = ["uqeval", *argv]
    main_thread, start, samples, done = threading.main_thread().ident, time.perf_counter(), [], threading.Event()

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])

    def where():
        frame, chain = sys._current_frames().get(main_thread), []
        while frame is not None:
            name = frame.f_code.co_filename
            if "/uqeval/" in name and "/uqeval/cli" not in name:
                chain.append(name.rsplit("/uqeval/", 1)[1][:-3] + ":" + frame.f_code.co_name)
            frame = frame.f_back
        return chain[::-1]

    def sample():
        while not done.wait(interval):
            samples.append((time.perf_counter() - start, status("VmRSS:"), where()))

    threading.Thread(target=sample, daemon=True).start()
    try:
        from uqeval.cli import main
        main()
    finally:
        done.set()
        Path(report).write_text(json.dumps({"peak_kb": status("VmHWM:"), "samples": samples}))
    """
)


@dataclass(frozen=True)
class Sample:
    """One sample of the scoring process: seconds since start, RSS in bytes, uqeval frames (outermost first)."""

    seconds: float
    rss: int
    frames: list[str]

    def stage(self, depth: int) -> str:
        return " > ".join(self.frames[:depth]) or "(start-up, outside uqeval)"


def score_in_subprocess(store: Path, out: Path, extra: list[str], interval: float) -> tuple[int, float, list[Sample]]:
    """Run ``uqeval score store --out out *extra``; return (peak RSS bytes, seconds, samples)."""
    with tempfile.NamedTemporaryFile(prefix="uqeval-rss-", suffix=".json", delete=False) as handle:
        report = Path(handle.name)
    argv = ["score", str(store), "--out", str(out), *extra]
    start = time.perf_counter()
    try:
        process = subprocess.run(
            [sys.executable, "-c", CHILD, str(report), str(interval), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if process.returncode != 0:
            raise SystemExit(f"uqeval score failed (status {process.returncode}):\n{process.stderr}")
        result = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    samples = [Sample(seconds, kb * 1024, frames) for seconds, kb, frames in result["samples"]]
    return result["peak_kb"] * 1024, elapsed, samples


def stage_rows(samples: list[Sample], depth: int, interval: float) -> list[list[str]]:
    """Per stage (the outermost ``depth`` uqeval frames), in order of first sight: when
    it was first seen, its seconds (samples × ``interval``) and its highest sampled RSS."""
    stages: dict[str, list[Sample]] = {}
    for sample in samples:
        stages.setdefault(sample.stage(depth), []).append(sample)
    rows = []
    for stage, inside in stages.items():
        peak = max(sample.rss for sample in inside)
        rows.append([stage, f"{inside[0].seconds:.1f}", f"{len(inside) * interval:.1f}", f"{peak / 1e9:.2f}"])
    return rows


def timeline_rows(samples: list[Sample], elapsed: float, depth: int, spans: int = 12) -> list[list[str]]:
    """Per ``spans`` equal spans of the run: the highest sampled RSS and the stage most sampled."""
    rows = []
    for span in range(spans):
        low, high = elapsed * span / spans, elapsed * (span + 1) / spans
        inside = [sample for sample in samples if low <= sample.seconds < high]
        if inside:
            stages = [sample.stage(depth) for sample in inside]
            common = max(set(stages), key=stages.count)
            rows.append([common, f"{low:.0f}–{high:.0f}", f"{max(s.rss for s in inside) / 1e9:.2f}"])
    return rows


def parse_shape(text: str) -> tuple[int, int, int]:
    values = tuple(int(part) for part in text.split(","))
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X (three positive integers), got {text!r}")
    return values  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "uqeval-bench-volumes",
        help="folder that keeps the store between runs (default: %(default)s)",
    )
    parser.add_argument("--shape", type=parse_shape, default=(128, 512, 512), help="Z,Y,X of each volume")
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--eu", type=int, default=4)
    parser.add_argument("--au", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--depth", type=int, default=3, help="uqeval frames that name a stage")
    parser.add_argument("--no-plots", action="store_true", help="score with --no-plots (no figures)")
    parser.add_argument("--unit", choices=["volume", "slice"], default="volume", help="uqeval score --unit")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if the peak RSS target is missed")
    args = parser.parse_args(argv)
    if args.volumes < 2:
        parser.error("--volumes: at least 2 (a calibration volume and a test volume)")

    load_before = os.getloadavg()[0]
    store = cached_store(args.data, args.volumes, args.eu, args.au, args.shape, args.seed)
    decoded = args.volumes * args.eu * args.au * 2 * int(np.prod(args.shape)) * 2
    print(
        f"{args.volumes} volumes of eu {args.eu} × au {args.au} × class 2 × {' × '.join(map(str, args.shape))} "
        f"float16: {decoded / 1e9:.2f} GB decoded ({decoded / args.volumes / 1e9:.2f} GB each), "
        f"{store_bytes(store) / 1e9:.2f} GB on disk"
    )
    extra = ["--unit", args.unit, *(["--no-plots"] if args.no_plots else [])]
    with tempfile.TemporaryDirectory(prefix="uqeval-bench-volume-memory-") as tmp:
        peak, elapsed, samples = score_in_subprocess(store, Path(tmp) / "report", extra, args.interval)
    print_table(
        f"uqeval score {' '.join(extra)}: resident memory by stage (the outermost {args.depth} uqeval "
        f"frames of the main thread, sampled every {args.interval} s)",
        ["stage", "from s", "seconds", "max RSS GB"],
        stage_rows(samples, args.depth, args.interval),
    )
    print_table(
        "resident memory over time",
        ["stage most sampled", "seconds", "max RSS GB"],
        timeline_rows(samples, elapsed, args.depth),
    )
    if samples:
        top = max(samples, key=lambda sample: sample.rss)
        print(f"\nhighest sample: {top.rss / 1e9:.2f} GB at {top.seconds:.1f} s in {' > '.join(top.frames) or '-'}")
    met = peak < TARGET_BYTES
    print(f"\nwall time {elapsed:.1f} s ({decoded / elapsed / 1e9:.2f} GB/s decoded)")
    print(
        f"peak RSS {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB), "
        f"{peak / (decoded / args.volumes):.2f}× one volume decoded "
        f"(target < {TARGET_BYTES / 1e9:.1f} GB) {'ok' if met else 'MISSED'}"
    )
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
