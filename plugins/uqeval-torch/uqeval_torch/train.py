"""Training (``uqeval train``): AdamW, gradient clipping, EMA weights, checkpoints that resume.

The study's recipe (§3.5): AdamW with learning rate 1e-4 and no weight decay, batches of
32, gradients clipped to a global L2 norm of 0.5, and an exponential moving average of
the weights (decay 0.999) used for evaluation. Each step trains on one randomly chosen
rater's label map per image. On CUDA the forward pass runs under bf16 autocast.

Determinism: a member's initial weights, data order, rater choices and the methods' noise
all follow from its seed, so a run on the CPU gives the same weights every time, and a
run interrupted and resumed gives the same weights as one that was not interrupted
(the checkpoint holds the RNG state at a step boundary; the data order of an epoch is
drawn from a generator seeded by the seed and the epoch).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from uqeval import UQEvalError
from uqeval.contracts import Collector
from uqeval_torch.backbone import Backbone
from uqeval_torch.run import Components, RunFolder, RunSettings, components, load_state, save_atomically

#: Seconds between checkpoints within an epoch (one is always written at each epoch's end).
CHECKPOINT_SECONDS = 300.0


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; otherwise the named device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise UQEvalError(f"{device!r}: {error}", parameter="device") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UQEvalError(f"{device!r}: no CUDA device is available", parameter="device")
    return chosen


@dataclass
class TrainingData:
    """A split held as tensors: images (N, channel, y, x) float32, labels (N, rater, y, x)
    uint8 padded with 255, and each image's number of raters."""

    images: torch.Tensor
    labels: torch.Tensor
    raters: torch.Tensor

    @classmethod
    def load(cls, dataset: Any, role: str = "train", *, seed: int = 0) -> TrainingData:
        samples = list(dataset.samples(role, "id", seed=seed))
        if not samples:
            raise UQEvalError(f"dataset {dataset.name!r} has no {role} images")
        most = max(sample.labels.shape[0] for sample in samples)
        if most == 0:
            raise UQEvalError(f"dataset {dataset.name!r}: the {role} images have no labels to train on")
        images = np.stack([sample.image for sample in samples]).astype(np.float32)
        labels = np.full((len(samples), most, *images.shape[-2:]), 255, dtype=np.uint8)
        for index, sample in enumerate(samples):
            labels[index, : sample.labels.shape[0]] = sample.labels
        raters = torch.tensor([sample.labels.shape[0] for sample in samples])
        return cls(torch.from_numpy(images), torch.from_numpy(labels), raters)

    def __len__(self) -> int:
        return self.images.shape[0]


class MemberTrainer:
    """The training routine (``uqeval.contracts.TrainRoutine``) an EU method calls per member.

    ``routine(seed=…, dropout=…, on_step=…, collector=…)`` returns the member's EMA
    network in evaluation mode: loaded when the run already finished it, resumed from
    its checkpoint when one exists, trained from scratch otherwise. A ``collector``'s
    state travels with the checkpoints and the finished member, so it is restored in
    every case. With ``load_only`` it never trains (prediction) and an unfinished
    member is an error.
    """

    def __init__(
        self,
        settings: RunSettings,
        parts: Components,
        folder: RunFolder,
        *,
        data: TrainingData | None = None,
        device: torch.device | None = None,
        progress: Progress | None = None,
        load_only: bool = False,
        checkpoint_every: int | None = None,
    ):
        self.settings = settings
        self.parts = parts
        self.folder = folder
        self.data = data
        self.device = device or torch.device("cpu")
        self.progress = progress
        self.load_only = load_only
        self.checkpoint_every = checkpoint_every
        self.backbone = Backbone(settings.size)

    def build(self, seed: int, dropout: float) -> nn.Module:
        torch.manual_seed(seed)
        dataset = self.parts.dataset
        model = self.parts.au.build(
            self.backbone, in_channels=dataset.in_channels, n_classes=dataset.n_classes, dropout=dropout
        )
        return model.to(self.device)

    def __call__(
        self,
        *,
        seed: int,
        dropout: float = 0.0,
        on_step: Callable[[nn.Module, int, int], None] | None = None,
        collector: Collector | None = None,
    ) -> nn.Module:
        model = self.build(seed, dropout)
        finished = self.folder.member_path(seed)
        if finished.exists():
            state = load_state(finished)
            model.load_state_dict(state["ema"])
            if collector is not None:
                if state.get("collector") is None:
                    raise UQEvalError(
                        f"{finished}: this member was trained without collecting what EU method "
                        f"{self.settings.eu!r} needs; train it again into a new folder"
                    )
                collector.load_state_dict(state["collector"])
            return model.eval()
        if self.load_only:
            raise UQEvalError(
                f"{self.folder.path}: the member with seed {seed} has not finished training; "
                f"run the same `uqeval train … --out {self.folder.path}` again to finish it"
            )
        return self._train(model, seed, dropout, on_step, collector)

    def _train(
        self,
        model: nn.Module,
        seed: int,
        dropout: float,
        on_step: Callable[[nn.Module, int, int], None] | None,
        collector: Collector | None,
    ) -> nn.Module:
        settings, data = self.settings, self.data
        if data is None:
            raise RuntimeError("MemberTrainer needs training data to train")
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        # The study drops the last partial batch; a split smaller than one batch is one batch.
        steps_per_epoch = max(1, len(data) // settings.batch_size)
        total = settings.epochs * steps_per_epoch
        step = 0
        checkpoint = self.folder.checkpoint_path(seed)
        if checkpoint.exists():
            state = load_state(checkpoint)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            if collector is not None:
                collector.load_state_dict(state["collector"])
            torch.set_rng_state(state["rng"])
            if self.device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"seed {seed}", total=total, completed=step)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        model.train()
        plan_epoch, order, raters = -1, None, None
        last_save = time.monotonic()
        while step < total:
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != plan_epoch:
                order, raters = epoch_plan(data, seed, epoch)
                plan_epoch = epoch
            batch = order[position * settings.batch_size : (position + 1) * settings.batch_size]
            images = data.images[batch].to(self.device, non_blocking=True)
            labels = data.labels[batch, raters[batch]].to(self.device, non_blocking=True).long()
            with autocast:
                loss = self.parts.au.loss(model, images, labels, epoch=epoch)
            if not torch.isfinite(loss):
                raise UQEvalError(
                    f"training diverged: the {settings.au} loss is {loss.item()} at step {step + 1} "
                    f"(epoch {epoch + 1}) of the member with seed {seed}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
            optimizer.step()
            step += 1
            update_ema(ema, model, settings.ema_decay, step)
            if on_step is not None:
                on_step(model, step, epoch)
            if collector is not None and step % steps_per_epoch == 0:
                collector.epoch_end(model, epoch, settings.epochs)
            due = (
                step % steps_per_epoch == 0
                or (self.checkpoint_every and step % self.checkpoint_every == 0)
                or time.monotonic() - last_save > CHECKPOINT_SECONDS
            )
            if due and step < total:  # the finished member is saved below instead
                self._save_checkpoint(checkpoint, model, ema, optimizer, step, collector)
                last_save = time.monotonic()
            if task is not None:
                self.progress.update(task, completed=step, description=f"seed {seed} · loss {loss.item():.4f}")
        save_atomically(
            {
                "ema": ema.state_dict(),
                "seed": seed,
                "dropout": dropout,
                "steps": step,
                "collector": None if collector is None else collector.state_dict(),
            },
            self.folder.member_path(seed),
        )
        checkpoint.unlink(missing_ok=True)
        return ema

    def _save_checkpoint(
        self,
        path: Path,
        model: nn.Module,
        ema: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        collector: Collector | None,
    ) -> None:
        state = {
            "collector": None if collector is None else collector.state_dict(),
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        save_atomically(state, path)


def epoch_plan(data: TrainingData, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image order and each image's rater for one epoch, from a generator seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(len(data), generator=generator)
    draws = torch.rand(len(data), generator=generator)
    raters = (draws * data.raters).long().clamp(max=data.labels.shape[1] - 1)
    return order, raters


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights: θ̄ ← d·θ̄ + (1 − d)·θ with d = min(decay, (1 + step)/(10 + step)).

    The warm-up of d lets short runs (and the first steps of long ones) follow the
    weights instead of staying near the initialisation; after about 9,000 steps d is
    the study's 0.999. Buffers are copied.
    """
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    for averaged, current in zip(ema.parameters(), model.parameters(), strict=True):
        averaged.lerp_(current.detach(), rate)
    for averaged, current in zip(ema.buffers(), model.buffers(), strict=True):
        averaged.copy_(current)


def check_combination(settings: RunSettings, parts: Components) -> None:
    """Refuse combinations that cannot be decomposed: a deterministic AU method with one member."""
    if parts.au.deterministic and settings.members < 2:
        raise UQEvalError(
            f"AU method {settings.au!r} is deterministic and EU method {settings.eu!r} gives "
            f"{settings.members} member: every prediction would be the same map, which cannot be "
            "decomposed into AU and EU; use an EU method with several members (e.g. --eu ensemble)"
        )


def train(
    settings: RunSettings,
    out: str | Path,
    *,
    device: str = "auto",
    progress: Progress | None = None,
    checkpoint_every: int | None = None,
) -> list[nn.Module]:
    """Train (or resume, or load when finished) every member of a run into ``out``.

    Parameters
    ----------
    settings : what to train (:class:`~uqeval_torch.run.RunSettings`).
    out : the run folder; an existing run with the same settings is resumed.
    device : ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``, ….
    progress : a rich progress display to add one task per member to.
    checkpoint_every : also checkpoint every this many steps (default: each epoch's end
        and every :data:`CHECKPOINT_SECONDS`).

    Returns
    -------
    The trained object of the EU method (for the built-in ones, the member networks).
    """
    parts = components(settings)
    check_combination(settings, parts)
    folder = RunFolder(out)
    resumed = folder.start(settings)
    data = TrainingData.load(parts.dataset, "train", seed=settings.data_seed)
    trainer = MemberTrainer(
        settings,
        parts,
        folder,
        data=data,
        device=pick_device(device),
        progress=progress,
        checkpoint_every=checkpoint_every,
    )
    try:
        return parts.eu.train(trainer, n_members=settings.members, seed=settings.seed)
    except UQEvalError:
        if not resumed and not any((folder.path / "members").iterdir()):
            shutil.rmtree(folder.path)  # refused before any training: leave nothing behind
        raise


def load_trained(out: str | Path, *, device: str | torch.device = "auto") -> tuple[RunSettings, Components, Any]:
    """The settings, plugins and trained object of a finished run (nothing is trained)."""
    folder = RunFolder(out)
    settings = folder.read_settings()
    parts = components(settings)
    trainer = MemberTrainer(settings, parts, folder, device=pick_device(device), load_only=True)
    return settings, parts, parts.eu.train(trainer, n_members=settings.members, seed=settings.seed)
