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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from rich.progress import Progress

from uqeval import CubeWriter, DatasetSource, Sample, UQEvalError, plugin_manager
from uqeval_torch import __version__
from uqeval_torch.train import load_trained, pick_device
from uqeval_torch.writing import write_cube

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
    # A domain the writer would refuse stops prediction now, not at its first image.
    CubeWriter.check_domains(dataset.domains, f"dataset {dataset.name!r}")
    images = list(prediction_samples(dataset, seed=settings.data_seed))
    if not images:
        raise UQEvalError(f"dataset {dataset.name!r} has no calibration or test images")
    raters = max(sample.labels.shape[0] for sample in images)
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
    done = _images_written(Path(out)) if not overwrite else 0
    if done > len(images):
        raise UQEvalError(
            f"{out} holds {done} images but the dataset has {len(images)}; write to another store", parameter="out"
        )
    au_label = _plugin_label("uqeval_au_methods", settings.au)
    eu_label = _plugin_label("uqeval_eu_methods", eu_name)
    write_cube(
        eu_method,
        au_method,
        _batches(images, raters, batch_size),
        out,
        trained=trained,
        members=n_members,
        samples=n_samples,
        au_label=f"AU method {settings.au!r} of {au_label}",
        eu_label=f"EU method {eu_name!r} of {eu_label}",
        device=chosen,
        seed=settings.seed,
        class_names=list(dataset.class_names),
        model=f"{settings.au}+{eu_name} ({settings.size})",
        dataset=dataset.name,
        au_method=settings.au,
        eu_method=eu_name,
        attrs=attrs,
        overwrite=overwrite,
        chunk_images=chunk_images,
        progress=progress if progress is not None else False,
        total=len(images),
    )
    return PredictionSummary(Path(out), len(images), n_members, n_samples, done)


def _plugin_label(hook: str, name: str) -> str:
    found = plugin_manager().lookup(hook, name)
    return found[1].label if found is not None else "an unregistered plugin"


def _images_written(out: Path) -> int:
    """How many whole images an earlier, interrupted prediction left in ``out`` (0 for none)."""
    progress = CubeWriter.progress(out)
    return 0 if progress is None else progress.n_images


def _batches(images: list[Sample], raters: int, batch_size: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        yield {
            "image": torch.from_numpy(np.stack([sample.image for sample in batch]).astype(np.float32)),
            "labels": np.stack([_pad_raters(sample.labels, raters) for sample in batch]),
            "domain": [sample.domain for sample in batch],
            "role": [sample.role for sample in batch],
            "image_id": [sample.image_id for sample in batch],
        }


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
