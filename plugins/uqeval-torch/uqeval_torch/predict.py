"""Prediction (``uqeval predict``): a trained run's sample cube for a dataset.

For every image of the calibration and test splits (ID) and of every OOD domain, each
of the EU method's ``eu`` members draws ``au`` samples from the AU method; the
``(eu, au, class, y, x)`` probabilities go to a cube store through
:class:`uqeval.CubeWriter`, with the rater labels, the domain and the role.

Images are processed in batches at fixed positions, and the random numbers of batch
``k`` come from a generator seeded by (seed, k). An interrupted prediction therefore
resumes (the writer keeps whole chunks) and gives exactly the store an uninterrupted
one would have given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from rich.progress import Progress

from uqeval import DatasetSource
from uqeval.contracts import Sample
from uqeval.cube import CubeWriter
from uqeval.errors import UQEvalError
from uqeval.plugins import plugin_manager
from uqeval_torch import __version__
from uqeval_torch.train import load_trained, pick_device

#: The roles a cube holds, in store order.
ROLES = ("calibration", "test")


def prediction_samples(dataset: DatasetSource, *, seed: int = 0) -> Iterator[Sample]:
    """Calibration then test images of the ID domain, then the test images of each OOD domain."""
    for role in ROLES:
        yield from dataset.samples(role, "id", seed=seed)
    for domain in dataset.domains:
        if domain != "id":
            yield from dataset.samples("test", domain, seed=seed)


@dataclass(frozen=True)
class PredictionSummary:
    """What :func:`predict` wrote."""

    store: Path
    n_images: int
    eu: int
    au: int
    resumed_from: int


def predict(
    run: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    data_options: dict[str, Any] | None = None,
    eu: str | None = None,
    members: int | None = None,
    samples: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    overwrite: bool = False,
    chunk_images: int | None = None,
    progress: Progress | None = None,
) -> PredictionSummary:
    """Write the sample cube of the trained ``run`` for a dataset to ``out``.

    Parameters
    ----------
    run : a folder written by :func:`uqeval_torch.train.train` (every member finished).
    out : the zarr store to write; an unfinished store from an earlier call resumes.
    data, data_options : the dataset and its options; by default the run's dataset with the
        options it trained on, ``data_options`` changing some of them.
    eu : predict as another EU method that the run's weights serve: a ``swag`` run also
        serves ``swag_diag`` and ``none`` (its EMA weights), since collecting SWAG's
        moments does not change training (default: the run's own).
    members : EU members per image (default: the run's, e.g. 5 for an ensemble; the
        method's default for another ``eu``).
    samples : AU samples per member (default: the AU method's, 10; 1 for ``softmax``).
    batch_size : images per forward pass.
    device : ``auto``, ``cpu``, ``cuda``, ….
    overwrite : replace a finished store at ``out``.
    chunk_images : images per store chunk (default: the writer's, about 8 MiB per chunk).
    progress : a rich progress display to report images on.
    """
    chosen = pick_device(device)
    settings, parts, trained = load_trained(run, device=chosen)
    if data is None or data == settings.data:  # the run's dataset, with any options changed
        dataset = plugin_manager().dataset(settings.data, {**settings.data_options, **(data_options or {})})
    else:
        dataset = plugin_manager().dataset(data, data_options or {})
    au_method, eu_method, eu_name = parts.au, parts.eu, settings.eu
    if eu is not None and eu != settings.eu:
        serves = tuple(getattr(parts.eu, "serves", ()))
        if eu not in serves:
            also = f" (it serves {', '.join(serves)})" if serves else ""
            raise UQEvalError(
                f"the run was trained for EU method {settings.eu!r} and cannot be predicted as {eu!r}{also}",
                parameter="eu",
            )
        eu_method, eu_name = plugin_manager().eu_method(eu), eu
    # The run's own count (an ensemble's N, or --members given to train) unless it is the
    # RunSettings default of 1, which for a sampling method (dropout, SWAG) means "not set".
    own = eu_name == settings.eu and settings.members > 1
    default_members = settings.members if own else eu_method.default_members
    n_members = default_members if members is None else members
    n_samples = au_method.default_samples if samples is None else samples
    if n_samples < 1 or n_members < 1:
        raise UQEvalError(
            f"members and samples must be at least 1 (got {n_members} and {n_samples})",
            parameter="members" if n_members < 1 else "samples",
        )
    if au_method.deterministic and n_samples > 1:
        n_samples = 1  # every sample of a deterministic method is the same map
    if au_method.deterministic and n_members < 2:
        raise UQEvalError(
            f"AU method {settings.au!r} is deterministic: with {n_members} member the cube cannot be decomposed",
            parameter="members" if members is not None else "eu",
        )
    if batch_size < 1:
        raise UQEvalError(f"batch_size must be at least 1, got {batch_size}", parameter="batch_size")
    networks = list(eu_method.members(trained, n=n_members, seed=settings.seed))  # already on ``chosen``
    images = list(prediction_samples(dataset, seed=settings.data_seed))
    if not images:
        raise UQEvalError(f"dataset {dataset.name!r} has no calibration or test images")
    raters = max(sample.labels.shape[0] for sample in images)
    height, width = images[0].image.shape[-2:]
    attrs = {
        "run": str(Path(run).resolve()),
        "size": settings.size,
        "epochs": settings.epochs,
        "members_trained": settings.members,
        "data_options": dict(getattr(dataset, "options", dict)()),
        "au_options": dict(getattr(au_method, "options", dict)()),
        "writer": f"uqeval-torch {__version__}",
    }
    if not overwrite:
        _check_resumable(Path(out), {"au_method": settings.au, "eu_method": eu_name, "dataset": dataset.name, **attrs})
    writer = CubeWriter(
        out,
        n_classes=dataset.n_classes,
        eu=n_members,
        au=n_samples,
        height=height,
        width=width,
        raters=raters,
        au_method=settings.au,
        eu_method=eu_name,
        model=f"{settings.au}+{eu_name} ({settings.size})",
        dataset=dataset.name,
        seed=settings.seed,
        class_names=list(dataset.class_names),
        attrs=attrs,
        chunk_images=chunk_images,
        overwrite=overwrite,
        resume=not overwrite,
    )
    done = writer.n_images
    if done > len(images):
        raise UQEvalError(
            f"{out} holds {done} images but the dataset has {len(images)}; write to another store", parameter="out"
        )
    task = progress.add_task("predicting", total=len(images), completed=done) if progress is not None else None
    with writer:
        first_batch = done // batch_size
        for number in itertools.count(first_batch):
            batch = images[number * batch_size : (number + 1) * batch_size]
            if not batch:
                break
            probabilities = sample_batch(
                au_method, networks, batch, n_samples, seed=(settings.seed, number), device=chosen
            )
            skip = max(0, done - number * batch_size)  # images an interrupted run already wrote
            kept = batch[skip:]
            writer.append(
                probabilities[skip:],
                labels=np.stack([_pad_raters(sample.labels, raters) for sample in kept]),
                domain=[sample.domain for sample in kept],
                role=[sample.role for sample in kept],
                image_ids=[sample.image_id for sample in kept],
            )
            if task is not None:
                progress.update(task, completed=min(len(images), (number + 1) * batch_size))
    return PredictionSummary(Path(out), len(images), n_members, n_samples, done)


@torch.no_grad()
def sample_batch(
    au_method: Any,
    networks: list[torch.nn.Module],
    batch: list[Sample],
    n_samples: int,
    *,
    seed: tuple[int, int],
    device: torch.device,
) -> np.ndarray:
    """(image, eu, au, class, y, x) float32 probabilities of one batch, seeded by ``seed``."""
    torch.manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))
    images = torch.from_numpy(np.stack([sample.image for sample in batch]).astype(np.float32)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    per_member = []
    for network in networks:
        with autocast:
            drawn = au_method.sample(network, images, n_samples)
        per_member.append(drawn.float())
    cube = torch.stack(per_member).permute(2, 0, 1, 3, 4, 5)  # (eu, au, image, …) → (image, eu, au, …)
    cube = cube / cube.sum(dim=3, keepdim=True)  # exact sums after bf16 and float16 rounding upstream
    return cube.cpu().numpy()


def _check_resumable(out: Path, expected: dict[str, Any]) -> None:
    """Refuse to resume a store that another run, model or dataset wrote."""
    if not out.exists():
        return
    try:
        stored = dict(zarr.open_group(out, mode="r").attrs)
    except Exception:
        raise UQEvalError(f"{out} exists and is not a cube store; choose another", parameter="out") from None
    for key, value in expected.items():
        if key != "writer" and stored.get(key) != value:
            raise UQEvalError(
                f"{out} holds a cube with {key} = {stored.get(key)!r}, not {value!r}; "
                "replace it (overwrite) or choose another store",
                parameter="out",
            )


def _pad_raters(labels: np.ndarray, raters: int) -> np.ndarray:
    if labels.shape[0] == raters:
        return labels
    padded = np.full((raters, *labels.shape[1:]), 255, dtype=np.uint8)
    padded[: labels.shape[0]] = labels
    return padded
