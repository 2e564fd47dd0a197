"""Prediction speed and memory: the `swinseg predict` path end to end vs the network alone vs the reference
protocol, measured in one run on a synthetic CT-like volume with a randomly initialised model.

- end-to-end: read the NIfTI, orient, normalise, batched resize + forward + resize back + argmax, write the
  mask NIfTI (`predict.predict_cases`, exactly what the CLI runs after loading the model);
- network-only: the forward passes alone for the same slices at the same batch size (inputs pre-resized);
- reference: `--protocol reference` through the same path (one slice per pass, nearest resize back);
- peak RSS: `swinseg predict` on a 512x512xN volume in a child process (resource.getrusage of children).

Targets (issue 3): end-to-end <= 1.15x network-only, faster than reference, peak RSS < 3 GB at 512x512x300.

    .venv/bin/python benchmarks/predict_speed.py                 # 512x512x64, batch 16, RSS at 300 slices
    .venv/bin/python benchmarks/predict_speed.py --slices 16 --rss-slices 0   # quick look
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage
import torch

from swinseg.config import load_card
from swinseg.io import read_volume
from swinseg.model import build_model
from swinseg.predict import Case, Predictor, RunOptions, predict_cases
from swinseg.preprocess import resize_slices
from swinseg.weights import save_checkpoint


def synthetic_ct(depth: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """(depth, size, size) int16 HU: air, an elliptic body of fat and soft tissue, organ blobs, a spine, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size - 0.5
    body = (x / 0.42) ** 2 + (y / 0.32) ** 2 < 1
    organs = scipy.ndimage.gaussian_filter(rng.normal(size=(size, size)), 12)
    plane = np.where(body, np.where(organs > 0.01, 60.0, -90.0), -1000.0)
    plane[((x / 0.05) ** 2 + ((y - 0.2) / 0.05) ** 2) < 1] = 700.0  # vertebra
    volume = np.empty((depth, size, size), dtype=np.int16)
    for z in range(depth):
        shift = int(8 * np.sin(z / 9))  # organs drift slowly along z
        noise = rng.normal(0, 20, size=(size, size)).astype(np.float32)
        volume[z] = np.clip(np.roll(plane, shift, axis=1) + noise, -1024, 3071)
    return volume


def write_scan(path: Path, volume: np.ndarray) -> None:
    """A NIfTI as scanners' converters write it: (x, y, z), RAS affine with flipped x and y."""
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    affine[:3, 3] = (180.0, 180.0, -300.0)
    nib.save(nib.Nifti1Image(volume.T, affine), path)


class Timer:
    """Wall-clock and process CPU seconds (all threads) of a block. On a shared machine the CPU time is the
    steadier measure: other processes' load inflates wall time but not this process's CPU time."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_network(predictor: Predictor, slices: np.ndarray) -> Timer:
    """The forward passes alone over `slices`, batched as the predictor batches them."""
    size = predictor.img_size
    batches = [
        resize_slices(torch.from_numpy(slices[i : i + predictor.batch_size]).to(predictor.device), size).unsqueeze(1)
        for i in range(0, len(slices), predictor.batch_size)
    ]
    with torch.inference_mode(), Timer() as timer:
        for batch in batches:
            predictor._forward(batch)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
    return timer


def time_case(predictor: Predictor, case: Case) -> Timer:
    """One case through `predict_cases` (read, prepare, predict, write)."""
    with Timer() as timer:
        results = list(predict_cases(predictor, [case], RunOptions(overwrite=True)))
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
    if results[0].status != "done":
        raise SystemExit(f"prediction failed: {results[0].message}")
    return timer


def peak_rss_gb(checkpoint: Path, scan: Path, output: Path, device: str, batch_size: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of `swinseg predict` run as a child process."""
    command = [sys.executable, "-m", "swinseg", "predict", str(scan), "-c", str(checkpoint), "-o", str(output),
               "--device", device, "--batch-size", str(batch_size), "--quiet", "--overwrite"]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - began
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64, help="slices of the 512x512 timing volume")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="swin_unet_tiny")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved timing rounds; the best is kept")
    parser.add_argument("--rss-slices", type=int, default=300, help="slices of the RSS volume (0: skip)")
    args = parser.parse_args()

    torch.manual_seed(0)
    card = load_card(args.model)
    model = build_model(card.network).eval()
    fast = Predictor(model, card, device=args.device, batch_size=args.batch_size)
    reference = Predictor(model, card, device=args.device, protocol="reference")
    print(f"{card.name} random init on {fast.device} ({torch.get_num_threads()} threads), "
          f"volume 512x512x{args.slices}, batch {args.batch_size}")

    with tempfile.TemporaryDirectory(prefix="swinseg-bench-") as folder:
        folder_path = Path(folder)
        scan = folder_path / "scan.nii.gz"
        write_scan(scan, synthetic_ct(args.slices))
        case = Case(scan, folder_path / "mask.nii.gz")
        slices = fast.prepare(read_volume(scan)).normalized()
        fast.predict_slices(slices[: args.batch_size])  # warm-up: kernels, caches, zoom matrices
        reference.predict_slices(slices[:1])

        rounds = []  # network-only and end-to-end interleaved, so that load changes hit both alike
        for _ in range(args.repeat):
            rounds.append((time_network(fast, slices), time_case(fast, case)))
        reference_run = time_case(reference, case)

        n = args.slices
        network = min(rounds, key=lambda r: r[0].wall)[0], min(rounds, key=lambda r: r[0].cpu)[0]
        end_to_end = min(rounds, key=lambda r: r[1].wall)[1], min(rounds, key=lambda r: r[1].cpu)[1]
        rows = [("network only", network), ("end-to-end predict", end_to_end),
                ("reference protocol", (reference_run, reference_run))]
        print(f"{'':22}{'wall s':>8}{'slices/s':>10}{'x network':>11}{'cpu s':>9}{'x network':>11}")
        for name, (by_wall, by_cpu) in rows:
            print(f"{name:22}{by_wall.wall:8.2f}{n / by_wall.wall:10.2f}{by_wall.wall / network[0].wall:11.3f}"
                  f"{by_cpu.cpu:9.2f}{by_cpu.cpu / network[1].cpu:11.3f}")
        print(f"end-to-end / network-only: {end_to_end[0].wall / network[0].wall:.3f} wall, "
              f"{end_to_end[1].cpu / network[1].cpu:.3f} cpu (target <= 1.15); reference / end-to-end: "
              f"{reference_run.wall / end_to_end[0].wall:.2f}x wall (target > 1); best of {args.repeat} round(s)")

        if args.rss_slices:
            big = folder_path / "big.nii.gz"
            write_scan(big, synthetic_ct(args.rss_slices, seed=1))
            checkpoint = folder_path / "model.safetensors"
            save_checkpoint(checkpoint, model, card)
            rss, seconds = peak_rss_gb(checkpoint, big, folder_path / "big_mask.nii.gz", args.device, args.batch_size)
            print(f"peak RSS of `swinseg predict` on 512x512x{args.rss_slices}: {rss:.2f} GB "
                  f"(target < 3 GB; {seconds:.0f} s including start-up)")


if __name__ == "__main__":
    main()
