"""Time and size of RTSTRUCT output for masks of a 512x512xN CT series (0.7 mm pixels), from organs to noise.

Masks: "organs" (five ellipsoid organs), "speckle" (20% of the voxels a random foreground class, as an
undertrained network's output), "random labels" (every voxel a random class of the card), "binary noise"
(half the voxels one class: clusters near the percolation threshold, the worst case for contour length) and
"smoothed noise" (noise blurred in-plane by a 3-pixel Gaussian, then halved: blobs of ~10 pixels, a mottled
mask). The last two are traced on coarser grids, as their exact contours exceed the file's budget of
contour steps (rtstruct.CONTOUR_CELLS_PER_SLICE).
Prints seconds, MB and the writer's note per mask. One process, one core.

    python benchmarks/rtstruct_speed.py                      # 100 slices
    python benchmarks/rtstruct_speed.py --slices 20 --min-contour-area 0
    python benchmarks/rtstruct_speed.py --masks organs,speckle
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_files import dicom_series  # noqa: E402 - the tests' series writer

from swinseg.choices import MIN_CONTOUR_AREA  # noqa: E402
from swinseg.config import load_card  # noqa: E402
from swinseg.io import read_volume  # noqa: E402
from swinseg.rtstruct import write_rtstruct  # noqa: E402


def masks(shape: tuple[int, int, int], classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The benchmark's label maps (z, y, x), uint8."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    organs = np.zeros(shape, np.uint8)
    for label in range(1, classes):
        centre = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        radii = np.array([shape[0] * 0.4, *rng.uniform(30, 90, 2)])
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip((z, y, x), centre, radii)) <= 1
        organs[inside] = label
    from scipy import ndimage

    speckle = np.where(rng.random(shape) < 0.2, rng.integers(1, classes, shape), 0).astype(np.uint8)
    return {"organs": organs, "speckle": speckle, "random labels": rng.integers(0, classes, shape).astype(np.uint8),
            "binary noise": (rng.random(shape) < 0.5).astype(np.uint8),
            "smoothed noise": (ndimage.gaussian_filter(rng.random(shape), (0, 3, 3)) > 0.5).astype(np.uint8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--min-contour-area", type=float, default=MIN_CONTOUR_AREA, help="mm²")
    parser.add_argument("--masks", default="organs,speckle,random labels,binary noise,smoothed noise",
                        help="comma separated")
    args = parser.parse_args()
    card = load_card("swin_unet_test")
    with tempfile.TemporaryDirectory() as folder:
        dicom_series(Path(folder) / "series", np.zeros((args.slices, 512, 512), np.int16), pixel_mm=0.7)
        volume = read_volume(Path(folder) / "series")
        print(f"{args.slices} slices of 512x512, 0.7 mm pixels, --min-contour-area {args.min_contour_area:g} mm²")
        for name, labels in masks(volume.array.shape, len(card.classes)).items():
            if name not in args.masks.split(","):
                continue
            output = Path(folder) / "rt.dcm"
            began = time.perf_counter()
            note = write_rtstruct(output, labels, volume, card, args.min_contour_area)
            seconds = time.perf_counter() - began
            print(f"{name:>14}: {seconds:6.2f} s {output.stat().st_size / 1e6:8.2f} MB  "
                  f"{note.split(': ', 1)[1] if note else ''}")


if __name__ == "__main__":
    main()
