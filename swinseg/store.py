"""The model store: trained models kept by name, verified, and ready to predict at once.

`swinseg models add FILE_OR_RUN_DIR --name NAME` copies a model into ``home()/models/NAME/``:

- ``model_K.safetensors``: the member checkpoints (one; a cross-validation run: every fold, an ensemble), each a
  swinseg checkpoint with its card (a reference .pth is converted with the card given), or ``model_0.onnx``
  for an exported network;
- ``prepared/``: what can be made once for prediction, each checked against torch when written: every
  member's TorchScript trace (CPU torch prediction without building the network or importing timm), its ONNX
  export, and OpenVINO's compiled-model cache;
- ``manifest.json``: name, date, source, card, training summary (data, epochs, recipe, validation Dice per
  class, cross-validation summary, as the run folder and checkpoint record them) and the sha256 of every file.

An entry is written in a hidden temporary folder and renamed into place, so two `add` at once, or `predict`
while `add` runs, never see half an entry. Every file is checked against its sha256 when it is used; one that
fails is refused. Nothing is downloaded. `resolve` is the one place that turns the model options of a command
(a stored name, a card, checkpoints, nothing = the default model) into the models to load.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from swinseg.errors import SwinsegError
from swinseg.io.files import atomic_output, file_sha256
from swinseg.rundir import run_checkpoints, run_summary

MANIFEST = "manifest.json"
# stat stamps (size, modified, changed, inode) of files whose sha256 matched: a file whose stamp is unchanged is
# not hashed again on each use (0.1 s per 100 MB); any write changes its ctime, so a changed file is rechecked
STAMPS = "verified.json"
FORMAT = "swinseg-store-1"
PREPARED = "prepared"
OPENVINO_CACHE = "openvino"
DEFAULT_FILE = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Log = Callable[[str], None]


def home() -> Path:
    """The store's folder: $SWINSEG_HOME, else the user's data folder (Linux $XDG_DATA_HOME/swinseg or
    ~/.local/share/swinseg; macOS ~/Library/Application Support/swinseg; Windows %LOCALAPPDATA%\\swinseg)."""
    if os.environ.get("SWINSEG_HOME"):
        return Path(os.environ["SWINSEG_HOME"]).expanduser()
    try:
        user = Path.home()
    except RuntimeError as error:
        raise SwinsegError("no home folder for the model store; set SWINSEG_HOME") from error
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or user / "AppData" / "Local") / "swinseg"
    if sys.platform == "darwin":
        return user / "Library" / "Application Support" / "swinseg"
    return Path(os.environ.get("XDG_DATA_HOME") or user / ".local" / "share") / "swinseg"


def models_folder() -> Path:
    return home() / "models"


# ------------------------------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """A stored model: its folder and manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def members(self) -> list[Path]:
        return [self.folder / name for name in self.manifest["members"]]

    @property
    def prepared(self) -> list[Path | None]:
        """Each member's prepared ONNX export (None where there is none)."""
        return self._prepared("prepared")

    @property
    def traced(self) -> list[Path | None]:
        """Each member's TorchScript trace (None where there is none)."""
        return self._prepared("traced")

    def _prepared(self, kind: str) -> list[Path | None]:
        files = self.manifest.get(kind) or {}
        return [self.folder / files[m] if m in files else None for m in self.manifest["members"]]

    @property
    def openvino_cache(self) -> Path:
        return self.folder / PREPARED / OPENVINO_CACHE

    @property
    def card(self) -> Any:
        from swinseg.config import ModelCard

        try:
            return ModelCard.from_dict(self.manifest["card"])
        except (KeyError, TypeError) as error:
            raise SwinsegError(f"{self.folder / MANIFEST}: no valid model card") from error

    @property
    def size(self) -> int:
        """Bytes of the member files."""
        return sum(path.stat().st_size for path in self.members if path.is_file())

    def verified(self, path: Path, *, rehash: bool = False) -> Path:
        """`path` (a file of this entry) after checking it against its recorded sha256 (unless its stat stamp
        is the one it had when it last matched, and not `rehash`)."""
        relative = path.relative_to(self.folder).as_posix()
        expected = self.manifest["files"].get(relative)
        if expected is None:
            raise SwinsegError(f"{path}: not listed in {self.folder / MANIFEST}; re-add the model")
        try:
            stamp = _stamp(path)
            stamps = self._stamps()
            if not rehash and stamps.get(relative) == stamp:
                return path
            found = file_sha256(path)
        except OSError as error:
            raise SwinsegError(f"{path}: stored model file unreadable ({error.strerror}); re-add the model") from error
        if found != expected:
            raise SwinsegError(f"{path}: fails its sha256 check (changed or damaged since it was added); "
                               f"remove and re-add model {self.name!r}")
        if stamps.get(relative) != stamp:
            self._remember(relative, stamp)
        return path

    def verify(self) -> None:
        """Hash every file of the entry."""
        for relative in self.manifest["files"]:
            self.verified(self.folder / relative, rehash=True)

    def _stamps(self) -> dict[str, list[int]]:
        try:
            stamps = json.loads((self.folder / STAMPS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return stamps if isinstance(stamps, dict) else {}

    def _remember(self, relative: str, stamp: list[int]) -> None:
        """Record a matching file's stamp; a store this user cannot write keeps hashing on each use."""
        stamps = {**self._stamps(), relative: stamp}
        try:
            with atomic_output(self.folder / STAMPS) as work:
                work.write_text(json.dumps(stamps), encoding="utf-8")
        except (OSError, SwinsegError):
            pass


def _stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith((".yaml", ".yml")):
        raise SwinsegError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, not a .yaml name)")
    return name


def stored_names() -> list[str]:
    folder = models_folder()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def is_stored(name: str) -> bool:
    return bool(_NAME.match(name)) and (models_folder() / name / MANIFEST).is_file()


def get(name: str) -> Entry:
    """The stored model `name` (its manifest read; files are checked when used)."""
    folder = models_folder() / name
    if not _NAME.match(name) or not (folder / MANIFEST).is_file():
        raise SwinsegError(f"no stored model {name!r} in {models_folder()}; stored: "
                           f"{', '.join(stored_names()) or 'none'} (swinseg models list)")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SwinsegError(f"{folder / MANIFEST}: unreadable store manifest; remove and re-add {name!r}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SwinsegError(f"{folder / MANIFEST}: not a swinseg store manifest ({FORMAT})")
    return Entry(folder, manifest)


def entries() -> list[Entry]:
    return [get(name) for name in stored_names()]


def default_name() -> str | None:
    """The default model's name, when it is set and still stored."""
    name = _read_default()
    return name if name and is_stored(name) else None


def set_default(name: str) -> None:
    get(name)
    _write_text(home() / DEFAULT_FILE, name + "\n")


def remove(name: str) -> None:
    """Delete a stored model (renamed away first, so readers never see half of it); clears it as the default."""
    entry = get(name)
    trash = entry.folder.parent / f".trash-{name}-{secrets.token_hex(4)}"
    try:
        os.rename(entry.folder, trash)
    except OSError as error:
        raise SwinsegError(f"{entry.folder}: cannot remove it ({error.strerror})") from error
    shutil.rmtree(trash, ignore_errors=True)
    if _read_default() == name:
        (home() / DEFAULT_FILE).unlink(missing_ok=True)


def _read_default() -> str | None:
    try:
        return (home() / DEFAULT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _write_text(path: Path, text: str) -> None:
    from swinseg.io import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ add


def add(source: str | Path, name: str, *, card: str | None = None, default: bool | None = None,
        replace: bool = False, prepare: bool = True, log: Log = lambda line: None) -> Entry:
    """Copy a model into the store as `name`: a swinseg checkpoint, an exported .onnx, a reference .pth (with
    `card`), a training run folder, a cross-validation run folder (its folds: an ensemble), or a folder of
    `swinseg models export`. With `prepare`, the TorchScript trace, the ONNX export and the OpenVINO cache are
    made now (the last two where the runtimes are installed). `default`: make it the default model (None: when
    there is no default yet)."""
    check_name(name)
    source = Path(source)
    if not source.exists():
        raise SwinsegError(f"{source}: no such file or folder")
    target = models_folder() / name
    if target.exists() and not replace:
        raise SwinsegError(f"{target}: model {name!r} is stored already; remove it first or pass --replace")
    models_folder().mkdir(parents=True, exist_ok=True)
    work = models_folder() / f".tmp-{name}-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        manifest = _fill(work, source, card, log)
        manifest.update({"format": FORMAT, "name": name, "added": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), "source": str(source.resolve())})
        if prepare:
            _prepare(work, manifest, log)
        manifest["files"] = {p.relative_to(work).as_posix(): file_sha256(p) for p in _listed(work, manifest)}
        _write_text(work / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        _move_in(work, target, replace)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if prepare and any(m.endswith(".onnx") for m in _graphs(manifest)):
        _warm(get(name), log)
    if default or default is None and default_name() is None:
        set_default(name)
    return get(name)


def _move_in(work: Path, target: Path, replace: bool) -> None:
    """Rename the finished entry into place; a replaced one is renamed away first."""
    trash = None
    if replace and target.exists():
        trash = target.parent / f".trash-{target.name}-{secrets.token_hex(4)}"
        os.rename(target, trash)
    try:
        os.rename(work, target)
    except OSError as error:
        raise SwinsegError(f"{target}: model {target.name!r} was stored meanwhile (another add); remove it first "
                           "or pass --replace") from error
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _graphs(manifest: dict[str, Any]) -> list[str]:
    prepared = [name for kind in ("prepared", "traced") for name in (manifest.get(kind) or {}).values()]
    return list(manifest["members"]) + prepared


def _listed(work: Path, manifest: dict[str, Any]) -> list[Path]:
    """The files the manifest vouches for: members and prepared graphs (not OpenVINO's cache, which it checks)."""
    return [work / name for name in _graphs(manifest)]


def _fill(work: Path, source: Path, card: str | None, log: Log) -> dict[str, Any]:
    """Copy or convert the members into `work`; the manifest's members, card and training summary."""
    if source.is_dir() and (source / MANIFEST).is_file():
        return _from_export(work, source, card)
    if source.is_file() and source.name.lower().endswith(".onnx"):
        if card:
            raise SwinsegError(f"{source}: an exported network carries its own card; drop --model")
        from swinseg.backends import read_onnx

        graph = read_onnx(source)
        shutil.copyfile(source, work / "model_0.onnx")
        return {"members": ["model_0.onnx"], "card": graph.card.to_dict(), "training": {}}
    from swinseg.weights import FORMAT_NAME, card_of, load_checkpoint, read_weights, save_checkpoint

    files = run_checkpoints(source)
    members, first_card, metadata = [], None, {}
    for k, file in enumerate(files):
        weights = read_weights(file)
        target = work / f"model_{k}.safetensors"
        if weights.layout == FORMAT_NAME and card is None:
            shutil.copyfile(file, target)
            model_card = card_of(weights)
            metadata = metadata or dict(weights.metadata)
        else:
            network, model_card = load_checkpoint(file, card)
            save_checkpoint(target, network, model_card)
        if first_card is not None and model_card.classes != first_card.classes:
            raise SwinsegError(f"{file}: predicts other classes than {files[0]}; the folds must agree")
        first_card = first_card or model_card
        members.append(target.name)
    log(f"{len(members)} model(s) from {source}")
    return {"members": members, "card": first_card.to_dict(), "training": run_summary(source, metadata)}


def _from_export(work: Path, source: Path, card: str | None) -> dict[str, Any]:
    """A folder written by `export_entry`: its files checked against its manifest, then copied."""
    if card:
        raise SwinsegError(f"{source}: an exported store entry carries its own card; drop --model")
    exported = Entry(source, json.loads((source / MANIFEST).read_text(encoding="utf-8")))
    if exported.manifest.get("format") != FORMAT:
        raise SwinsegError(f"{source / MANIFEST}: not a swinseg store manifest ({FORMAT})")
    exported.verify()
    for relative in exported.manifest["files"]:
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, work / relative)
    keep = ("members", "card", "training", "prepared", "traced")
    return {key: exported.manifest[key] for key in keep if key in exported.manifest}


def _prepare(work: Path, manifest: dict[str, Any], log: Log) -> None:
    """Each torch member's TorchScript trace and ONNX export (where onnx and a runtime are installed)."""
    from swinseg import backends
    from swinseg.weights import load_checkpoint

    onnx = backends.installed("onnx") and any(backends.installed(b) for b in ("onnxruntime", "openvino"))
    prepared: dict[str, str] = dict(manifest.get("prepared") or {})
    traced: dict[str, str] = dict(manifest.get("traced") or {})
    for member in manifest["members"]:
        if member.endswith(".onnx") or member in traced and (member in prepared or not onnx):
            continue
        network, card = load_checkpoint(work / member)
        (work / PREPARED).mkdir(exist_ok=True)
        stem = Path(PREPARED) / Path(member).stem
        if member not in traced:
            backends.trace_network(network, card, work / f"{stem}{backends.TRACE_SUFFIX}")
            traced[member] = f"{stem.as_posix()}{backends.TRACE_SUFFIX}"
        if onnx and member not in prepared:
            backends.export_onnx(network, card, work / f"{stem}.onnx")
            prepared[member] = f"{stem.as_posix()}.onnx"
    manifest["prepared"], manifest["traced"] = prepared, traced
    log(f"prepared: {len(traced)} TorchScript trace(s), {len(prepared)} ONNX export(s), each checked against torch"
        + ("" if onnx else " (onnx with onnxruntime or openvino not installed)"))


def _warm(entry: Entry, log: Log) -> None:
    """Compile each graph once into the entry's OpenVINO cache (after the entry is in place: OpenVINO keys its
    cache by the file's path)."""
    from swinseg import backends

    if not backends.installed("openvino"):
        return
    for member, graph in zip(entry.members, entry.prepared):
        backends.warm_openvino_cache(graph or member, entry.openvino_cache)
    log(f"compiled for OpenVINO: {entry.openvino_cache}")


def export_entry(name: str, output: str | Path) -> Path:
    """Copy a stored model (members, prepared ONNX, manifest; not the machine-specific OpenVINO cache) to a
    folder that `add` takes on another machine."""
    entry = get(name)
    entry.verify()
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise SwinsegError(f"-o {output}: exists and is not empty; choose a new folder")
    work = output.parent / f".{output.name}.tmp-{secrets.token_hex(4)}"
    try:
        for relative in [*entry.manifest["files"], MANIFEST]:
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry.folder / relative, work / relative)
        if output.exists():
            output.rmdir()
        os.rename(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


# -------------------------------------------------------------------------------------------------- resolve


@dataclass
class ModelSource:
    """One model to load: a checkpoint file and/or card (as --checkpoint / --model / --weights say), or a stored
    member with its prepared ONNX graph and the entry that checks its files."""

    checkpoint: Path | None = None
    card: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    traced: Path | None = None
    entry: Entry | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return str(self.checkpoint or self.onnx or self.card)


def resolve(model: str | None = None, weights: str | Path | None = None,
            checkpoints: Sequence[str | Path] = ()) -> list[ModelSource]:
    """The models a command's options name. `-m NAME` is a stored model before a card of that name (unless
    weights or checkpoints are given: then it is their card); no model option at all is the default model."""
    if checkpoints:
            return [ModelSource(checkpoint=file, card=model, weights=Path(weights) if weights else None)
                for path in checkpoints for file in run_checkpoints(path)]
    if model is not None and weights is None and is_stored(model):
        return stored_sources(get(model))
    if model is not None:
        return [ModelSource(card=model, weights=Path(weights) if weights else None)]
    if weights is not None:
        raise SwinsegError("--weights needs --model CARD (or pass a swinseg checkpoint with --checkpoint)")
    name = default_name()
    if name is None:
        stored = stored_names()
        listed = f"stored models: {', '.join(stored)}; make one the default with `swinseg models default NAME`" \
            if stored else f"no models stored in {models_folder()}"
        raise SwinsegError(f"no model: give -m NAME, --checkpoint FILE or --model CARD with --weights FILE ({listed}; "
                           "add one with `swinseg models add CHECKPOINT_OR_RUN_DIR --name NAME --default`)")
    return stored_sources(get(name))


def stored_sources(entry: Entry) -> list[ModelSource]:
    sources = []
    for member, graph, traced in zip(entry.members, entry.prepared, entry.traced):
        if member.name.endswith(".onnx"):
            sources.append(ModelSource(onnx=member, entry=entry))
        else:
            sources.append(ModelSource(checkpoint=member, onnx=graph, traced=traced, entry=entry))
    return sources


def stored_checkpoint(model: str | None) -> Path | None:
    """The verified torch checkpoint of stored model `model` (for finetune and export), None when `model` is not
    a stored name."""
    if model is None or not is_stored(model):
        return None
    sources = resolve(model)
    if len(sources) > 1 or sources[0].checkpoint is None:
        what = f"an ensemble of {len(sources)} models" if len(sources) > 1 else "an exported ONNX network"
        raise SwinsegError(f"stored model {model!r} is {what}; this needs one torch checkpoint")
    assert sources[0].entry is not None
    return sources[0].entry.verified(sources[0].checkpoint)


def model_card(name: str) -> Any:
    """The card `-m NAME` stands for where only a card is needed (class names): a stored model's, else a card."""
    sources = resolve(name)
    if sources[0].entry is not None:
        return sources[0].entry.card
    from swinseg.config import load_card

    return load_card(name)
