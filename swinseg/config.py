"""Network configuration, preprocessing settings and model cards (YAML files in models/).

Pure Python (no torch), so the CLI can read cards without paying torch's import time.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from swinseg.choices import PLANES
from swinseg.defaults import MR_PERCENTILES
from swinseg.errors import SwinsegError
from swinseg.orientation import parse_code

SKIP_SCALES = (4, 8, 16)
PATCH_EMBEDDINGS = ("linear", "conv")  # how the image becomes 4x4-pixel tokens (see swinseg.model)
AUTO = "auto"
MAX_CONTEXT = 7  # context_slices: up to 15 input channels


class _YamlSection:
    """to_dict/from_dict for a frozen dataclass that is one section of a model card (`_section` names it)."""

    _section = "card"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise SwinsegError(f"unknown {cls._section} keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class SwinUnetConfig(_YamlSection):
    """Hyper-parameters of a Swin-Unet. Defaults are the published "tiny" configuration."""

    _section = "network"
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 9
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    skip_scales: tuple[int, ...] = SKIP_SCALES
    conv_skip: int = 0  # channels of a full-resolution convolutional skip; 0 = the published network
    patch_embed: str = "linear"  # linear: the published 4x4 patch projection; conv: two 3x3 stride-2 convolutions
    stem_skip: bool = False  # patch_embed conv: its half-resolution features join the decoder before the head

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads", "skip_scales"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        """The card section; `conv_skip`, `patch_embed` and `stem_skip` only when not the published network's, so
        swinseg 0.1 can still read published cards."""
        values = super().to_dict()
        for name, published in (("conv_skip", 0), ("patch_embed", "linear"), ("stem_skip", False)):
            if values[name] == published:
                del values[name]
        return values

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        """Token-grid side of each encoder stage (img_size/4, /8, /16, /32)."""
        return tuple(self.img_size // (4 * 2**i) for i in range(len(self.depths)))

    def validate(self) -> None:
        """Raise SwinsegError for an illegal configuration, listing windows that would work."""
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise SwinsegError(f"depths and num_heads need 4 stages, got {self.depths} and {self.num_heads}")
        if self.img_size <= 0 or self.img_size % 32:
            raise SwinsegError(f"img_size {self.img_size} is not a positive multiple of 32")
        if self.conv_skip < 0:
            raise SwinsegError(f"conv_skip {self.conv_skip} is negative (0 turns the convolutional skip off)")
        if self.patch_embed not in PATCH_EMBEDDINGS:
            raise SwinsegError(f"patch_embed {self.patch_embed!r}: expected one of {', '.join(PATCH_EMBEDDINGS)}")
        if self.stem_skip and (self.patch_embed != "conv" or self.conv_skip):
            raise SwinsegError("stem_skip needs patch_embed: conv and no conv_skip (it is the cheaper of the two)")
        bad_skips = set(self.skip_scales) - set(SKIP_SCALES)
        if bad_skips:
            raise SwinsegError(f"skip_scales {sorted(bad_skips)} not in {list(SKIP_SCALES)}")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise SwinsegError(f"stage {i}: {self.embed_dim * 2**i} channels not divisible by {heads} heads")
        if not window_fits(self.img_size, self.window_size):
            legal = legal_windows(self.img_size)
            raise SwinsegError(
                f"window {self.window_size} does not fit image size {self.img_size} (stage resolutions "
                f"{list(self.stage_resolutions)} must be divisible by the window or not larger than it); "
                f"windows that work: {legal}"
            )



def window_fits(img_size: int, window: int) -> bool:
    """True when every stage resolution is divisible by the window or not larger than it."""
    if window < 1:
        return False
    return all(r % window == 0 or r <= window for r in (img_size // (4 * 2**i) for i in range(4)))


def legal_windows(img_size: int, up_to: int = 32) -> list[int]:
    """Windows from 2 to `up_to` that fit `img_size` (a window of 1 disables attention's context)."""
    return [w for w in range(2, up_to + 1) if window_fits(img_size, w)]


@dataclass(frozen=True)
class Preprocessing(_YamlSection):
    """How a volume becomes network input (see swinseg.preprocess, shared by training and predict).

    CT: intensities clipped to `window` (HU) and scaled to [0, 1]; `window: auto` is resolved by training to
    the 0.5/99.5 percentiles of the training foreground. MR: clipped to the volume's `percentiles` and scaled
    to [0, 1]. `orientation` is the SimpleITK DICOMOrient code the volume is oriented to ("LPS": arrays
    (z, y, x), axial slices with anterior at the top and the patient's right on the left, as in Synapse);
    `plane` the slicing plane. `spacing` [sy, sx] (mm, in the slice): slices are resampled to it and covered by
    img_size tiles; null = the published whole-slice resize to img_size whatever the scan's spacing.
    `context_slices` k: 2.5-D input, each slice fed with its k neighbours on either side as channels (0 = the
    slice alone, repeated into the network's 3 channels; 1 = slices z-1, z, z+1 as its 3 channels; k > 1 needs
    a network with 2k+1 input channels).
    """

    _section = "preprocessing"
    modality: str = "CT"
    window: tuple[float, float] | str | None = (-125.0, 275.0)
    percentiles: tuple[float, float] | None = None
    orientation: str = "LPS"
    plane: str = "axial"
    spacing: tuple[float, float] | None = None
    context_slices: int = 0

    def __post_init__(self) -> None:
        modality = self.modality.upper()
        object.__setattr__(self, "modality", modality)
        if isinstance(self.window, str):
            if self.window.lower() != AUTO:
                raise SwinsegError(f"preprocessing window must be [low, high] or auto, got {self.window!r}")
            object.__setattr__(self, "window", AUTO)
        for name in ("window", "percentiles"):
            value = getattr(self, name)
            if value is not None and value != AUTO:
                if len(value) != 2 or float(value[0]) >= float(value[1]):
                    raise SwinsegError(f"preprocessing {name} must be [low, high] with low < high, got {value}")
                object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if modality == "CT" and self.window is None:
            raise SwinsegError("CT preprocessing needs a window [low, high] in HU")
        if modality == "MR" and self.percentiles is None:
            object.__setattr__(self, "percentiles", MR_PERCENTILES)
        if modality not in ("CT", "MR"):
            raise SwinsegError(f"preprocessing modality must be CT or MR, got {self.modality!r}")
        parse_code(str(self.orientation))
        object.__setattr__(self, "orientation", str(self.orientation).upper())
        plane = str(self.plane).lower()
        if plane not in PLANES:
            raise SwinsegError(f"preprocessing plane {self.plane!r}: expected one of {', '.join(PLANES)}")
        object.__setattr__(self, "plane", plane)
        if self.spacing is not None:
            object.__setattr__(self, "spacing", parse_spacing(self.spacing, "preprocessing spacing"))
        context = self.context_slices
        if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= MAX_CONTEXT:
            raise SwinsegError(f"preprocessing context_slices must be an integer 0-{MAX_CONTEXT}, got {context!r}")

    def to_dict(self) -> dict[str, Any]:
        """The card section; `plane`, `spacing` and `context_slices` only where they differ from the published
        layout, so swinseg 0.1 can still read such cards and checkpoints."""
        values = super().to_dict()
        for name, default in (("plane", "axial"), ("spacing", None), ("context_slices", 0)):
            if values[name] == default:
                del values[name]
        return values

    @property
    def input_channels(self) -> int:
        """Channels of the inputs built from a volume: 1 (the network repeats it) or 2k+1 slices of context."""
        return 2 * self.context_slices + 1

    @property
    def resamples(self) -> bool:
        """True when slices are resampled to a target spacing and tiled (False: whole-slice resize)."""
        return self.spacing is not None


def network_channels(context: int) -> int:
    """Input channels of a network for `context` k: 3 for k = 0 (the slice repeated, the ImageNet layout) and
    k = 1 (slices z-1, z, z+1 as R, G, B), 2k+1 beyond."""
    return 3 if context <= 1 else 2 * context + 1


def parse_spacing(value: Any, what: str = "--spacing") -> tuple[float, float]:
    """[sy, sx] or "SY,SX" (mm, both positive and finite) -> (sy, sx)."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        sy, sx = (float(v) for v in items)
    except (TypeError, ValueError) as error:
        raise SwinsegError(f"{what} {value!r}: expected two spacings in mm, SY,SX (e.g. 1.5,1.5)") from error
    if not (0 < sy < 1e3 and 0 < sx < 1e3):
        raise SwinsegError(f"{what} {value!r}: spacings must be positive mm values")
    return sy, sx



@dataclass(frozen=True)
class ModelCard:
    """A named model: network configuration, class names, preprocessing and optional weight file."""

    name: str
    network: SwinUnetConfig
    classes: tuple[str, ...]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    description: str = ""
    weights: Path | None = None
    source: Path | None = None
    # class name -> {"type": (scheme, value, meaning), "category": (...)} for DICOM SEG (else swinseg's table)
    segment_codes: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    # what the model was trained on: swinseg.fingerprint.Fingerprint.to_dict() of its training cases (set by training)
    fingerprint: dict[str, Any] | None = None
    # slice axes (0 rows, 1 columns) its training flipped, the flips --tta may average (set by training; None: not
    # recorded, both)
    mirror_axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.mirror_axes is not None:
            axes = tuple(sorted({int(axis) for axis in self.mirror_axes}))
            if not set(axes) <= {0, 1}:
                raise SwinsegError(f"model card {self.name!r}: mirror_axes {list(self.mirror_axes)}: slice axes "
                                   "are 0 (rows) and 1 (columns)")
            object.__setattr__(self, "mirror_axes", axes)
        if self.fingerprint is not None and not isinstance(self.fingerprint, dict):
            raise SwinsegError(f"model card {self.name!r}: fingerprint must be a mapping")
        if len(self.classes) != self.network.num_classes:
            raise SwinsegError(
                f"model card {self.name!r}: {len(self.classes)} class names but num_classes is "
                f"{self.network.num_classes}"
            )
        object.__setattr__(self, "segment_codes", _segment_codes(self.segment_codes, self.classes))
        context, channels = self.preprocessing.context_slices, self.network.in_chans
        wanted = network_channels(context)
        if context and channels != wanted:
            raise SwinsegError(f"model card {self.name!r}: context_slices {context} feeds {2 * context + 1} slices, "
                               f"so the network needs in_chans {wanted}, not {channels}")

    def with_context(self, context: int) -> ModelCard:
        """The same card taking `context` neighbours of each slice on either side (in_chans follows)."""
        preprocessing = dataclasses.replace(self.preprocessing, context_slices=int(context))
        return dataclasses.replace(self, preprocessing=preprocessing,
                                   network=dataclasses.replace(self.network, in_chans=network_channels(context)))

    def with_classes(self, classes: list[str] | tuple[str, ...]) -> ModelCard:
        """The same card with another label set (num_classes follows)."""
        network = dataclasses.replace(self.network, num_classes=len(classes))
        codes = {name: code for name, code in self.segment_codes.items() if name in classes[1:]}
        return dataclasses.replace(self, network=network, classes=tuple(classes), segment_codes=codes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "network": self.network.to_dict(),
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            **({"segment_codes": {name: {k: list(v) for k, v in codes.items()}
                                  for name, codes in self.segment_codes.items()}} if self.segment_codes else {}),
            **({"fingerprint": self.fingerprint} if self.fingerprint is not None else {}),
            **({"mirror_axes": list(self.mirror_axes)} if self.mirror_axes is not None else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: Path | None = None) -> ModelCard:
        where = str(source) if source else "model card"
        try:
            network = SwinUnetConfig.from_dict(dict(values.get("network") or {}))
            classes = values.get("classes") or [f"class_{i}" for i in range(network.num_classes)]
            if "num_classes" not in (values.get("network") or {}):
                network = dataclasses.replace(network, num_classes=len(classes))
            weights = values.get("weights")
            if weights is not None and source is not None:
                weights = (source.parent / weights).resolve()
            return cls(
                name=str(values.get("name") or (source.stem if source else "custom")),
                network=network,
                classes=tuple(str(c) for c in classes),
                preprocessing=Preprocessing.from_dict(dict(values.get("preprocessing") or {})),
                description=str(values.get("description", "")),
                weights=Path(weights) if weights else None,
                source=source,
                segment_codes=values.get("segment_codes") or {},
                fingerprint=values.get("fingerprint"),
                mirror_axes=values.get("mirror_axes"),
            )
        except SwinsegError as err:
            raise SwinsegError(f"{where}: {err}") from err
        except (TypeError, ValueError) as err:
            raise SwinsegError(f"{where}: invalid value ({err})") from err


def _segment_codes(values: Any, classes: tuple[str, ...]) -> dict[str, dict[str, tuple[str, str, str]]]:
    """A card's `segment_codes`, checked: each named class gets a `type` code (and optionally a `category`),
    each code [coding scheme, code value, code meaning], e.g. liver: {type: [SCT, "10200004", Liver]}."""
    if not isinstance(values, dict):
        raise SwinsegError(f"segment_codes: expected a mapping of class names, got {type(values).__name__}")
    codes: dict[str, dict[str, tuple[str, str, str]]] = {}
    for name, entry in values.items():
        if name not in classes[1:]:
            raise SwinsegError(f"segment_codes: {name!r} is not a foreground class ({', '.join(classes[1:])})")
        if not isinstance(entry, dict) or "type" not in entry or set(entry) - {"type", "category"}:
            raise SwinsegError(f"segment_codes: {name}: expected {{type: [SCHEME, VALUE, MEANING]}} and optionally "
                               "category: [...]")
        codes[name] = {}
        for key, code in entry.items():
            if not isinstance(code, (list, tuple)) or len(code) != 3 or not all(
                    isinstance(part, (str, int)) and not isinstance(part, bool) and str(part).strip() for part in code):
                raise SwinsegError(f"segment_codes: {name}.{key}: expected [SCHEME, VALUE, MEANING], got {code!r}")
            codes[name][key] = tuple(str(part) for part in code)
    return codes


def card_dirs() -> list[Path]:
    """Where cards are looked up, first match wins: $SWINSEG_MODELS, ./models, the installed cards."""
    dirs = [Path(p) for p in os.environ.get("SWINSEG_MODELS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "models")
    dirs.append(Path(str(resources.files("swinseg.models"))))
    return dirs


def list_cards() -> dict[str, Path]:
    """Card name -> file, over all card directories (earlier directories take precedence)."""
    found: dict[str, Path] = {}
    for directory in card_dirs():
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def load_card(name_or_path: str | os.PathLike[str]) -> ModelCard:
    """Load a card by name (see card_dirs) or from a YAML file path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        cards = list_cards()
        if text not in cards:
            raise SwinsegError(f"unknown model card {text!r}; available: {', '.join(sorted(cards)) or 'none'}")
        path = cards[text]
    if not path.is_file():
        raise SwinsegError(f"{path}: model card file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SwinsegError(f"{path}: not a valid YAML model card ({type(err).__name__})") from err
    if not isinstance(values, dict):
        raise SwinsegError(f"{path}: a model card must be a YAML mapping")
    return ModelCard.from_dict(values, source=path.resolve())


def read_dataset_labels(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label names {id: name}, background included, from an nnU-Net dataset.json (v2 {"liver": 1}) or an
    MSD / nnU-Net v1 one ({"1": "liver"}). Region-based labels (lists of ids) are refused."""
    path = Path(path)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except FileNotFoundError as error:
        raise SwinsegError(f"{path}: dataset.json not found") from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SwinsegError(f"{path}: not an nnU-Net dataset.json with a 'labels' mapping") from error
    if not isinstance(labels, dict) or not labels:
        raise SwinsegError(f"{path}: 'labels' must be a non-empty mapping")
    found: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).strip().isdigit():  # v1 / MSD: {"0": "background", "1": "liver"}
            label, name = int(key), str(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # v2: {"background": 0, "liver": 1}
            label, name = value, str(key)
        else:
            raise SwinsegError(
                f"{path}: label {key!r} -> {value!r} is not a plain id (region-based labels are not supported)"
            )
        if label in found:
            raise SwinsegError(f"{path}: label id {label} is given twice")
        found[label] = name
    return dict(sorted(found.items()))
