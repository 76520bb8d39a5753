"""Rounding error of the decomposition kernel against an exact float64 reference: the EU floor.

``decompose_batch`` sums over samples and classes in float32 (over members in float64)
with its own float32 logarithm, so an
epistemic uncertainty computed as ``TU - AU`` of two nearly equal numbers (each up to
``ln C``) carries an absolute rounding error. This script measures that error to set an
"EU floor": the smallest EU value above the kernel's rounding error, below which an EU
value may be set to exactly 0.

For every configuration the same stored input (float16 or float32) is decomposed by
``uqeval.decomposition.decompose_batch`` and by a float64 numpy reference computed from
the *same* values widened exactly to float64 (``EU_ref = max(TU_ref - AU_ref, 0)``),
with the floor switched off (``eu_floor=0``) so that the raw error is measured.
Recorded: ``max |EU - EU_ref|``, ``max |TU - TU_ref|``, ``max |AU - AU_ref|`` and, for the
regimes whose exact EU is 0 (identical members, uniform, same one-hot), the largest EU
the kernel returns.

Grid: members E in {1, 2, 5, 10, 30, 100}, samples A in {1, 10, 50} (no E = A = 1,
E·A <= ``--max-draws``), classes C in {2, 3, 5, 10}, dtypes float16 and float32.
Regimes (samples normalised over ``class`` in the stored dtype, the largest class taking
the residual ``1 - sum(others)``):

* ``dir0.05``, ``dir1``, ``dir20``: Dirichlet(alpha) probabilities, independent draws;
* ``same``: identical members (every member the same array of Dirichlet(1) samples), so
  exact EU is 0; with E = 1 the samples are the members, so all samples are identical;
* ``hot``: near one-hot, ``1 - 1e-3`` on a random class per draw, ``1e-3/(C-1)`` elsewhere;
* ``hotsame``: the same near one-hot vector for every draw (exact EU 0, TU = AU ~ 8e-3);
* ``uniform``: ``1/C`` everywhere (exact EU 0, TU = AU = ln C).

Run: ``.venv/bin/python benchmarks/eu_floor.py [--full] [--images 4 --size 32]``
(about a minute or two on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np

from uqeval.decomposition import decompose_batch
from uqeval.errors import UQEvalError

MEMBERS = (1, 2, 5, 10, 30, 100)
SAMPLES = (1, 10, 50)
CLASSES = (2, 3, 5, 10)
DTYPES = (np.float16, np.float32)
REGIMES = ("dir0.05", "dir1", "dir20", "same", "hot", "hotsame", "uniform")
ZERO_EU_REGIMES = ("same", "hotsame", "uniform")
HOT_EPS = 1e-3
U32 = 2.0**-24  # float32 unit roundoff


def raw_probabilities(regime: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float64 (image, eu, au, class, pixel) probabilities of one regime, before storage rounding."""
    n_images, n_members, n_samples, n_classes, n_pixels = shape
    if regime.startswith("dir"):
        gamma = rng.standard_gamma(float(regime[3:]), size=shape)
        gamma += 1e-300  # a Dirichlet(0.05) draw can underflow to all zeros
        return gamma / gamma.sum(axis=3, keepdims=True)
    if regime == "same":
        # With E = 1 the samples are the members (samples-as-members), so they are made identical.
        one_shape = (n_images, 1, n_samples if n_members > 1 else 1, n_classes, n_pixels)
        one = rng.standard_gamma(1.0, size=one_shape)
        one /= one.sum(axis=3, keepdims=True)
        return np.broadcast_to(one, shape)
    if regime in ("hot", "hotsame"):
        if regime == "hot":
            hot = rng.integers(0, n_classes, size=(n_images, n_members, n_samples, 1, n_pixels))
        else:
            hot = rng.integers(0, n_classes, size=(n_images, 1, 1, 1, n_pixels))
        classes = np.arange(n_classes).reshape(1, 1, 1, n_classes, 1)
        return np.where(classes == hot, 1.0 - HOT_EPS, HOT_EPS / (n_classes - 1)) * np.ones(shape)
    if regime == "uniform":
        return np.full(shape, 1.0 / n_classes)
    raise ValueError(regime)


def store(p: np.ndarray, dtype: type) -> np.ndarray:
    """``p`` in ``dtype``, each sample re-normalised as well as the dtype allows.

    float32: normalised in float64, cast; float16: normalised in float32, cast. Then the
    largest class of each sample takes ``1 - sum(other classes)`` (computed one precision
    up and rounded once), so the stored class sums sit within an ulp or so of 1.
    """
    work = np.float64 if dtype == np.float32 else np.float32
    q = np.asarray(p, dtype=work)
    q = q / q.sum(axis=3, keepdims=True)
    stored = q.astype(dtype)
    top = stored.argmax(axis=3)[:, :, :, None, :]
    others = stored.astype(work).sum(axis=3, keepdims=True) - np.take_along_axis(stored, top, axis=3).astype(work)
    np.put_along_axis(stored, top, (1 - others).astype(dtype), axis=3)
    return stored


def entropy64(q: np.ndarray, axis: int) -> np.ndarray:
    """``-sum q ln q`` over ``axis`` in float64 with ``0 ln 0 = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(q > 0, q * np.log(q), 0.0).sum(axis=axis)


def reference(cube: np.ndarray) -> dict[str, np.ndarray]:
    """Exact-input float64 decomposition of (image, eu, au, class, pixel), image by image."""
    n_images, n_members, n_samples, n_classes, n_pixels = cube.shape
    if n_members == 1:  # the samples-as-members convention of decompose_batch
        cube = cube.reshape(n_images, n_samples, 1, n_classes, n_pixels)
    out = {name: np.empty((n_images, n_pixels)) for name in ("au", "eu", "tu")}
    for i in range(n_images):
        p = cube[i].astype(np.float64)  # float16/float32 -> float64 is exact
        m_e = p.mean(axis=1)  # (eu, class, pixel)
        m = m_e.mean(axis=0)  # (class, pixel)
        au = entropy64(m_e, axis=1).mean(axis=0)
        tu = entropy64(m, axis=0)
        out["au"][i], out["tu"][i], out["eu"][i] = au, tu, np.maximum(tu - au, 0.0)
    return out


def kernel(cube: np.ndarray, size: int) -> tuple[dict[str, np.ndarray], bool]:
    """``decompose_batch`` on the cube; falls back to ``check=False`` on a check error."""
    n_images, n_members, n_samples, n_classes, _ = cube.shape
    cube6 = cube.reshape(n_images, n_members, n_samples, n_classes, size, size)
    try:
        maps, unchecked = decompose_batch(cube6, list(range(n_images)), eu_floor=0.0), False
    except UQEvalError:
        maps, unchecked = decompose_batch(cube6, list(range(n_images)), check=False, eu_floor=0.0), True
    return {name: maps[name].reshape(n_images, -1).astype(np.float64) for name in ("au", "eu", "tu")}, unchecked


#: Beyond the grid: many members (or samples-as-members) with one sample, where the
#: error is largest (it grows with the number of members, not of samples).
EXTRA_SHAPES = ((300, 1), (1, 300), (1000, 1))


def shapes(max_draws: int, extra: bool) -> list[tuple[int, int]]:
    grid = [(e, a) for e in MEMBERS for a in SAMPLES if 1 < e * a <= max_draws and not (e == 1 and a < 2)]
    return grid + [(e, a) for e, a in EXTRA_SHAPES if extra and e * a <= max_draws]


def members(row: dict) -> int:
    """Members as the kernel sees them: with E = 1 the samples are the members."""
    return row["E"] if row["E"] > 1 else row["A"]


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    n_pixels = args.size * args.size
    for e, a in shapes(args.max_draws, not args.no_extra):
        for c in CLASSES:
            for regime in REGIMES:
                rng = np.random.default_rng([args.seed, e, a, c, REGIMES.index(regime)])
                raw = raw_probabilities(regime, (args.images, e, a, c, n_pixels), rng)
                for dtype in DTYPES:
                    cube = store(raw, dtype)
                    ours, unchecked = kernel(cube, args.size)
                    ref = reference(cube)
                    row = {
                        "dtype": np.dtype(dtype).name,
                        "E": e,
                        "A": a,
                        "C": c,
                        "regime": regime,
                        "unchecked": unchecked,
                        "eu_ref_max": float(ref["eu"].max()),
                    }
                    for name in ("eu", "tu", "au"):
                        row[name] = float(np.abs(ours[name] - ref[name]).max())
                    row["eu_zero"] = float(ours["eu"].max()) if regime in ZERO_EU_REGIMES else math.nan
                    rows.append(row)
                del raw
    return rows


def fmt(value: float) -> str:
    return "      -" if math.isnan(value) else f"{value:7.1e}"


def print_rows(rows: list[dict], full: bool) -> None:
    if full:
        print(
            f"{'dtype':7} {'E':>3} {'A':>3} {'C':>3} {'regime':8} {'|dEU|':>7} {'|dTU|':>7} {'|dAU|':>7} "
            f"{'EU@0':>7} {'EUref':>7}"
        )
        for r in rows:
            print(
                f"{r['dtype']:7} {r['E']:3} {r['A']:3} {r['C']:3} {r['regime']:8} {fmt(r['eu'])} {fmt(r['tu'])} "
                f"{fmt(r['au'])} {fmt(r['eu_zero'])} {fmt(r['eu_ref_max'])}{'  unchecked' if r['unchecked'] else ''}"
            )
        return
    # One line per (dtype, E, A): max over regimes for each C, EU error, then worst regime.
    print(
        "max |EU_kernel - EU_ref| over all regimes, per C; 'EU@0' = max kernel EU where exact EU = 0; "
        "'dTU', 'dAU' = max over C"
    )
    head = " ".join(f"{'C=' + str(c):>7}" for c in CLASSES)
    print(f"{'dtype':7} {'E':>3} {'A':>3} {'E*A':>4} {head} {'EU@0':>7} {'dTU':>7} {'dAU':>7}  worst regime")
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dtype"], r["E"], r["A"])].append(r)
    for (dtype, e, a), group in groups.items():
        per_c = [max(r["eu"] for r in group if r["C"] == c) for c in CLASSES]
        worst = max(group, key=lambda r: r["eu"])
        zero = max(r["eu_zero"] for r in group if r["regime"] in ZERO_EU_REGIMES)
        print(
            f"{dtype:7} {e:3} {a:3} {e * a:4} {' '.join(fmt(v) for v in per_c)} {fmt(zero)} "
            f"{fmt(max(r['tu'] for r in group))} {fmt(max(r['au'] for r in group))}  "
            f"{worst['regime']} (C={worst['C']})"
        )


def print_scaling(rows: list[dict]) -> None:
    for dtype in sorted({r["dtype"] for r in rows}):
        sub = [r for r in rows if r["dtype"] == dtype]
        print(f"\n== {dtype} ==")
        for name in ("eu", "tu", "au", "eu_zero"):
            values = [r[name] for r in sub if not math.isnan(r[name])]
            worst = max((r for r in sub if not math.isnan(r[name])), key=lambda r: r[name])
            print(
                f"  max {name:7}: {max(values):.3e}  at E={worst['E']} A={worst['A']} C={worst['C']} {worst['regime']}"
            )
        print(
            "  by E*A:  "
            + "  ".join(
                f"{d}:{max(r['eu'] for r in sub if r['E'] * r['A'] == d):.1e}"
                for d in sorted({r["E"] * r["A"] for r in sub})
            )
        )
        print(
            "  by A (E>1):  "
            + "  ".join(f"{a}:{max(r['eu'] for r in sub if r['A'] == a and r['E'] > 1):.1e}" for a in SAMPLES)
        )
        print("  by kernel members E' (E, or A when E = 1):")
        print("    E'    max|dEU|  max|dEU|/(E' C u ln C)  per C: max|dEU|/(u ln C)")
        for m in sorted({members(r) for r in sub}):
            rs = [r for r in sub if members(r) == m]
            err = max(r["eu"] for r in rs)
            ratio = max(r["eu"] / (m * r["C"] * U32 * math.log(r["C"])) for r in rs)
            per_c = "  ".join(
                f"C{c}:{max(r['eu'] for r in rs if r['C'] == c) / (U32 * math.log(c)):6.1f}" for c in CLASSES
            )
            print(f"    {m:<5} {err:.2e}  {ratio:10.3f}              {per_c}")
        print("  by C:    max|dEU|   /ln C    /(u ln C)   (u = 2^-24)")
        for c in CLASSES:
            err = max(r["eu"] for r in sub if r["C"] == c)
            print(f"   C={c:<3}  {err:.2e}  {err / math.log(c):.2e}  {err / (U32 * math.log(c)):8.1f}")
        fit = max(r["eu"] / ((16 + members(r) * r["C"]) * U32 * math.log(r["C"])) for r in sub)
        print(f"  max |dEU| / ((16 + E' C) u ln C) = {fit:.3f}")
        unchecked = sum(r["unchecked"] for r in sub)
        if unchecked:
            print(f"  {unchecked} configuration(s) failed the sum check and ran with check=False")


def print_floors(rows: list[dict]) -> None:
    def worst(subset):
        return max(max(r["eu"], 0 if math.isnan(r["eu_zero"]) else r["eu_zero"]) for r in subset)

    limits = [("grid, E·A <= 1000", lambda r: r["E"] * r["A"] <= 1000 and (r["E"], r["A"]) not in EXTRA_SHAPES)]
    limits += [(f"E' <= {m}", lambda r, m=m: members(r) <= m) for m in (10, 50, 100, 300, 1000)]
    print("\nmax EU error (incl. kernel EU where exact EU = 0), and margin of candidate floors:")
    floors = (("2^-20", 2.0**-20), ("1e-6", 1e-6), ("2^-17", 2.0**-17), ("2^-14", 2.0**-14), ("1e-4", 1e-4))
    print(f"  {'subset':20} {'max':>9}  " + "  ".join(f"{label:>6}" for label, _ in floors))
    for label, keep in limits:
        subset = [r for r in rows if keep(r)]
        if not subset:
            continue
        w = worst(subset)
        print(f"  {label:20} {w:9.3e}  " + "  ".join(f"{floor / w:6.1f}" for _, floor in floors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="image side (pixels per image = size**2)")
    parser.add_argument("--max-draws", type=int, default=1500, help="largest E*A measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-extra", action="store_true", help="skip the shapes beyond the grid (E=300, 1000)")
    parser.add_argument("--full", action="store_true", help="print one row per configuration and regime")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = measure(args)
    print_rows(rows, args.full)
    print_scaling(rows)
    print_floors(rows)
    print(
        f"\n{len(rows)} configurations, {args.images} x {args.size}x{args.size} pixels each, "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
