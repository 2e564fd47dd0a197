"""Volume (an array with its geometry), the file kinds swinseg reads, and SimpleITK with its warning printer off."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.errors import SwinsegError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
H5_SUFFIXES = (".npy.h5", ".h5")  # Synapse test volumes (TransUNet layout): datasets "image" and "label"
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES
READABLE_SUFFIXES = SUPPORTED_SUFFIXES + H5_SUFFIXES
_DETACHED_HEADER_SUFFIXES = (".mhd", ".nhdr")  # header + separate data file
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode
QFORM_SFORM_TOLERANCE = 0.25  # voxels the qform and sform may place a corner apart before a header is refused
MAX_SERIES_DEPTH = 4  # patient/study/series/... folders searched below a folder given to predict

@dataclass
class Volume:
    """An image array with its physical geometry.

    `array`: SimpleITK index order ((z, y, x) or (y, x)). `spacing`: mm, in array order. `origin`,
    `direction` (flattened row-major ndim x ndim matrix): ITK order (x, y, z), LPS. `path`: where it was read
    from. `normalized`: intensities are already scaled for the network (Synapse h5 images, in [0, 1]).
    `_nifti_header` keeps the source's NIfTI header, for `write_volume`.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    path: Path | None = None
    normalized: bool = False
    spacing_known: bool = True  # False: read as 1 mm for want of a spacing (2-D images, h5 without one)
    source_files: tuple[str, ...] = field(default=(), repr=False, compare=False)  # DICOM: file of each slice
    notes: tuple[str, ...] = ()  # what reading changed that the user should be told (e.g. slices interpolated)
    _nifti_header: Any = field(default=None, repr=False, compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    @property
    def name(self) -> str:
        """The source file name for messages ("<array>" when the volume was not read from a file)."""
        return self.path.name if self.path is not None else "<array>"

    def direction_matrix(self) -> np.ndarray:
        """The direction cosines as an (ndim, ndim) matrix; column k is index axis k (x, y, z)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry and header with another array (same spatial shape)."""
        if array.shape[array.ndim - self.ndim :] != self.array.shape[self.array.ndim - self.ndim :]:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.array.shape}")
        return dataclasses.replace(self, array=array)


def itk() -> Any:
    """SimpleITK, with ITK's own warning printer switched off: swinseg checks what those warnings are about
    (slice gaps, unreadable files) itself and says it in one line."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


# ------------------------------------------------------------------------------ SimpleITK images <-> Volume


def _unreadable(path: Path, error: BaseException) -> SwinsegError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = reason[:160]
    detail = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return SwinsegError(f"{path}: not a readable image (corrupt, truncated or not an image file; {detail})")


def _itk_reason(error: Exception) -> Exception:
    """A short RuntimeError from SimpleITK's multi-line message (the line after 'Description:' if any)."""
    text = str(error).strip()
    match = re.search(r"(?:Description|ERROR):\s*(.+)", text)
    line = match.group(1) if match else (text.splitlines()[-1] if text else "")
    return RuntimeError(re.sub(r"\w+ ?\(0x[0-9a-fA-F]+\):\s*", "", line).strip().rstrip(":"))


def _volume_from_sitk(image: Any, path: Path, channel: int | None, kind: str) -> Volume:
    sitk = itk()

    if "complex" in image.GetPixelIDTypeAsString():
        raise SwinsegError(f"{path}: complex-valued image; save its magnitude as a real-valued image")
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4:
        count = image.GetSize()[3]
        image = image[:, :, :, _check_channel(path, channel, count)]
        channel = None
    if components > 1:
        if kind == "image2d" and channel is None and components in (3, 4):
            return _luminance_volume(image, path)
        if kind == "image2d" and channel is None and components == 2:  # gray + alpha
            channel = 0
        image = sitk.VectorIndexSelectionCast(image, _check_channel(path, channel, components))
    elif channel is not None:
        raise SwinsegError(f"{path}: --channel {channel} given but the image has a single channel")
    if image.GetDimension() not in (2, 3):
        raise SwinsegError(f"{path}: {image.GetDimension()}-D image is not supported")
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        path=path,
        spacing_known=kind != "image2d",  # PNG/JPEG/TIFF hold no physical pixel size (DPI at most)
    )


def _luminance_volume(image: Any, path: Path) -> Volume:
    sitk = itk()

    rgb = sitk.GetArrayFromImage(image)  # (..., components)
    luminance = rgb[..., :3].astype(np.float64) @ np.asarray(_LUMINANCE)
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        luminance = np.clip(np.rint(luminance), info.min, info.max)
    return Volume(
        array=luminance.astype(rgb.dtype if np.issubdtype(rgb.dtype, np.integer) else np.float32),
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        path=path,
        spacing_known=False,
    )


def _disk_array(array: np.ndarray, like: Volume) -> np.ndarray:
    """Check the shape against `like` and map dtypes that the formats lack (bool, float16)."""
    spatial = like.array.shape[like.array.ndim - like.ndim :]
    if array.shape[array.ndim - like.ndim :] != spatial or array.ndim - like.ndim not in (0, 1):
        raise ValueError(f"array shape {array.shape} does not fit volume {spatial} (+ one channel axis)")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _to_sitk(array: np.ndarray, like: Volume) -> Any:
    sitk = itk()

    if array.ndim > like.ndim:  # leading channel axis -> vector pixels
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), isVector=True)
    else:
        image = sitk.GetImageFromArray(array)
    image.SetSpacing(like.spacing[::-1])
    image.SetOrigin(like.origin)
    image.SetDirection(like.direction)
    return image


def _suffix(path: Path) -> str:
    """The file's format suffix, lower case, with .nii.gz kept whole."""
    name = path.name.lower()
    for double in (".nii.gz", ".npy.h5"):
        if name.endswith(double):
            return double
    return Path(name).suffix


def _check_channel(path: Path, channel: int | None, count: int) -> int:
    if channel is None:
        raise SwinsegError(f"{path}: image has {count} channels/volumes; select one with --channel K (0-{count - 1})")
    if not 0 <= channel < count:
        raise SwinsegError(f"{path}: --channel {channel} out of range, the image has channels 0-{count - 1}")
    return channel
