"""Every reference family of uqeval-torch, trained, checked and predicted in one call: ready for a GPU.

For each AU family (softmax, SSN, Prob. UNet, diffusion) on the study's network at full
size (128 × 128 images with 3 input channels, LIDC's grey replicated, and 2 classes;
training batches of ``RunSettings().batch_size`` = 32 as the study; prediction batches of
``uqeval predict``'s 16), it measures and checks:

* **training**: images/s over 20 optimiser steps of the trainer's recipe (loss, backward,
  clipping, AdamW, EMA) after 3 warm-up steps, in float32 and under bf16 autocast; every
  loss finite; the peak memory (on CUDA ``torch.cuda.max_memory_allocated``, on the CPU
  the process's peak resident memory, VmHWM);
* **bf16 correctness**: one batch's probabilities as the writer draws them
  (``draw_members``, same seed) under bf16 autocast against float32 (TF32 off), and the
  training loss likewise, against the family's :data:`BF16_TOLERANCES`
  (:data:`TOLERANCE_WHY` says why);
* **batched samples**: the network passes of one ``sample()`` call must not grow with
  the samples (diffusion's 10 samples × 10 DDIM steps run as 10 passes of a batch of
  10 × images, never one sample after another);
* **prediction**: images/s of the writer's drawing loop with the ensemble's 5 members ×
  the family's default samples (10; 1 for softmax), in the writer's precision (bf16 on
  CUDA, float32 on the CPU);
* **the whole path**: a small cube of the ``synthetic`` dataset (calibration, test and
  the four OOD shifts) written by ``write_cube`` from one family and scored by
  ``uqeval.score``, with the share of the time in the network, the writer and the scoring;
* **variants**: ``channels_last`` (training and prediction) and ``torch.compile`` of the
  networks (prediction, then training while time is left), each as a speed-up over the
  plain run timed just before it; a variant *pays* from :data:`PAYS` (10 %) on, and only
  then does its speed-up count in the "best predict" column (the plain images/s times
  the largest speed-up that pays).

The weights are the family's initial ones with the zero-initialised output convs
re-drawn (:func:`unzeroed`): outputs then depend on the input, as a trained network's do
(with the zeros every map is exactly 0.5 and bf16 could not be told from float32).

Output: a table on the terminal and ``DIR/gpu_check.json`` (the device, torch, CUDA and
cuDNN versions, the sizes and every number), rewritten after every part, so that a run
stopped from outside leaves what it measured.

Time box: the whole run is given ``--budget`` seconds (420 at full size, so that with
start-up it stays under 8 minutes); every part is timed, loops stop early when the
budget is spent, and the optional variants start only while enough of it is left.

Exit status: 0 when every family passed; 1 when a family failed (an error, a loss that
is not finite, samples that are not batched, bf16 beyond its tolerance) or the whole
path failed; 3 when nothing failed but the time box cut a family's or the whole path's
measurements short; 2 for bad arguments (``--device cuda`` without CUDA).

It downloads nothing: the data are the ``synthetic`` dataset's, drawn in memory.

Run::

    python benchmarks/gpu_check.py --device cuda --out DIR          # on a GPU: full size, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --out DIR    # on a CPU: tiny network, 32 × 32, minutes
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import print_table
from torch import nn

import uqeval
from uqeval import UQEvalError, plugin_manager, write_json
from uqeval_torch import __version__ as plugin_version
from uqeval_torch.backbone import AttentionUNet, Backbone, parameter_count
from uqeval_torch.data.synthetic import SyntheticDataset
from uqeval_torch.eu.ensemble import Ensemble
from uqeval_torch.predict import predict, prediction_samples
from uqeval_torch.run import RunSettings
from uqeval_torch.train import pick_device, update_ema
from uqeval_torch.writing import draw_members, open_members, write_cube

#: The families, by their plugin names, and how the table names them.
FAMILIES = {"softmax": "softmax", "ssn": "SSN", "prob_unet": "Prob. UNet", "diffusion": "diffusion"}
#: An epoch past SSN's mean-only epochs and Prob. UNet's KL warm-up: the full losses.
LATE_EPOCH = 100
#: Input channels and classes: LIDC's (grey replicated to 3 channels; nodule or not).
IN_CHANNELS, N_CLASSES = 3, 2


@dataclass(frozen=True)
class Tolerance:
    """How far bf16 autocast may move one family's outputs from exact float32.

    Attributes
    ----------
    max : the largest |p_bf16 − p_fp32| of any probability of the batch.
    mean : the mean |p_bf16 − p_fp32| over the batch.
    loss : the relative difference of the training loss.
    """

    max: float
    mean: float
    loss: float = 0.02


#: The bf16 tolerances by family (:data:`TOLERANCE_WHY`).
BF16_TOLERANCES = {
    "softmax": Tolerance(max=0.25, mean=0.01),
    "ssn": Tolerance(max=0.4, mean=0.03),
    "prob_unet": Tolerance(max=0.25, mean=0.01),
    "diffusion": Tolerance(max=0.25, mean=0.01),
}
TOLERANCE_WHY = (
    "bf16 keeps 8 significant bits (a relative rounding of 2^-9 = 0.2 % per operation), and the UNet runs "
    "some 40 convolutions in bf16 one after another: on the CPU its logits moved by up to 3 % of their range "
    "(float32 reference, same weights and noise). A probability moves by at most 1/4 of the change of the "
    "logit difference, and most at pixels whose logits nearly tie, so the largest deviation is a tail: "
    "measured up to 0.09 (softmax, 128 x 128, 2 images) and 0.18 (SSN, whose sampled logits add a "
    "rank-10 factor term and a diagonal term, each with its own bf16 error, on the widest spread), "
    "the mean deviation up to 0.006 (0.014 for SSN). A GPU batch holds 8 times those pixels, so its tail "
    "reaches further: the maximum is allowed 0.25 (SSN 0.4), the mean 0.01 (SSN 0.03), a few times what was "
    "measured, and the loss 2 %, as tests/plugins/test_autocast.py asks. What they catch is what is "
    "broken, not rounding: a non-finite value, an overflow, a kernel that computes something else, or "
    "errors that grow over diffusion's 10 DDIM steps, which feed each step's output into the next."
)
#: A variant pays from this speed-up on (timing noise is a few per cent).
PAYS = 1.10


@dataclass(frozen=True)
class Plan:
    """The sizes and time box of one run.

    Attributes
    ----------
    size : the network size (``uqeval_torch.backbone.SIZES``).
    side : image side in pixels.
    train_batch, predict_batch : images per training step and per prediction batch.
    warmup_steps, steps : untimed and timed training steps.
    predict_batches : timed prediction batches (after one untimed).
    members : EU members per image (the ensemble's).
    check_images, check_samples : images and AU samples of the bf16 check (``None``: the
        family's default samples).
    path_calibration, path_test : calibration and test images per domain of the whole
        path's cube (the test images once per domain, ID and the four shifts).
    budget_s : seconds for the whole run.
    compile_reserve_s : seconds that must be left to start a ``torch.compile`` variant.
    """

    size: str
    side: int
    train_batch: int
    predict_batch: int
    warmup_steps: int
    steps: int
    predict_batches: int
    members: int
    check_images: int
    check_samples: int | None
    path_calibration: int
    path_test: int
    budget_s: float
    compile_reserve_s: float


def full_plan() -> Plan:
    """The study's sizes, read from the plugin's defaults (training batch, prediction batch, ensemble size)."""
    return Plan(
        size="full",
        side=128,
        train_batch=RunSettings(au="softmax", eu="ensemble", data="synthetic").batch_size,
        predict_batch=inspect.signature(predict).parameters["batch_size"].default,
        warmup_steps=3,
        steps=20,
        predict_batches=3,
        members=Ensemble().default_members,
        check_images=inspect.signature(predict).parameters["batch_size"].default,
        check_samples=None,
        path_calibration=8,
        path_test=8,
        budget_s=420.0,
        compile_reserve_s=90.0,
    )


#: The CPU's: the tiny network (width 8), 32 × 32, small batches, 2 members, a few steps.
TINY = Plan(
    size="tiny",
    side=32,
    train_batch=4,
    predict_batch=2,
    warmup_steps=1,
    steps=3,
    predict_batches=1,
    members=2,
    check_images=2,
    check_samples=2,
    path_calibration=2,
    path_test=2,
    budget_s=600.0,
    compile_reserve_s=60.0,
)


class Budget:
    """The run's time box: seconds since the start, and what is left."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Device:
    """The device, its synchronisation and its peak memory."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously); nothing on the CPU."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def clock(self) -> float:
        """``time.perf_counter()`` after the queued work is done."""
        self.sync()
        return time.perf_counter()

    @property
    def memory_kind(self) -> str:
        if self.cuda:
            return "GPU memory allocated by torch (torch.cuda.max_memory_allocated)"
        return "peak resident memory of the process (VmHWM, reset before each part)"

    def reset_peak(self) -> None:
        """Start a new peak: CUDA's allocator statistics, or the kernel's VmHWM (``/proc/self/clear_refs``)."""
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int | None:
        """Bytes at the peak since :meth:`reset_peak` (``None`` where the platform does not say)."""
        if self.cuda:
            self.sync()
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        except OSError:
            return None
        return int(match.group(1)) * 1024 if match else None

    def tidy(self) -> None:
        """Return cached blocks after a part (and after an out-of-memory error)."""
        if self.cuda:
            torch.cuda.empty_cache()


@contextlib.contextmanager
def exact_float32(device: Device) -> Iterator[None]:
    """float32 without TF32 (cuDNN's convolutions use TF32 by default on CUDA): the reference of the bf16 check."""
    if not device.cuda:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def unzeroed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every zero-initialised conv and linear layer re-drawn by its default initialisation.

    The shared UNet starts its last convs (each ResBlock's second, the attention's output,
    the heads) at zero, so an untrained network's output does not depend on its input.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear) and not module.weight.any():
                module.reset_parameters()
    return model


@dataclass
class Data:
    """Training images and labels, prediction images (on the CPU, as the loaders give them)."""

    train_images: torch.Tensor  # (train_batch, 3, y, x) float32
    train_labels: torch.Tensor  # (train_batch, rater, y, x) uint8
    predict_images: torch.Tensor  # (predict_batch, 3, y, x) float32


def grey_to_rgb(image: np.ndarray) -> np.ndarray:
    """(1, y, x) → (3, y, x): the grey image replicated, as the LIDC loader does."""
    return np.repeat(image, IN_CHANNELS, axis=0)


def synthetic_data(plan: Plan) -> Data:
    """Images and four raters' labels of the ``synthetic`` dataset at the plan's side (drawn, not downloaded)."""
    dataset = SyntheticDataset(size=plan.side, n_train=plan.train_batch, n_calibration=0, n_test=plan.predict_batch)
    train = list(dataset.samples("train", "id"))
    test = list(dataset.samples("test", "id"))
    return Data(
        torch.from_numpy(np.stack([grey_to_rgb(sample.image) for sample in train])),
        torch.from_numpy(np.stack([sample.labels for sample in train])),
        torch.from_numpy(np.stack([grey_to_rgb(sample.image) for sample in test])),
    )


# --- the parts -------------------------------------------------------------------------------


def as_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def measure_training(
    method: Any,
    model: nn.Module,
    data: Data,
    plan: Plan,
    device: Device,
    budget: Budget,
    *,
    bf16: bool,
    channels_last: bool = False,
) -> dict[str, Any]:
    """images/s of the trainer's step (``MemberTrainer``'s loop body) over ``plan.steps`` steps after the warm-up.

    Each step copies its batch to the device, takes the loss (under bf16 autocast when
    ``bf16``), steps AdamW after clipping and updates the EMA, with the plugin's
    defaults (``RunSettings``). The losses are checked for finiteness once, at the end
    (checking each would synchronise every step). Stops after the warm-up and at least
    one timed step when the budget is spent.
    """
    settings = RunSettings(au="softmax", eu="ensemble", data="synthetic")
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    autocast = torch.autocast(device.device.type, dtype=torch.bfloat16, enabled=bf16)
    raters = data.train_labels.shape[1]
    losses: list[torch.Tensor] = []

    def step(number: int) -> None:
        images = as_layout(data.train_images.to(device.device, non_blocking=True), channels_last)
        labels = data.train_labels[:, number % raters].to(device.device, non_blocking=True).long()
        with autocast:
            loss = method.loss(model, images, labels, epoch=LATE_EPOCH)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimizer.step()
        update_ema(ema, model, settings.ema_decay, number + 1)
        losses.append(loss.detach().float())

    model.train()
    device.reset_peak()
    start = device.clock()
    for number in range(plan.warmup_steps):
        step(number)
    warm = device.clock()
    seconds: list[float] = []
    for number in range(plan.warmup_steps, plan.warmup_steps + plan.steps):
        begin = time.perf_counter()
        step(number)
        seconds.append(device.clock() - begin)
        if budget.left() <= 0:
            break
    peak = device.peak()
    values = torch.stack(losses).cpu()
    model.eval()
    images = len(seconds) * plan.train_batch
    return {
        "precision": "bf16" if bf16 else "fp32",
        "channels_last": channels_last,
        "images_per_s": images / sum(seconds),
        "timed_steps": len(seconds),
        "steps_asked": plan.steps,
        "warmup_s": warm - start,
        "step_s_median": float(np.median(seconds)),
        "step_s_min": min(seconds),
        "loss_first": float(values[0]),
        "loss_last": float(values[-1]),
        "losses_finite": bool(torch.isfinite(values).all()),
        "peak_bytes": peak,
    }


def check_bf16(method: Any, model: nn.Module, data: Data, plan: Plan, device: Device) -> dict[str, Any]:
    """One batch's probabilities and training loss under bf16 autocast against exact float32, same seeds.

    The probabilities are the writer's (``draw_members``: sampled, checked, renormalised),
    one member, ``plan.check_samples`` samples (default: the family's).
    """
    samples = plan.check_samples or method.default_samples
    images = data.predict_images[: plan.check_images].to(device.device)
    labels = data.train_labels[: plan.check_images, 0].to(device.device).long()
    model.eval()
    with exact_float32(device):
        plain = draw_members([model], method, images, samples, seed=(0, 0), precision=None)
    mixed = draw_members([model], method, images, samples, seed=(0, 0), precision="bf16")
    deviation = np.abs(mixed.astype(np.float64) - plain)
    model.train()
    with torch.no_grad():
        with exact_float32(device):
            torch.manual_seed(1)
            loss_plain = float(method.loss(model, images, labels, epoch=LATE_EPOCH))
        torch.manual_seed(1)
        with torch.autocast(device.device.type, dtype=torch.bfloat16):
            loss_mixed = float(method.loss(model, images, labels, epoch=LATE_EPOCH))
    model.eval()
    loss_deviation = abs(loss_mixed - loss_plain) / max(abs(loss_plain), 1e-12)
    max_deviation, mean_deviation = float(deviation.max()), float(deviation.mean())
    finite = bool(np.isfinite(mixed).all() and math.isfinite(loss_mixed))
    tolerance = BF16_TOLERANCES[method.name]
    return {
        "images": int(images.shape[0]),
        "samples": samples,
        "max_deviation": max_deviation,
        "mean_deviation": mean_deviation,
        "p999_deviation": float(np.quantile(deviation, 0.999)),
        "loss_fp32": loss_plain,
        "loss_bf16": loss_mixed,
        "loss_relative_deviation": loss_deviation,
        "finite": finite,
        "max_tolerance": tolerance.max,
        "mean_tolerance": tolerance.mean,
        "loss_tolerance": tolerance.loss,
        "passed": finite
        and max_deviation <= tolerance.max
        and mean_deviation <= tolerance.mean
        and loss_deviation <= tolerance.loss,
    }


def network_passes(method: Any, model: nn.Module, images: torch.Tensor, n: int) -> list[int]:
    """The batch size of every pass through one of ``model``'s UNets during ``method.sample(model, images, n)``.

    Every family runs its UNets through ``AttentionUNet.features`` (its ``forward`` too),
    so counting calls of that method counts the network passes.
    """
    batches: list[int] = []
    nets = [module for module in model.modules() if isinstance(module, AttentionUNet)]
    for net in nets:

        def counted(x: torch.Tensor, t: torch.Tensor | None = None, *, _net: AttentionUNet = net) -> torch.Tensor:
            batches.append(int(x.shape[0]))
            return AttentionUNet.features(_net, x, t)

        net.features = counted  # an instance attribute shadows the method until deleted
    try:
        with torch.inference_mode():
            method.sample(model, images, n)
    finally:
        for net in nets:
            del net.features
    return batches


def check_batched(method: Any, model: nn.Module, data: Data, device: Device) -> dict[str, Any]:
    """Whether ``sample()`` draws its samples in one batch: its network passes do not grow with ``n``.

    One image, with 2 and with 4 samples: a family that loops over its samples makes
    twice the passes with 4; a batched one makes the same passes, each of a larger batch.
    With the family's default samples, the images that pass through a network per image
    and member (diffusion: 10 steps × 10 samples = 100) size the prediction's work.
    """
    image = data.predict_images[:1].to(device.device)
    model.eval()
    two, four = network_passes(method, model, image, 2), network_passes(method, model, image, 4)
    default = network_passes(method, model, image, method.default_samples)
    return {
        "passes_with_2_samples": len(two),
        "passes_with_4_samples": len(four),
        "batch_of_each_pass_with_4_samples": sorted(set(four)),
        "image_passes_per_member": sum(default),
        "batched": len(four) == len(two),
    }


def measure_prediction(
    method: Any,
    model: nn.Module,
    data: Data,
    plan: Plan,
    device: Device,
    budget: Budget,
    *,
    channels_last: bool = False,
) -> dict[str, Any]:
    """images/s of the writer's drawing loop: ``plan.members`` ensemble members × the family's default samples.

    The members are the ensemble's (``Ensemble().members`` through the writer's
    ``open_members``), all of them this one network: the work per member is the same as
    with 5 trained networks. Each batch is copied to the device, drawn in the writer's
    precision (bf16 on CUDA, float32 on the CPU), checked, renormalised and brought back
    to the host, as ``write_cube`` does before it stores the batch.
    """
    samples = method.default_samples
    precision = "bf16" if device.cuda else None
    models = open_members(Ensemble(), [model] * plan.members, plan.members, 0, device.device)

    def draw(number: int) -> None:
        images = as_layout(data.predict_images.to(device.device), channels_last)
        draw_members(models, method, images, samples, seed=(0, number), precision=precision)

    device.reset_peak()
    start = device.clock()
    draw(0)
    first = device.clock() - start
    seconds: list[float] = []
    for number in range(1, 1 + plan.predict_batches):
        begin = time.perf_counter()
        draw(number)
        seconds.append(device.clock() - begin)
        if budget.left() <= 0:
            break
    images = len(seconds) * plan.predict_batch
    return {
        "precision": precision or "fp32",
        "channels_last": channels_last,
        "members": plan.members,
        "samples": samples,
        "images_per_s": images / sum(seconds),
        "maps_per_s": images * plan.members * samples / sum(seconds),
        "timed_batches": len(seconds),
        "first_batch_s": first,
        "batch_s_median": float(np.median(seconds)),
        "peak_bytes": device.peak(),
    }


class TimedSampler:
    """An AU method whose ``sample`` calls are timed (device synchronised): the network's share of the writer's loop."""

    def __init__(self, method: Any, device: Device):
        self.method, self.device = method, device
        self.name, self.deterministic = method.name, method.deterministic
        self.default_samples = method.default_samples
        self.seconds = self.cpu_seconds = 0.0

    def sample(self, model: nn.Module, images: torch.Tensor, n: int) -> torch.Tensor:
        start, cpu = self.device.clock(), time.process_time()
        drawn = self.method.sample(model, images, n)
        self.seconds += self.device.clock() - start
        self.cpu_seconds += time.process_time() - cpu
        return drawn


def whole_path(name: str, method: Any, model: nn.Module, plan: Plan, device: Device, folder: Path) -> dict[str, Any]:
    """A cube of the ``synthetic`` dataset written by ``write_cube`` from one family, then ``uqeval.score``.

    The images are drawn first (not in the shares). The path runs twice: the first run
    loads uqeval's compiled kernels and the writer's codecs (reported apart, as
    ``first_run``); the second gives the shares of a run at steady state.
    """
    start = time.perf_counter()
    dataset = SyntheticDataset(size=plan.side, n_train=1, n_calibration=plan.path_calibration, n_test=plan.path_test)
    images = list(prediction_samples(dataset))
    batches = []
    for first in range(0, len(images), plan.predict_batch):
        batch = images[first : first + plan.predict_batch]
        batches.append(
            {
                "image": torch.from_numpy(np.stack([grey_to_rgb(sample.image) for sample in batch])),
                "labels": np.stack([sample.labels for sample in batch]),
                "domain": [sample.domain for sample in batch],
                "role": [sample.role for sample in batch],
                "image_id": [sample.image_id for sample in batch],
            }
        )
    data_seconds = time.perf_counter() - start
    write = partial(write_and_score, name, method, model, batches, dataset, plan, device)
    first_run = write(folder / f"{name}-first.zarr")
    result = write(folder / f"{name}.zarr")
    return {
        "family": name,
        "images": len(images),
        "members": plan.members,
        "samples": method.default_samples,
        "data_s": data_seconds,
        **result,
        "first_run": first_run,
    }


def write_and_score(
    name: str,
    method: Any,
    model: nn.Module,
    batches: list[dict[str, Any]],
    dataset: SyntheticDataset,
    plan: Plan,
    device: Device,
    store: Path,
) -> dict[str, Any]:
    """``write_cube`` then ``uqeval.score``, timed: the writing loop's time splits into the network (the AU
    method's ``sample`` calls) and the writer (everything else: checks, renormalising, the copy to the host,
    ``CubeWriter``'s float16 encoding, compression and files). The process's CPU time of each (all its
    threads) is kept too: on a CPU, threads that spin while they wait show there and not in the wall time's
    split."""
    sampler = TimedSampler(method, device)
    start, cpu = device.clock(), time.process_time()
    write_cube(
        Ensemble(),
        sampler,
        batches,
        store,
        trained=[model] * plan.members,
        members=plan.members,
        device=device.device,
        class_names=list(dataset.class_names),
        model=f"{name}+ensemble ({plan.size}, untrained)",
        dataset=dataset.name,
        au_method=name,
        eu_method="ensemble",
        progress=False,
    )
    write_seconds, write_cpu = device.clock() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    scores = uqeval.score(store)
    score_seconds, score_cpu = time.perf_counter() - start, time.process_time() - cpu
    total = write_seconds + score_seconds
    return {
        "store_bytes": sum(path.stat().st_size for path in store.rglob("*") if path.is_file()),
        "total_s": total,
        "network_s": sampler.seconds,
        "writer_s": write_seconds - sampler.seconds,
        "scoring_s": score_seconds,
        "network_share": sampler.seconds / total,
        "writer_share": (write_seconds - sampler.seconds) / total,
        "scoring_share": score_seconds / total,
        "tasks_scored": sorted(scores.to_dataframe()["task"].unique()),
        "cpu_s": {"network": sampler.cpu_seconds, "writer": write_cpu - sampler.cpu_seconds, "scoring": score_cpu},
    }


@contextlib.contextmanager
def variant(model: nn.Module, name: str) -> Iterator[None]:
    """``model`` as the variant runs it: ``channels_last`` weights, or every UNet's ``features`` compiled.

    Compiling ``features`` (not the top module) reaches every pass of every family: SSN
    and Prob. UNet call their UNets' ``features`` directly. ``dynamic=False``: one graph
    per input shape, as each part feeds one shape.
    """
    if name == "channels_last":
        model.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            model.to(memory_format=torch.contiguous_format)
        return
    nets = [module for module in model.modules() if isinstance(module, AttentionUNet)]
    for net in nets:
        net.features = torch.compile(net.features, dynamic=False)
    try:
        yield
    finally:
        for net in nets:
            del net.features


# --- running and reporting -------------------------------------------------------------------


def failure(error: BaseException) -> dict[str, Any]:
    return {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=-4)}


def attempt(part: Callable[[], dict[str, Any]], device: Device) -> dict[str, Any]:
    """``part()``, or its error as a result: a failing family must not stop the others."""
    try:
        return part()
    except Exception as error:  # recorded and reported; the exit status says the run failed
        result = failure(error)
        device.tidy()
        return result


def environment(device: Device, plan: Plan, compile_note: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "uqeval": uqeval.__version__,
        "uqeval_torch": plugin_version,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "openmp_environment": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "plan": asdict(plan),
        "memory": device.memory_kind,
        "tf32": {
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "note": "the fp32 timings run with torch's defaults; the bf16 check's reference runs with TF32 off",
        },
        "bf16_tolerances": {name: asdict(tolerance) for name, tolerance in BF16_TOLERANCES.items()},
        "bf16_tolerances_why": TOLERANCE_WHY,
        "variant_pays_from": PAYS,
        "compile": compile_note or "measured",
    }
    if device.cuda:
        properties = torch.cuda.get_device_properties(device.device)
        info["device_name"] = torch.cuda.get_device_name(device.device)
        info["capability"] = f"{properties.major}.{properties.minor}"
        info["device_memory_bytes"] = int(properties.total_memory)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def number(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits (no exponent for everyday magnitudes)."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def family_status(record: dict[str, Any]) -> tuple[str, list[str]]:
    """``passed``, ``failed`` or ``incomplete``, and the reasons."""
    problems, missing = [], []
    for part in ("train_fp32", "train_bf16", "bf16_check", "batched", "predict"):
        result = record.get(part)
        if result is None:
            missing.append(f"{part}: not run (time box)")
        elif "error" in result:
            problems.append(f"{part}: {result['error']}")
    for part in ("train_fp32", "train_bf16"):
        result = record.get(part) or {}
        if result.get("losses_finite") is False:
            problems.append(f"{part}: a loss is not finite")
        if "timed_steps" in result and result["timed_steps"] < result["steps_asked"]:
            missing.append(f"{part}: {result['timed_steps']} of {result['steps_asked']} steps (time box)")
    check = record.get("bf16_check") or {}
    if check.get("passed") is False:
        problems.append(
            f"bf16 deviates beyond its tolerance: max {check['max_deviation']:.3g} (<= {check['max_tolerance']}), "
            f"mean {check['mean_deviation']:.3g} (<= {check['mean_tolerance']}), loss "
            f"{check['loss_relative_deviation']:.3g} (<= {check['loss_tolerance']})"
            + ("" if check["finite"] else ", not finite")
        )
    if (record.get("batched") or {}).get("batched") is False:
        problems.append("sample() makes more network passes for more samples: it loops over them")
    if problems:
        return "failed", problems
    return ("incomplete", missing) if missing else ("passed", [])


def best_prediction(record: dict[str, Any]) -> tuple[float | None, str]:
    """The plain prediction's images/s, or those times the largest speed-up of a variant that pays (≥ :data:`PAYS`)."""
    plain = (record.get("predict") or {}).get("images_per_s")
    if plain is None:
        return None, ""
    best, which = 1.0, "plain"
    for name, result in (record.get("variants") or {}).items():
        ratio = speedup(result.get("predict") or {})
        if ratio is not None and ratio >= PAYS and ratio > best:
            best, which = ratio, name
    return plain * best, which


def print_report(report: dict[str, Any]) -> None:
    """The families' table, the bf16 check, the variants, the whole path and every problem."""
    print_families(report)
    print_bf16(report)
    print_variants(report)
    print_whole_path(report.get("whole_path"))
    for name, record in report["families"].items():
        status, reasons = family_status(record)
        for reason in reasons:
            print(f"{FAMILIES[name]} {status}: {reason}")
    budget = report["environment"]["plan"]["budget_s"]
    print(f"\n{report['elapsed_s']:.0f} s of a {budget:.0f} s budget · exit status {report['exit_status']}")


def print_families(report: dict[str, Any]) -> None:
    environment_info, plan = report["environment"], report["environment"]["plan"]
    rows = []
    for name, record in report["families"].items():
        best, which = best_prediction(record)
        check = record.get("bf16_check") or {}
        peak = [(record.get(part) or {}).get("peak_bytes") for part in ("train_bf16", "predict")]
        rows.append(
            [
                FAMILIES[name],
                number((record.get("train_fp32") or {}).get("images_per_s")),
                number((record.get("train_bf16") or {}).get("images_per_s")),
                number((record.get("predict") or {}).get("images_per_s")),
                f"{number(best)} ({which})" if best is not None else "-",
                f"{gib(peak[0])} / {gib(peak[1])}",
                f"{check['max_deviation']:.4f} (<= {check['max_tolerance']})" if "max_deviation" in check else "-",
                family_status(record)[0],
            ]
        )
    memory = "GPU" if environment_info["device"] == "cuda" else "RSS"
    print_table(
        f"{environment_info['device_name']} · torch {environment_info['torch']} · CUDA {environment_info['cuda']} · "
        f"{plan['size']} network, {plan['side']}×{plan['side']}, train batch {plan['train_batch']}, "
        f"predict batch {plan['predict_batch']} × {plan['members']} members × the family's samples",
        [
            "family",
            "train img/s fp32",
            "train img/s bf16",
            "predict img/s",
            "best predict img/s",
            f"peak {memory} GiB train/predict",
            "bf16 max dev",
            "status",
        ],
        rows,
    )


def print_bf16(report: dict[str, Any]) -> None:
    """One line: PASS or FAIL, each family's max / mean deviation against its tolerance, the loss; then why."""
    checks = {name: record.get("bf16_check") or {} for name, record in report["families"].items()}
    measured = {name: check for name, check in checks.items() if "max_deviation" in check}
    passed = bool(measured) and len(measured) == len(checks) and all(check["passed"] for check in measured.values())
    families = ", ".join(
        f"{FAMILIES[name]} {check['max_deviation']:.3f} / {check['mean_deviation']:.4f} "
        f"(<= {check['max_tolerance']} / {check['mean_tolerance']})"
        for name, check in measured.items()
    )
    loss = max((check["loss_relative_deviation"] for check in measured.values()), default=math.nan)
    print(
        f"\nbf16 check: {'PASS' if passed else 'FAIL'} · max / mean |p_bf16 - p_fp32| (tolerance): "
        f"{families or 'not measured'} · loss within {loss:.2%} (<= 2%)"
    )
    print(f"  why: {TOLERANCE_WHY}")


def print_variants(report: dict[str, Any]) -> None:
    environment_info = report["environment"]
    rows = []
    for name, record in report["families"].items():
        variants = record.get("variants") or {}
        rows.append(
            [FAMILIES[name]]
            + [
                speedup_cell((variants.get(variant_name) or {}).get(part))
                for variant_name in ("channels_last", "compile")
                for part in ("train", "predict")
            ]
        )
    print_table(
        f"variants: speed-up over the plain run (×; pays from {PAYS:.2f}×) · compile: {environment_info['compile']}",
        ["family", "channels_last train", "channels_last predict", "compile train", "compile predict"],
        rows,
    )


def print_whole_path(path: dict[str, Any] | None) -> None:
    if path is None:
        print("\nwhole path: not run (time box)")
        return
    if "error" in path:
        print(f"\nwhole path: FAILED {path['error']}")
        return
    print(
        f"\nwhole path ({FAMILIES[path['family']]}, {path['images']} images × {path['members']} members × "
        f"{path['samples']} samples, {path['store_bytes'] / 2**20:.1f} MiB store, {path['total_s']:.2f} s): "
        f"network {path['network_share']:.0%} ({path['network_s']:.2f} s), writer {path['writer_share']:.0%} "
        f"({path['writer_s']:.2f} s), scoring {path['scoring_share']:.0%} ({path['scoring_s']:.2f} s); "
        f"tasks {', '.join(path['tasks_scored'])}; the first run, which loads uqeval's compiled kernels, "
        f"took {path['first_run']['total_s']:.1f} s"
    )


def speedup_cell(measured: dict[str, Any] | None) -> str:
    """A variant's speed-up over the plain run timed just before it, ``pays`` from :data:`PAYS` on, with
    the compile time."""
    if measured is None:
        return "-"
    if "error" in measured:
        return "error"
    if "skipped" in measured:
        return "skipped"
    ratio = speedup(measured)
    if ratio is None:
        return "-"
    extra = f", compile {measured['first_s']:.0f} s" if "first_s" in measured else ""
    return f"{ratio:.2f}{' pays' if ratio >= PAYS else ''}{extra}"


def speedup(measured: dict[str, Any]) -> float | None:
    """images/s of the variant over those of the plain run timed just before it."""
    rate, plain = measured.get("images_per_s"), measured.get("plain_images_per_s")
    return None if rate is None or not plain else rate / plain


def exit_status(report: dict[str, Any]) -> int:
    statuses = [family_status(record)[0] for record in report["families"].values()]
    path = report.get("whole_path")
    if "failed" in statuses or (path is not None and "error" in path):
        return 1
    if "incomplete" in statuses or path is None or len(statuses) < len(report["requested"]):
        return 3
    return 0


def run(args: argparse.Namespace) -> int:
    device = Device(pick_device(args.device))
    threads = args.threads if args.threads is not None else (1 if args.tiny and not device.cuda else None)
    if threads is not None:
        torch.set_num_threads(threads)
    plan = TINY if args.tiny else full_plan()
    if args.budget is not None:
        plan = replace(plan, budget_s=args.budget)
    compile_note = None
    if args.no_compile:
        compile_note = "skipped: --no-compile"
    elif not device.cuda and not args.compile:
        compile_note = (
            "skipped on the CPU: Inductor compiles C++ for every network (minutes on a small CPU), and a "
            "CPU's speed-up says nothing about a GPU's; pass --compile to measure it anyway"
        )
    budget = Budget(plan.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "environment": environment(device, plan, compile_note),
        "requested": list(args.families),
        "families": {},
        "whole_path": None,
        "elapsed_s": 0.0,
        "exit_status": None,
    }

    def save() -> None:
        report["elapsed_s"] = budget.elapsed()
        report["exit_status"] = exit_status(report)
        write_json(out / "gpu_check.json", report)

    data = synthetic_data(plan)
    methods = {name: plugin_manager().au_method(name) for name in args.families}
    models: dict[str, nn.Module] = {}
    for name, method in methods.items():
        if budget.left() <= 0:
            break
        record: dict[str, Any] = {}
        report["families"][name] = record
        model = measure_family(name, method, record, data, plan, device, budget, save)
        if model is not None:
            models[name] = model
        record["status"] = family_status(record)[0]
        save()
    path_family = args.whole_path if args.whole_path in models else next(iter(models), None)
    if path_family is not None and budget.left() > 0:
        print(f"whole path: {FAMILIES[path_family]}", flush=True)
        with tempfile.TemporaryDirectory(dir=out) as folder:
            part = partial(
                whole_path, path_family, methods[path_family], models[path_family], plan, device, Path(folder)
            )
            report["whole_path"] = attempt(part, device)
        save()
    measure_variants(report, models, methods, data, plan, device, budget, compile_note, save)
    save()
    print_report(report)
    return report["exit_status"]


def measure_family(
    name: str,
    method: Any,
    record: dict[str, Any],
    data: Data,
    plan: Plan,
    device: Device,
    budget: Budget,
    save: Callable[[], None],
) -> nn.Module | None:
    """Build one family's network and run its parts into ``record``; the network, or ``None`` if it failed to build."""
    print(f"{FAMILIES[name]}: building", flush=True)
    try:
        torch.manual_seed(0)
        model = unzeroed(method.build(Backbone(plan.size), in_channels=IN_CHANNELS, n_classes=N_CLASSES))
        model = model.to(device.device)
    except Exception as error:  # a family that cannot be built has failed; the others go on
        record["build"] = failure(error)
        return None
    record["parameters"] = parameter_count(model)
    parts = {
        "bf16_check": partial(check_bf16, method, model, data, plan, device),
        "batched": partial(check_batched, method, model, data, device),
        "train_fp32": partial(measure_training, method, model, data, plan, device, budget, bf16=False),
        "train_bf16": partial(measure_training, method, model, data, plan, device, budget, bf16=True),
        "predict": partial(measure_prediction, method, model, data, plan, device, budget),
    }
    for part, measure in parts.items():
        if budget.left() <= 0:
            break
        print(f"{FAMILIES[name]}: {part}", flush=True)
        record[part] = attempt(measure, device)
        device.tidy()
        save()
    passes = (record.get("batched") or {}).get("image_passes_per_member")
    if passes is not None and "images_per_s" in (record.get("predict") or {}):
        record["predict"]["image_passes_per_image"] = passes * plan.members
    return model


def measure_variants(
    report: dict[str, Any],
    models: dict[str, nn.Module],
    methods: dict[str, Any],
    data: Data,
    plan: Plan,
    device: Device,
    budget: Budget,
    compile_note: str | None,
    save: Callable[[], None],
) -> None:
    """channels_last (training and prediction), then torch.compile (prediction, then training), while time is left.

    Training runs in the trainer's precision for the device (bf16 on CUDA, float32 on the
    CPU). Each variant is timed against the plain run measured just before it
    (``plain_images_per_s``), in the same state of the process: the earlier numbers were
    taken before the whole path, and on a CPU the writer's and the scorer's numba threads
    slow torch down afterwards. The compile parts' first batch or warm-up, which compiles,
    is timed apart (``first_s``). Diffusion goes first: its 100 passes per image gain most.
    """
    bf16 = device.cuda
    order = sorted(models, key=lambda name: name != "diffusion")
    for variant_name, parts in (("channels_last", ("train", "predict")), ("compile", ("predict", "train"))):
        for part in parts:
            for name in order:
                results = report["families"][name].setdefault("variants", {}).setdefault(variant_name, {})
                if variant_name == "compile" and compile_note is not None:
                    results[part] = {"skipped": compile_note}
                    continue
                needed = plan.compile_reserve_s if variant_name == "compile" else 0.0
                if budget.left() <= needed:
                    results[part] = {"skipped": f"time box: {max(budget.left(), 0):.0f} s left"}
                    continue
                print(f"{FAMILIES[name]}: {variant_name} {part}", flush=True)
                method, model = methods[name], models[name]
                if part == "train":
                    measure = partial(measure_training, method, model, data, plan, device, budget, bf16=bf16)
                else:
                    measure = partial(measure_prediction, method, model, data, plan, device, budget)
                plain = attempt(measure, device)
                if variant_name == "compile":
                    torch._dynamo.reset()  # each family's compile timed from scratch
                with variant(model, variant_name):
                    result = attempt(partial(measure, channels_last=variant_name == "channels_last"), device)
                if variant_name == "compile" and ("warmup_s" in result or "first_batch_s" in result):
                    result["first_s"] = result.get("warmup_s", result.get("first_batch_s"))
                result["plain_images_per_s"] = plain.get("images_per_s")
                results[part] = result
                device.tidy()
                save()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train, check and predict every reference family of uqeval-torch in one call "
        "(see the module docstring).",
    )
    parser.add_argument("--device", required=True, help="cuda (also cuda:N) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny network at 32 × 32 with small batches (CPU)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (420; 600 with --tiny)")
    parser.add_argument(
        "--families", type=lambda text: text.split(","), default=list(FAMILIES), help="comma-separated (default: all)"
    )
    parser.add_argument("--whole-path", default="ssn", help="the family that writes and scores a cube (default ssn)")
    parser.add_argument("--compile", action="store_true", help="measure torch.compile on the CPU too")
    parser.add_argument("--no-compile", action="store_true", help="do not measure torch.compile")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch's CPU threads (default: 1 with --tiny on the CPU, where cores are often shared; else torch's)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.families if name not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; they are {', '.join(FAMILIES)}")
    if not (args.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", args.device)):
        parser.error(f"--device must be cuda, cuda:N or cpu, not {args.device!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return run(args)
    except UQEvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
