"""swinseg against nnU-Net v2 (the peer), side by side, on the same data and the same training wall time.

swinseg trains first (swinseg.training.loop, the recipe of SWINSEG_OPTIONS below over the defaults, all training
cases, no validation); its training wall time T (the train() call: data loading, epochs, checkpoints)
becomes nnU-Net's budget (or --budget S for nnU-Net). nnU-Net runs stock in its own venv (--peer-venv,
created with `pip install nnunetv2` when missing): nnUNetv2_plan_and_preprocess -c 2d, then
nnUNetv2_train ID 2d all -tr nnUNetTrainer_SwinsegBudget -device cpu: fold "all" (every training case) for
the budget, with nnU-Net's poly learning-rate schedule over the wall-clock budget instead of over 1000
epochs (benchmarks/nnunet_budget_trainer.py, copied into the peer venv; its clock counts the epochs only, not
planning, preprocessing, dataloader start-up or the per-epoch pseudo-validation); then nnUNetv2_predict -f all
-device cpu with nnU-Net's default test-time augmentation (mirroring; --no-peer-tta turns it off). swinseg
predicts with swinseg.predict.Predictor on the CPU, without TTA unless --tta (the flips its training made).

Data (nnU-Net raw layout, under OUT/DATA/data):
- ct: the real CT in ../shared/data/ct_abdomen_a (5 organs) cut into 8 blocks of 14 axial slices; the even
  blocks train, the odd blocks are held out: as they are, at 1.5 mm in-plane (accuracy.py's set), at 1 mm
  in-plane padded with air to 400x400, and "another scanner" (each organ enhanced by a seeded 40-120 HU as in
  a contrast phase, a Gaussian blur of 1 voxel in-plane as a softer kernel, then noise of sd 20 HU);
- mr: the real MR in ../shared/data/mr_abdomen_a (the same 5 organs) cut into 4 blocks of 5 slices, the even
  blocks train, the odd blocks are held out;
- phantoms: 16 training phantoms (seed 0, 48x128x128 at 5 x 2.75 x 2.75 mm); held out: 4 phantoms (seed 1) as
  generated and with a 1.5x field of view (48x192x192).
Dice per class with swinseg.metrics.dice: real data pooled over the cases of a set, phantoms per case then
the mean. Each set's table has swinseg's Dice, nnU-Net's and their ratio; the training cases are scored too.
Everything lands under OUT/DATA (runs, predictions, logs); OUT/summary.json gathers the numbers. A finished
side is never retrained and finished predictions are kept, so a re-run only re-scores; --skip-swinseg /
--skip-peer leave a side untrained (its finished run, if any, is still scored). swinseg's learning curve:
OUT/DATA/swinseg/run/metrics.csv; nnU-Net's: its fold_all/progress.png and training_log_*.txt.

    .venv/bin/python benchmarks/peer_nnunet.py [--data ct|phantoms|mr] [--epochs 150] [--out peer_runs]
        [--card swin_unet_demo] [--budget SECONDS] [--skip-swinseg] [--skip-peer] [--no-peer-tta] [--tta]
        [--peer-venv benchmarks/.peer_venv] [--reuse OUT] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/peer_nnunet.py --data phantoms --epochs 1 --budget 60 --out /tmp/peer_smoke
    # another seed of swinseg against the same nnU-Net run (the spread is large: compare several seeds)
    .venv/bin/python benchmarks/peer_nnunet.py --data ct --reuse peer_runs --out seed7 --set seed=7 \
        --set iterations=3100 --set batch_size=16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import real_ct_data, write_nnunet  # noqa: E402
from scale_real_ct import CLASSES, DATA, remapped_labels, resampled  # noqa: E402

from swinseg import io  # noqa: E402
from swinseg.metrics import dice  # noqa: E402
from swinseg.phantom import CLASSES as PHANTOM_CLASSES  # noqa: E402
from swinseg.phantom import write_phantom_dataset  # noqa: E402
from swinseg.predict import Predictor  # noqa: E402
from swinseg.rundir import CONFIG_FILE  # noqa: E402
from swinseg.training.loop import TrainConfig, train  # noqa: E402
from swinseg.training.options import read_config_file  # noqa: E402
from swinseg.weights import load_checkpoint  # noqa: E402

# swinseg's training recipe beyond the defaults (TrainConfig fields: epochs, batch_size, ...); {} = the default.
SWINSEG_OPTIONS: dict[str, Any] = {}
DEFAULT_EPOCHS = 150  # when neither --epochs nor SWINSEG_OPTIONS names the epochs

HERE = Path(__file__).resolve().parent
TRAINER = "nnUNetTrainer_SwinsegBudget"
TRAINER_SOURCE = HERE / "nnunet_budget_trainer.py"
DATASET_IDS = {"ct": 901, "phantoms": 902, "mr": 903}
DATASET_NAMES = {"ct": "SwinsegCT", "phantoms": "SwinsegPhantoms", "mr": "SwinsegMR"}
MR_DATA = DATA.parent / "mr_abdomen_a"
MR_ORGANS = {"liver": 5, "spleen": 1, "kidney_left": 3, "kidney_right": 2, "aorta": 23}  # total_mr ids
MR_BLOCK = 5  # slices per MR block
PHANTOM_SHAPE, PHANTOM_SPACING = (48, 128, 128), (5.0, 2.75, 2.75)
SCANNER_SEED, CONTRAST_HU, NOISE_HU, BLUR_VOXELS = 7, (40.0, 120.0), 20.0, 1.0
CPU_ENV = {"nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "2", "nnUNet_compile": "f", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # nnUNetv2_* -device cpu sets torch's threads


@dataclass
class Benchmark:
    """One --data choice: its classes, the nnU-Net dataset id and the sets scored (title -> nnU-Net folder;
    the first set is the training set)."""

    name: str
    dataset_id: int
    classes: list[str]
    sets: dict[str, Path]
    pooled: bool  # Dice pooled over a set's cases (real data), else per case then the mean (phantoms)
    channel: str = "CT"

    @property
    def train_dir(self) -> Path:
        return next(iter(self.sets.values()))


# ---------------------------------------------------------------------------------------------------- data

def image_pair(folder: Path, case: str) -> tuple[sitk.Image, sitk.Image]:
    return (sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz")),
            sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz")))


def case_names(folder: Path) -> list[str]:
    return sorted(p.name[:-len("_0000.nii.gz")] for p in (folder / "imagesTr").glob("*_0000.nii.gz"))


def another_scanner(cases: dict[str, tuple[sitk.Image, sitk.Image]], seed: int) -> dict[str, tuple[sitk.Image,
                                                                                                  sitk.Image]]:
    """A contrast phase (each organ + a seeded 40-120 HU, the same in every case), a softer kernel (Gaussian
    blur in-plane) and noise (added after the blur, so its sd is NOISE_HU); labels unchanged."""
    rng = np.random.default_rng(seed)
    organs = range(1, len(CLASSES))
    boost = {organ: rng.uniform(*CONTRAST_HU) for organ in organs}
    result = {}
    for name, (image, label) in cases.items():
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        labels = sitk.GetArrayFromImage(label)
        for organ in organs:
            hu[labels == organ] += boost[organ]
        hu = ndimage.gaussian_filter(hu, sigma=(0.0, BLUR_VOXELS, BLUR_VOXELS))
        hu += rng.normal(0.0, NOISE_HU, hu.shape).astype(np.float32)
        changed = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
        changed.CopyInformation(image)
        result[name] = (changed, label)
    return result


def ct_benchmark(root: Path) -> Benchmark:
    """accuracy.py's real-CT blocks (train, odd blocks as they are and at 1.5 mm) plus 1 mm / 400x400 and
    another scanner."""
    train_dir, tests, classes = real_ct_data(root)
    held_dir = tests["odd blocks as they are"]
    held = {case: image_pair(held_dir, case) for case in case_names(held_dir)}
    fine = {case: (resampled(image, 1.0, 400, sitk.sitkLinear, -1024.0),
                   resampled(label, 1.0, 400, sitk.sitkNearestNeighbor, 0)) for case, (image, label) in held.items()}
    sets = {"training blocks (even)": train_dir, **tests,
            "odd blocks at 1 mm, padded to 400x400": write_nnunet(root / "heldout_1mm_400", fine, classes),
            "odd blocks, another scanner (contrast, soft kernel, noise)": write_nnunet(
                root / "heldout_scanner", another_scanner(held, SCANNER_SEED), classes)}
    return Benchmark("ct", DATASET_IDS["ct"], classes, sets, pooled=True)


def mr_benchmark(root: Path) -> Benchmark:
    """The real MR in 4 blocks of 5 slices: even blocks train, odd blocks held out (every organ on both sides)."""
    if not MR_DATA.is_dir():
        raise SystemExit(f"{MR_DATA}: the real MR is not here")
    mr = sitk.ReadImage(str(MR_DATA / "example_mr.nii.gz"))
    labels = remapped_labels(MR_DATA / "example_seg_mr.nii.gz", MR_ORGANS)
    starts = range(0, mr.GetSize()[2] - MR_BLOCK + 1, MR_BLOCK)
    blocks = {f"block{i}": (mr[:, :, z:z + MR_BLOCK], labels[:, :, z:z + MR_BLOCK]) for i, z in enumerate(starts)}
    even = {name: pair for i, (name, pair) in enumerate(blocks.items()) if i % 2 == 0}
    odd = {name: pair for name, pair in blocks.items() if name not in even}
    classes = ["background", *MR_ORGANS]
    sets = {"training blocks (even)": write_nnunet(root / "train", even, classes),
            "odd blocks as they are": write_nnunet(root / "heldout", odd, classes)}
    for folder in sets.values():  # nnU-Net: z-score normalisation; swinseg: its MR intensity path
        dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        dataset["channel_names"] = {"0": "MR"}
        (folder / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    return Benchmark("mr", DATASET_IDS["mr"], classes, sets, pooled=True, channel="MR")


def phantom_benchmark(root: Path) -> Benchmark:
    sets = {"training phantoms": write_phantom_dataset(root / "train", 16, seed=0, shape=PHANTOM_SHAPE,
                                                       spacing=PHANTOM_SPACING),
            "held-out phantoms as generated": write_phantom_dataset(root / "heldout", 4, seed=1, shape=PHANTOM_SHAPE,
                                                                    spacing=PHANTOM_SPACING),
            "held-out phantoms, 1.5x field of view": write_phantom_dataset(
                root / "heldout_fov", 4, seed=1, shape=(48, 192, 192), spacing=PHANTOM_SPACING)}
    return Benchmark("phantoms", DATASET_IDS["phantoms"], list(PHANTOM_CLASSES), sets, pooled=False)


def prepare(data: str, root: Path) -> Benchmark:
    """The benchmark's folders, written once (root/ready.json remembers them)."""
    ready = root / "ready.json"
    if ready.is_file():
        saved = json.loads(ready.read_text(encoding="utf-8"))
        return Benchmark(**{**saved, "sets": {title: Path(p) for title, p in saved["sets"].items()}})
    if data == "ct" and not DATA.is_dir():
        raise SystemExit(f"{DATA}: the real CT is not here")
    bench = {"ct": ct_benchmark, "mr": mr_benchmark, "phantoms": phantom_benchmark}[data](root)
    saved = {**dataclasses.asdict(bench), "sets": {title: str(p.resolve()) for title, p in bench.sets.items()}}
    ready.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    return bench


# ------------------------------------------------------------------------------------------------- swinseg

def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def swinseg_config(bench: Benchmark, run: Path, card: str, epochs: int | None) -> TrainConfig:
    """The shared settings, then SWINSEG_OPTIONS, then --epochs; every training case trains (val_fraction 0);
    the batch is the plan's unless SWINSEG_OPTIONS sets one (the plan cuts it to the training slices: the MR)."""
    options: dict[str, Any] = {"data": str(bench.train_dir), "output": str(run), "model": card, "val_every": 0,
                               "val_fraction": 0.0, "spacing": "auto", "device": "cpu", "num_workers": 2,
                               "seed": 1234, "epochs": DEFAULT_EPOCHS, **SWINSEG_OPTIONS}
    if epochs is not None:
        options["epochs"] = epochs
    return TrainConfig(**options)


def train_swinseg(bench: Benchmark, side: Path, card: str, epochs: int | None, skip: bool) -> dict[str, Any] | None:
    """swinseg's run (trained unless finished, or --skip-swinseg): {"checkpoint", "train_seconds", ...}."""
    run, record = side / "run", side / "training.json"
    if (run / "final.safetensors").is_file() and record.is_file():
        print(f"swinseg: reusing the finished run {run}", flush=True)
        return {**json.loads(record.read_text(encoding="utf-8")), "checkpoint": str(run / "final.safetensors")}
    if skip:
        print("swinseg: skipped (--skip-swinseg) and no finished run", flush=True)
        return None
    config = swinseg_config(bench, run, card, epochs)
    resume = (run / "last.pt").is_file()
    print(f"swinseg: training {card}, {plural(config.epochs, 'epoch')}, batch {config.batch_size or 'as planned'}"
          f"{' (resuming: T counts this call only)' if resume else ''} -> {run}", flush=True)
    began = time.perf_counter()
    result = train(config, resume=resume)
    seconds = time.perf_counter() - began
    epoch_seconds = sum(float(row.get("seconds") or 0.0) for row in result.history)
    print(f"swinseg: trained in {seconds:.1f} s ({plural(len(result.history), 'epoch')}: {epoch_seconds:.1f} s)",
          flush=True)
    info = {"train_seconds": round(seconds, 2), "epoch_seconds": round(epoch_seconds, 2),
            "epochs": len(result.history), "resumed": resume, "card": card,
            "options": {k: v for k, v in read_config_file(run / CONFIG_FILE).items() if k not in ("data", "output")}}
    record.write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return {**info, "checkpoint": str(run / "final.safetensors")}


def predict_swinseg(checkpoint: Path, sets: dict[str, Path], out: Path, tta: bool) -> dict[str, float]:
    """Predictions of every set's cases (kept under out/<set folder>); seconds per set (0 when reused)."""
    predictor: Predictor | None = None
    seconds = {}
    for title, folder in sets.items():
        target, began = out / folder.name, time.perf_counter()
        for case in case_names(folder):
            if (target / f"{case}.nii.gz").is_file():
                continue
            predictor = predictor or Predictor(*load_checkpoint(checkpoint), device="cpu", tta=tta)
            volume = io.read_volume(folder / "imagesTr" / f"{case}_0000.nii.gz")
            io.write_volume(target / f"{case}.nii.gz", predictor.predict_volume(volume).labels, volume)
        seconds[title] = round(time.perf_counter() - began, 2)
    return seconds


# ------------------------------------------------------------------------------------------------- nnU-Net

class Peer:
    """nnU-Net v2 in its own venv, with nnUNet_raw / _preprocessed / _results under `root`."""

    def __init__(self, venv: Path, root: Path, bench: Benchmark) -> None:
        self.venv, self.root, self.bench = venv, root, bench
        self.dataset = f"Dataset{bench.dataset_id:03d}_{DATASET_NAMES[bench.name]}"
        self.env = {**os.environ, **CPU_ENV, "nnUNet_raw": str(root / "raw"),
                    "nnUNet_preprocessed": str(root / "preprocessed"), "nnUNet_results": str(root / "results")}
        self.fold_dir = root / "results" / self.dataset / f"{TRAINER}__nnUNetPlans__2d" / "fold_all"
        self.record = root / "timings.json"

    @property
    def trained(self) -> bool:
        return (self.fold_dir / "checkpoint_final.pth").is_file()

    def timings(self) -> dict[str, Any]:
        return json.loads(self.record.read_text(encoding="utf-8")) if self.record.is_file() else {}

    def note(self, **values: Any) -> None:
        self.record.write_text(json.dumps({**self.timings(), **values}, indent=1), encoding="utf-8")

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def ensure_installed(self) -> None:
        """The venv with nnunetv2 (created when missing), and the budget trainer copied into its package."""
        python = self.venv / "bin" / "python"
        probe = [str(python), "-c", "import os, nnunetv2; print(os.path.dirname(nnunetv2.__file__))"]
        found = subprocess.run(probe, capture_output=True, text=True) if python.is_file() else None
        if found is None or found.returncode != 0:
            print(f"nnU-Net: creating {self.venv} (pip install nnunetv2: a few minutes)", flush=True)
            began = time.perf_counter()
            if not python.is_file():
                subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
            subprocess.run([self.bin("pip"), "install", "--quiet", "nnunetv2"], check=True)
            print(f"nnU-Net: installed in {time.perf_counter() - began:.0f} s", flush=True)
            found = subprocess.run(probe, capture_output=True, text=True, check=True)
        target = Path(found.stdout.strip()) / "training" / "nnUNetTrainer" / "variants" / f"{TRAINER}.py"
        source = TRAINER_SOURCE.read_text(encoding="utf-8")
        if not target.is_file() or target.read_text(encoding="utf-8") != source:
            target.write_text(source, encoding="utf-8")

    def run(self, args: list[str], log: Path, **env: str) -> float:
        """Run an nnUNetv2_* command with its output in `log`; seconds taken. A failure ends the benchmark."""
        began = time.perf_counter()
        with log.open("w", encoding="utf-8") as stream:
            done = subprocess.run([self.bin(args[0]), *args[1:]], stdout=stream, stderr=subprocess.STDOUT,
                                  env={**self.env, **env})
        if done.returncode != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
            raise SystemExit(f"{' '.join(args)} failed ({done.returncode}); the end of {log}:\n{tail}")
        return time.perf_counter() - began

    def plan_and_preprocess(self) -> None:
        raw = self.root / "raw" / self.dataset
        if not (raw / "dataset.json").is_file():
            shutil.copytree(self.bench.train_dir, raw, dirs_exist_ok=True)
        if (self.root / "preprocessed" / self.dataset / "nnUNetPlans.json").is_file() and "preprocess_s" in \
                self.timings():
            return
        print(f"nnU-Net: nnUNetv2_plan_and_preprocess -d {self.bench.dataset_id} -c 2d", flush=True)
        seconds = self.run(["nnUNetv2_plan_and_preprocess", "-d", str(self.bench.dataset_id), "-c", "2d",
                            "-np", "2", "-npfp", "2"], self.root / "plan_and_preprocess.log")
        print(f"nnU-Net: planned and preprocessed in {seconds:.1f} s", flush=True)
        self.note(preprocess_s=round(seconds, 2))

    def train(self, budget: float) -> None:
        print(f"nnU-Net: nnUNetv2_train {self.bench.dataset_id} 2d all -tr {TRAINER} -device cpu, budget "
              f"{budget:.1f} s (log: {self.root / 'train.log'})", flush=True)
        seconds = self.run(["nnUNetv2_train", str(self.bench.dataset_id), "2d", "all", "-tr", TRAINER,
                            "-device", "cpu"], self.root / "train.log", SWINSEG_BUDGET_SECONDS=f"{budget:.3f}")
        self.note(train_process_s=round(seconds, 2))
        report = self.budget_report()
        print(f"nnU-Net: trained {report.get('trained_seconds')} s of a {budget:.1f} s budget: "
              f"{plural(report.get('epochs', 0), 'epoch')}, {plural(report.get('iterations', 0), 'iteration')} of "
              f"batch {report.get('batch_size')} ({seconds:.1f} s with setup)", flush=True)

    def budget_report(self) -> dict[str, Any]:
        path = self.fold_dir / "swinseg_budget.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def predict(self, sets: dict[str, Path], out: Path, tta: bool) -> dict[str, float]:
        seconds = {}
        for title, folder in sets.items():
            target = out / folder.name
            if all((target / f"{case}.nii.gz").is_file() for case in case_names(folder)):
                seconds[title] = 0.0
                continue
            target.mkdir(parents=True, exist_ok=True)
            command = ["nnUNetv2_predict", "-i", str(folder / "imagesTr"), "-o", str(target), "-d",
                       str(self.bench.dataset_id), "-c", "2d", "-f", "all", "-tr", TRAINER, "-device", "cpu",
                       "-npp", "1", "-nps", "1", "--disable_progress_bar"]
            seconds[title] = round(self.run(command + ([] if tta else ["--disable_tta"]),
                                            self.root / f"predict_{folder.name}.log"), 2)
            self.note(tta=tta)  # the setting of the latest predictions (reused ones keep theirs)
        return seconds


# ------------------------------------------------------------------------------------------------- scoring

def score(predictions: Path, folder: Path, classes: int, pooled: bool) -> list[float] | None:
    """Dice per foreground class (NaN: the class is in neither), pooled over the cases or per case then the
    mean; None when a prediction is missing."""
    pairs = []
    for case in case_names(folder):
        if not (predictions / f"{case}.nii.gz").is_file():
            return None
        pairs.append((np.asarray(io.read_volume(predictions / f"{case}.nii.gz").array),
                      np.asarray(io.read_volume(folder / "labelsTr" / f"{case}.nii.gz").array)))
    if pooled:
        flat_p = np.concatenate([p.ravel() for p, _ in pairs])
        flat_r = np.concatenate([r.ravel() for _, r in pairs])
        return [dice(flat_p == k, flat_r == k) for k in range(1, classes)]
    per_case = np.array([[dice(p == k, r == k) for k in range(1, classes)] for p, r in pairs], dtype=float)
    return [nanmean(per_case[:, k]) for k in range(per_case.shape[1])]


def nanmean(values: Any) -> float:
    array = np.asarray(values, dtype=float)
    return float(np.nanmean(array)) if np.isfinite(array).any() else math.nan


def cell(value: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None or not math.isfinite(value) else f"{value:{width}.3f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or not math.isfinite(ours) or not math.isfinite(theirs) or theirs < 0.01:
        return f"{'-':>17}"
    return f"{ours / theirs:16.2f}x"


def print_table(title: str, cases: int, bench: Benchmark, ours: list[float] | None,
                theirs: list[float] | None) -> None:
    how = "Dice pooled over the cases" if bench.pooled else "Dice per case, then the mean"
    print(f"\n{title} ({cases} cases; {how})")
    print(f"{'class':16}{'swinseg':>10}{'nnU-Net':>10}{'swinseg/nnU-Net':>17}")
    for k, name in enumerate(bench.classes[1:]):
        a, b = (ours[k] if ours else None), (theirs[k] if theirs else None)
        print(f"{name:16}{cell(a)}{cell(b)}{ratio(a, b)}")
    a, b = (nanmean(ours) if ours else None), (nanmean(theirs) if theirs else None)
    print(f"{'mean':16}{cell(a)}{cell(b)}{ratio(a, b)}")


def as_json(values: list[float] | None, classes: list[str]) -> dict[str, float | None] | None:
    if values is None:
        return None
    named = {name: (round(v, 4) if math.isfinite(v) else None) for name, v in zip(classes[1:], values)}
    mean = nanmean(values)
    return {**named, "mean": round(mean, 4) if math.isfinite(mean) else None}


# ---------------------------------------------------------------------------------------------------- main

def swinseg_line(ours: dict[str, Any] | None) -> str:
    if not ours:
        return "-"
    epochs = f"; {ours['epoch_seconds']:.1f} s inside the epochs" if "epoch_seconds" in ours else ""
    return f"{ours['train_seconds']:.1f} s ({plural(ours['epochs'], 'epoch')}{epochs})"


def peer_line(nn: dict[str, Any] | None) -> str:
    if not nn:
        return "-"

    def get(key: str) -> Any:
        return nn.get(key, "-")

    tta = "on" if nn.get("tta", True) else "off"
    return (f"{get('trained_seconds')} s of a {get('budget_seconds')} s budget ({get('epochs')} epochs, "
            f"{get('iterations')} iterations of batch {get('batch_size')}, patch {get('patch_size')}; the process "
            f"{get('train_process_s')} s with setup; plan+preprocess {get('preprocess_s')} s; TTA {tta})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ct", "phantoms", "mr"), default="ct")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"swinseg's epochs (default: SWINSEG_OPTIONS' or {DEFAULT_EPOCHS})")
    parser.add_argument("--out", type=Path, default=Path("peer_runs"))
    parser.add_argument("--card", default="swin_unet_demo", help="swinseg's model card")
    parser.add_argument("--budget", type=float, default=None, help="nnU-Net's training seconds (default: swinseg's T)")
    parser.add_argument("--skip-swinseg", action="store_true", help="do not train swinseg (a finished run is scored)")
    parser.add_argument("--skip-peer", action="store_true", help="do not train nnU-Net (a finished run is scored)")
    parser.add_argument("--no-peer-tta", action="store_true", help="nnUNetv2_predict --disable_tta (default: TTA on)")
    parser.add_argument("--tta", action="store_true",
                        help="swinseg predicts with TTA (into swinseg/predictions_tta), as nnU-Net does by default")
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".peer_venv")
    parser.add_argument("--reuse", type=Path, default=None, metavar="OUT",
                        help="take the data and the finished nnU-Net run of another --out (linked, not copied): "
                             "swinseg variants or seeds against one peer run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a swinseg training option over SWINSEG_OPTIONS, e.g. --set iterations=2400")
    args = parser.parse_args()
    SWINSEG_OPTIONS.update(item.split("=", 1) for item in args.set)
    return args


def link_peer_run(source: Path, root: Path) -> None:
    """root/data and root/nnunet as links to those of another run of the benchmark (kept where they exist)."""
    for name in ("data", "nnunet"):
        if not (source / name).is_dir():
            raise SystemExit(f"--reuse: {source / name} is not there")
        root.mkdir(parents=True, exist_ok=True)
        if not (root / name).exists():
            (root / name).symlink_to(source / name, target_is_directory=True)


def run_peer(args: argparse.Namespace, bench: Benchmark, root: Path, ours: dict[str, Any] | None
             ) -> tuple[Peer | None, dict[str, float]]:
    """nnU-Net trained (unless finished or skipped) and its predictions; (None, {}) when it has no model."""
    peer = Peer(args.peer_venv.resolve(), root, bench)
    if not peer.trained and args.skip_peer:
        print("nnU-Net: skipped (--skip-peer) and no finished run", flush=True)
        return None, {}
    root.mkdir(parents=True, exist_ok=True)
    peer.ensure_installed()
    if peer.trained:
        print(f"nnU-Net: reusing the finished run {peer.fold_dir}", flush=True)
    else:
        budget = args.budget if args.budget is not None else (ours or {}).get("train_seconds")
        if budget is None:
            raise SystemExit("nnU-Net needs a budget: train swinseg first or give --budget SECONDS")
        peer.plan_and_preprocess()
        peer.train(float(budget))
    return peer, peer.predict(bench.sets, root / "predictions", tta=not args.no_peer_tta)


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    root = args.out / args.data
    if args.reuse is not None:
        link_peer_run(args.reuse.resolve() / args.data, root)
    bench = prepare(args.data, root / "data")
    ours = train_swinseg(bench, root / "swinseg", args.card, args.epochs, args.skip_swinseg)
    ours_predicted = root / "swinseg" / ("predictions_tta" if args.tta else "predictions")
    our_seconds = predict_swinseg(Path(ours["checkpoint"]), bench.sets, ours_predicted, args.tta) if ours else {}
    peer, peer_seconds = run_peer(args, bench, root / "nnunet", ours)

    result: dict[str, Any] = {"classes": bench.classes, "scoring": "pooled" if bench.pooled else "per case, mean",
                              "swinseg": ours, "swinseg_tta": args.tta, "nnunet": None, "sets": {}}
    if peer is not None:
        result["nnunet"] = {**peer.timings(), **peer.budget_report(), "trainer": TRAINER, "fold": "all"}
    for title, folder in bench.sets.items():
        a = score(ours_predicted / folder.name, folder, len(bench.classes), bench.pooled) \
            if ours else None
        b = score(root / "nnunet" / "predictions" / folder.name, folder, len(bench.classes), bench.pooled) \
            if peer else None
        print_table(title, len(case_names(folder)), bench, a, b)
        result["sets"][title] = {"folder": str(folder), "cases": len(case_names(folder)),
                                 "swinseg": as_json(a, bench.classes), "nnunet": as_json(b, bench.classes),
                                 "predict_seconds": {"swinseg": our_seconds.get(title),
                                                     "nnunet": peer_seconds.get(title)}}
    print(f"\ntraining wall time: swinseg {swinseg_line(ours)}; nnU-Net {peer_line(result['nnunet'])}")
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    summary[args.data] = result
    summary_path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    print(f"{(time.perf_counter() - began) / 60:.1f} min; results: {summary_path}")


if __name__ == "__main__":
    main()
