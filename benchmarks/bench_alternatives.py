"""Throughput of the entropy decomposition against what users would otherwise run.

Contenders, each on the same in-memory cube (image, eu, au, class, y, x) in one process:

* ``study method (torch)``: a plain re-implementation of the study's published method
  (the Kendall & Gal decomposition as the study's code computes it): a torch tensor of
  the cube (``torch.from_numpy``, outside the timing), the mean over the AU samples per
  EU member, then ``torch.distributions.Categorical(probs=...).entropy()`` on the member
  means (AU = the mean of those entropies over members) and on their mean over members
  (TU); EU = TU - AU, unclipped. ``Categorical`` wants the class dimension last, so the
  class dimension is moved there (``movedim``) and ``Categorical`` renormalises and
  validates its input: that is part of what the method costs. It returns no argmax;
* ``plain torch``: what a user would write by hand in torch on CPU threads, under
  ``torch.inference_mode()`` with ``torch.set_num_threads(numba.config.NUMBA_NUM_THREADS)``:
  ``m_e = p.mean(dim=au)``, ``m = m_e.mean(dim=eu)``, ``H = -xlogy(x, x).sum(dim=class)``,
  ``AU = mean_e H(m_e)``, ``TU = H(m)``, ``EU = max(TU - AU, 0)``, argmax;
* ``numpy``: ``bench_decompose.numpy_decompose``, plain vectorised numpy;
* ``uqeval``: the numba engine, ``uqeval.decomposition.decompose_batch(cube, ids)``;
* ``parallel read``: ``bench_decompose.parallel_read``, a streaming sum of the same bytes
  on all numba threads, for reference (the read limit of one pass over the input).

With ``--dtype float16`` the cube is stored as float16: uqeval takes it as it is; the
torch contenders widen it with ``.float()`` and numpy with ``.astype(np.float32)``, inside
the timed call, as a user of either would do (neither has fast float16 arithmetic on a CPU).

Before timing, the script asserts that every contender's AU, EU and TU agree with
uqeval's to 1e-4 nats. torch is optional (it comes with the ``uqeval-torch`` plugin):
without it the torch rows are skipped and the rest still runs.

Every time is the best (minimum) of ``--repeats`` runs after a warm-up (the first numba
call compiles). Contenders are timed round-robin, one run each per round, so slow
phases of a noisy machine hit them all alike. The ratio printed per row is
``t_contender / t_uqeval``: how many times slower than uqeval (> 1: uqeval is faster).

Run: ``.venv/bin/python benchmarks/bench_alternatives.py [--dtype float16]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from types import ModuleType

import numba
import numpy as np
from _timing import best_times
from bench_decompose import cube_arguments, make_cube, numpy_decompose, parallel_read, report

from uqeval.decomposition import decompose_batch

#: Largest accepted |contender - uqeval| for AU, EU and TU (nats).
TOLERANCE = 1e-4

STUDY = "study method (torch)"
PLAIN_TORCH = "plain torch"
NUMPY = "numpy"
UQEVAL = "uqeval"
READ = "parallel read"

#: Dimensions of the cube.
IMAGE, EU, AU, CLASS = 0, 1, 2, 3


def import_torch() -> ModuleType | None:
    """torch, or None when it is not installed (it is optional for the core)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_contenders(torch: ModuleType, cube: np.ndarray) -> dict[str, Callable[[], dict[str, object]]]:
    """The two torch contenders on a tensor sharing the cube's memory (made outside the timing)."""
    torch.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    tensor = torch.from_numpy(cube)
    widen = cube.dtype != np.float32

    def study_method() -> dict[str, object]:
        p = tensor.float() if widen else tensor
        member_means = p.mean(dim=AU)  # (image, eu, class, y, x)
        member_entropy = torch.distributions.Categorical(probs=member_means.movedim(CLASS - 1, -1)).entropy()
        aleatoric = member_entropy.mean(dim=EU)  # (image, y, x)
        mean = member_means.mean(dim=EU)  # (image, class, y, x)
        total = torch.distributions.Categorical(probs=mean.movedim(CLASS - 2, -1)).entropy()
        return {"au": aleatoric, "eu": total - aleatoric, "tu": total}

    def entropy(q: object, dim: int) -> object:
        return -torch.special.xlogy(q, q).sum(dim=dim)

    def plain_torch() -> dict[str, object]:
        with torch.inference_mode():
            p = tensor.float() if widen else tensor
            m_e = p.mean(dim=AU)  # (image, eu, class, y, x)
            m = m_e.mean(dim=EU)  # (image, class, y, x)
            aleatoric = entropy(m_e, dim=CLASS - 1).mean(dim=EU)
            total = entropy(m, dim=CLASS - 2)
            epistemic = (total - aleatoric).clamp_min(0)
            return {"au": aleatoric, "eu": epistemic, "tu": total, "mean": m, "pred": m.argmax(dim=CLASS - 2)}

    return {STUDY: study_method, PLAIN_TORCH: plain_torch}


def numpy_contender(cube: np.ndarray) -> Callable[[], dict[str, np.ndarray]]:
    if cube.dtype == np.float32:
        return lambda: numpy_decompose(cube)
    return lambda: numpy_decompose(cube.astype(np.float32))


def verify(reference: dict[str, np.ndarray], name: str, result: dict[str, object]) -> None:
    """Assert that ``result``'s AU, EU and TU agree with uqeval's to :data:`TOLERANCE`."""
    for key in ("au", "eu", "tu"):
        theirs = np.asarray(result[key], dtype=np.float64)
        ours = reference[key].astype(np.float64)
        assert theirs.shape == ours.shape, f"{name}: {key} has shape {theirs.shape}, uqeval {ours.shape}"
        error = float(np.max(np.abs(theirs - ours)))
        assert error <= TOLERANCE, f"{name}: max |{key} - uqeval {key}| = {error:.3g} > {TOLERANCE:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cube_arguments(parser, repeats=10)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="dtype of the cube")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    cube = make_cube(args.images, args.eu, args.au, args.classes, args.size, args.seed, volume=args.volume)
    if args.dtype == "float16":
        cube = cube.astype(np.float16)
    ids = list(range(cube.shape[IMAGE]))

    contenders: dict[str, Callable[[], object]] = {}
    torch = import_torch()
    if torch is not None:
        contenders.update(torch_contenders(torch, cube))
    contenders[NUMPY] = numpy_contender(cube)
    contenders[UQEVAL] = lambda: decompose_batch(cube, ids)

    reference = decompose_batch(cube, ids)
    for name, fn in contenders.items():
        if name != UQEVAL:
            verify(reference, name, fn())
    contenders[READ] = lambda: parallel_read(cube)

    times = best_times(contenders, args.repeats)
    versions = f"torch {torch.__version__} ({torch.get_num_threads()} threads), " if torch is not None else ""
    print(
        f"{versions}numba {numba.__version__} ({numba.get_num_threads()} threads, {numba.threading_layer()} layer), "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs; best of {args.repeats} runs after a warm-up; "
        f"AU, EU, TU of every contender checked against uqeval to {TOLERANCE:g}"
    )
    if torch is None:
        print(f"torch is not installed: the rows {STUDY!r} and {PLAIN_TORCH!r} were skipped")
    report(str(cube.dtype), cube, times, baseline=UQEVAL)
    print(
        "\nt / t_uqeval: how many times slower than uqeval (> 1: uqeval is faster); "
        f"for {READ!r}, t_read / t_uqeval (the share of one parallel read of the input that uqeval reaches)"
    )
    print(f"\n1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work skews times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
