"""Overlay pictures: slice choice, picture size and aspect, colours where the labels are, files and CLI."""

import numpy as np
import pytest
from matplotlib.image import imread
from shared_files import EXAMPLE_CT, EXAMPLE_SEG, needs_shared
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.io import Volume, read_volume, write_volume
from swinseg.labels import parse_labels
from swinseg.overlay import (
    FILL_ALPHA,
    GAP_PX,
    HEADING_PX,
    PANEL_PX,
    TITLE_PX,
    choose_slices,
    label_color,
    overlay_files,
    render_overlay,
)
from swinseg.phantom import make_phantom, phantom_volume, write_phantom_dataset


def _coloured(png: np.ndarray) -> np.ndarray:
    rgb = png[..., :3]
    return rgb.max(axis=2) - rgb.min(axis=2) > 0.1


def test_slices_are_evenly_spaced_among_labelled_ones():
    labels = np.zeros((40, 4, 4), dtype=np.uint8)
    labels[10:31, 1, 1] = 2
    assert choose_slices(labels, 3) == [10, 20, 30]
    assert choose_slices(labels, 50) == list(range(10, 31))
    reference = np.zeros_like(labels)
    reference[35, 0, 0] = 1
    assert choose_slices(labels, 2, reference) == [10, 35]
    assert choose_slices(np.zeros_like(labels), 5) == [0, 10, 20, 29, 39]


def test_label_colours_where_the_labels_are(tmp_path):
    image = np.zeros((3, 64, 64), dtype=np.int16)  # 0 HU in a -100..100 window: mid grey
    labels = np.zeros((3, 64, 64), dtype=np.uint8)
    labels[1, 8:24, 4:20] = 1  # top left of the middle slice
    path = render_overlay(image, labels, tmp_path / "o.png", window=(-100, 100), n_slices=1)
    png = imread(path)
    assert png.shape[:2] == (GAP_PX + TITLE_PX + PANEL_PX + GAP_PX + 36, PANEL_PX + 2 * GAP_PX)
    panel = png[GAP_PX + TITLE_PX: GAP_PX + TITLE_PX + PANEL_PX, GAP_PX: GAP_PX + PANEL_PX]
    rows, cols = np.nonzero(_coloured(panel))
    scale = PANEL_PX / 64
    assert abs(rows.min() - 8 * scale) <= 3 and abs(rows.max() - 24 * scale) <= 3
    assert abs(cols.min() - 4 * scale) <= 3 and abs(cols.max() - 20 * scale) <= 3
    fill = 0.5 + FILL_ALPHA * (label_color(1) - 0.5)
    np.testing.assert_allclose(panel[16 * 4, 12 * 4, :3], fill, atol=3 / 255)
    np.testing.assert_allclose(panel[50 * 4, 50 * 4, :3], 0.5, atol=3 / 255)  # unlabelled: plain grey
    legend = png[GAP_PX + TITLE_PX + PANEL_PX:]
    assert _coloured(legend).sum() > 20  # the legend's colour patch


def test_reference_doubles_the_panels_and_spacing_sets_the_aspect(tmp_path):
    ct, labels = make_phantom(0, (8, 40, 60))
    square = imread(render_overlay(ct, labels, tmp_path / "a.png", n_slices=4, spacing=(5, 1, 1)))
    tall = imread(render_overlay(ct, labels, tmp_path / "b.png", n_slices=4, spacing=(5, 3, 1)))
    pair = imread(render_overlay(ct, labels, tmp_path / "c.png", n_slices=4, spacing=(5, 1, 1), reference=labels))
    panel_height = round(PANEL_PX * 40 / 60)  # 40 rows x 60 columns of 1 mm pixels
    assert tall.shape[0] - square.shape[0] == 2 * PANEL_PX - panel_height  # 3 mm rows: twice as tall as wide
    assert square.shape[1] == pair.shape[1] == 4 * PANEL_PX + 5 * GAP_PX  # 4 slices or 2 slice pairs a row
    assert pair.shape[0] - square.shape[0] == panel_height + TITLE_PX + GAP_PX  # a second row
    titled = imread(render_overlay(ct, labels, tmp_path / "d.png", n_slices=4, spacing=(5, 1, 1), title="case 7"))
    assert titled.shape[0] - square.shape[0] == HEADING_PX
    _, text_columns = np.nonzero(titled[:HEADING_PX, :, :3].min(axis=2) > 0.6)
    assert text_columns.size > 20 and abs(text_columns.mean() - titled.shape[1] / 2) < 40  # centred heading


def test_two_dimensional_input_and_bad_input(tmp_path):
    image = np.linspace(0, 1000, 32 * 32).reshape(32, 32)
    labels = (image > 500).astype(np.uint8)
    png = imread(render_overlay(image, labels, tmp_path / "flat.png", window=None))
    assert _coloured(png).any()
    with pytest.raises(Exception, match="shape"):
        render_overlay(image, labels[:10], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert parse_labels("liver, spleen") == {1: "liver", 2: "spleen"}
    assert parse_labels("5=aorta,1=liver") == {5: "aorta", 1: "liver"}


def test_files_are_shown_in_lps_whatever_their_orientation(tmp_path):
    """The same scan stored LPS and RAS (x and y flipped, direction diag(-1, -1, 1)) gives the same picture."""
    ct, labels = make_phantom(3, (10, 48, 64), (5.0, 1.0, 2.0))
    lps = phantom_volume(ct, (5.0, 1.0, 2.0), 3)
    ras = Volume(ct[:, ::-1, ::-1].copy(), lps.spacing, lps.origin, (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    for name, volume, mask in (("lps", lps, labels), ("ras", ras, labels[:, ::-1, ::-1].copy())):
        write_volume(tmp_path / f"{name}.nii.gz", volume.array, volume)
        write_volume(tmp_path / f"{name}_seg.nii.gz", mask, volume)
        overlay_files(tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_seg.nii.gz", tmp_path / f"{name}.png")
    a, b = imread(tmp_path / "lps.png"), imread(tmp_path / "ras.png")
    assert a.shape == b.shape and a.shape[0] > 2 * round(PANEL_PX * 48 / 128)  # aspect from the spacing
    np.testing.assert_array_equal(a, b)


def test_overlay_command_on_a_phantom_dataset(tmp_path):
    data = write_phantom_dataset(tmp_path / "ds", 2, seed=1, shape=(12, 48, 48))
    image, mask = data / "imagesTr" / "phantom_000_0000.nii.gz", data / "labelsTr" / "phantom_000.nii.gz"
    labelled = read_volume(mask)
    other = tmp_path / "shifted.nii.gz"  # a "prediction" one voxel off, on the same grid
    write_volume(other, np.roll(labelled.array, 1, axis=2), labelled)
    runner = CliRunner()
    result = runner.invoke(app, ["overlay", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                 "--reference", str(other), "--slices", "3", "--model", "swin_unet_demo"])
    assert result.exit_code == 0, result.output
    png = imread(tmp_path / "o.png")
    assert png.shape[1] == 4 * PANEL_PX + 5 * GAP_PX and _coloured(png).sum() > 1000
    elsewhere = runner.invoke(app, ["overlay", str(image), str(data / "labelsTr" / "phantom_001.nii.gz"),
                                    "-o", str(tmp_path / "x.png")])
    assert elsewhere.exit_code == 1 and "geometry differs" in elsewhere.output
    scan_as_mask = runner.invoke(app, ["overlay", str(image), str(image), "-o", str(tmp_path / "x.png")])
    assert scan_as_mask.exit_code == 1 and "not a label map" in scan_as_mask.output
    both = runner.invoke(app, ["overlay", str(image), str(mask), "-o", str(tmp_path / "x.png"),
                               "--model", "swin_unet_demo", "--labels", "a"])
    assert both.exit_code == 1 and "not both" in both.output
    assert not (tmp_path / "x.png").exists()
    before = mask.read_bytes()
    onto_input = runner.invoke(app, ["overlay", str(image), str(mask), "-o", str(mask)])
    assert onto_input.exit_code == 1 and mask.read_bytes() == before  # an input is never overwritten


@needs_shared
def test_real_ct_with_its_segmentation(tmp_path):
    out = overlay_files(EXAMPLE_CT, EXAMPLE_SEG, tmp_path / "real.png", class_names={5: "liver", 1: "spleen"},
                        n_slices=4)
    png = imread(out)
    assert png.shape[1] == 4 * PANEL_PX + 5 * GAP_PX and _coloured(png).mean() > 0.05
    scan = read_volume(EXAMPLE_CT)
    assert scan.direction[0] < 0  # stored RAS: the overlay had to reorient it
