"""Training speed of swin_unet_tiny (forward + backward + SGD step): real data pipeline vs synthetic batches.

Writes Synapse-like training slices (512x512 float32 image in [0, 1] + uint8 organ labels, one .npz each, with
lists_Synapse/train.txt) to a temporary folder, opens them with swinseg.training.data (reference augmentation, cubic
512 -> 224 resize) behind a DataLoader with worker processes, and runs swinseg.training.loop.train_epoch over them,
and the same loop over a synthetic batch already in memory: one run, same model, same step code, timed
synthetic / pipeline / synthetic so that a drift in the machine's load cancels. The ratio says how much the
data pipeline slows training (target: within 10%). Also prints peak RSS.

    python benchmarks/train_speed.py                      # CPU, batch 8, 6 steps per side
    python benchmarks/train_speed.py --steps 2            # quick
    python benchmarks/train_speed.py --device cuda --precision bf16 --batch-size 24 --workers 8
    python benchmarks/train_speed.py --augment strong --context-slices 1   # nnU-Net augmentation, 2.5-D
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swinseg.config import load_card
from swinseg.device import resolve_device, resolve_precision
from swinseg.model import SwinUnet
from swinseg.training.data import open_training_data
from swinseg.training.distributed import Distributed
from swinseg.training.loop import Step, TrainConfig, train_epoch
from swinseg.training.report import TrainingEvents


def write_synapse_slices(root: Path, count: int, size: int = 512, seed: int = 0) -> Path:
    """`count` Synapse-style training slices: smooth CT-like intensities and elliptical organ labels 0-8."""
    rng = np.random.default_rng(seed)
    (root / "train_npz").mkdir(parents=True)
    (root / "lists_Synapse").mkdir()
    yy, xx = np.mgrid[0:size, 0:size] / size
    names = []
    for i in range(count):
        image = (0.3 + 0.2 * np.sin(6 * xx + i) * np.cos(5 * yy) + 0.05 * rng.standard_normal((size, size)))
        label = np.zeros((size, size), np.uint8)
        for organ in range(1, 9):
            (cy, cx), (ry, rx) = rng.uniform(0.2, 0.8, 2), rng.uniform(0.03, 0.12, 2)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            label[inside] = organ
            image[inside] += 0.05 * organ
        name = f"case{i // 100:04d}_slice{i % 100:03d}"
        np.savez(root / "train_npz" / f"{name}.npz", image=np.clip(image, 0, 1).astype(np.float32), label=label)
        names.append(name)
    (root / "lists_Synapse" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    return root


class StepClock:
    """Wraps the batches of an epoch and records when each is asked for: the gaps are whole steps (waiting
    for the batch + forward, backward, SGD step), whatever the loop around them does."""

    def __init__(self, batches) -> None:
        self.batches, self.times = batches, []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.times.append(time.perf_counter())
            yield batch
        self.times.append(time.perf_counter())

    @property
    def steps(self) -> list[float]:
        return list(np.diff(self.times))


def timed_epoch(model, batches, device, dtype) -> list[float]:
    """Seconds per step of one swinseg.training.loop.train_epoch over `batches` (the published recipe's step)."""
    step = Step.for_model(model, TrainConfig(batch_size=8), max(len(batches), 1), device, dtype)
    clock = StepClock(batches)
    train_epoch(model, clock, step, Distributed(), TrainingEvents(), 0, 1)
    clock.times[-1] = time.perf_counter()  # after the epoch's final loss sync (the GPU has caught up)
    return clock.steps


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_unet_tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per side (after 2 warm-up steps)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--augment", default="reference", choices=("none", "reference", "strong"))
    parser.add_argument("--context-slices", type=int, default=0, help="2.5-D neighbours on either side")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    card = load_card(args.model).with_context(args.context_slices)
    torch.manual_seed(1234)
    model = SwinUnet(card.network).to(device).train()
    size, classes = card.network.img_size, card.network.num_classes
    generator = torch.Generator().manual_seed(0)
    channels = card.preprocessing.input_channels if args.context_slices else 1
    batch = {"image": torch.rand(args.batch_size, channels, size, size, generator=generator),
             "label": torch.randint(0, classes, (args.batch_size, size, size), generator=generator),
             "name": ["synthetic"] * args.batch_size}
    print(f"{args.model}: batch {args.batch_size}, {size}x{size}, {2 * max(args.steps // 2, 1)} steps per side, "
          f"{device} ({args.precision}), {torch.get_num_threads()} threads, {args.workers} "
          f"loader workers, --augment {args.augment}, context {args.context_slices}")
    timed_epoch(model, [batch] * 2, device, dtype)  # warm-up (allocator, kernels)

    half = max(args.steps // 2, 1)
    steps: dict[str, list[float]] = {"synthetic": [], "pipeline": []}
    with tempfile.TemporaryDirectory() as tmp:
        count = 2 * half * args.batch_size
        started = time.perf_counter()
        root = write_synapse_slices(Path(tmp) / "synapse", count)
        print(f"wrote {count} Synapse-like 512x512 slices in {time.perf_counter() - started:.1f} s")
        alone = {}
        for augment in dict.fromkeys(("reference", args.augment)):  # the published pipeline as the baseline
            data = open_training_data(root, img_size=size, preprocessing=card.preprocessing, augment=augment)
            loader = torch.utils.data.DataLoader(data.slices, batch_size=args.batch_size, shuffle=True,
                                                 num_workers=args.workers, pin_memory=device.type == "cuda")
            started = time.perf_counter()
            for _ in loader:  # the pipeline alone, model idle: what the workers can deliver
                pass
            alone[augment] = count / (time.perf_counter() - started)
        # synthetic, pipeline (one whole epoch, workers started inside, first batch wait included),
        # synthetic: a drift in the machine's load cancels, and no worker runs while synthetic is timed
        for side, batches in (("synthetic", [batch] * half), ("pipeline", loader), ("synthetic", [batch] * half)):
            seconds = timed_epoch(model, batches, device, dtype)
            steps[side] += seconds
            print(f"  {side:9s} steps (s): {' '.join(f'{t:.2f}' for t in seconds)}", flush=True)

    rate = {side: {"total": args.batch_size * len(times) / sum(times),
                   "median": args.batch_size / float(np.median(times))} for side, times in steps.items()}
    self_mib, child_mib = peak_rss_mib()
    for augment, rate_alone in alone.items():
        print(f"data pipeline alone      : {rate_alone:8.1f} slices/s with --augment {augment} (npz loading, "
              f"augmentation, 512->{size} resize), {rate_alone / alone['reference']:.2f}x the reference's")
    for kind, what in (("total", "all steps"), ("median", "median step, robust to other load")):
        synthetic, pipeline = rate["synthetic"][kind], rate["pipeline"][kind]
        print(f"{what:35s}: synthetic {synthetic:7.2f}, pipeline {pipeline:7.2f} slices/s, "
              f"ratio {pipeline / synthetic:.3f} (target >= 0.90)")
    print(f"peak RSS                 : {self_mib:8.0f} MiB main process; largest worker {child_mib:.0f} MiB "
          f"(forked: counts pages shared with the main process)")


if __name__ == "__main__":
    main()
