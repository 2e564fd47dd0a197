"""Prediction speed and memory: the `swinseg predict` path end to end vs the network alone vs the reference
protocol, measured in one run on a synthetic CT-like volume with a randomly initialised model.

- end-to-end: read the NIfTI, orient, normalise, batched resize + forward + resize back + argmax, write the
  mask NIfTI (`runner.predict_cases`, exactly what the CLI runs after loading the model);
- network-only: the forward passes alone for the same slices at the same batch size (inputs pre-resized);
- reference: `--protocol reference` through the same path (one slice per pass, nearest resize back);
- backends: end-to-end per backend (torch eager; on CPU OpenVINO and onnxruntime on the cached ONNX export) on
  the same scan and model, interleaved rounds, the median time and the median per-round ratio to torch;
- peak RSS: `swinseg predict` on a 512x512xN volume in a child process (resource.getrusage of children).

With `--card-spacing SY,SX` the model card gets a target spacing: slices are resampled to it and tiled
(network-only then times the forward passes over the same tiles, pre-cut), e.g. the scale-aware target:

    .venv/bin/python benchmarks/predict_speed.py --scan-spacing 0.8 --card-spacing 1.5,1.5 --slices 32

Targets (issues 3, 9 and 10): end-to-end <= 1.15x network-only, faster than reference (whole-slice cards),
peak RSS < 3 GB at 512x512x300; on CPU OpenVINO >= 1.4x torch end-to-end, onnxruntime >= 1.25x.

`--fixed-cost N` measures instead what a `swinseg predict` call costs before its scan (issue 23: <= 2.5 s with
torch and with OpenVINO): a fresh process predicts a 2-slice scan, and its wall time less the case's own seconds
(read, predict, write; from --json) is the fixed cost. The same model is run from its checkpoint (-c FILE, the
export and OpenVINO caches warm) and stored (`swinseg models add`: TorchScript trace, ONNX export and OpenVINO
cache prepared), N interleaved rounds after a warm-up round, medians; then the whole command with the stored model
on a 60-slice scan (--whole-slices), torch against OpenVINO (issue 23: >= 1.4x):

    .venv/bin/python benchmarks/predict_speed.py --fixed-cost 5

    .venv/bin/python benchmarks/predict_speed.py                 # 512x512x64, batch 16, RSS at 300 slices
    .venv/bin/python benchmarks/predict_speed.py --slices 16 --rss-slices 0   # quick look
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage
import torch

from swinseg import backends
from swinseg.config import load_card, parse_spacing
from swinseg.io import read_volume
from swinseg.model import build_model
from swinseg.predict import Predictor
from swinseg.preprocess import PreparedVolume, grid_size, pad_margins, resample_images, resize_slices, tile_corners
from swinseg.runner import Case, RunOptions, predict_cases
from swinseg.weights import load_checkpoint, save_checkpoint


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


def write_scan(path: Path, volume: np.ndarray, spacing: float = 0.7) -> None:
    """A NIfTI as scanners' converters write it: (x, y, z), RAS affine with flipped x and y."""
    affine = np.diag([-spacing, -spacing, 2.5, 1.0])
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


def network_inputs(predictor: Predictor, prepared: PreparedVolume) -> list[torch.Tensor]:
    """The network's input batches for a prepared scan, cut in advance: whole slices resized to img_size, or
    the tiles of the slices resampled to the card's spacing (padded to a tile where smaller)."""
    size, slices = predictor.img_size, prepared.normalized()
    if predictor.target_spacing is None:
        return [resize_slices(torch.from_numpy(slices[i : i + predictor.batch_size]).to(predictor.device),
                              size).unsqueeze(1) for i in range(0, len(slices), predictor.batch_size)]
    assert prepared.spacing is not None
    grid = grid_size(slices.shape[1:], prepared.spacing, predictor.target_spacing)
    images = resample_images(torch.from_numpy(slices).unsqueeze(1).to(predictor.device), grid)
    (top, bottom), (left, right) = pad_margins(grid[0], size), pad_margins(grid[1], size)
    images = torch.nn.functional.pad(images, (left, right, top, bottom))
    corners = tile_corners(*images.shape[-2:], size, predictor.options.tile_overlap)
    tiles = torch.stack([images[b, :, y : y + size, x : x + size] for b in range(len(images)) for y, x in corners])
    return list(tiles.split(predictor.batch_size))


def time_network(predictor: Predictor, batches: list[torch.Tensor]) -> Timer:
    """The forward passes alone over pre-cut input batches."""
    with torch.inference_mode(), Timer() as timer:
        for batch in batches:
            predictor.network(batch)
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


def peak_rss_gb(checkpoint: Path, scan: Path, output: Path, device: str, batch_size: int | None,
                backend: str) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of `swinseg predict --backend BACKEND` run as a child process (its own rusage)."""
    command = [sys.executable, "-m", "swinseg", "predict", str(scan), "-c", str(checkpoint), "-o", str(output),
               "--device", device, "--backend", backend, "--quiet", "--overwrite"]
    command += ["--batch-size", str(batch_size)] if batch_size else []
    began = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(command)} failed")
    return usage.ru_maxrss / 1024**2, time.perf_counter() - began


def backend_worker(name: str, checkpoint: Path, scan: Path, args: argparse.Namespace, connection) -> None:
    """One backend in a process of its own (as `swinseg predict` runs it): warm up, then time a case per request.
    Separate processes, stopped (SIGSTOP) while the others run, keep one runtime's threads from slowing the next."""
    model, card = load_checkpoint(checkpoint)
    predictor = Predictor(model, card, device=args.device, batch_size=args.batch_size, backend=name)
    case = Case(scan, scan.with_name(f"mask_{name}.nii.gz"))
    time_case(predictor, case)
    connection.send("ready")
    while connection.recv() == "run":
        timer = time_case(predictor, case)
        connection.send((timer.wall, timer.cpu))


def compare_backends(checkpoint: Path, scan: Path, args: argparse.Namespace) -> None:
    """End-to-end time per backend on one case, in interleaved rounds; ratios to torch per round."""
    wanted = [name for name in args.backends.split(",") if name]
    names = [n for n in wanted if n == "torch" or args.device == "cpu" and backends.installed(n)]
    if len(names) < 2 or "torch" not in names:
        return
    context = multiprocessing.get_context("spawn")
    began, links, workers = time.perf_counter(), {}, []
    for name in names:
        ours, theirs = context.Pipe()
        workers.append(context.Process(target=backend_worker, args=(name, checkpoint, scan, args, theirs)))
        workers[-1].start()
        if ours.recv() != "ready":
            raise SystemExit(f"{name}: worker failed")
        os.kill(workers[-1].pid, signal.SIGSTOP)  # an idle runtime's threads may still spin: stopped, they cannot
        links[name] = ours
    print(f"backends: {', '.join(names)}, one process each (start, ONNX export + verification, warm-up: "
          f"{time.perf_counter() - began:.0f} s)")
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.backend_rounds):
        for (name, link), worker in zip(links.items(), workers):
            os.kill(worker.pid, signal.SIGCONT)
            link.send("run")
            wall, cpu = link.recv()
            os.kill(worker.pid, signal.SIGSTOP)
            walls[name].append(wall)
            cpus[name].append(cpu)
    for link, worker in zip(links.values(), workers):
        os.kill(worker.pid, signal.SIGCONT)
        link.send("stop")
    for worker in workers:
        worker.join()
    n = args.slices
    print(f"{'backend':14}{'median s':>10}{'slices/s':>10}{'x torch':>9}{'range':>13}{'cpu x torch':>13}")
    for name in names:
        ratios = [t / b for t, b in zip(walls["torch"], walls[name])]
        cpu = statistics.median(t / b for t, b in zip(cpus["torch"], cpus[name]))
        median = statistics.median(walls[name])
        print(f"{name:14}{median:10.2f}{n / median:10.2f}{statistics.median(ratios):9.2f}"
              f"{min(ratios):6.2f}-{max(ratios):<6.2f}{cpu:13.2f}")
    print(f"end-to-end predict per backend, median of {args.backend_rounds} interleaved round(s) "
          "(x torch: median of the per-round ratios; targets openvino >= 1.4, onnxruntime >= 1.25)")


def fixed_cost(args: argparse.Namespace) -> None:
    """Fixed cost of one predict call per model source and backend (see the module docstring)."""
    backends_wanted = [b for b in ("torch", "openvino") if b == "torch" or backends.installed(b)]
    with tempfile.TemporaryDirectory(prefix="swinseg-bench-fixed-") as name:
        folder = Path(name)
        env = dict(os.environ, SWINSEG_HOME=str(folder / "home"))
        torch.manual_seed(0)
        card = load_card(args.model)
        if args.card_spacing:
            preprocessing = dataclasses.replace(card.preprocessing, spacing=parse_spacing(args.card_spacing))
            card = dataclasses.replace(card, preprocessing=preprocessing)
        checkpoint, scan = folder / "model.safetensors", folder / "scan.nii.gz"
        save_checkpoint(checkpoint, build_model(card.network), card)
        write_scan(scan, synthetic_ct(2), args.scan_spacing)
        swinseg = [sys.executable, "-m", "swinseg"]
        subprocess.run([*swinseg, "models", "add", str(checkpoint), "--name", "bench", "--default"], env=env,
                       check=True, capture_output=True)
        variants = {f"{how} {backend}": [*(["-c", str(checkpoint)] if how == "checkpoint" else []),
                                         "--backend", backend, "--device", args.device]
                    for backend in backends_wanted for how in ("checkpoint", "stored")}
        fixed: dict[str, list[float]] = {name: [] for name in variants}
        total: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.fixed_cost + 1):  # round 0 warms the caches and the page cache
            for variant, extra in variants.items():
                began = time.perf_counter()
                done = subprocess.run([*swinseg, "predict", str(scan), "-o", str(folder / "mask.nii.gz"),
                                       "--overwrite", "--json", *extra], env=env, check=True, capture_output=True,
                                      text=True)
                wall = time.perf_counter() - began
                if round_:
                    fixed[variant].append(wall - json.loads(done.stdout.splitlines()[-1])["seconds"])
                    total[variant].append(wall)
        layout = f"tiles at {args.card_spacing} mm" if args.card_spacing else "whole slices"
        print(f"fixed cost of `swinseg predict` on a 2-slice 512x512 scan, {card.name} ({layout}), "
              f"{torch.get_num_threads()} threads, median of {args.fixed_cost} interleaved rounds (target <= 2.5 s)")
        print(f"{'':22}{'fixed s':>9}{'total s':>9}{'x checkpoint':>14}")
        for variant in variants:
            how, backend = variant.split()
            ratio = statistics.median(s / c for s, c in zip(fixed[variant], fixed[f"checkpoint {backend}"]))
            print(f"{variant:22}{statistics.median(fixed[variant]):9.2f}{statistics.median(total[variant]):9.2f}"
                  f"{ratio:14.2f}")
        if args.whole_slices and "openvino" in backends_wanted:
            whole_command(swinseg, env, folder, args)


def whole_command(swinseg: list[str], env: dict[str, str], folder: Path, args: argparse.Namespace) -> None:
    """The whole `swinseg predict` command (process start to exit) with the stored model on a larger scan,
    torch against OpenVINO in interleaved rounds (issue 23: OpenVINO >= 1.4x)."""
    scan = folder / "whole.nii.gz"
    write_scan(scan, synthetic_ct(args.whole_slices), args.scan_spacing)
    walls: dict[str, list[float]] = {"torch": [], "openvino": []}
    for round_ in range(args.fixed_cost + 1):  # round 0 warms the page cache
        for backend, times in walls.items():
            began = time.perf_counter()
            subprocess.run([*swinseg, "predict", str(scan), "-o", str(folder / "whole_mask.nii.gz"), "--overwrite",
                            "--backend", backend, "--device", args.device], env=env, check=True, capture_output=True)
            if round_:
                times.append(time.perf_counter() - began)
    ratio = statistics.median(t / o for t, o in zip(walls["torch"], walls["openvino"]))
    print(f"whole `swinseg predict` command, stored model, {args.whole_slices}-slice 512x512 scan, median of "
          f"{args.fixed_cost} interleaved rounds: torch {statistics.median(walls['torch']):.2f} s, OpenVINO "
          f"{statistics.median(walls['openvino']):.2f} s = {ratio:.2f}x (target >= 1.4x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64, help="slices of the 512x512 timing volume")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each backend's (torch 16, ONNX 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="swin_unet_tiny")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved timing rounds; the best is kept")
    parser.add_argument("--rss-slices", type=int, default=300, help="slices of the RSS volume (0: skip)")
    parser.add_argument("--scan-spacing", type=float, default=0.7, help="in-plane pixel spacing of the scan, mm")
    parser.add_argument("--card-spacing", default=None, help="SY,SX: give the card this target spacing (tiling)")
    parser.add_argument("--backends", default="torch,openvino,onnxruntime",
                        help="backends to compare end to end (the ONNX ones on CPU, where installed; '' to skip)")
    parser.add_argument("--backend-rounds", type=int, default=5, help="interleaved rounds of the backend comparison")
    parser.add_argument("--fixed-cost", type=int, default=0, metavar="N",
                        help="measure only the fixed cost of a predict call, N rounds (issue 23)")
    parser.add_argument("--whole-slices", type=int, default=60,
                        help="with --fixed-cost: also time the whole command on a scan of this many slices (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("SWINSEG_CACHE", tempfile.mkdtemp(prefix="swinseg-bench-cache-"))
    if args.fixed_cost:
        fixed_cost(args)
        return

    torch.manual_seed(0)
    card = load_card(args.model)
    if args.card_spacing:
        preprocessing = dataclasses.replace(card.preprocessing, spacing=parse_spacing(args.card_spacing))
        card = dataclasses.replace(card, preprocessing=preprocessing)
    model = build_model(card.network).eval()
    fast = Predictor(model, card, device=args.device, batch_size=args.batch_size)
    reference = None if args.card_spacing else Predictor(model, card, device=args.device, protocol="reference")
    tiles = fast.tiles_per_slice((512, 512), (args.scan_spacing, args.scan_spacing))
    layout = f"{tiles} tiles/slice at {args.card_spacing} mm" if args.card_spacing else "whole slices"
    print(f"{card.name} random init on {fast.device} ({torch.get_num_threads()} threads), volume "
          f"512x512x{args.slices} at {args.scan_spacing:g} mm, {layout}, batch {fast.batch_size}")

    with tempfile.TemporaryDirectory(prefix="swinseg-bench-") as folder:
        folder_path = Path(folder)
        scan = folder_path / "scan.nii.gz"
        write_scan(scan, synthetic_ct(args.slices), args.scan_spacing)
        case = Case(scan, folder_path / "mask.nii.gz")
        prepared = fast.prepare(read_volume(scan))
        batches = network_inputs(fast, prepared)
        fast.predict_slices(prepared.normalized(0, 2), spacing=prepared.spacing)  # warm-up: kernels, caches
        if reference is not None:
            reference.predict_slices(prepared.normalized(0, 1))

        rounds = []  # network-only and end-to-end interleaved, so that load changes hit both alike
        for _ in range(args.repeat):
            rounds.append((time_network(fast, batches), time_case(fast, case)))
        reference_run = time_case(reference, case) if reference is not None else None

        n = args.slices
        network = min(rounds, key=lambda r: r[0].wall)[0], min(rounds, key=lambda r: r[0].cpu)[0]
        end_to_end = min(rounds, key=lambda r: r[1].wall)[1], min(rounds, key=lambda r: r[1].cpu)[1]
        rows = [("network only", network), ("end-to-end predict", end_to_end)]
        if reference_run is not None:
            rows.append(("reference protocol", (reference_run, reference_run)))
        print(f"{'':22}{'wall s':>8}{'slices/s':>10}{'x network':>11}{'cpu s':>9}{'x network':>11}")
        for name, (by_wall, by_cpu) in rows:
            print(f"{name:22}{by_wall.wall:8.2f}{n / by_wall.wall:10.2f}{by_wall.wall / network[0].wall:11.3f}"
                  f"{by_cpu.cpu:9.2f}{by_cpu.cpu / network[1].cpu:11.3f}")
        versus = (f"; reference / end-to-end: {reference_run.wall / end_to_end[0].wall:.2f}x wall (target > 1)"
                  if reference_run is not None else "")
        print(f"end-to-end / network-only: {end_to_end[0].wall / network[0].wall:.3f} wall, "
              f"{end_to_end[1].cpu / network[1].cpu:.3f} cpu (target <= 1.15){versus}; best of {args.repeat} "
              "round(s)")

        checkpoint = folder_path / "model.safetensors"
        save_checkpoint(checkpoint, model, card)
        compare_backends(checkpoint, scan, args)

        if args.rss_slices:
            big = folder_path / "big.nii.gz"
            write_scan(big, synthetic_ct(args.rss_slices, seed=1), args.scan_spacing)
            cpu_backends = ("openvino", "onnxruntime") if args.device == "cpu" else ()
            for backend in ["torch", *(n for n in cpu_backends if backends.installed(n))]:
                rss, seconds = peak_rss_gb(checkpoint, big, folder_path / "big_mask.nii.gz", args.device,
                                           args.batch_size, backend)
                print(f"peak RSS of `swinseg predict --backend {backend}` on 512x512x{args.rss_slices}: "
                      f"{rss:.2f} GB (target < 3 GB; {seconds:.0f} s including start-up)")


if __name__ == "__main__":
    main()
