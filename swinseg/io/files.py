"""Atomic file output (a temporary file renamed onto its name), case names, and the images of a folder."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from swinseg.errors import SwinsegError
from swinseg.io.volume import MAX_SERIES_DEPTH, READABLE_SUFFIXES, _itk_reason, _suffix, itk

# ---------------------------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffixes); move it onto `path` on success, delete on failure.

    The temporary name is hidden (`.NAME.tmp-XXXXXXXX.nii.gz`) so folder scans skip it; the parent folder is
    created if needed. Readers of `path` never see a half-written file.
    """
    path = Path(path)
    suffix = _suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SwinsegError(f"{path}: cannot create its folder ({error.strerror or error})") from error
    tmp = path.parent / f".{base}.tmp-{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        reason = _write_failure(error, tmp)
        if reason is not None:
            raise SwinsegError(f"{path}: cannot write ({reason})") from error
        raise


def _write_failure(error: BaseException, tmp: Path) -> str | None:
    """Why writing `tmp` failed, in words that do not name the hidden temporary file; None when `error` is
    not about writing it (it is then re-raised as it is)."""
    if isinstance(error, OSError) and error.filename in (None, str(tmp), tmp):
        return error.strerror or str(error) or type(error).__name__
    if isinstance(error, RuntimeError) and tmp.name in str(error):  # SimpleITK's writers
        return str(_itk_reason(error)).replace(str(tmp), "the file")
    return None



# ---------------------------------------------------------------------------------------- names and folders


def case_name(path: str | Path, *, strip_channel: bool = False) -> str:
    """The file (or DICOM folder) name without its image suffix; `strip_channel` drops nnU-Net's channel-0
    suffix `_0000` (only that one: `case_0001` is a case name, not a channel)."""
    path = Path(path)
    name = path.name
    suffix = _suffix(path)
    if suffix in READABLE_SUFFIXES or suffix == ".dcm":
        name = name[: len(name) - len(suffix)]
    if strip_channel:
        name = re.sub(r"_0000$", "", name)
    return name


def find_images(folder: str | Path) -> list[Path]:
    """Supported image files directly in `folder`, plus the folders below it that hold a DICOM series (one entry
    each, found up to MAX_SERIES_DEPTH levels down, as in patient/study/series trees; `folder` itself if it holds
    one), sorted by name. Hidden files and folders (e.g. temp outputs) are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SwinsegError(f"{folder}: not a folder")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _suffix(entry) in READABLE_SUFFIXES:
            found.append(entry)
        elif entry.is_dir():
            found.extend(_series_folders(entry, MAX_SERIES_DEPTH))
    if not found and _has_dicom_series(folder):
        found.append(folder)
    return found


def _series_folders(folder: Path, depth: int) -> list[Path]:
    """`folder` if it holds a DICOM series, else the series folders nested in it (up to `depth` levels)."""
    if _has_dicom_series(folder):
        return [folder]
    if depth <= 1:
        return []
    nested = [entry for entry in sorted(folder.iterdir()) if entry.is_dir() and not entry.name.startswith(".")]
    return [found for entry in nested for found in _series_folders(entry, depth - 1)]


def _has_dicom_series(folder: Path) -> bool:
    return bool(itk().ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, hex (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
