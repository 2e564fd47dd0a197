"""Synthetic abdominal CT phantoms: CT-like Hounsfield units, organ labels, real NIfTI headers.

`make_phantom` draws one case from a seed: a body outline (skin, subcutaneous fat, muscle wall), a spine
with vertebral bodies, discs and posterior arches, paraspinal muscles, ribs and lung bases in the upper
slices, bowel loops with gas in visceral fat, and the labelled organs of the `swin_unet_demo` card
(liver, spleen, kidneys with renal sinus, aorta; plus an unlabelled inferior vena cava), each a smoothly
deformed ellipsoid whose size, position, rotation and shape vary with the seed. Arrays are in SimpleITK
order (z, y, x) with LPS semantics: z runs inferior -> superior, rows anterior -> posterior, columns the
patient's right -> left (so axial slices show the patient's right on the image's left).

The anatomy is physical: its size and position in millimetres depend on the seed only, laid out relative to
a body drawn for the default field of view (`DEFAULT_SHAPE` x `DEFAULT_SPACING`: 352 mm in-plane, 240 mm
along z from the lung bases to below the kidneys), centred on the volume. `shape` and `spacing` choose the
field of view and the sampling: a larger field of view adds air around the body and continues the body,
spine and vessels above and below; a smaller one crops it, as a cropped scan does; a finer spacing samples
the same organs more densely (same volumes in ml). Numpy only; a 48 x 160 x 160 case takes a fraction of a
second.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io import Volume, atomic_output, write_volume

CLASSES = ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")
LIVER, SPLEEN, KIDNEY_LEFT, KIDNEY_RIGHT, AORTA = 1, 2, 3, 4, 5
DEFAULT_SHAPE = (48, 160, 160)
DEFAULT_SPACING = (5.0, 2.2, 2.2)  # mm, (z, y, x): a 352 mm field of view, 240 mm craniocaudal
# The reference field of view the anatomy is drawn for, in mm, whatever the shape and spacing asked for.
REFERENCE_FOV_MM = DEFAULT_SHAPE[2] * DEFAULT_SPACING[2]  # 352 mm, in-plane (y and x)
REFERENCE_Z_MM = DEFAULT_SHAPE[0] * DEFAULT_SPACING[0]  # 240 mm: one unit of t
DIAPHRAGM_EDGE_MM = 5.0  # width of the lung bases' soft lower edge along z (one default slice)
HU_RANGE = (-1024, 3071)
PRISM = 10.0  # a z semi-axis this long (in units of t, i.e. of 240 mm) makes a blob a z-invariant prism


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates: t inferior -> superior in units of `REFERENCE_Z_MM` from 0.5 at the volume's
    z centre (so [0, 1] spans 240 mm: exactly the default volume), y and x in mm from the image centre."""

    t: np.ndarray
    y: np.ndarray
    x: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class _Blob:
    """A smoothly deformed, rotated (about z) and bent ellipsoid; its implicit function is < 1 inside."""

    center: tuple[float, float, float]  # (t, y mm, x mm)
    axes: tuple[float, float, float]  # semi-axes (t units, y mm, x mm)
    angle: float = 0.0  # in-plane rotation, radians
    shape: tuple[float, ...] = (0.0,) * 9  # low-order deformation coefficients
    bend: tuple[float, float] = (0.0, 0.0)  # in-plane shift (y, x) in mm per unit of (t - t0) / at, squared

    @property
    def prism(self) -> bool:
        """True for shapes that do not change along z (body, spine): evaluated on one slice."""
        return self.axes[0] >= PRISM

    def box(self, grid: _Grid) -> tuple[slice, slice, slice]:
        """Index ranges that can hold the blob (with room for deformation and bending; all of z for prisms)."""
        t0, y0, x0 = self.center
        at, ay, ax = self.axes
        grow = 1.02 / (1.0 - sum(abs(c) for c in self.shape))
        reach = grow * max(ay, ax) + abs(self.bend[0]) + abs(self.bend[1])
        return (
            slice(None) if self.prism else _range(grid.t, t0 - grow * at, t0 + grow * at),
            _range(grid.y, y0 - reach, y0 + reach),
            _range(grid.x, x0 - reach, x0 + reach),
        )

    def rho(self, t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Deformed normalised radius at broadcastable coordinates: < 1 inside, about 1 + d/R outside."""
        t0, y0, x0 = self.center
        at, ay, ax = self.axes
        qt = (t - t0) / at
        dy = y - y0 - self.bend[0] * qt**2
        dx = x - x0 - self.bend[1] * qt**2
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        qy = (cos * dy + sin * dx) / ay
        qx = (-sin * dy + cos * dx) / ax
        radius = np.sqrt(qt**2 + qy**2 + qx**2) + 1e-6
        ut, uy, ux = qt / radius, qy / radius, qx / radius
        c = self.shape
        wobble = (c[0] * ux + c[1] * uy + c[2] * ut + c[3] * ux * uy + c[4] * ux * ut + c[5] * uy * ut
                  + c[6] * (ux**2 - uy**2) + c[7] * ux * uy * ut + c[8] * (ux**3 - 3 * ux * uy**2))
        return radius / (1.0 + wobble)

    @property
    def scale_mm(self) -> float:
        """Rough in-plane radius, to turn rho into a distance for partial-volume edges."""
        return float(min(self.axes[1], self.axes[2]))


def _range(coords: np.ndarray, low: float, high: float) -> slice:
    """The index range of the coordinates within [low, high]."""
    inside = np.nonzero((coords.ravel() >= low) & (coords.ravel() <= high))[0]
    if inside.size == 0:
        return slice(0, 0)
    return slice(int(inside[0]), int(inside[-1]) + 1)


class _Painter:
    """Accumulates HU values (with partial-volume edges) and the label map, structure by structure."""

    def __init__(self, grid: _Grid, background: float):
        self.grid = grid
        shape = (grid.t.size, grid.y.size, grid.x.size)
        self.ct = np.full(shape, background, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.reserved = np.zeros(shape, dtype=bool)  # labelled organs plus their fat margin
        self.edge_mm = 0.7 * min(grid.spacing[1:])

    def rho(self, blob: _Blob, box: tuple[slice, slice, slice]) -> np.ndarray:
        """The blob's implicit function over `box` (one slice, broadcastable along z, for prisms)."""
        g = self.grid
        t = np.full((1, 1, 1), blob.center[0], dtype=np.float32) if blob.prism else g.t[box[0]]
        return blob.rho(t, g.y[:, box[1]], g.x[:, :, box[2]])

    def alpha(self, blob: _Blob, box: tuple[slice, slice, slice]) -> np.ndarray:
        """Partial-volume occupancy in [0, 1] over `box`: a soft edge about one voxel wide."""
        return self._soft_edge(self.rho(blob, box), blob)

    def _soft_edge(self, rho: np.ndarray, blob: _Blob) -> np.ndarray:
        return np.clip(0.5 - (rho - 1.0) * np.float32(blob.scale_mm / self.edge_mm), 0.0, 1.0)

    @staticmethod
    def crop(array: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
        """`array[box]` for full-volume arrays and for one-slice arrays that broadcast along z."""
        return array[(slice(None), *box[1:])] if array.shape[0] == 1 else array[box]

    def blend(self, box: tuple[slice, slice, slice], alpha: np.ndarray, hu: float | np.ndarray) -> None:
        """Mix `hu` into the image over `box` with weight `alpha`."""
        region = self.ct[box]
        region += alpha * (np.asarray(hu, dtype=np.float32) - region)

    def paint(self, blob: _Blob, hu: float, *, within: np.ndarray | None = None) -> None:
        """Unlabelled tissue; `within` (an occupancy, full-volume or one slice) confines it."""
        box = blob.box(self.grid)
        alpha = self.alpha(blob, box)
        if within is not None:
            alpha = alpha * self.crop(within, box)
        self.blend(box, alpha, hu)

    def organ(self, blob: _Blob, hu: float, label: int, allowed: np.ndarray, margin_mm: float) -> np.ndarray:
        """A labelled organ, kept where `allowed` (an occupancy) is above one half and away from the organs
        painted before it (higher priority) by `margin_mm` of fat; returns its mask in the full volume."""
        box = blob.box(self.grid)
        rho = self.rho(blob, box)
        free = ~self.reserved[box] & (self.crop(allowed, box) > 0.5)
        inside = (rho < 1.0) & free
        self.blend(box, self._soft_edge(rho, blob) * free, hu)
        self.labels[box][inside] = label
        self.reserved[box] |= rho < 1.0 + margin_mm / blob.scale_mm
        mask = np.zeros(self.labels.shape, dtype=bool)
        mask[box] = inside
        return mask


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
    """Voxel-centre coordinates, float32, shaped to broadcast over (z, y, x).

    t = (z - z_centre) / 240 mm + 0.5, written as (k + 0.5 + (n_ref - nz) / 2) / n_ref with n_ref the number
    of slices in 240 mm, so that the default grid gives exactly (k + 0.5) / nz."""
    nz, ny, nx = shape
    n_ref = REFERENCE_Z_MM / spacing[0]
    offset = np.float32(0.5 + (n_ref - nz) / 2)
    t = ((np.arange(nz, dtype=np.float32) + offset) / np.float32(n_ref)).reshape(-1, 1, 1)
    y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * np.float32(spacing[1])).reshape(1, -1, 1)
    x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * np.float32(spacing[2])).reshape(1, 1, -1)
    return _Grid(t, y, x, spacing)


def _check_geometry(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[tuple[int, int, int],
                                                                               tuple[float, float, float]]:
    if len(shape) != 3 or min(int(s) for s in shape) < 4:
        raise SwinsegError(f"--shape must be 3 sizes (z, y, x) of at least 4 voxels, got {tuple(shape)}")
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise SwinsegError(f"--spacing must be 3 positive sizes (z, y, x) in mm, got {tuple(spacing)}")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)  # type: ignore[return-value]


class _Case:
    """The random draws of one phantom, in body-relative millimetres; the body is sized for the reference
    field of view (`REFERENCE_FOV_MM`), not for the grid asked for, so the anatomy depends on the seed only."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.half_width = self.vary(0.43, 0.06) * REFERENCE_FOV_MM
        self.half_depth = self.half_width * self.vary(0.70, 0.07)
        self.center_y = self.jitter(0.0, 0.02) * REFERENCE_FOV_MM  # table height

    def vary(self, value: float, spread: float) -> float:
        """`value` scaled by a random factor in [1 - spread, 1 + spread]."""
        return float(value * (1.0 + self.rng.uniform(-spread, spread)))

    def jitter(self, value: float, spread: float) -> float:
        """`value` shifted by a random amount in [-spread, spread]."""
        return float(value + self.rng.uniform(-spread, spread))

    def deform(self, strength: float) -> tuple[float, ...]:
        """Deformation coefficients whose absolute sum is `strength` (the most the radius can change)."""
        coefficients = self.rng.uniform(-1.0, 1.0, 9)
        return tuple(float(v) for v in coefficients * strength / np.abs(coefficients).sum())

    def at(self, u: float, w: float) -> tuple[float, float]:
        """(y, x) in mm of a body-relative position: u from -1 (patient's right) to 1 (left), w from -1
        (anterior) to 1 (posterior)."""
        return self.center_y + w * self.half_depth, u * self.half_width


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic abdominal CT: (int16 Hounsfield units, uint8 labels of `CLASSES`), (z, y, x) LPS.

    Deterministic from `seed`; different seeds give different body sizes, organ sizes, positions,
    rotations and shapes, contrast levels and noise. The anatomy in mm depends on the seed only: `shape`
    and `spacing` set the field of view (centred on the body) and the sampling, not the body's size.
    """
    shape, spacing = _check_geometry(shape, spacing)
    case = _Case(np.random.default_rng(seed))
    painter = _Painter(_grid(shape, spacing), background=-1000.0)
    cavity = _paint_body(painter, case)
    spine = _paint_spine(painter, case)
    below_diaphragm = cavity * (1.0 - _paint_thorax(painter, case, cavity))
    _paint_organs(painter, case, cavity, below_diaphragm, spine)
    noise = case.rng.normal(0.0, case.vary(14.0, 0.3), size=shape).astype(np.float32)
    ct = np.clip(np.rint(painter.ct + noise), *HU_RANGE).astype(np.int16)
    return ct, painter.labels


def _paint_body(painter: _Painter, case: _Case) -> np.ndarray:
    """Subcutaneous fat, the muscle wall, posterior muscles and the cavity's visceral fat with bowel
    loops (some holding gas); returns the cavity's occupancy (one slice, broadcastable along z)."""
    grid, bw, bd, by = painter.grid, case.half_width, case.half_depth, case.center_y
    flat_back = (0, 0.04, 0, 0, 0, 0, -0.05, 0, 0)
    painter.paint(_Blob((0.5, by, 0.0), (PRISM, bd, bw), shape=flat_back), case.jitter(-100.0, 15))
    wall = (PRISM, bd * case.vary(0.88, 0.03), bw * case.vary(0.90, 0.03))
    painter.paint(_Blob((0.5, by + 0.02 * bd, 0.0), wall, shape=flat_back), case.jitter(45.0, 8))
    whole = (slice(None),) * 3
    cavity = painter.alpha(_Blob((0.5, by - 0.03 * bd, 0.0), (PRISM, bd * 0.80, bw * 0.84),
                                 shape=(0, 0.06, 0, 0, 0, 0, 0, 0, 0)), whole)
    # Bowel loops: level sets of a few random plane waves, evaluated as products of complex exponentials.
    # Wavelengths scale with the body (40-80 mm in an adult); one unit of t (240 mm) counts as 1.6 body
    # half-widths.
    waves = np.zeros(painter.ct.shape, dtype=np.float32)
    z_body = grid.t * np.float32(1.6 * bw)
    for _ in range(5):
        direction = case.rng.normal(size=3)
        k = 2 * np.pi / (case.rng.uniform(0.27, 0.54) * bw) * direction / np.linalg.norm(direction)
        phase = case.rng.uniform(0, 2 * np.pi)
        along_z, along_y, along_x = (np.exp(1j * (k[0] * z_body + phase)).astype(np.complex64),
                                     np.exp(1j * k[1] * grid.y).astype(np.complex64),
                                     np.exp(1j * k[2] * grid.x).astype(np.complex64))
        waves += (along_z * along_y * along_x).imag
    visceral = np.where(waves > 0.7, case.jitter(25.0, 10), case.jitter(-95.0, 10)).astype(np.float32)
    visceral[waves > 3.0] = -1000.0
    painter.blend(whole, cavity, visceral)
    for side in (-1, 1):
        painter.paint(_Blob((0.5, *case.at(side * 0.22, 0.72)), (PRISM, 0.20 * bd, 0.16 * bw)), 50.0)
        painter.paint(_Blob((0.15, *case.at(side * 0.2, 0.35)), (0.35, 0.13 * bd, 0.11 * bw), angle=side * 0.3), 45.0)
    return cavity


def _paint_spine(painter: _Painter, case: _Case) -> tuple[float, float]:
    """Vertebral bodies (cortical rim, cancellous core) separated by discs, the canal and the spinous
    process; returns the vertebral body's centre row and radius in mm."""
    grid = painter.grid
    spine_y, _ = case.at(0.0, case.vary(0.42, 0.05))
    radius = case.vary(0.13, 0.06) * case.half_width
    level = np.mod(grid.t * (240.0 / case.vary(32.0, 0.08)) + case.rng.uniform(0, 1), 1.0)
    disc = (level < 0.2).astype(np.float32)
    vertebra = _Blob((0.5, spine_y, 0.0), (PRISM, radius * 0.9, radius))
    box = vertebra.box(grid)
    painter.blend(box, painter.alpha(vertebra, box), 700.0 - 620.0 * disc)
    core = painter.alpha(_Blob((0.5, spine_y, 0.0), (PRISM, radius * 0.72, radius * 0.8)), box)
    painter.blend(box, core * (1.0 - disc), 230.0)
    canal_y = spine_y + radius * 1.55
    painter.paint(_Blob((0.5, canal_y, 0.0), (PRISM, radius * 0.75, radius * 0.8)), 700.0)
    painter.paint(_Blob((0.5, canal_y, 0.0), (PRISM, radius * 0.45, radius * 0.5)), 15.0)
    painter.paint(_Blob((0.5, canal_y + radius * 1.2, 0.0), (PRISM, radius * 0.7, radius * 0.18)), 700.0)
    return spine_y, radius


def _paint_thorax(painter: _Painter, case: _Case, cavity: np.ndarray) -> np.ndarray:
    """Ribs along the muscle wall in the upper slices and the lung bases above two diaphragm domes that
    reach lowest at the back and sides; returns the lungs' occupancy."""
    grid, bw, bd, by = painter.grid, case.half_width, case.half_depth, case.center_y
    t, y, x = grid.t, grid.y, grid.x
    whole = (slice(None),) * 3
    ring = painter.alpha(_Blob((0.5, by, 0.0), (PRISM, bd * 0.86, bw * 0.87)), whole)
    ring -= painter.alpha(_Blob((0.5, by, 0.0), (PRISM, bd * 0.80, bw * 0.82)), whole)
    angle = np.arctan2(y - by, x)
    ribs = (np.cos(7 * angle + case.rng.uniform(0, 2 * np.pi) + 9 * t) > 0.75) & (t > 0.35) & (np.abs(x) > 0.3 * bw)
    painter.blend(whole, ring * ribs, 600.0)
    dome_top = case.vary(1.03, 0.02)
    edge = REFERENCE_Z_MM / DIAPHRAGM_EDGE_MM  # 1 / (the lower edge's width in t): 48, whatever the spacing
    lung = np.zeros(painter.ct.shape, dtype=np.float32)
    for side in (-1, 1):
        dome_y, dome_x = case.at(side * 0.45, -0.1)
        dome = dome_top - 0.3 * (((y - dome_y) / bd) ** 2 + ((x - dome_x) / bw) ** 2)
        lung = np.maximum(lung, np.clip((t - dome) * edge, 0, 1) * (side * x > 0.1 * bw))
    heart = _Blob((1.12, *case.at(0.08, -0.3)), (0.2, 0.5 * bd, 0.38 * bw))
    box = heart.box(grid)
    lung[box] *= 1.0 - painter.alpha(heart, box)
    painter.blend(whole, cavity * lung, -850.0)
    painter.blend(box, painter.alpha(heart, box) * painter.crop(cavity, box), 40.0)
    return lung


def _paint_organs(painter: _Painter, case: _Case, cavity: np.ndarray, free: np.ndarray,
                  spine: tuple[float, float]) -> None:
    """The labelled organs, highest priority first (each keeps a fat margin around the ones before it),
    the inferior vena cava and the renal sinus; `free` is where organs may lie (cavity below the lungs)."""
    bw, bd = case.half_width, case.half_depth
    spine_y, spine_r = spine
    hu = {"liver": case.vary(60, 0.15), "spleen": case.vary(50, 0.15), "kidney": case.vary(150, 0.12),
          "aorta": case.vary(200, 0.15)}
    aorta_r = case.vary(0.07, 0.1) * bw
    aorta_y = spine_y - spine_r * 0.9 - aorta_r * case.vary(1.3, 0.1)
    aorta = _Blob((0.5, aorta_y, case.jitter(0.09, 0.02) * bw), (1.6, aorta_r, aorta_r),
                  bend=(case.jitter(0, 6), case.jitter(0, 6)))
    painter.organ(aorta, hu["aorta"], AORTA, cavity, margin_mm=2.5)
    ivc = _Blob((0.5, aorta_y - 0.02 * bd, case.jitter(-0.17, 0.02) * bw), (PRISM, aorta_r * 0.9, aorta_r * 1.25))
    painter.paint(ivc, 90.0, within=cavity)
    for label, side, t0 in ((KIDNEY_RIGHT, -1, case.jitter(0.30, 0.04)), (KIDNEY_LEFT, 1, case.jitter(0.36, 0.04))):
        ky, kx = case.at(side * case.jitter(0.45, 0.04), case.jitter(0.40, 0.05))
        kidney = _Blob((t0, ky, kx), (case.vary(0.21, 0.1), case.vary(0.16, 0.1) * bw, case.vary(0.19, 0.1) * bw),
                       angle=side * case.jitter(0.5, 0.15), shape=case.deform(0.12))
        mask = painter.organ(kidney, hu["kidney"], label, free, margin_mm=3.0)
        sinus = _Blob((t0, ky - 0.02 * bd, kx - side * 0.09 * bw), (kidney.axes[0] * 0.5, 0.05 * bw, 0.06 * bw),
                      angle=kidney.angle)
        box = sinus.box(painter.grid)
        painter.blend(box, painter.alpha(sinus, box) * mask[box], 30.0)
    spleen_y, spleen_x = case.at(case.jitter(0.66, 0.04), case.jitter(0.25, 0.05))
    spleen = _Blob((case.jitter(0.68, 0.04), spleen_y, spleen_x),
                   (case.vary(0.2, 0.1), case.vary(0.13, 0.12) * bw, case.vary(0.33, 0.12) * bw),
                   angle=-case.jitter(0.9, 0.2), shape=case.deform(0.15), bend=(case.jitter(0, 5), case.jitter(0, 5)))
    painter.organ(spleen, hu["spleen"], SPLEEN, free, margin_mm=3.0)
    liver_t = case.jitter(0.70, 0.04)
    right_lobe = _Blob((liver_t, *case.at(case.jitter(-0.47, 0.04), case.jitter(-0.08, 0.04))),
                       (case.vary(0.29, 0.08), case.vary(0.78, 0.08) * bd, case.vary(0.44, 0.08) * bw),
                       shape=case.deform(0.15), bend=(case.jitter(0, 8), case.jitter(0, 8)))
    mask = painter.organ(right_lobe, hu["liver"], LIVER, free, margin_mm=0.0)
    left_lobe = _Blob((liver_t + 0.06, *case.at(case.jitter(0.02, 0.04), case.jitter(-0.52, 0.04))),
                      (case.vary(0.16, 0.1), case.vary(0.26, 0.1) * bd, case.vary(0.40, 0.1) * bw),
                      angle=0.15, shape=case.deform(0.15))
    painter.reserved[mask] = False  # the two lobes join
    painter.organ(left_lobe, hu["liver"], LIVER, free, margin_mm=0.0)


def case_seed(seed: int, index: int) -> int:
    """The phantom seed of case `index` in a dataset drawn with `seed` (datasets with different seeds do
    not share cases)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def phantom_volume(array: np.ndarray, spacing: tuple[float, float, float], seed: int) -> Volume:
    """A Volume with a scanner-like header for a phantom array: LPS-aligned axes (identity ITK direction;
    a RAS NIfTI affine with negative x and y), spacing in (z, y, x), and an origin centred in-plane on the
    table with a seed-dependent table position along z."""
    nz, ny, nx = array.shape
    table = np.random.default_rng(seed).uniform(-700.0, -400.0)
    origin = (-(nx - 1) / 2 * spacing[2], -(ny - 1) / 2 * spacing[1] - 20.0, round(float(table), 1))
    return Volume(array=array, spacing=tuple(spacing), origin=origin, direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def write_phantom_dataset(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write `n_cases` phantoms in nnU-Net v2 layout under `out_dir` and return `out_dir`.

    imagesTr/phantom_XXX_0000.nii.gz (int16 HU), labelsTr/phantom_XXX.nii.gz (uint8) and dataset.json
    (channel_names, labels, numTraining, file_ending, plus the generator's seed, shape and spacing).
    Every file is written atomically; phantom cases left from an earlier, larger run are removed so the
    folder always holds exactly this dataset. `progress` is called with each case's name once written.
    """
    shape, spacing = _check_geometry(shape, spacing)
    if n_cases < 1:
        raise SwinsegError(f"--cases must be at least 1, got {n_cases}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SwinsegError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_phantom_dataset(out):
        raise SwinsegError(f"{out}: a non-empty folder that is not a phantom dataset; choose a new or empty folder")
    images, labels = out / "imagesTr", out / "labelsTr"
    width = max(3, len(str(n_cases - 1)))
    names = [f"phantom_{i:0{width}d}" for i in range(n_cases)]
    for i, name in enumerate(names):
        seed_i = case_seed(seed, i)
        ct, label_map = make_phantom(seed_i, shape, spacing)
        like = phantom_volume(ct, spacing, seed_i)
        write_volume(images / f"{name}_0000.nii.gz", ct, like)
        write_volume(labels / f"{name}.nii.gz", label_map, like)
        if progress is not None:
            progress(name)
    _remove_stale_cases(out, set(names))
    dataset = {
        "name": "swinseg_phantoms",
        "description": "Synthetic abdominal CT phantoms generated by `swinseg demo-data`",
        "channel_names": {"0": "CT"},
        "labels": {name: index for index, name in enumerate(CLASSES)},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "phantom": {"seed": int(seed), "shape": list(shape), "spacing": list(spacing)},
    }
    with atomic_output(out / "dataset.json") as tmp:
        tmp.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return out


def _is_phantom_dataset(folder: Path) -> bool:
    """True when `folder` holds a dataset written by write_phantom_dataset (safe to rewrite)."""
    try:
        return json.loads((folder / "dataset.json").read_text(encoding="utf-8")).get("name") == "swinseg_phantoms"
    except (OSError, ValueError, AttributeError):
        return False


def _remove_stale_cases(out: Path, keep: set[str]) -> None:
    """Delete phantom_* files from a previous run that are not part of this dataset."""
    pattern = re.compile(r"^(phantom_\d+)(_\d{4})?\.nii\.gz$")
    for folder in (out / "imagesTr", out / "labelsTr"):
        for path in folder.glob("phantom_*.nii.gz"):
            match = pattern.match(path.name)
            if match and match.group(1) not in keep:
                path.unlink()
