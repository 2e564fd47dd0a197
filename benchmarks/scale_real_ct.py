"""Scale awareness on the real CT in ../shared/data: a small model trained on it at its own 3 mm spacing,
then asked to segment the same patient scanned differently. Baseline in the same run: the same model trained
with the published whole-slice resize (`--spacing none`).

Test scans, made with SimpleITK (not swinseg's resampler): the CT as it is; resampled to 1 mm in-plane and padded
with air to 512x512 (a large field of view at a fine spacing, as a diagnostic CT); cropped to its central 70%;
flipped left-right in the array with the header saying so. Labels follow each transform (nearest).
Prints mean Dice of five organs per scan and model, and writes overlay PNGs (prediction | reference).

    .venv/bin/python benchmarks/scale_real_ct.py [--epochs 80] [--out scale_real_ct]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from swinseg import io
from swinseg.metrics import dice
from swinseg.overlay import overlay_files
from swinseg.predict import Predictor
from swinseg.training.loop import TrainConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_abdomen_a"
ORGANS = {"liver": 5, "spleen": 1, "kidney_left": 3, "kidney_right": 2, "aorta": 52}  # TotalSegmentator ids
CLASSES = ["background", *ORGANS]


def remapped_labels(path: Path, organs: dict[str, int] = ORGANS) -> sitk.Image:
    """A TotalSegmentator label map reduced to `organs` (default: the demo card's five), numbered 1.. in order."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    out = np.zeros_like(array, dtype=np.uint8)
    for new, old in enumerate(organs.values(), start=1):
        out[array == old] = new
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def write_dataset(root: Path, ct: sitk.Image, labels: sitk.Image) -> None:
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    sitk.WriteImage(ct, str(root / "imagesTr" / "ct_0000.nii.gz"))
    sitk.WriteImage(labels, str(root / "labelsTr" / "ct.nii.gz"))
    dataset = {"channel_names": {"0": "CT"}, "labels": {name: i for i, name in enumerate(CLASSES)},
               "numTraining": 1, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")


def resampled(image: sitk.Image, spacing_xy: float, size_xy: int, interpolator: int, fill: float) -> sitk.Image:
    """`image` on a grid of `spacing_xy` mm in-plane (same slices), size_xy x size_xy, centred on the old one."""
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    spacing = np.array([spacing_xy, spacing_xy, old_spacing[2]])
    size = np.array([size_xy, size_xy, old_size[2]])
    centre = image.TransformContinuousIndexToPhysicalPoint(((old_size - 1) / 2).tolist())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(centre) - direction @ (((size - 1) / 2) * spacing)
    return sitk.Resample(image, [int(v) for v in size], sitk.Transform(), interpolator, origin.tolist(),
                         spacing.tolist(), image.GetDirection(), fill, image.GetPixelID())


def test_scans(ct: sitk.Image, labels: sitk.Image) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    nx, ny, _ = ct.GetSize()
    cx, cy = int(nx * 0.15), int(ny * 0.15)
    flip = sitk.FlipImageFilter()
    flip.SetFlipAxes([True, False, False])  # ITK keeps the physical positions: the header says "flipped"
    return {
        "as is (3 mm, 122x101)": (ct, labels),
        "1 mm, padded to 512x512": (resampled(ct, 1.0, 512, sitk.sitkLinear, -1024.0),
                                    resampled(labels, 1.0, 512, sitk.sitkNearestNeighbor, 0)),
        "cropped to 70%": (ct[cx:nx - cx, cy:ny - cy, :], labels[cx:nx - cx, cy:ny - cy, :]),
        "flipped left-right": (flip.Execute(ct), flip.Execute(labels)),
    }


def mean_dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([dice(prediction == k, reference == k) for k in range(1, len(CLASSES))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("scale_real_ct"))
    parser.add_argument("--spacings", default="auto,none", help="training --spacing values; none = the baseline")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the real CT is not here")
    torch.manual_seed(0)
    ct = sitk.ReadImage(str(DATA / "example_ct.nii.gz"))
    labels = remapped_labels(DATA / "example_seg_fast_force_split.nii.gz")
    write_dataset(args.out / "data", ct, labels)
    scans = test_scans(ct, labels)
    (args.out / "scans").mkdir(parents=True, exist_ok=True)
    for name, (image, label) in scans.items():
        key = name.split(" ")[0]
        sitk.WriteImage(image, str(args.out / "scans" / f"{key}.nii.gz"))
        sitk.WriteImage(label, str(args.out / "scans" / f"{key}_labels.nii.gz"))
    results: dict[str, dict[str, float]] = {}
    spacings = args.spacings.split(",")
    for spacing in spacings:
        run = args.out / f"run_{spacing}"
        began = time.perf_counter()
        config = TrainConfig(data=str(args.out / "data"), output=str(run), model="swin_unet_demo", epochs=args.epochs,
                             batch_size=8, val_every=0, spacing=spacing, num_workers=0, device="cpu")
        result = train(config, resume=(run / "last.pt").exists())
        print(f"trained --spacing {spacing} ({result.card.preprocessing.spacing}) in "
              f"{time.perf_counter() - began:.0f} s")
        predictor = Predictor(result.model, result.card, device="cpu", batch_size=16)
        results[spacing] = {}
        for name in scans:
            key = name.split(" ")[0]
            volume = io.read_volume(args.out / "scans" / f"{key}.nii.gz")
            prediction = predictor.predict_volume(volume).labels
            mask = args.out / f"pred_{spacing}" / f"{key}.nii.gz"
            io.write_volume(mask, prediction, volume)
            reference = io.read_volume(args.out / "scans" / f"{key}_labels.nii.gz").array
            results[spacing][name] = mean_dice(prediction, reference)
            overlay_files(args.out / "scans" / f"{key}.nii.gz", mask, args.out / f"overlay_{spacing}_{key}.png",
                          reference_path=args.out / "scans" / f"{key}_labels.nii.gz", class_names=CLASSES)
    print(f"\n{'mean Dice of 5 organs':28}" + "".join(f"{'--spacing ' + v:>16}" for v in spacings)
          + (f"{'auto / none':>13}" if len(spacings) == 2 else ""))
    for name in scans:
        values = [results[v][name] for v in spacings]
        ratio = "" if len(values) != 2 else (f"{values[0] / values[1]:13.2f}" if values[1] >= 0.01 else f"{'-':>13}")
        print(f"{name:28}" + "".join(f"{v:16.3f}" for v in values) + ratio)
    print(f"overlays: {args.out}/overlay_*.png")


if __name__ == "__main__":
    main()
