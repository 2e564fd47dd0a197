"""Running many cases with one Predictor (or Ensemble): which inputs go to which outputs, shards, resuming
(finished outputs are skipped), failures isolated per case, and the next case read (the previous one written)
in background threads while the network runs."""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swinseg import dicom_seg, io, qc, rtstruct
from swinseg.choices import OUTPUT_TYPES
from swinseg.errors import SwinsegError
from swinseg.overlay import overlay_volumes
from swinseg.statistics import class_statistics, write_statistics_json

if TYPE_CHECKING:
    from swinseg.config import ModelCard
    from swinseg.ensemble import PreparedEnsemble
    from swinseg.prediction import SliceProgress, VolumePredictor
    from swinseg.preprocess import PreparedVolume


@dataclass(frozen=True)
class Case:
    """One input scan and where its mask (and optionally its probabilities, statistics and preview) go."""

    input: Path
    output: Path
    probabilities: Path | None = None
    statistics: Path | None = None
    preview: Path | None = None
    kind: str = "volume"  # the mask's format: volume (NIfTI, NRRD, ... by suffix), dicom-seg or rtstruct

    def outputs(self) -> list[Path]:
        return [self.output] + [p for p in (self.probabilities, self.statistics, self.preview) if p is not None]


@dataclass
class CaseResult:
    """What happened to a case: status "done", "skipped" or "failed" (with `message`)."""

    case: Case
    status: str
    message: str = ""
    shape: tuple[int, ...] = ()  # array order
    spacing: tuple[float, ...] = ()  # array order, mm
    seconds: float = 0.0
    voxels: dict[str, int] = field(default_factory=dict)  # foreground class name -> voxel count
    statistics: list[dict[str, Any]] = field(default_factory=list)  # swinseg.statistics rows, with --statistics
    qc: dict[str, Any] | None = None  # swinseg.qc block (verdict, score, reasons, signals), with --qc
    notes: tuple[str, ...] = ()  # warnings about the input (io.Volume.notes)
    error: BaseException | None = field(default=None, repr=False, compare=False)  # why it failed (for --debug)

    @classmethod
    def failed(cls, case: Case, error: BaseException) -> CaseResult:
        message = str(error) if isinstance(error, SwinsegError) else f"{type(error).__name__}: {error}"
        return cls(case, "failed", message, error=error)

    @classmethod
    def skipped(cls, case: Case) -> CaseResult:
        return cls(case, "skipped", "output exists (use --overwrite to replace it)")

    def volumes_ml(self) -> dict[str, float]:
        voxel_ml = float(np.prod(self.spacing)) / 1000.0 if self.spacing else 0.0
        return {name: round(count * voxel_ml, 3) for name, count in self.voxels.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; shape and spacing in (x, y, z) order as viewers show them."""
        result: dict[str, Any] = {
            "input": str(self.case.input),
            "output": str(self.case.output),
            "status": self.status,
        }
        if self.case.probabilities:
            result["probabilities"] = str(self.case.probabilities)
        if self.message:
            result["message"] = self.message
        if self.status == "done":
            result.update(
                shape=list(self.shape[::-1]),
                spacing=[round(s, 6) for s in self.spacing[::-1]],
                seconds=round(self.seconds, 3),
                voxels=self.voxels,
                volume_ml=self.volumes_ml(),
            )
            if self.qc is not None:
                result["qc"] = {key: self.qc[key] for key in ("verdict", "score", "reasons")}
        return result


@dataclass(frozen=True)
class RunOptions:
    """Per-case settings of a prediction run."""

    plane: str | None = None
    classes: Sequence[int] | None = None
    keep_largest: bool = False
    series: str | None = None
    channel: int | None = None
    overwrite: bool = False
    allow_gaps: bool = False  # interpolate missing DICOM slices instead of refusing the series
    min_contour_area: float = rtstruct.MIN_CONTOUR_AREA  # mm²: smaller regions and holes left out of an RTSTRUCT
    qc: bool = False  # a swinseg.qc block per case in its statistics JSON (cases need a statistics path)


def _output_name(source: Path, output_type: str, name: str | None = None) -> str:
    """Case name (`name`, else the file's with nnU-Net `_0000` stripped) + .nii.gz (.png for 2-D image inputs),
    or .dcm for DICOM SEG and RTSTRUCT."""
    if output_type in ("dicom-seg", "rtstruct"):
        suffix = dicom_seg.SUFFIX
    else:
        suffix = ".png" if source.name.lower().endswith(io.IMAGE_2D_SUFFIXES) else ".nii.gz"
    return (name or io.case_name(source, strip_channel=True)) + suffix


def _stem(output: Path) -> tuple[str, str]:
    """(name without its image suffix, the suffix) of a mask path."""
    name = output.name
    suffix = next((s for s in (*io.SUPPORTED_SUFFIXES, dicom_seg.SUFFIX) if name.lower().endswith(s)), "")
    return (name[: len(name) - len(suffix)] if suffix else name), suffix


def probabilities_path(output: Path) -> Path:
    """`mask.nii.gz` -> `mask_probabilities.nii.gz` (NIfTI when the mask is a 2-D image format)."""
    stem, suffix = _stem(output)
    if suffix in (*io.IMAGE_2D_SUFFIXES, dicom_seg.SUFFIX) or not suffix:
        suffix = ".nii.gz"
    return output.with_name(f"{stem}_probabilities{suffix}")


def statistics_path(output: Path) -> Path:
    """`mask.nii.gz` -> `mask_statistics.json`."""
    return output.with_name(f"{_stem(output)[0]}_statistics.json")


def preview_path(output: Path) -> Path:
    """`mask.nii.gz` -> `mask_preview.png`."""
    return output.with_name(f"{_stem(output)[0]}_preview.png")


def plan_cases(inputs: Sequence[str | Path], output: str | Path, *, probabilities: bool = False,
               statistics: bool = False, preview: bool = False, output_type: str = "auto") -> list[Case]:
    """Cases for input files, DICOM series folders and folders of scans.

    One input scan: `output` is the mask file, or a folder (existing, or written with a trailing slash).
    Several scans or a folder of scans: `output` is a folder, outputs are named after the cases. Raises for
    an output that would overwrite an input, an output folder that is an input folder (outputs would be read
    as inputs on the next run), and two cases writing the same file.
    """
    if not inputs:
        raise SwinsegError("no input given")
    output_text = str(output)
    output = Path(output)
    sources: list[Path] = []
    names: dict[Path, str] = {}  # series folders nested below an input folder: named by their relative path
    folder_mode = len(inputs) > 1
    for item in map(Path, inputs):
        if item.is_dir():
            inside_output = output.resolve()
            found = [path for path in io.find_images(item)  # earlier outputs inside the input tree are no inputs
                     if inside_output == item.resolve()
                     or inside_output not in (path.resolve(), *path.resolve().parents)]
            if not found:
                kinds = ", ".join(io.SUPPORTED_SUFFIXES)
                raise SwinsegError(f"{item}: folder holds no scans ({kinds}) or DICOM series")
            folder_mode = folder_mode or found != [item]
            if found != [item] and output.resolve() == item.resolve():
                raise SwinsegError(f"-o {output}: the output folder is an input folder; choose another")
            sources.extend(found)
            for path in found:
                if path.is_dir() and len(path.relative_to(item).parts) > 1:
                    names[path] = "_".join(path.relative_to(item).parts)
        else:
            sources.append(item)
    if output_type not in OUTPUT_TYPES:
        raise SwinsegError(f"--output-type {output_type!r}: expected one of {', '.join(OUTPUT_TYPES)}")
    has_image_suffix = output_text.lower().endswith((*io.SUPPORTED_SUFFIXES, dicom_seg.SUFFIX))
    to_folder = folder_mode or output.is_dir() or output_text.endswith(("/", os.sep)) or not has_image_suffix
    if to_folder and output.exists() and not output.is_dir():
        raise SwinsegError(f"-o {output}: is a file, but {len(sources)} case(s) need an output folder")
    if to_folder and has_image_suffix and not output.is_dir():
        raise SwinsegError(f"-o {output}: give a folder when predicting {len(sources)} cases")
    if not to_folder and output_text.lower().endswith((".jpg", ".jpeg")):
        raise SwinsegError(f"-o {output}: JPEG is lossy and cannot hold labels; use .png")
    cases: list[Case] = []
    seen: dict[Path, Path] = {}
    for source in sources:
        target = output / _output_name(source, output_type, names.get(source)) if to_folder else output
        if target.resolve() in seen:
            raise SwinsegError(f"{seen[target.resolve()]} and {source} would both write {target}; rename one")
        seen[target.resolve()] = source
        is_dicom = target.name.lower().endswith(dicom_seg.SUFFIX)
        kind = "rtstruct" if output_type == "rtstruct" else "dicom-seg" if is_dicom else "volume"
        if kind == "rtstruct" and not is_dicom:
            raise SwinsegError(f"-o {target}: an RTSTRUCT is a DICOM file; name it .dcm")
        what = "an RTSTRUCT" if kind == "rtstruct" else "a DICOM SEG"
        if is_dicom and not source.is_dir():
            raise SwinsegError(f"{source}: {what} references its source DICOM series, and this input is not "
                               "one; write .nii.gz (or another image format) for it")
        if target.resolve() == source.resolve():
            raise SwinsegError(f"{source}: the output would overwrite this input; choose another -o")
        cases.append(Case(source, target, probabilities_path(target) if probabilities else None,
                          statistics_path(target) if statistics else None, preview_path(target) if preview else None,
                          kind))
    return cases


def statistics_table(results: Sequence[CaseResult]) -> dict[str, list[dict[str, Any]]]:
    """Case name -> statistics rows of the cases that have them: computed in this run, or read from the JSON an
    earlier run wrote (skipped cases)."""
    table: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        path = result.case.statistics
        if result.status == "done" and path is not None:
            table[io.case_name(result.case.output)] = result.statistics
        elif result.status == "skipped" and path is not None and path.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError):
                table[io.case_name(result.case.output)] = json.loads(path.read_text(encoding="utf-8"))["classes"]
    return table


def qc_table(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """Case name -> qc block of the cases that have one: computed in this run, or read from the statistics JSON
    an earlier run wrote (skipped cases)."""
    table: dict[str, dict[str, Any]] = {}
    for result in results:
        path = result.case.statistics
        if result.status == "done" and result.qc is not None:
            table[io.case_name(result.case.output)] = result.qc
        elif result.status == "skipped" and path is not None and path.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                block = json.loads(path.read_text(encoding="utf-8"))["qc"]
                if isinstance(block, dict):
                    table[io.case_name(result.case.output)] = block
    return table


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as error:
        raise SwinsegError(f"--shard {text!r}: expected i/n, e.g. 0/4") from error
    if count < 1 or not 0 <= index < count:
        raise SwinsegError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_cases(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """Every `count`-th case starting at `index` (stable over reruns: skipping happens after sharding)."""
    return list(cases[index::count])


def is_finished(case: Case) -> bool:
    return all(path.exists() for path in case.outputs())


@dataclass
class _Loaded:
    volume: io.Volume
    prepared: PreparedVolume | PreparedEnsemble
    seconds: float


def predict_cases(
    predictor: VolumePredictor,
    cases: Sequence[Case],
    options: RunOptions = RunOptions(),
    *,
    on_start: Callable[[Case, int], None] | None = None,
    on_slices: SliceProgress | None = None,
) -> Iterator[CaseResult]:
    """Predict each case, yielding its result (done, skipped or failed) as soon as it is known.

    Finished cases (all outputs present) are skipped unless `options.overwrite`. A failing case yields a
    "failed" result with a one-line message and the run goes on. The next case is read and prepared, and the
    previous one written, in background threads while the network runs. `on_start(case, n_slices)` and
    `on_slices(n)` report progress.
    """
    todo: list[Case] = []
    for case in cases:
        if not options.overwrite and is_finished(case):
            yield CaseResult.skipped(case)
        else:
            todo.append(case)
    if not todo:
        return

    def load(case: Case) -> _Loaded:
        began = time.perf_counter()
        volume = io.read_volume(case.input, series=options.series, channel=options.channel,
                                allow_gaps=options.allow_gaps)
        io.check_finite(volume)
        return _Loaded(volume, predictor.prepare(volume, options.plane), time.perf_counter() - began)

    with ThreadPoolExecutor(1, thread_name_prefix="swinseg-read") as reader, ThreadPoolExecutor(
        1, thread_name_prefix="swinseg-write"
    ) as writer:
        loading: Future[_Loaded] = reader.submit(load, todo[0])
        writing: Future[CaseResult] | None = None
        for position, case in enumerate(todo):
            try:
                loaded: _Loaded | BaseException = loading.result()
            except Exception as error:  # noqa: BLE001 - isolate the case, report it, go on
                loaded = error
            if position + 1 < len(todo):
                loading = reader.submit(load, todo[position + 1])
            if isinstance(loaded, BaseException):
                yield CaseResult.failed(case, loaded)
                continue
            try:
                result, labels, probabilities, agreement = _predict_loaded(predictor, case, loaded, options, on_start,
                                                                           on_slices)
            except Exception as error:  # noqa: BLE001
                yield CaseResult.failed(case, error)
                continue
            if writing is not None:
                yield writing.result()
            writing = writer.submit(_write_case, result, loaded.volume, labels, probabilities, predictor.card,
                                    options, agreement)
        if writing is not None:
            yield writing.result()


def _predict_loaded(
    predictor: VolumePredictor,
    case: Case,
    loaded: _Loaded,
    options: RunOptions,
    on_start: Callable[[Case, int], None] | None,
    on_slices: SliceProgress | None,
) -> tuple[CaseResult, np.ndarray, np.ndarray | None, qc.Agreement | None]:
    began = time.perf_counter()
    if on_start is not None:
        on_start(case, predictor.slice_count(loaded.prepared))
    counter = predictor.agreement_counter() if options.qc else None
    agreement = None if counter is None else qc.Agreement(predictor.num_classes)
    if counter is not None:
        counter.agreement = agreement
    try:
        softmax = case.probabilities is not None or options.qc and not predictor.labels_only  # qc reads it
        prediction = predictor.predict_prepared(loaded.prepared, probabilities=softmax, progress=on_slices)
    finally:
        if counter is not None:
            counter.agreement = None
    labels = predictor.postprocess(prediction.labels, options.classes, options.keep_largest)
    counts = np.bincount(labels.ravel(), minlength=predictor.num_classes)
    names = predictor.card.classes
    voxels = {names[k]: int(counts[k]) for k in range(1, len(names)) if counts[k]}
    result = CaseResult(
        case,
        "done",
        shape=loaded.volume.array.shape,
        spacing=loaded.volume.spacing,
        seconds=loaded.seconds + time.perf_counter() - began,
        voxels=voxels,
        notes=loaded.volume.notes,
    )
    restored = prediction.map(loaded.prepared.restore)
    return result, restored.labels, restored.probabilities, agreement


def _write_case(
    result: CaseResult, volume: io.Volume, labels: np.ndarray, probabilities: np.ndarray | None,
    card: ModelCard, options: RunOptions, agreement: qc.Agreement | None,
) -> CaseResult:
    """Write the case's outputs, the mask last (its presence marks the case as finished)."""
    began = time.perf_counter()
    case = result.case
    try:
        if probabilities is not None and case.probabilities is not None:
            io.write_volume(case.probabilities, probabilities, volume)
        if options.qc:
            result.qc = qc.check(volume, labels, probabilities, card, plane=options.plane,
                                 agreement=agreement).to_dict()
        if case.statistics is not None:
            result.statistics = class_statistics(volume, labels, card.classes)
            write_statistics_json(case.statistics, io.case_name(case.output), result.statistics, result.qc)
        if case.preview is not None:
            overlay_volumes(volume, [volume.with_array(labels)], case.preview, class_names=card.classes,
                            title=f"{case.input.name}: {card.name} prediction")
        if case.kind == "dicom-seg":
            dicom_seg.write_dicom_seg(case.output, labels, volume, card)
        elif case.kind == "rtstruct":
            note = rtstruct.write_rtstruct(case.output, labels, volume, card, options.min_contour_area)
            result.notes += (note,) if note else ()
        else:
            io.write_volume(case.output, labels, volume)
    except Exception as error:  # noqa: BLE001
        return CaseResult.failed(case, error)
    result.seconds += time.perf_counter() - began
    return result
