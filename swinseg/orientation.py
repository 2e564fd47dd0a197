"""Orientation codes and layouts: a scan's array permuted and flipped into a model's orientation code (a view,
no resampling), its slices along the model's plane first, and back.

Codes name the direction each index axis (x, y, z) points to, in SimpleITK's convention: "LPS" is the identity
direction, and the oriented array equals SimpleITK's DICOMOrient(code). Array axis a is index axis ndim - 1 - a.
The module needs no numpy at import: the CLI checks the codes of the cards it reads without loading it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swinseg.errors import SwinsegError

if TYPE_CHECKING:
    import numpy as np

    from swinseg.io import Volume

AXIS_LETTERS = ("LR", "PA", "SI")  # physical axis (LPS) -> (letter of its + direction, letter of its - direction)
PLANE_LETTERS = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}  # the axis each plane's slices step along


def parse_code(code: str, ndim: int = 3) -> tuple[list[int], list[int]]:
    """Physical axis and sign per index axis of an orientation code; 2-D keeps only its in-plane letters."""
    letters = code.upper()
    if ndim == 2:
        letters = "".join(c for c in letters if c in "LRPA")
    axes, signs = [], []
    for letter in letters:
        for axis, pair in enumerate(AXIS_LETTERS):
            if letter in pair:
                axes.append(axis)
                signs.append(1 if letter == pair[0] else -1)
    if len(letters) != ndim or sorted(axes) != list(range(ndim)):
        raise SwinsegError(f"orientation {code!r} is not an orientation code: one letter of L/R, A/P and S/I each, "
                           "e.g. LPS or RAS")
    return axes, signs


def letter_axis(code: str, letters: str) -> int:
    """Array axis, in an array oriented as `code`, of the index axis whose letter is one of `letters`."""
    for index, letter in enumerate(code.upper()):
        if letter in letters:
            return len(code) - 1 - index
    raise SwinsegError(f"orientation {code!r} has no {'/'.join(letters)} axis")


def slice_axis(code: str, plane: str) -> int:
    """Array axis of the `plane` slices in an array oriented as `code`."""
    return letter_axis(code, PLANE_LETTERS[plane])


def _axis_assignment(direction: np.ndarray) -> tuple[list[int], list[int]]:
    """For each index axis, the nearest physical axis and its sign (greedy on the largest cosine)."""
    n = direction.shape[0]
    cosines = abs(direction)
    physical = [-1] * n
    for _ in range(n):
        p, k = divmod(int(cosines.argmax()), n)
        physical[k] = p
        cosines[p, :] = -1
        cosines[:, k] = -1
    signs = [1 if direction[physical[k], k] >= 0 else -1 for k in range(n)]
    return physical, signs


@dataclass(frozen=True)
class Layout:
    """A scan's array as a model lays it out: oriented array axis a is the scan's axis `permutation[a]`,
    reversed where a is in `flips`; `spacing` (mm) in oriented array order; slices step along oriented axis
    `slice_axis` (None: a 2-D image, one slice). Arrays may carry extra leading axes (e.g. classes)."""

    permutation: tuple[int, ...]
    flips: tuple[int, ...]
    spacing: tuple[float, ...]
    slice_axis: int | None = None

    @classmethod
    def identity(cls, spacing: tuple[float, ...]) -> Layout:
        """The layout of a volume stored as slices (D, H, W) already."""
        return cls((0, 1, 2), (), tuple(spacing), 0)

    @property
    def scan_slice_axis(self) -> int | None:
        """The scan's array axis the slices step along (None: a 2-D image)."""
        return None if self.slice_axis is None else self.permutation[self.slice_axis]

    @property
    def in_plane_spacing(self) -> tuple[float, float]:
        """(rows, columns) spacing of the slices, mm."""
        rows, columns = (s for a, s in enumerate(self.spacing) if a != self.slice_axis)
        return rows, columns

    def orient(self, array: np.ndarray) -> np.ndarray:
        """The scan's array in the oriented order (a view)."""
        lead = array.ndim - len(self.permutation)
        moved = array.transpose(*range(lead), *(lead + p for p in self.permutation))
        return _flipped(moved, [lead + a for a in self.flips])

    def unorient(self, array: np.ndarray) -> np.ndarray:
        """An array in the oriented order mapped back to the scan's order."""
        lead = array.ndim - len(self.permutation)
        if lead < 0:
            raise ValueError(f"array with {array.ndim} axes cannot be a {len(self.permutation)}-D volume")
        inverse = sorted(range(len(self.permutation)), key=self.permutation.__getitem__)
        return _flipped(array, [lead + a for a in self.flips]).transpose(*range(lead), *(lead + a for a in inverse))

    def to_slices(self, array: np.ndarray) -> np.ndarray:
        """The scan's array as slices (..., D, H, W) (a view; a 2-D image is one slice)."""
        oriented = self.orient(array)
        if self.slice_axis is None:
            return oriented[..., None, :, :]
        return _moved(oriented, oriented.ndim - 3 + self.slice_axis, oriented.ndim - 3)

    def from_slices(self, array: np.ndarray) -> np.ndarray:
        """Slices (..., D, H, W) mapped back to the scan's array order."""
        if self.slice_axis is None:
            return self.unorient(array[..., 0, :, :])
        return self.unorient(_moved(array, array.ndim - 3, array.ndim - 3 + self.slice_axis))


def layout(volume: Volume, code: str, plane: str | None = None) -> Layout:
    """How `volume` is laid out in orientation `code`, sliced in `plane` (3-D; None: not sliced)."""
    n = volume.ndim
    source_axes, source_signs = _axis_assignment(volume.direction_matrix())
    target_axes, target_signs = parse_code(code, n)
    # target index axis j takes source index axis k with the same physical axis; array axis = n - 1 - index
    source_of = [source_axes.index(target_axes[j]) for j in range(n)]
    permutation = tuple(n - 1 - source_of[n - 1 - a] for a in range(n))
    flips = tuple(a for a in range(n) if source_signs[source_of[n - 1 - a]] != target_signs[n - 1 - a])
    spacing = tuple(float(volume.spacing[p]) for p in permutation)
    axis = slice_axis(code, plane) if plane is not None and n == 3 else None
    return Layout(permutation, flips, spacing, axis)


def oriented_spacing(volume: Volume, code: str) -> tuple[float, ...]:
    """The volume's spacing in the array order of `to_orientation(volume, code)`."""
    return layout(volume, code).spacing


def to_orientation(volume: Volume, code: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The volume's array permuted and flipped into orientation `code` (a view of `volume.array`, as SimpleITK's
    DICOMOrient(code) would give it, without resampling), and the map from an array in that orientation (extra
    leading axes allowed) back to the volume's own array order."""
    oriented = layout(volume, code)
    return oriented.orient(volume.array), oriented.unorient


def _flipped(array: np.ndarray, axes: list[int]) -> np.ndarray:
    """`array` reversed along `axes` (a view, as numpy.flip)."""
    if not axes:
        return array
    return array[tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(array.ndim))]


def _moved(array: np.ndarray, source: int, target: int) -> np.ndarray:
    """`array` with axis `source` moved to position `target` (a view, as numpy.moveaxis)."""
    order = [a for a in range(array.ndim) if a != source]
    order.insert(target, source)
    return array.transpose(order)
