"""Does swinseg.qc's score track the true Dice, and does it flag the inputs that break the model?

A `swin_unet_demo` model is trained on 16 phantoms (seed 0, 48x128x128 at 5 x 2.75 x 2.75 mm, `--spacing auto`,
`--epochs`, scratch recipe, batch 16), and two undertrained ones on 12 of them: 20 epochs, and stopped after one
epoch; all are cached under --out. The
held-out phantoms (seed 1) are predicted with TTA as generated and degraded: intensities rescaled to 0..4095
(HU + 1024), Gaussian noise (sd 60 and 250 HU), in-plane blur (sigma 3 voxels), a heavy crop (the central 40%
in-plane), an MR-like inversion (bright air, dark bone), and the clean cases through the undertrained models.
For every case: the mean Dice of the 5 organs against the reference (cropped alike) and the QC score and verdict.

Reports: Spearman correlation of score and Dice over all cases (target >= 0.7); of the degraded cases that lost
more than 0.2 Dice against the same case clean through the full model, the share flagged review or fail (target:
all); the share of clean cases verdict ok (target >= 90%), counting the cases that hold a reference organ (the
CT's lower blocks hold none: a scan without the anatomy is one QC should flag, reported on its own line).

`--data ct`: the real CT of ../shared/data cut into blocks of 14 axial slices as benchmarks/accuracy.py does (even
blocks train `--epochs`, 500 by default (3 blocks: 3 batches an epoch), the undertrained models a quarter of that
and 1 epoch; the 4 odd blocks are held out).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/qc.py [--data phantoms|ct] [--epochs 30] [--cases 8] [--out qc_runs]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swinseg import io, qc
from swinseg.metrics import dice
from swinseg.phantom import write_phantom_dataset
from swinseg.predict import Predictor
from swinseg.training.loop import TrainConfig, train
from swinseg.weights import load_checkpoint

SHAPE, SPACING = (48, 128, 128), (5.0, 2.75, 2.75)
CROP = 0.4  # share of each in-plane axis the heavy crop keeps
rng = np.random.default_rng(7)


def _crop(array: np.ndarray) -> np.ndarray:
    _, height, width = array.shape
    top, left = int(height * (1 - CROP) / 2), int(width * (1 - CROP) / 2)
    return array[:, top:top + int(height * CROP), left:left + int(width * CROP)]


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # name -> HU array -> degraded array
    "clean": lambda a: a,
    "rescaled 0..4095": lambda a: a.astype(np.float32) + 1024,
    "noise sd 60": lambda a: a + rng.normal(0, 60, a.shape).astype(np.float32),
    "noise sd 250": lambda a: a + rng.normal(0, 250, a.shape).astype(np.float32),
    "blur sigma 3": lambda a: ndimage.gaussian_filter(a.astype(np.float32), (0, 3, 3)),
    "crop 40% in-plane": _crop,
    "MR-like inversion": lambda a: (3071.0 - (a.astype(np.float32) + 1024)) / 4,
}


def train_model(data: Path, run: Path, epochs: int) -> Path:
    """The final model of a run, trained unless cached."""
    final = run / "final.safetensors"
    if not final.is_file():
        began = time.perf_counter()
        config = TrainConfig(data=str(data), output=str(run), model="swin_unet_demo", recipe="scratch", epochs=epochs,
                             batch_size=16, val_every=0, spacing="auto", num_workers=0, device="cpu", seed=1234)
        train(config, resume=(run / "last.pt").is_file())
        print(f"trained {run.name} ({epochs} epochs) in {time.perf_counter() - began:.0f} s", flush=True)
    return final


def mean_dice(prediction: np.ndarray, reference: np.ndarray, classes: int) -> float:
    """Mean over the classes in the prediction or the reference (a class in neither has no Dice)."""
    return float(np.nanmean([dice(prediction == k, reference == k) for k in range(1, classes)]))


def run_case(predictor: Predictor, volume: io.Volume, reference: np.ndarray) -> dict:
    predictor.agreement = qc.Agreement(predictor.num_classes)
    prediction = predictor.predict_volume(volume, probabilities=True)
    labels, probabilities = prediction.labels, prediction.probabilities
    check = qc.check(volume, labels, probabilities, predictor.card, agreement=predictor.agreement)
    predictor.agreement = None
    return {"dice": mean_dice(np.asarray(labels), reference, predictor.num_classes),
            "anatomy": bool(np.any(reference > 0)), "score": check.score,
            "verdict": check.verdict, "reasons": list(check.reasons), "signals": check.signals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("phantoms", "ct"), default="phantoms")
    parser.add_argument("--epochs", type=int, default=None, help="the full model's (default 30 phantoms, 500 ct)")
    parser.add_argument("--cases", type=int, default=8, help="held-out phantoms")
    parser.add_argument("--out", type=Path, default=Path("qc_runs"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models, held = ct_models(args) if args.data == "ct" else phantom_models(args)
    predictors = {name: Predictor(*load_checkpoint(path), device="cpu", tta=True, backend="torch")
                  for name, path in models.items()}
    print("fingerprint in the card:", predictors["full"].card.fingerprint is not None, flush=True)
    undertrained = list(models)[1:]
    rows = []
    for image in sorted((held / "imagesTr").glob("*_0000.nii.gz")):
        name = image.name[:-len("_0000.nii.gz")]
        scan = io.read_volume(image)
        reference = np.asarray(io.read_volume(held / "labelsTr" / f"{name}.nii.gz").array)
        for variant, degrade in DEGRADATIONS.items():
            array = degrade(np.asarray(scan.array))
            truth = _crop(reference) if variant.startswith("crop") else reference
            degraded = dataclasses.replace(scan, array=np.ascontiguousarray(array), _nifti_header=None)
            rows.append({"case": name, "variant": variant, **run_case(predictors["full"], degraded, truth)})
        for model in undertrained:
            rows.append({"case": name, "variant": f"model {model}", **run_case(predictors[model], scan, reference)})
        print(f"{name}: " + ", ".join(f"{r['variant']} {r['dice']:.2f}/{r['score']:.2f}"
                                       for r in rows if r["case"] == name), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    report(rows)


def phantom_models(args: argparse.Namespace) -> tuple[dict[str, Path], Path]:
    """Phantom data and models: the full one first, then the undertrained ones; and the held-out folder."""
    data = args.out / "data"
    train_dirs = {n: data / f"train{n}" for n in (12, 16)}
    for n, folder in train_dirs.items():
        if not (folder / "dataset.json").is_file():
            write_phantom_dataset(folder, n, seed=0, shape=SHAPE, spacing=SPACING)
    held = data / "heldout"
    if not (held / "dataset.json").is_file():
        write_phantom_dataset(held, args.cases, seed=1, shape=SHAPE, spacing=SPACING)
    return {"full": train_model(train_dirs[16], args.out / "models" / "full", args.epochs or 30),
            "20 epochs, 12 cases": train_model(train_dirs[12], args.out / "models" / "short", 20),
            "stopped early": train_model(train_dirs[12], args.out / "models" / "early", 1)}, held


def ct_models(args: argparse.Namespace) -> tuple[dict[str, Path], Path]:
    """The real CT's blocks (benchmarks/accuracy.py) and models trained on the even ones; the odd ones held out."""
    from accuracy import real_ct_data

    train_dir, tests, _ = real_ct_data(args.out / "data")
    epochs = args.epochs or 500
    return {"full": train_model(train_dir, args.out / "models" / "full", epochs),
            f"{epochs // 4} epochs": train_model(train_dir, args.out / "models" / "short", epochs // 4),
            "stopped early": train_model(train_dir, args.out / "models" / "early", 1)}, tests["odd blocks as they are"]


def report(rows: list[dict]) -> None:
    clean = {r["case"]: r["dice"] for r in rows if r["variant"] == "clean"}
    print(f"\n{'variant':22} {'Dice':>6} {'score':>6} {'ok':>4} {'review':>7} {'fail':>5}  most frequent reason")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        part = [r for r in rows if r["variant"] == variant]
        reasons = [reason.split(":")[0] for r in part for reason in r["reasons"]]
        common = max(set(reasons), key=reasons.count) if reasons else ""
        counts = {v: sum(r["verdict"] == v for r in part) for v in ("ok", "review", "fail")}
        print(f"{variant:22} {np.mean([r['dice'] for r in part]):6.3f} {np.mean([r['score'] for r in part]):6.3f} "
              f"{counts['ok']:4} {counts['review']:7} {counts['fail']:5}  {common[:60]}")
    scored = [r for r in rows if np.isfinite(r["dice"])]  # no Dice: no class in the prediction or the reference
    rho = stats.spearmanr([r["score"] for r in scored], [r["dice"] for r in scored]).statistic
    harmed = [r for r in rows if r["variant"] != "clean" and clean[r["case"]] - r["dice"] > 0.2]
    flagged = sum(r["verdict"] != "ok" for r in harmed)
    with_anatomy = [r for r in rows if r["variant"] == "clean" and r["anatomy"]]
    without = [r for r in rows if r["variant"] == "clean" and not r["anatomy"]]
    print(f"\nSpearman(score, Dice) over {len(scored)} cases: {rho:.3f} (target >= 0.7)")
    print(f"degraded cases losing > 0.2 Dice flagged review/fail: {flagged}/{len(harmed)} (target: all)")
    print(f"clean held-out cases ok: {sum(r['verdict'] == 'ok' for r in with_anatomy)}/{len(with_anatomy)} "
          "(target >= 90%)")
    if without:  # a scan without the anatomy is one QC must flag, not a clean case
        print(f"clean cases without any reference organ flagged review/fail: "
              f"{sum(r['verdict'] != 'ok' for r in without)}/{len(without)}")


if __name__ == "__main__":
    main()
