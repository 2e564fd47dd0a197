"""Overlay pictures: a grid of axial slices with label maps in colour over a windowed CT (or MR) image.

Arrays are (z, y, x) with axial slices along axis 0, shown as stored (row 0 at the top): pass arrays in
LPS orientation (as `swinseg.io.to_orientation(volume, "LPS")` gives them) for the radiological view,
anterior at the top and the patient's right on the left. Each slice is resampled to the panel's pixels
(image bilinear, labels nearest) so that anisotropic pixels keep their physical aspect ratio, and drawn as
one RGB image: a translucent fill plus a solid outline per label. matplotlib (Agg) only lays out the panels,
titles and legend.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from swinseg.config import read_dataset_labels
from swinseg.errors import SwinsegError
from swinseg.io import Volume, atomic_output, check_same_geometry, oriented_spacing, read_volume, to_orientation
from swinseg.labels import label_map
from swinseg.preprocess import nearest_indices, resize_array, scale_intensities

PANEL_PX = 256  # width of one slice panel in pixels
TITLE_PX = 22  # title band above each panel
HEADING_PX = 30  # optional heading band above the grid
GAP_PX = 6  # space between panels
LEGEND_ROW_PX = 24  # legend band at the bottom: one row per LEGEND_COLUMNS classes, plus a margin
LEGEND_COLUMNS = 6
DPI = 100
FILL_ALPHA = 0.40
BACKGROUND = "#0d0d0d"
TEXT = "#e8e8e8"
# Distinct, saturated colours for labels 1, 2, ...
PALETTE = np.array([
    (230, 75, 60), (70, 170, 255), (255, 200, 40), (60, 200, 90), (200, 90, 230), (255, 130, 30),
    (40, 220, 210), (255, 110, 180), (150, 210, 40), (140, 120, 255), (190, 140, 90), (255, 255, 130),
    (0, 140, 140), (230, 30, 130), (120, 200, 160), (250, 180, 150),
], dtype=np.float32) / 255.0


def label_color(label: int) -> np.ndarray:
    """RGB in [0, 1] of a label id (>= 1); the same label has the same colour in every picture. Beyond the
    palette, hues step by the golden angle so that neighbouring ids differ."""
    if label <= len(PALETTE):
        return PALETTE[int(label) - 1]
    hue = (0.13 + 0.618034 * label) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.75 - 0.2 * (label % 2), 0.95), dtype=np.float32)


def choose_slices(labels: np.ndarray, n_slices: int, reference: np.ndarray | None = None) -> list[int]:
    """`n_slices` evenly spaced indices along axis 0, among the slices that hold a label (in `labels` or
    `reference`) when any does, else over the whole volume."""
    held = np.any(labels.reshape(labels.shape[0], -1) > 0, axis=1)
    if reference is not None:
        held |= np.any(reference.reshape(reference.shape[0], -1) > 0, axis=1)
    candidates = np.nonzero(held)[0] if held.any() else np.arange(labels.shape[0])
    if len(candidates) <= n_slices:
        return [int(i) for i in candidates]
    picks = np.rint(np.linspace(0, len(candidates) - 1, n_slices)).astype(int)
    return [int(candidates[i]) for i in picks]


def _display_window(image: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        low, high = float(window[0]), float(window[1])
        if not low < high:
            raise SwinsegError(f"--window must be LOW HIGH with LOW < HIGH, got {low:g} {high:g}")
        return low, high
    low, high = np.percentile(image, (0.5, 99.5))
    return float(low), float(max(high, low + 1e-6))


def _panel_rgb(image: np.ndarray, labels: np.ndarray, size: tuple[int, int], window: tuple[float, float]) -> np.ndarray:
    """One slice resized to `size` (height, width): windowed grey with the labels filled and outlined."""
    from skimage.segmentation import find_boundaries

    grey = scale_intensities(resize_array(image.astype(np.float32), size, order=1), *window)
    rows, cols = nearest_indices(labels.shape[0], size[0]), nearest_indices(labels.shape[1], size[1])
    panel_labels = labels[rows[:, None], cols[None, :]]
    rgb = np.repeat(grey[..., None], 3, axis=2)
    edge = find_boundaries(panel_labels, connectivity=1, mode="thick")  # 4-neighbourhood holds another label
    for label in np.unique(panel_labels):
        if label == 0:
            continue
        inside = panel_labels == label
        color = label_color(int(label))
        rgb[inside] += FILL_ALPHA * (color - rgb[inside])
        rgb[inside & edge] = color
    return np.clip(rgb, 0.0, 1.0)


def _class_name(label: int, class_names: Sequence[str] | dict[int, str] | None) -> str:
    if isinstance(class_names, dict):
        return class_names.get(label, f"label {label}")
    if class_names is not None and label < len(class_names):
        return class_names[label]
    return f"label {label}"


def _as_volume(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        return array[np.newaxis]
    if array.ndim != 3:
        raise SwinsegError(f"overlay {what} must be 2-D or 3-D, got shape {array.shape}")
    return array


def render_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    out_png: str | Path,
    *,
    class_names: Sequence[str] | dict[int, str] | None = None,
    reference: np.ndarray | None = None,
    window: tuple[float, float] | None = (-125.0, 275.0),
    n_slices: int = 8,
    spacing: Sequence[float] | None = None,
    titles: tuple[str, str] = ("prediction", "reference"),
    title: str | None = None,
) -> Path:
    """Write a PNG grid of `n_slices` axial slices of `image` with `labels` overlaid; returns the path.

    `class_names`: names indexed by label id (a model card's classes, 0 = background) or a {id: name}
    mapping; unnamed labels show as "label N". `reference`: a second label map shown to the right of each
    slice (prediction vs reference, same colours). `window`: display range (HU for CT); None uses the
    image's 0.5-99.5 percentiles (MR). `spacing`: (z, y, x) or (y, x) mm, to keep the physical aspect
    ratio. `titles`: the two panels' names with a reference; `title`: a heading band on top (e.g. the case
    name). The file is written atomically. Picture size: panels of PANEL_PX pixels wide, 4 slices per row
    (2 slice pairs with a reference), a title band per panel and a legend band at the bottom naming the labels shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image, labels = _as_volume(image, "image"), _as_volume(labels, "labels")
    masks = [labels] if reference is None else [labels, _as_volume(reference, "reference")]
    for mask in masks:
        if mask.shape != image.shape:
            raise SwinsegError(f"overlay: label map shape {mask.shape} differs from image shape {image.shape}")
    if n_slices < 1:
        raise SwinsegError(f"--slices must be at least 1, got {n_slices}")
    display = _display_window(image, window)
    slices = choose_slices(labels, n_slices, None if reference is None else masks[1])
    present = sorted({int(v) for mask in masks for v in np.unique(mask[slices]) if v > 0})
    legend_px = LEGEND_ROW_PX * max(1, -(-len(present) // LEGEND_COLUMNS)) + 12

    row_mm, col_mm = (1.0, 1.0) if spacing is None else (float(spacing[-2]), float(spacing[-1]))
    aspect = (image.shape[1] * row_mm) / (image.shape[2] * col_mm)
    panel = (int(np.clip(round(PANEL_PX * aspect), 32, 4 * PANEL_PX)), PANEL_PX)
    per_cell = len(masks)
    cells_per_row = 4 // per_cell
    n_rows = -(-len(slices) // cells_per_row)
    n_cols = min(len(slices), cells_per_row) * per_cell
    width = n_cols * PANEL_PX + (n_cols + 1) * GAP_PX
    heading_px = HEADING_PX if title else 0
    height = heading_px + n_rows * (panel[0] + TITLE_PX + GAP_PX) + GAP_PX + legend_px

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor=BACKGROUND)
    FigureCanvasAgg(figure)
    for index, z in enumerate(slices):
        row, cell = divmod(index, cells_per_row)
        for k, mask in enumerate(masks):
            left = GAP_PX + (cell * per_cell + k) * (PANEL_PX + GAP_PX)
            top = heading_px + GAP_PX + row * (panel[0] + TITLE_PX + GAP_PX) + TITLE_PX
            axes = figure.add_axes((left / width, 1 - (top + panel[0]) / height, PANEL_PX / width, panel[0] / height))
            axes.imshow(_panel_rgb(image[z], mask[z], panel, display), interpolation="none", aspect="auto")
            axes.set_axis_off()
            name = f"slice {z}" if len(masks) == 1 else f"slice {z} · {titles[k]}"
            axes.set_title(name, color=TEXT, fontsize=9, pad=4)
    if title:
        figure.text(0.5, 1 - (heading_px / 2 + GAP_PX / 2) / height, title, color=TEXT, ha="center", va="center",
                    fontsize=11, fontweight="bold")
    handles = [Patch(facecolor=label_color(v), edgecolor=label_color(v), label=_class_name(v, class_names))
               for v in present]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), LEGEND_COLUMNS), frameon=False,
                      labelcolor=TEXT, fontsize=9, handlelength=1.2, columnspacing=1.2,
                      bbox_to_anchor=(0.5, 0.0), borderaxespad=0.3)
    else:
        figure.text(0.5, (legend_px / 2) / height, "no labels", color=TEXT, ha="center", va="center", fontsize=9)

    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        figure.savefig(tmp, dpi=DPI, facecolor=BACKGROUND, format="png")
    return out_png


def dataset_label_names(mask_path: str | Path) -> dict[int, str] | None:
    """Class names from an nnU-Net dataset.json next to the mask or one folder up (labelsTr/..), if any."""
    mask_path = Path(mask_path).resolve()
    for folder in (mask_path.parent, mask_path.parent.parent):
        if (folder / "dataset.json").is_file():
            try:
                return read_dataset_labels(folder / "dataset.json")
            except SwinsegError:
                return None
    return None


def overlay_files(
    image_path: str | Path,
    mask_path: str | Path,
    out_png: str | Path,
    *,
    reference_path: str | Path | None = None,
    class_names: Sequence[str] | dict[int, str] | None = None,
    window: tuple[float, float] | None | str = "auto",
    n_slices: int = 8,
    title: str | None = None,
) -> Path:
    """`render_overlay` for files: reads the scan and label map(s) (same grid, checked), turns 3-D volumes
    to LPS for the radiological view, and takes the spacing from the header. `class_names` default: an
    nnU-Net dataset.json beside the mask. `window="auto"`: -125..275 HU for CT-like scans (minimum below
    -500), the image's percentiles otherwise."""
    if Path(out_png).suffix.lower() != ".png":
        raise SwinsegError(f"-o {out_png}: the overlay is a PNG picture; name it *.png")
    inputs = [p for p in (image_path, mask_path, reference_path) if p is not None]
    if Path(out_png).exists() and any(Path(out_png).resolve() == Path(p).resolve() for p in inputs):
        raise SwinsegError(f"-o {out_png}: is one of the inputs; refusing to overwrite it")
    image = read_volume(image_path)
    masks = [read_volume(mask_path)] + ([read_volume(reference_path)] if reference_path is not None else [])
    if class_names is None:
        class_names = dataset_label_names(mask_path)
    return overlay_volumes(image, masks, out_png, class_names=class_names, window=window, n_slices=n_slices,
                           title=title)


def overlay_volumes(
    image: Volume,
    masks: Sequence[Volume],
    out_png: str | Path,
    *,
    class_names: Sequence[str] | dict[int, str] | None = None,
    window: tuple[float, float] | None | str = "auto",
    n_slices: int = 8,
    title: str | None = None,
) -> Path:
    """`overlay_files` for volumes in memory: a label map, optionally followed by its reference (same grid)."""
    for mask in masks:
        check_same_geometry(image, mask)
    if image.ndim == 3:
        arrays = [to_orientation(volume, "LPS")[0] for volume in (image, *masks)]
        spacing = oriented_spacing(image, "LPS")
    else:
        arrays, spacing = [image.array] + [mask.array for mask in masks], image.spacing
    arrays[1:] = [label_map(array, volume.name) for volume, array in zip(masks, arrays[1:])]
    if isinstance(window, str):
        window = (-125.0, 275.0) if float(arrays[0].min()) < -500 else None
    return render_overlay(
        arrays[0], arrays[1].astype(np.int64), out_png, class_names=class_names,
        reference=arrays[2].astype(np.int64) if len(arrays) > 2 else None,
        window=window, n_slices=n_slices, spacing=spacing, title=title,
    )
