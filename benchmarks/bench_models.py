"""Training and sampling throughput of the reference AU methods (uqeval-torch), per device.

For each AU method at one network size and image side:

* **train**: one optimiser step of the trainer's recipe (loss, backward, clipping to 0.5,
  AdamW, EMA), in images per second; SSN is timed after its mean-only epochs (its
  20-sample likelihood), Prob. UNet with its prior, posterior and KL;
* **sample**: ``method.sample(model, images, n)`` with the method's default samples (10;
  1 for softmax), in sampled probability maps per second and in images per second.

The baseline, run in the same process, is one forward pass of the plain UNet (the
softmax network) under ``torch.no_grad``: every other number is also given as a ratio to
it, so that runs on different machines compare. On CUDA the forward pass runs under
bf16 autocast as in training and prediction.

Run: ``.venv/bin/python benchmarks/bench_models.py [--size tiny|full] [--side 64] [--batch 8] [--device auto]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _timing import print_table

from uqeval_torch.au.diffusion import Diffusion
from uqeval_torch.au.prob_unet import ProbUNet
from uqeval_torch.au.softmax import Softmax
from uqeval_torch.au.ssn import SSN
from uqeval_torch.backbone import Backbone, parameter_count
from uqeval_torch.train import pick_device, update_ema

#: An epoch past SSN's mean-only and Prob. UNet's KL warm-up epochs.
LATE_EPOCH = 100

METHODS = {"softmax": Softmax(), "ssn": SSN(), "prob_unet": ProbUNet(), "diffusion": Diffusion()}


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up, synchronising CUDA."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    backbone = Backbone(args.size)
    images = torch.rand(args.batch, 1, args.side, args.side, device=device)
    labels = torch.randint(0, args.classes, (args.batch, args.side, args.side), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    plain = backbone(in_channels=1, out_channels=args.classes).to(device).eval()

    def baseline() -> None:
        with torch.no_grad(), autocast:
            plain(images)

    base = timed(baseline, device, args.repeats)
    rows = [["UNet forward (baseline)", f"{parameter_count(plain) / 1e6:.2f}", "", "", f"{args.batch / base:.1f}", ""]]
    for name in args.methods.split(","):
        method = METHODS[name]
        model = method.build(backbone, in_channels=1, n_classes=args.classes).to(device)
        ema = method.build(backbone, in_channels=1, n_classes=args.classes).to(device).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

        def step(model=model, ema=ema, optimizer=optimizer, method=method) -> None:
            model.train()
            with autocast:
                loss = method.loss(model, images, labels, epoch=LATE_EPOCH)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            update_ema(ema, model, 0.999, 1000)

        def sample(model=model, method=method) -> None:
            model.eval()
            with torch.no_grad(), autocast:
                method.sample(model, images, method.default_samples)

        train_time = timed(step, device, args.repeats)
        sample_time = timed(sample, device, args.repeats)
        rows.append(
            [
                name,
                f"{parameter_count(model) / 1e6:.2f}",
                f"{args.batch / train_time:.1f}",
                f"{base / train_time:.3f}",
                f"{args.batch / sample_time:.2f} ({args.batch * method.default_samples / sample_time:.1f} maps)",
                f"{base / sample_time:.3f}",
            ]
        )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print_table(
        f"{args.size} networks, {args.side}×{args.side} images, batch {args.batch}, {args.classes} classes ({where})",
        ["method", "params (M)", "train img/s", "train ratio", "sample img/s", "sample ratio"],
        rows,
    )


if __name__ == "__main__":
    main()
