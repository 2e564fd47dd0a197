"""Accuracy beyond one 2-D model: single slice vs 2.5-D context vs strong augmentation vs a 3-fold ensemble vs
an axial+coronal+sagittal ensemble, with the same card, epochs and seed. The baseline (one axial single-slice
model, the reference augmentation) is trained in the same run.

Data (both in nnU-Net layout, `--spacing auto`):
- phantoms: swinseg's generator, 8 training cases (seed 0); held out: 4 other phantoms (seed 1) as generated, and
  the same 4 "rescanned" (2.5 mm slices instead of 5 mm, a 1.5x field of view of air and fat around the body);
- the real CT in ../shared/data (5 organs of its label map): cut into 8 blocks of 14 axial slices (42 mm), the
  even blocks train, the odd blocks are held out (every organ appears on both sides); held out as they are and
  resampled to 1.5 mm in-plane.
Dice per organ: phantoms per case, then the mean over cases and organs; the real CT pooled over its 4 held-out
blocks (an organ may be absent from one block). Every model's predictions are kept under --out.

    .venv/bin/python benchmarks/accuracy.py [--phantom-epochs 20] [--ct-epochs 60] [--out accuracy_runs]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_real_ct import DATA, remapped_labels, resampled  # noqa: E402

from swinseg import io  # noqa: E402
from swinseg.ensemble import Ensemble  # noqa: E402
from swinseg.metrics import dice  # noqa: E402
from swinseg.phantom import CLASSES as PHANTOM_CLASSES  # noqa: E402
from swinseg.phantom import write_phantom_dataset  # noqa: E402
from swinseg.predict import Predictor  # noqa: E402
from swinseg.rundir import run_checkpoints  # noqa: E402
from swinseg.training.crossval import train_all_folds  # noqa: E402
from swinseg.training.loop import TrainConfig, train  # noqa: E402
from swinseg.weights import load_checkpoint  # noqa: E402

CARD = "swin_unet_demo"
BLOCK = 14  # axial slices per real-CT block
SINGLE = {"context_slices": 0, "augment": "reference", "plane": "axial"}
VARIANTS = {  # name -> training options beyond the shared ones; "ensemble" names the models averaged
    "single slice (baseline)": SINGLE,
    "2.5-D, context 1": {**SINGLE, "context_slices": 1},
    "strong augmentation": {**SINGLE, "augment": "strong"},
    "3-fold ensemble": {**SINGLE, "folds": 3, "fold": "all"},
    "axial+coronal+sagittal ensemble": {"ensemble": ["single slice (baseline)", "coronal", "sagittal"]},
}
PLANE_MODELS = {"coronal": {**SINGLE, "plane": "coronal"}, "sagittal": {**SINGLE, "plane": "sagittal"}}


def write_nnunet(root: Path, cases: dict[str, tuple[sitk.Image, sitk.Image]], classes: list[str]) -> Path:
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for name, (image, label) in cases.items():
        sitk.WriteImage(image, str(root / "imagesTr" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{name}.nii.gz"))
    dataset = {"channel_names": {"0": "CT"}, "labels": {n: i for i, n in enumerate(classes)},
               "numTraining": len(cases), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    return root


def phantom_data(out: Path) -> tuple[Path, dict[str, Path]]:
    """Training phantoms and the held-out sets (name -> nnU-Net folder)."""
    shape, spacing = (48, 128, 128), (5.0, 2.75, 2.75)
    train_dir = write_phantom_dataset(out / "train", 8, seed=0, shape=shape, spacing=spacing)
    tests = {"as generated": write_phantom_dataset(out / "heldout", 4, seed=1, shape=shape, spacing=spacing),
             "rescanned (2.5 mm slices, 1.5x FOV)": write_phantom_dataset(
                 out / "heldout_rescanned", 4, seed=1, shape=(96, 192, 192), spacing=(2.5, 2.75, 2.75))}
    return train_dir, tests


def real_ct_data(out: Path) -> tuple[Path, dict[str, Path], list[str]]:
    """The real CT's even blocks (training) and odd blocks as they are and resampled to 1.5 mm (held out)."""
    from scale_real_ct import CLASSES

    ct = sitk.ReadImage(str(DATA / "example_ct.nii.gz"))
    labels = remapped_labels(DATA / "example_seg_fast_force_split.nii.gz")
    blocks = [(ct[:, :, z:z + BLOCK], labels[:, :, z:z + BLOCK]) for z in range(0, ct.GetSize()[2] - BLOCK + 1, BLOCK)]
    train_dir = write_nnunet(out / "train", {f"block{i}": b for i, b in enumerate(blocks) if i % 2 == 0}, CLASSES)
    held = {f"block{i}": b for i, b in enumerate(blocks) if i % 2 == 1}
    fine = {name: (resampled(image, 1.5, 2 * max(image.GetSize()[:2]), sitk.sitkLinear, -1024.0),
                   resampled(label, 1.5, 2 * max(image.GetSize()[:2]), sitk.sitkNearestNeighbor, 0))
            for name, (image, label) in held.items()}
    tests = {"odd blocks as they are": write_nnunet(out / "heldout", held, CLASSES),
             "odd blocks at 1.5 mm in-plane": write_nnunet(out / "heldout_1.5mm", fine, CLASSES)}
    return train_dir, tests, CLASSES


def train_model(data: Path, run: Path, options: dict, epochs: int, batch: int) -> list[Path]:
    """The model files of one training variant (three for --fold all), trained unless already there."""
    options = dict(options)
    config = TrainConfig(data=str(data), output=str(run), model=CARD, epochs=epochs, batch_size=batch, val_every=0,
                         spacing="auto", num_workers=0, device="cpu", seed=1234, **options)
    began = time.perf_counter()
    if config.fold == "all":
        train_all_folds(config)
    elif not (run / "final.safetensors").is_file():
        train(config, resume=(run / "last.pt").is_file())
    print(f"  trained {run.name} in {time.perf_counter() - began:.0f} s", flush=True)
    return run_checkpoints(run)


def scores(predictor: Predictor | Ensemble, test: Path, pooled: bool, classes: int, keep: Path) -> list[float]:
    """Dice per foreground class: per case then averaged, or pooled over the cases."""
    keep.mkdir(parents=True, exist_ok=True)
    predictions, references = [], []
    for image in sorted((test / "imagesTr").glob("*_0000.nii.gz")):
        name = image.name[:-len("_0000.nii.gz")]
        volume = io.read_volume(image)
        labels = predictor.predict_volume(volume).labels
        io.write_volume(keep / f"{name}.nii.gz", labels, volume)
        predictions.append(np.asarray(labels))
        references.append(np.asarray(io.read_volume(test / "labelsTr" / f"{name}.nii.gz").array))
    if pooled:
        flat_p = np.concatenate([p.ravel() for p in predictions])
        flat_r = np.concatenate([r.ravel() for r in references])
        return [dice(flat_p == k, flat_r == k) for k in range(1, classes)]
    per_case = [[dice(p == k, r == k) for k in range(1, classes)] for p, r in zip(predictions, references)]
    return list(np.mean(per_case, axis=0))


def folder_name(variant: str) -> str:
    """A variant's folder: its first word, e.g. "2.5-D", "axial_coronal_sagittal"."""
    return variant.split(" ")[0].replace("+", "_").replace(",", "")


def measure(name: str, train_dir: Path, tests: dict[str, Path], classes: list[str], epochs: int, batch: int,
            out: Path, pooled: bool, variants: list[str]) -> dict[str, dict[str, float]]:
    chosen = {key: options for key, options in VARIANTS.items() if folder_name(key) in variants}
    needed = set(chosen) | {member for options in chosen.values() for member in options.get("ensemble", [])}
    trained = {key: options for key, options in {**VARIANTS, **PLANE_MODELS}.items()
               if key in needed and "ensemble" not in options}
    print(f"\n{name}: training {len(trained)} runs of {CARD}, {epochs} epochs each", flush=True)
    models = {key: train_model(train_dir, out / "runs" / folder_name(key), options, epochs, batch)
              for key, options in trained.items()}
    results: dict[str, dict[str, float]] = {}
    for key, options in chosen.items():
        files = [f for member in options["ensemble"] for f in models[member]] if "ensemble" in options else models[key]
        members = [Predictor(*load_checkpoint(f), device="cpu") for f in files]
        predictor = members[0] if len(members) == 1 else Ensemble(members)
        results[key] = {}
        for test_name, test in tests.items():
            keep = out / "predictions" / folder_name(key) / test.name
            per_class = scores(predictor, test, pooled, len(classes), keep)
            results[key][test_name] = float(np.mean(per_class))
    base = results["single slice (baseline)"]
    print(f"\n{name}: mean Dice of {len(classes) - 1} organs ({'pooled over' if pooled else 'mean of'} the held-out "
          "cases); ratio to the single-slice baseline")
    print(f"{'':34}" + "".join(f"{t[:26]:>34}" for t in tests))
    for key, row in results.items():
        print(f"{key:34}" + "".join(f"{row[t]:>24.3f} ({row[t] / max(base[t], 1e-9):5.2f}x)" for t in tests))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom-epochs", type=int, default=20)
    parser.add_argument("--ct-epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("accuracy_runs"))
    parser.add_argument("--only", choices=("phantoms", "ct"), default=None)
    parser.add_argument("--variants", default=",".join(folder_name(key) for key in VARIANTS),
                        help="comma-separated: single (always), 2.5-D, strong, 3-fold, axial_coronal_sagittal")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()
    variants = ["single", *(v for v in args.variants.split(",") if v != "single")]
    summary = {}
    if args.only in (None, "phantoms"):
        train_dir, tests = phantom_data(args.out / "phantoms" / "data")
        summary["phantoms"] = measure("phantoms", train_dir, tests, list(PHANTOM_CLASSES), args.phantom_epochs, 16,
                                      args.out / "phantoms", pooled=False, variants=variants)
    if args.only in (None, "ct"):
        if not DATA.is_dir():
            raise SystemExit(f"{DATA}: the real CT is not here")
        train_dir, tests, classes = real_ct_data(args.out / "ct" / "data")
        summary["real CT"] = measure("real CT", train_dir, tests, classes, args.ct_epochs, 8, args.out / "ct",
                                     pooled=True, variants=variants)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\n{(time.perf_counter() - began) / 60:.1f} min; results: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
