"""One writing loop: batches of images → EU members × AU samples → a cube store.

:func:`write_cube` serves both a researcher's own model and ``uqeval predict``: the EU
source is any EU method (``members(trained, n=…, seed=…)`` yields the member networks;
:class:`~uqeval_torch.eu.ensemble.Ensemble`, :class:`~uqeval_torch.eu.dropout.MCDropout`
and :class:`~uqeval_torch.eu.none.SingleModel` hold your own models), the AU source any
AU method (``sample(model, images, n)``; :class:`~uqeval_torch.au.softmax.Softmax`,
:class:`~uqeval_torch.au.tta.TestTimeAugmentation`, :class:`~uqeval_torch.au.sampler.Sampler`,
or a trained family's). The loop does batching, the device, autocast,
``torch.inference_mode``, a progress bar, seeding, checking what the AU source returns,
resuming, and :class:`uqeval.CubeWriter`.

Images are ``(batch, channel, y, x)``; volumes ``(batch, channel, z, y, x)`` go to a store
of volumes one volume and one member at a time (:meth:`uqeval.CubeWriter.volume`), so
that writing holds one member's AU samples of one volume, never a volume's whole
``eu × au`` cube. With ``patch_size`` every member network is run window by window
over images or volumes larger than its patch (:mod:`uqeval_torch.sliding_window`).

Batch ``k`` of images is drawn with the global torch generator seeded by ``(seed, k)``,
member ``e`` of the volume at position ``i`` of batch ``k`` by ``(seed, k, i, e)``, so an
interrupted run, started again with the same batches, resumes and gives exactly the
store an uninterrupted one would have given.

Example
-------
>>> import tempfile, torch, uqeval
>>> from torch import nn
>>> from uqeval_torch.sources import MCDropout, TestTimeAugmentation
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.3), nn.Conv2d(8, 2, 1))
>>> batches = [{"image": torch.rand(4, 1, 16, 16), "labels": torch.randint(0, 2, (4, 3, 16, 16)),
...             "domain": ["id", "id", "noise", "noise"]}]
>>> store = write_cube(MCDropout(model, members=3), TestTimeAugmentation(samples=4), batches,
...                    tempfile.mkdtemp() + "/cube.zarr", progress=False)
>>> dict(uqeval.open_cube(store)["probs"].sizes)
{'image': 4, 'eu': 3, 'au': 4, 'class': 2, 'y': 16, 'x': 16}
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uqeval import AUMethod, CubeWriter, EUMethod, UQEvalError, check_replaceable
from uqeval_torch.members import check_probabilities, mix_seeds, spatial_text
from uqeval_torch.sliding_window import SlidingWindow, check_patch_size
from uqeval_torch.train import pick_device

#: Autocast dtypes by name.
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ImageBatch:
    """One batch as the writer reads it."""

    images: torch.Tensor
    labels: np.ndarray | None
    domains: list[str]
    roles: list[str]
    image_ids: list[Any] | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def tail(self, skip: int) -> ImageBatch:
        """The batch without its first ``skip`` images."""
        return ImageBatch(
            self.images[skip:],
            None if self.labels is None else self.labels[skip:],
            self.domains[skip:],
            self.roles[skip:],
            None if self.image_ids is None else self.image_ids[skip:],
        )


def read_batch(batch: Any, number: int) -> ImageBatch:
    """A batch from a ``DataLoader`` (or any iterable): a dict or a tuple.

    A dict holds ``image`` (``(batch, channel, y, x)``, or ``(batch, channel, z, y, x)``
    for volumes) and optionally ``labels`` (``(batch, rater, [z,] y, x)``, or
    ``(batch, [z,] y, x)`` for one rater), ``domain`` and
    ``role`` (a string for the whole batch, or one per image) and ``image_id``. A tuple
    is ``(image, labels, domain, role)`` or a prefix of it. Defaults: no labels, domain
    ``id``, role ``test``, ids numbered by the writer.
    """
    where = f"batch {number}"
    if isinstance(batch, dict):
        unknown = set(batch) - {"image", "labels", "domain", "role", "image_id"}
        if "image" not in batch or unknown:
            raise UQEvalError(
                f"{where}: a dict batch needs the key 'image' and may hold 'labels', 'domain', 'role' and "
                f"'image_id'; got keys {sorted(batch)}"
            )
        fields = (batch["image"], batch.get("labels"), batch.get("domain"), batch.get("role"), batch.get("image_id"))
    elif isinstance(batch, list | tuple) and 1 <= len(batch) <= 4:
        fields = (*batch, *(None,) * (5 - len(batch)))
    else:
        raise UQEvalError(
            f"{where}: expected a dict or a tuple (image, labels, domain, role), got {type(batch).__name__}"
        )
    image, labels, domain, role, image_ids = fields
    images = torch.as_tensor(image)
    if images.ndim not in (4, 5) or not images.is_floating_point():
        raise UQEvalError(
            f"{where}: images must be a floating (batch, channel, y, x) array, or (batch, channel, z, y, x) for "
            f"volumes, got shape {tuple(images.shape)} of {images.dtype}"
        )
    size = images.shape[0]
    return ImageBatch(
        images,
        _labels(labels, images, where),
        _per_image(domain, "id", size, "domain", where),
        _per_image(role, "test", size, "role", where),
        None if image_ids is None else [_plain(value) for value in image_ids],
    )


def _labels(labels: Any, images: torch.Tensor, where: str) -> np.ndarray | None:
    if labels is None:
        return None
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim == images.ndim - 1:
        array = array[:, None]
    if array.ndim != images.ndim or array.shape[0] != images.shape[0] or array.shape[2:] != tuple(images.shape[2:]):
        spatial = "z, y, x" if images.ndim == 5 else "y, x"
        raise UQEvalError(
            f"{where}: labels must be (batch, rater, {spatial}) or (batch, {spatial}) with the images' batch and "
            f"size {images.shape[0]} × {tuple(images.shape[2:])}, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise UQEvalError(f"{where}: labels must be integer classes in [0, 255] (255 = not labelled)")
    return array.astype(np.uint8)


def _per_image(value: Any, default: str, size: int, name: str, where: str) -> list[str]:
    if value is None:
        return [default] * size
    if isinstance(value, str):
        return [value] * size
    values = [str(item) for item in value]
    if len(values) != size:
        raise UQEvalError(f"{where}: {len(values)} values of {name!r} for {size} images")
    return values


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor | np.generic) else value


def describe(eu: Any, au: Any, patch_size: Sequence[int] | None = None, overlap: float = 0.25) -> dict[str, Any]:
    """Store attributes naming the sources (``eu_source``, ``au_source``) and their settings
    (with ``patch_size``, the sliding window's ``patch_size`` and ``overlap``)."""
    attrs: dict[str, Any] = {"eu_source": type(eu).__name__, "au_source": type(au).__name__}
    if getattr(eu, "n_dropout_layers", 0):
        attrs["dropout_layers"] = eu.n_dropout_layers
    if getattr(au, "transforms", None) is not None:
        attrs["tta_transforms"] = [transform.name for transform in au.transforms[: au.default_samples]]
    if patch_size is not None:
        attrs["patch_size"] = [int(size) for size in patch_size]
        attrs["overlap"] = float(overlap)
    return attrs


def open_members(
    eu: EUMethod,
    trained: Any,
    n: int,
    seed: int,
    device: torch.device,
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.25,
) -> list[nn.Module]:
    """The ``n`` member networks of ``eu`` (of the ``trained`` run, or the source's own models)
    on ``device``; each run window by window (:class:`~uqeval_torch.sliding_window.SlidingWindow`)
    when ``patch_size`` is given."""
    members = [model.to(device) for model in eu.members(trained, n=n, seed=seed)]
    if patch_size is None:
        return members
    return [SlidingWindow(model, patch_size, overlap=overlap) for model in members]


def sample_member(au: AUMethod, model: nn.Module, images: torch.Tensor, n: int, culprit: str) -> torch.Tensor:
    """``au.sample(model, images, n)`` as float32, checked: ``n`` probability maps ``(n, batch, class, [z,] y, x)``.

    Raises
    ------
    UQEvalError
        Naming ``culprit`` when the AU source breaks the contract.
    """
    drawn = au.sample(model, images, n)
    expected = f"(n={n}, batch={images.shape[0]}, class, {spatial_text(images)})"
    if not isinstance(drawn, torch.Tensor) or drawn.ndim != images.ndim + 1 or drawn.shape[0] != n:
        shape = tuple(drawn.shape) if isinstance(drawn, torch.Tensor) else type(drawn).__name__
        raise UQEvalError(f"{culprit} returned {shape}; the AU contract expects probabilities {expected}")
    for draw in drawn:
        check_probabilities(draw.float(), images, f"{culprit} (contract: probabilities {expected})")
    return drawn.float()


def _autocast(device: torch.device, precision: str | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if precision is None else torch.autocast(device.type, dtype=PRECISIONS[precision])


def _member_samples(au: AUMethod, model: nn.Module, images: torch.Tensor, n: int, culprit: str) -> torch.Tensor:
    """``(n, image, class, [z,] y, x)`` float32 samples of one member, each map renormalised over ``class``."""
    drawn = sample_member(au, model, images, n, culprit)
    return drawn / drawn.sum(dim=2, keepdim=True)


def draw_members(
    models: Sequence[nn.Module],
    au: AUMethod,
    images: torch.Tensor,
    n: int,
    *,
    seed: tuple[int, ...],
    precision: str | None = None,
    au_label: str = "",
    eu_label: str = "",
) -> np.ndarray:
    """``(image, eu, au, class, [z,] y, x)`` float32 probabilities of one batch, every member's
    ``n`` AU samples, drawn with the global torch generator seeded by ``seed``; each map
    is renormalised to sum to 1 over ``class`` (bf16 and float16 rounding). A contract
    break is named with ``au_label`` and the member of ``eu_label``."""
    torch.manual_seed(mix_seeds(*seed))
    au_label = au_label or _name(au)
    of = f" of {eu_label}" if eu_label else ""
    with torch.inference_mode(), _autocast(images.device, precision):
        cube = torch.stack(
            [
                _member_samples(au, model, images, n, f"{au_label}: sample() on member {index}{of}")
                for index, model in enumerate(models)
            ]
        )  # (eu, au, image, class, [z,] y, x)
    return cube.permute(2, 0, 1, *range(3, cube.ndim)).cpu().numpy()


def draw_volume(
    models: Sequence[nn.Module],
    au: AUMethod,
    volume: torch.Tensor,
    n: int,
    *,
    seed: tuple[int, ...],
    precision: str | None = None,
    au_label: str = "",
    eu_label: str = "",
) -> Iterator[tuple[int, np.ndarray]]:
    """Member by member, ``(member, samples)`` of one volume ``(1, channel, z, y, x)``:
    ``samples`` are the member's ``n`` AU samples ``(au, class, z, y, x)`` float32,
    renormalised over ``class``, drawn with the global torch generator seeded by
    ``(*seed, member)``. Only one member's samples are held at a time."""
    au_label = au_label or _name(au)
    of = f" of {eu_label}" if eu_label else ""
    for index, model in enumerate(models):
        torch.manual_seed(mix_seeds(*seed, index))
        with torch.inference_mode(), _autocast(volume.device, precision):
            samples = _member_samples(au, model, volume, n, f"{au_label}: sample() on member {index}{of}")
        yield index, samples[:, 0].cpu().numpy()


def draw_samples(
    eu: EUMethod,
    au: AUMethod,
    images: torch.Tensor,
    *,
    seed: int = 0,
    trained: Any = None,
    members: int | None = None,
    samples: int | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Every member's AU samples for one batch, as :func:`write_cube` draws its first batch:
    ``(image, eu, au, class, y, x)`` float32 on the images' device, or ``(image, eu, au,
    class, z, y, x)`` for volumes ``(image, channel, z, y, x)`` (drawn volume by volume
    and member by member, as :func:`write_cube` draws them). ``patch_size`` and
    ``overlap``: the sliding window, as for :func:`write_cube`."""
    n_members = eu.default_members if members is None else members
    if patch_size is not None:
        patch_size = check_patch_size(patch_size, overlap)
    models = open_members(eu, trained, n_members, seed, images.device, patch_size=patch_size, overlap=overlap)
    n = au.default_samples if samples is None else samples
    if images.ndim != 5:
        return torch.from_numpy(draw_members(models, au, images, n, seed=(seed, 0))).to(images.device)
    volumes = []
    for position in range(images.shape[0]):
        members = draw_volume(models, au, images[position : position + 1], n, seed=(seed, 0, position))
        volumes.append(np.stack([samples for _, samples in members]))
    return torch.from_numpy(np.stack(volumes)).to(images.device)


def _name(au: Any) -> str:
    return f"AU source {type(au).__name__} ({getattr(au, 'name', '')})"


def write_cube(
    eu: EUMethod,
    au: AUMethod,
    batches: Iterable[Any],
    out: str | Path,
    *,
    trained: Any = None,
    members: int | None = None,
    samples: int | None = None,
    device: str | torch.device = "auto",
    precision: str | None = "auto",
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    model: str = "",
    dataset: str = "",
    au_method: str | None = None,
    eu_method: str | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    chunk_images: int | None = None,
    progress: bool | Any = True,
    total: int | None = None,
    write_input: bool = True,
    au_label: str | None = None,
    eu_label: str | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.25,
    spacing: Sequence[float] | None = None,
) -> Path:
    """Write every member's AU samples for every image of ``batches`` to the store ``out``.

    Parameters
    ----------
    eu : the EU source: an EU method (:class:`~uqeval_torch.eu.ensemble.Ensemble`,
        :class:`~uqeval_torch.eu.dropout.MCDropout`, :class:`~uqeval_torch.eu.none.SingleModel`
        with your models, or any EU method with ``trained``).
    au : the AU source: an AU method (:class:`~uqeval_torch.au.softmax.Softmax`,
        :class:`~uqeval_torch.au.tta.TestTimeAugmentation`, :class:`~uqeval_torch.au.sampler.Sampler`, …).
    trained : what ``eu.train`` returned, for a trained run (``uqeval predict``); ``None``
        for sources that hold their own models.
    members, samples : members per image and AU samples per member (default: ``eu.default_members``,
        ``au.default_samples``).
    batches : any iterable of batches, e.g. a ``DataLoader``; see :func:`read_batch`. It
        must give the same images in the same order when iterated again (to resume).
        Images ``(batch, channel, y, x)`` make a store of images; volumes ``(batch,
        channel, z, y, x)`` a store of volumes, written one volume and one member at a
        time (:meth:`uqeval.CubeWriter.volume`).
    out : the zarr store. An unfinished store from an earlier call resumes; a finished
        one is refused unless ``overwrite``, which replaces only a store written by
        uqeval or an empty folder (:func:`uqeval.check_replaceable`).
    device : ``auto`` (CUDA if present), ``cpu``, ``cuda``, ….
    precision : autocast ``"bf16"``, ``"fp16"``, ``None`` (float32), or ``"auto"``
        (bf16 on CUDA, float32 on the CPU).
    seed : seeds batch ``k``'s draws with ``(seed, k)`` (member ``e`` of the volume at
        position ``i`` of batch ``k`` with ``(seed, k, i, e)``), and the members (dropout
        masks, SWAG draws).
    class_names, model, dataset, au_method, eu_method, attrs : store attributes
        (``au_method``/``eu_method`` default to the sources' class names).
    au_label, eu_label : how messages name the sources (default: their class names).
    chunk_images : images per store chunk (default: the writer's).
    progress : ``True`` for a progress bar on the terminal, ``False`` for none, or a
        ``rich.progress.Progress`` to add the task to.
    total : images in ``batches``, for the progress bar (default: ``len(batches.dataset)``
        when it has one).
    write_input : also store each image's input pixels as the cube's ``input`` variable
        (float32, ``(image, channel, [z,] y, x)``), which the report's example maps show
        beside the uncertainty. It costs 4·channel bytes per pixel, against
        2·eu·au·class for the float16 probabilities.
    patch_size : the network's patch, one size per spatial axis (``(z, y, x)`` for
        volumes): every member then predicts each image or volume from overlapping
        windows of this size, averaging their outputs (logits) where they overlap
        (:func:`~uqeval_torch.sliding_window.sliding_window`, MONAI's sliding window with
        constant weights). None (default): the whole image in one pass.
    overlap : the fraction of a window the next one overlaps along each axis, in [0, 1).
    spacing : the voxel size ``(z, y, x)`` (or pixel size ``(y, x)``) in mm, stored as the
        store attribute ``spacing``.

    Returns
    -------
    pathlib.Path
        The store, complete.

    Raises
    ------
    UQEvalError
        A bad batch, or a model or sampler that breaks the contract (named with its EU or
        AU source). A store this call created is removed; a resumed one keeps its images.
    """
    n_members = eu.default_members if members is None else members
    n_samples = au.default_samples if samples is None else samples
    if n_members == 1 and n_samples == 1:
        raise UQEvalError(
            f"{type(eu).__name__} with {type(au).__name__} is deterministic (one member, one sample per image): "
            "its uncertainty cannot be decomposed; use several members (Ensemble, MCDropout) or a stochastic "
            "AU source (TestTimeAugmentation, Sampler)"
        )
    if patch_size is not None:
        patch_size = check_patch_size(patch_size, overlap)
    au_label = au_label or _name(au)
    eu_label = eu_label or f"EU source {type(eu).__name__}"
    chosen = pick_device(device)
    if precision == "auto":
        precision = "bf16" if chosen.type == "cuda" else None
    if precision is not None and precision not in PRECISIONS:
        raise UQEvalError(f"precision must be 'bf16', 'fp16', None or 'auto', not {precision!r}")
    out = Path(out)
    if total is None:
        dataset_of = getattr(batches, "dataset", None)
        total = len(dataset_of) if hasattr(dataset_of, "__len__") else None
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise UQEvalError("write_cube: the batches hold no image")
    if overwrite:
        check_replaceable(out, "cube")  # before anything is removed: only a store uqeval wrote, or an empty folder
    created = not out.exists() or overwrite
    store = {
        "au_method": au_method or type(au).__name__,
        "eu_method": eu_method or type(eu).__name__,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "class_names": class_names,
        "attrs": {**describe(eu, au, patch_size, overlap), **(attrs or {})},
        "chunk_images": chunk_images,
        "spacing": spacing,
        "overwrite": overwrite,
        "resume": not overwrite,
    }
    try:
        models = open_members(eu, trained, n_members, seed, chosen, patch_size=patch_size, overlap=overlap)
        drawing = _Drawing(models, au, n_samples, seed, chosen, precision, au_label, eu_label)
        with _progress(progress, total) as advance:
            batch = read_batch(first, 0)
            write = _write_volumes if batch.images.ndim == 5 else _write_images
            write(drawing, _read(batch, iterator), out, store, write_input, advance)
    except UQEvalError as error:
        if created and out.exists():
            shutil.rmtree(out, ignore_errors=True)
            raise UQEvalError(f"{error} (nothing was kept: {out} was removed)", parameter=error.parameter) from None
        raise
    return out


@dataclass(frozen=True)
class _Drawing:
    """What :func:`write_cube` draws with: the members, the AU source and their settings."""

    models: list[nn.Module]
    au: AUMethod
    n_samples: int
    seed: int
    device: torch.device
    precision: str | None
    au_label: str
    eu_label: str

    def batch(self, batch: ImageBatch, number: int) -> np.ndarray:
        """``(image, eu, au, class, y, x)``: every member's samples for batch ``number``."""
        return draw_members(
            self.models,
            self.au,
            batch.images.to(self.device),
            self.n_samples,
            seed=(self.seed, number),
            precision=self.precision,
            au_label=self.au_label,
            eu_label=self.eu_label,
        )

    def volume(self, batch: ImageBatch, number: int, position: int) -> Iterator[tuple[int, np.ndarray]]:
        """Member by member, the ``(au, class, z, y, x)`` samples of volume ``position`` of batch ``number``."""
        return draw_volume(
            self.models,
            self.au,
            batch.images[position : position + 1].to(self.device),
            self.n_samples,
            seed=(self.seed, number, position),
            precision=self.precision,
            au_label=self.au_label,
            eu_label=self.eu_label,
        )


def _read(first: ImageBatch, rest: Iterator[Any]) -> Iterator[tuple[int, ImageBatch]]:
    """``(number, batch)`` for every batch: ``first`` (already read), then the rest as read."""
    yield 0, first
    for number, raw in enumerate(rest, start=1):
        yield number, read_batch(raw, number)


def _open_writer(
    out: Path, cube_shape: tuple[int, ...], batch: ImageBatch, store: dict[str, Any], write_input: bool
) -> CubeWriter:
    """The store's writer, for members × samples ``cube_shape`` ``(eu, au, class, [z,] y, x)``."""
    spatial = dict(zip(("depth", "height", "width")[-(len(cube_shape) - 3) :], cube_shape[3:], strict=True))
    return CubeWriter(
        out,
        n_classes=cube_shape[2],
        eu=cube_shape[0],
        au=cube_shape[1],
        **spatial,
        raters=0 if batch.labels is None else batch.labels.shape[1],
        channels=int(batch.images.shape[1]) if write_input else 0,
        **store,
    )


def _write_images(
    drawing: _Drawing,
    batches: Iterator[tuple[int, ImageBatch]],
    out: Path,
    store: dict[str, Any],
    write_input: bool,
    advance: Any,
) -> None:
    """Batch by batch: every member's samples of a batch, appended."""
    first = next(batches)
    probabilities = drawing.batch(first[1], first[0])
    with _open_writer(out, probabilities.shape[1:], first[1], store, write_input) as writer:
        done, seen = writer.n_images, 0
        for number, batch in itertools.chain([first], batches):
            if seen + len(batch) <= done:  # written by an earlier, interrupted call
                seen += len(batch)
                advance(len(batch))
                continue
            if number > 0:
                probabilities = drawing.batch(batch, number)
            skip = max(0, done - seen)
            _append(writer, batch.tail(skip), probabilities[skip:], number, write_input)
            seen += len(batch)
            advance(len(batch))


def _write_volumes(
    drawing: _Drawing,
    batches: Iterator[tuple[int, ImageBatch]],
    out: Path,
    store: dict[str, Any],
    write_input: bool,
    advance: Any,
) -> None:
    """Volume by volume and member by member: one member's samples of one volume at a time."""
    writer: CubeWriter | None = None
    done = seen = 0
    with contextlib.ExitStack() as open_store:
        for number, batch in batches:
            if batch.images.ndim != 5:
                raise UQEvalError(
                    f"batch {number}: images {tuple(batch.images.shape)} (batch, channel, y, x), but the store "
                    "holds volumes (batch, channel, z, y, x); every batch must hold volumes"
                )
            for position in range(len(batch)):
                seen += 1
                if seen <= done:  # written by an earlier, interrupted call
                    advance(1)
                    continue
                members = drawing.volume(batch, number, position)
                member, samples = next(members)
                if writer is None:
                    shape = (len(drawing.models), *samples.shape)
                    writer = open_store.enter_context(_open_writer(out, shape, batch, store, write_input))
                    done = writer.n_images
                    if seen <= done:
                        advance(1)
                        continue
                _check_batch(writer, batch, samples.shape, number, write_input, "(au, class, z, y, x)")
                pixels = batch.images[position].detach().float().cpu().numpy() if write_input else None
                with writer.volume(
                    None if batch.image_ids is None else batch.image_ids[position],
                    domain=batch.domains[position],
                    role=batch.roles[position],
                    labels=None if batch.labels is None else batch.labels[position],
                    input=pixels,
                ) as volume:
                    volume.write_member(member, samples)
                    for member, samples in members:
                        volume.write_member(member, samples)
                advance(1)


def _check_batch(
    writer: CubeWriter, batch: ImageBatch, drawn: tuple[int, ...], number: int, write_input: bool, dims: str
) -> None:
    """Refuse a batch whose drawn samples, labels or channels do not fit the store."""
    expected = writer.cube_shape[-len(drawn) :]
    if drawn != expected:
        raise UQEvalError(
            f"batch {number}: the sources drew cubes of shape {drawn} {dims}, but the store holds {expected}; "
            "every batch must give the same classes and image size"
        )
    labels = batch.labels
    if (labels is None) != (writer.raters == 0) or (labels is not None and labels.shape[1] != writer.raters):
        held = "none" if labels is None else labels.shape[1]
        raise UQEvalError(f"batch {number}: labels of {held} raters, but the store holds {writer.raters} per image")
    if write_input and batch.images.shape[1] != writer.channels:
        raise UQEvalError(
            f"batch {number}: images of {batch.images.shape[1]} channels, but the store holds {writer.channels} "
            "per image"
        )


def _append(writer: CubeWriter, batch: ImageBatch, probabilities: np.ndarray, number: int, write_input: bool) -> None:
    _check_batch(writer, batch, probabilities.shape[1:], number, write_input, "(eu, au, class, y, x)")
    writer.append(
        probabilities,
        labels=batch.labels,
        domain=batch.domains,
        role=batch.roles,
        image_ids=batch.image_ids,
        input=batch.images.detach().float().cpu().numpy() if write_input else None,
    )


@contextlib.contextmanager
def _progress(progress: bool | Any, total: int | None) -> Iterator[Any]:
    if progress is False or progress is None:
        yield lambda n: None
        return
    if progress is True:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("writing samples"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        ) as bar:
            task = bar.add_task("writing", total=total)
            yield lambda n: bar.advance(task, n)
        return
    task = progress.add_task("predicting", total=total)
    yield lambda n: progress.advance(task, n)
