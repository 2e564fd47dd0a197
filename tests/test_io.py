"""swinseg.io: formats, geometry preservation, atomic writes, errors, DICOM series, orientation."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import dicom_series
from shared_files import EXAMPLE_CT, needs_shared

from swinseg import io
from swinseg.errors import SwinsegError
from swinseg.io import (
    Volume,
    atomic_output,
    case_name,
    check_finite,
    check_same_geometry,
    find_images,
    read_volume,
    resample_like,
    to_orientation,
    write_volume,
)

# an oblique, permuted direction (columns = index axes) so that no test passes by identity


def oblique_direction() -> tuple[float, ...]:
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    permute = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
    return tuple((rot @ permute).ravel())


def make_image(shape_zyx=(6, 7, 8), dtype=np.int16, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape_zyx).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-12.5, 30.25, 101.0))
    image.SetDirection(oblique_direction())
    return image


def assert_geometry(volume: Volume, image: sitk.Image) -> None:
    assert volume.array.shape == sitk.GetArrayViewFromImage(image).shape
    np.testing.assert_allclose(volume.spacing, image.GetSpacing()[::-1], rtol=1e-6)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.direction, image.GetDirection(), atol=1e-6)


# ----------------------------------------------------------------------------------------------- round trips


@needs_shared
def test_real_ct_labels_keep_affine_codes_and_dtype(tmp_path: Path) -> None:
    source = nib.load(EXAMPLE_CT)
    assert not np.allclose(source.affine, np.eye(4))
    ct = read_volume(EXAMPLE_CT)
    assert ct.array.shape == source.shape[::-1]
    assert_geometry(ct, sitk.ReadImage(str(EXAMPLE_CT)))  # same geometry as SimpleITK's own reader
    for dtype, top in ((np.uint8, 255), (np.uint16, 300)):
        labels = (np.arange(ct.array.size) % (top + 1)).reshape(ct.array.shape).astype(dtype)
        out = tmp_path / f"mask_{np.dtype(dtype).name}.nii.gz"
        write_volume(out, labels, ct)
        written = nib.load(out)
        assert np.allclose(written.affine, source.affine, atol=1e-6)
        assert written.header.get_qform(coded=True)[1] == source.header.get_qform(coded=True)[1]
        assert written.header.get_sform(coded=True)[1] == source.header.get_sform(coded=True)[1]
        assert np.allclose(written.header.get_qform(), source.header.get_qform(), atol=1e-6)
        assert written.get_data_dtype() == dtype
        stored = np.asanyarray(written.dataobj)
        assert stored.dtype == dtype and np.array_equal(stored.T, labels)
        back = read_volume(out)
        check_same_geometry(back, ct, rtol=1e-6)
        assert_geometry(back, sitk.ReadImage(str(out)))


@needs_shared
def test_probabilities_written_as_4d_class_last_float32(tmp_path: Path) -> None:
    ct = read_volume(EXAMPLE_CT)
    probs = np.random.default_rng(1).random((3, *ct.array.shape)).astype(np.float16)
    write_volume(tmp_path / "probs.nii.gz", probs, ct)
    written = nib.load(tmp_path / "probs.nii.gz")
    assert written.shape == (*ct.array.shape[::-1], 3)
    assert written.get_data_dtype() == np.float32
    assert np.allclose(written.affine, nib.load(EXAMPLE_CT).affine, atol=1e-6)
    assert np.array_equal(np.asanyarray(written.dataobj)[..., 2].T, probs[2].astype(np.float32))
    # ITK formats: a vector image, C components per voxel
    write_volume(tmp_path / "probs.mha", probs, ct)
    vector = sitk.ReadImage(str(tmp_path / "probs.mha"))
    assert vector.GetNumberOfComponentsPerPixel() == 3
    assert np.array_equal(sitk.GetArrayFromImage(vector)[..., 1], probs[1].astype(np.float32))
    assert read_volume(tmp_path / "probs.mha", channel=1).array.shape == ct.array.shape


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_3d_round_trip_keeps_geometry(tmp_path: Path, suffix: str) -> None:
    image = make_image()
    source = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(source))
    volume = read_volume(source)
    assert_geometry(volume, image)
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(image))
    labels = (volume.array > 0).astype(np.uint8) * 3
    out = tmp_path / f"mask{suffix}"
    write_volume(out, labels, volume)
    back = read_volume(out)
    assert back.array.dtype == np.uint8 and np.array_equal(back.array, labels)
    check_same_geometry(back, volume, rtol=1e-6)
    assert_geometry(back, sitk.ReadImage(str(out)))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("source_suffix", [".nrrd", ".mha"])
def test_nifti_output_of_itk_input_has_same_geometry(tmp_path: Path, source_suffix: str) -> None:
    image = make_image()
    sitk.WriteImage(image, str(tmp_path / f"scan{source_suffix}"))
    volume = read_volume(tmp_path / f"scan{source_suffix}")
    write_volume(tmp_path / "mask.nii.gz", np.ones(volume.array.shape, np.uint8), volume)
    written = nib.load(tmp_path / "mask.nii.gz")
    assert written.header.get_sform(coded=True)[1] == 1 and written.header.get_qform(coded=True)[1] == 1
    assert_geometry(read_volume(tmp_path / "mask.nii.gz"), image)
    assert_geometry(read_volume(tmp_path / "mask.nii.gz"), sitk.ReadImage(str(tmp_path / "mask.nii.gz")))


def test_2d_images_read_as_2d_and_masks_written_as_png(tmp_path: Path) -> None:
    gray = np.arange(6 * 9, dtype=np.uint8).reshape(6, 9) * 4
    sitk.WriteImage(sitk.GetImageFromArray(gray), str(tmp_path / "gray.png"))
    volume = read_volume(tmp_path / "gray.png")
    assert volume.ndim == 2 and np.array_equal(volume.array, gray)
    labels = (gray > 100).astype(np.uint8)
    write_volume(tmp_path / "mask.png", labels, volume)
    assert np.array_equal(read_volume(tmp_path / "mask.png").array, labels)

    rgb = np.stack([gray, np.flipud(gray), np.full_like(gray, 200)], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    luminance = read_volume(tmp_path / "rgb.png").array
    expected = np.rint(rgb.astype(float) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    assert luminance.shape == gray.shape and np.array_equal(luminance, expected)

    sitk.WriteImage(sitk.GetImageFromArray(gray.astype(np.uint16) * 100), str(tmp_path / "slice.tif"))
    tif = read_volume(tmp_path / "slice.tif")
    assert tif.ndim == 2 and np.array_equal(tif.array, gray.astype(np.uint16) * 100)
    write_volume(tmp_path / "slice_mask.tif", labels, tif)
    assert np.array_equal(read_volume(tmp_path / "slice_mask.tif").array, labels)

    sitk.WriteImage(sitk.GetImageFromArray(gray), str(tmp_path / "photo.jpg"))
    assert read_volume(tmp_path / "photo.jpg").array.shape == gray.shape  # lossy: shape only
    with pytest.raises(SwinsegError, match="bad.jpg"):
        write_volume(tmp_path / "bad.jpg", labels, volume)
    with pytest.raises(SwinsegError, match="probs.png"):
        write_volume(tmp_path / "probs.png", labels.astype(np.float32), volume)


def test_4d_and_vector_inputs_need_a_channel(tmp_path: Path) -> None:
    data = np.random.default_rng(2).random((5, 6, 7, 3)).astype(np.float32)  # nibabel (x, y, z, t)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "dwi.nii.gz")
    with pytest.raises(SwinsegError, match=r"dwi\.nii\.gz.*--channel K \(0-2\)"):
        read_volume(tmp_path / "dwi.nii.gz")
    with pytest.raises(SwinsegError, match=r"dwi\.nii\.gz.*out of range"):
        read_volume(tmp_path / "dwi.nii.gz", channel=3)
    volume = read_volume(tmp_path / "dwi.nii.gz", channel=1)
    assert np.array_equal(volume.array, data[..., 1].T) and volume.spacing == (4.0, 3.0, 2.0)
    write_volume(tmp_path / "mask.nii.gz", np.zeros(volume.array.shape, np.uint8), volume)
    assert nib.load(tmp_path / "mask.nii.gz").shape == (5, 6, 7)

    vector = sitk.GetImageFromArray(np.random.default_rng(3).random((4, 5, 6, 2)).astype(np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vec.nrrd"))
    with pytest.raises(SwinsegError, match="vec.nrrd"):
        read_volume(tmp_path / "vec.nrrd")
    assert np.array_equal(read_volume(tmp_path / "vec.nrrd", channel=1).array, sitk.GetArrayFromImage(vector)[..., 1])
    series = sitk.JoinSeries([sitk.GetImageFromArray(np.full((3, 4, 5), t, np.int16)) for t in range(3)])
    sitk.WriteImage(series, str(tmp_path / "series4d.mha"))
    with pytest.raises(SwinsegError, match=r"series4d\.mha.*--channel K \(0-2\)"):
        read_volume(tmp_path / "series4d.mha")
    assert np.all(read_volume(tmp_path / "series4d.mha", channel=2).array == 2)
    sitk.WriteImage(make_image(), str(tmp_path / "plain.nrrd"))
    with pytest.raises(SwinsegError, match="plain.nrrd"):
        read_volume(tmp_path / "plain.nrrd", channel=0)


# ------------------------------------------------------------------------------------------ atomic and safety


def test_atomic_output_replaces_on_success_and_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "mask.nii.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        assert not target.exists()
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"first"  # never a half file
    assert [p.name for p in target.parent.iterdir()] == ["mask.nii.gz"]  # no temp file left


def test_failed_write_leaves_no_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = read_volume(_write(tmp_path / "scan.nii.gz", make_image()))

    def fail_midway(self: nib.Nifti1Image, filename: str) -> None:
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", fail_midway)
    with pytest.raises(SwinsegError, match=r"mask\.nii\.gz: cannot write \(No space left on device\)"):
        write_volume(tmp_path / "mask.nii.gz", np.zeros(volume.array.shape, np.uint8), volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    source = _write(tmp_path / "scan.nii.gz", make_image())
    before = source.read_bytes()
    volume = read_volume(source)
    (tmp_path / "link.nii.gz").symlink_to(source)
    for target in (source, tmp_path / "sub" / ".." / "scan.nii.gz", tmp_path / "link.nii.gz"):
        with pytest.raises(SwinsegError, match="scan.nii.gz|link.nii.gz"):
            write_volume(target, np.zeros(volume.array.shape, np.uint8), volume)
    assert source.read_bytes() == before


def _write(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.nii.gz", b""),
        ("text.nii.gz", b"this is not an image\n"),
        ("text.nii", b"this is not an image\n" * 40),
        ("text.nrrd", b"this is not an image\n"),
        ("text.mha", b"hello\n"),
        ("text.png", b"hello\n"),
        ("notes.txt", b"hello\n"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SwinsegError, match=name.replace(".", r"\.")) as raised:
        read_volume(tmp_path / name)
    assert "\n" not in str(raised.value)


def test_missing_truncated_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(SwinsegError, match="missing.nii.gz.*not found"):
        read_volume(tmp_path / "missing.nii.gz")
    good = _write(tmp_path / "good.nii.gz", make_image((20, 30, 40), seed=4)).read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 64] = bytes(64)
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    raw = gzip.decompress(good)
    (tmp_path / "truncated.nii").write_bytes(raw[: len(raw) // 2])
    for name in ("truncated.nii.gz", "corrupt.nii.gz", "truncated.nii"):
        with pytest.raises(SwinsegError, match=name.replace(".", r"\.")) as raised:
            read_volume(tmp_path / name)
        assert "\n" not in str(raised.value)
    (tmp_path / "no_dicom").mkdir()
    with pytest.raises(SwinsegError, match="no_dicom"):
        read_volume(tmp_path / "no_dicom")


def test_check_finite_counts_bad_voxels() -> None:
    array = np.zeros((3, 4, 5), np.float32)
    volume = Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), Path("scan.nii.gz"))
    check_finite(volume)
    array[0, 0, 0], array[1, 2, 3], array[2, 3, 4] = np.nan, np.inf, -np.inf
    with pytest.raises(SwinsegError, match=r"scan\.nii\.gz: 3 NaN/inf voxels"):
        check_finite(volume)


# ------------------------------------------------------------------------------------------------------ DICOM


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    first = rng.integers(-1000, 1000, (4, 8, 9)).astype(np.int16)
    second = rng.integers(-1000, 1000, (3, 8, 9)).astype(np.int16)
    folder = tmp_path / "patient"
    dicom_series(folder, first, 2.0, uid="1.2.826.0.1.3680043.2.1125.11", description="abdomen venous", prefix="1")
    dicom_series(folder, second, 5.0, uid="1.2.826.0.1.3680043.2.1125.12", description="scout", prefix="2")
    with pytest.raises(SwinsegError) as raised:
        read_volume(folder)
    message = str(raised.value)
    assert "patient" in message and "\n" not in message
    assert "1.2.826.0.1.3680043.2.1125.11 'abdomen venous' CT (4 slices)" in message
    assert "1.2.826.0.1.3680043.2.1125.12 'scout' CT (3 slices)" in message
    volume = read_volume(folder, series="1.2.826.0.1.3680043.2.1125.12")
    assert np.array_equal(volume.array, second)
    np.testing.assert_allclose(volume.spacing, (5.0, 0.8, 0.8), rtol=1e-6)
    with pytest.raises(SwinsegError, match="patient.*no DICOM series 9.9"):
        read_volume(folder, series="9.9")
    # a DICOM folder writes its masks as NIfTI with the series geometry
    write_volume(tmp_path / "mask.nii.gz", (volume.array > 0).astype(np.uint8), volume)
    check_same_geometry(read_volume(tmp_path / "mask.nii.gz"), volume, rtol=1e-5)
    assert case_name(folder) == "patient"
    _write(tmp_path / "b.nii.gz", make_image())
    (tmp_path / "notes.txt").write_text("x")
    assert find_images(tmp_path) == [tmp_path / "b.nii.gz", tmp_path / "mask.nii.gz", folder]
    assert find_images(folder) == [folder]


# ------------------------------------------------------------------------------------------------ orientation


@needs_shared
def test_flipped_and_permuted_scan_reorients_to_the_same_array(tmp_path: Path) -> None:
    source = nib.load(EXAMPLE_CT).slicer[20:60, 10:45, 30:60]  # small real crop, real affine
    nib.save(source, tmp_path / "original.nii.gz")
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # x <- -z, y <- x, z <- -y
    data = nib.orientations.apply_orientation(np.asanyarray(source.dataobj), ornt)
    affine = source.affine @ nib.orientations.inv_ornt_aff(ornt, source.shape)
    header = source.header.copy()
    nib.save(nib.Nifti1Image(data, affine, header), tmp_path / "permuted.nii.gz")
    original, permuted = read_volume(tmp_path / "original.nii.gz"), read_volume(tmp_path / "permuted.nii.gz")
    assert original.array.shape != permuted.array.shape
    assert original.direction != permuted.direction
    oriented_a, back_a = to_orientation(original, "LPS")
    oriented_b, back_b = to_orientation(permuted, "LPS")
    assert np.array_equal(oriented_a, oriented_b)
    assert np.array_equal(back_a(oriented_a), original.array)
    assert np.array_equal(back_b(oriented_b), permuted.array)
    # a "mask" made in LPS (with a leading class axis) maps onto each scan's own array and writes aligned
    probs = np.stack([oriented_a > 0, oriented_a <= 0]).astype(np.uint8)
    assert np.array_equal(back_b(probs)[0], permuted.array > 0)
    write_volume(tmp_path / "mask_a.nii.gz", back_a(probs[0]), original)
    write_volume(tmp_path / "mask_b.nii.gz", back_b(probs[0]), permuted)
    resampled = resample_like(read_volume(tmp_path / "mask_b.nii.gz"), original)
    assert np.array_equal(resampled.array, read_volume(tmp_path / "mask_a.nii.gz").array)


@pytest.mark.parametrize("code", ["LPS", "RAS", "AIL", "SRP"])
def test_to_orientation_matches_sitk_dicomorient_on_oblique_image(code: str) -> None:
    image = make_image((5, 6, 7))
    volume = Volume(
        sitk.GetArrayFromImage(image), image.GetSpacing()[::-1], image.GetOrigin(), image.GetDirection()
    )
    oriented, back = to_orientation(volume, code)
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(image, code))
    assert np.array_equal(oriented, expected)
    assert np.array_equal(back(np.stack([oriented, oriented + 1])), np.stack([volume.array, volume.array + 1]))
    with pytest.raises(SwinsegError, match="LPX"):
        to_orientation(volume, "LPX")


def test_2d_orientation_uses_the_in_plane_letters(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    volume = read_volume(_write(tmp_path / "slice.png", image))
    same, back = to_orientation(volume, "LPS")
    assert np.array_equal(same, volume.array)
    flipped, back = to_orientation(volume, "RAS")
    assert np.array_equal(flipped, volume.array[::-1, ::-1])
    assert np.array_equal(back(flipped[np.newaxis]), volume.array[np.newaxis])


# ------------------------------------------------------------------------------------- geometry and names


def test_check_same_geometry_and_resample_like(tmp_path: Path) -> None:
    image = make_image((6, 7, 8))
    a = read_volume(_write(tmp_path / "a.nrrd", image))
    check_same_geometry(a, a)
    shifted = sitk.Image(image)
    shifted.SetOrigin(tuple(np.array(image.GetOrigin()) + np.array(image.GetDirection()).reshape(3, 3)[:, 0] * 0.7))
    b = read_volume(_write(tmp_path / "b.nrrd", shifted))  # moved by one voxel along index x
    with pytest.raises(SwinsegError, match=r"a\.nrrd and b\.nrrd: origin"):
        check_same_geometry(a, b)
    spaced = sitk.Image(image)
    spaced.SetSpacing((0.7, 0.9, 2.6))
    with pytest.raises(SwinsegError, match=r"spacing \(2\.5, 0\.9, 0\.7\) vs \(2\.6, 0\.9, 0\.7\)"):
        check_same_geometry(a, read_volume(_write(tmp_path / "c.nrrd", spaced)))
    labels = b.with_array((b.array % 5).astype(np.uint8))
    resampled = resample_like(labels, a)
    check_same_geometry(resampled, a)
    assert resampled.array.dtype == np.uint8
    assert np.array_equal(resampled.array[:, :, 1:], labels.array[:, :, :-1])  # b's voxel i sits at a's i+1
    assert np.all(resampled.array[:, :, 0] == 0)


def test_case_name_and_find_images(tmp_path: Path) -> None:
    assert case_name("x/liver_003_0000.nii.gz") == "liver_003_0000"
    assert case_name("x/liver_003_0000.nii.gz", strip_channel=True) == "liver_003"
    assert case_name("scan.v2.nrrd") == "scan.v2" and case_name("a.MHA") == "a" and case_name("s.png") == "s"
    for name in ("b.nii.gz", "a.nii", "c.mha", "d.png", "notes.txt", ".a.tmp-1234.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["a.nii", "b.nii.gz", "c.mha", "d.png"]
    with pytest.raises(SwinsegError, match="notes.txt"):
        find_images(tmp_path / "notes.txt")


def test_oriented_spacing_follows_the_axes():
    swapped = io.Volume(np.zeros((4, 5, 6)), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (0, 0, 1.0, 0, 1.0, 0, 1.0, 0, 0))
    assert io.oriented_spacing(swapped, "LPS") == (3.0, 2.0, 1.0)  # index x runs along S: the slice axis
    assert io.to_orientation(swapped, "LPS")[0].shape == (6, 5, 4)


def test_synapse_h5_volume_reads_image_and_label(tmp_path):
    import h5py

    path = tmp_path / "case0001.npy.h5"
    image = np.random.default_rng(0).random((3, 8, 10)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    with h5py.File(path, "w") as h5:
        h5["image"], h5["label"] = image, label
    volume = io.read_volume(path)
    assert volume.normalized and volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.array, image)
    reference = io.read_volume(path, dataset="label")
    assert not reference.normalized
    assert io.case_name(path) == "case0001"
    io.write_volume(tmp_path / "case0001.nii.gz", label, like=volume)
    written = io.read_volume(tmp_path / "case0001.nii.gz")
    io.check_same_geometry(written, reference)
    np.testing.assert_array_equal(written.array, reference.array)
    with pytest.raises(SwinsegError, match="no dataset 'mask'"):
        io.read_volume(path, dataset="mask")


def test_2d_nifti_masks_are_written(tmp_path):
    nib.save(nib.Nifti1Image(np.arange(80, dtype=np.int16).reshape(8, 10), np.diag([0.5, 0.7, 1.0, 1.0])),
             tmp_path / "slice.nii.gz")
    volume = read_volume(tmp_path / "slice.nii.gz")
    write_volume(tmp_path / "mask.nii.gz", (volume.array > 40).astype(np.uint8), volume)
    assert np.array_equal(read_volume(tmp_path / "mask.nii.gz").array, volume.array > 40)


def test_only_the_nnunet_channel_suffix_is_stripped():
    assert case_name("amos_0000_0000.nii.gz", strip_channel=True) == "amos_0000"
    assert case_name("amos_0001.nii.gz", strip_channel=True) == "amos_0001"
    assert case_name("amos_0001.nii.gz") == "amos_0001"
