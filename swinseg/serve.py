"""A DICOM node: a Storage SCP that receives CT/MR series, predicts each once it is complete (no new instance
for `idle` seconds) in one worker, and sends the result back by C-STORE and/or keeps it on disk.

Everything lives under the store folder: received instances (decoded, explicit VR little endian) in
incoming/SERIES/, results in results/, and journal.jsonl (series received, predicted, failed, sent). A node
killed at any point and started again predicts the series it had received but not predicted, re-sends the
results it had not sent, and predicts no series twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from swinseg import runner
from swinseg.errors import SwinsegError

if TYPE_CHECKING:
    from swinseg.predict import Predictor

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMAGE_STORAGE = {CT_IMAGE_STORAGE: "CT Image Storage", MR_IMAGE_STORAGE: "MR Image Storage"}
# what archives send, all decoded by pydicom (RLE and deflate natively, JPEG and JPEG-LS with pylibjpeg-libjpeg,
# JPEG 2000 with pylibjpeg-openjpeg)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
)
OUTPUT_KINDS = {"seg": ("dicom-seg", ".dcm"), "rtstruct": ("rtstruct", ".dcm"), "nifti": ("volume", ".nii.gz")}
MAX_PDU = 256 * 1024  # the largest P-DATA PDU the node accepts
RETRY_SECONDS = 60.0  # a failed send is tried again after this long
# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS, OUT_OF_RESOURCES, NOT_SOP_CLASS, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3,
          "T": 1024**4, "TB": 1024**4}


def parse_size(text: str, option: str) -> int:
    """'500M', '10G', '1.5GB', '4096' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", text.upper())
    if not match or float(match[1]) <= 0:
        raise SwinsegError(f"{option} {text!r}: expected a size such as 500M, 10G or 4096 (bytes)")
    return int(float(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True)
class Destination:
    """A DICOM node to send results to: AET@HOST:PORT."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        aet, _, address = text.rpartition("@")
        host, _, port = address.rpartition(":")
        if not aet or not host or not port.isdigit() or not 0 < int(port) < 65536 or len(aet) > 16:
            raise SwinsegError(f"--destination {text!r}: expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104")
        return cls(aet, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def decodable_syntaxes() -> list[str]:
    """TRANSFER_SYNTAXES whose pixel data pydicom can decode here (a sender falls back to the others)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    return [uid for uid in TRANSFER_SYNTAXES if not UID(uid).is_compressed or get_decoder(uid).is_available]


def safe_name(uid: str) -> str:
    """A file name for a UID: the UID itself when it is digits and dots (as UIDs are), else a hash of it."""
    if re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid) and len(uid) <= 64:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


class Log:
    """One line per event on `stream`: text with a UTC time, or JSON objects (`as_json`)."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream, self.as_json, self.lock = stream, as_json, threading.Lock()

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        now = datetime.now(timezone.utc)
        if self.as_json:
            line = json.dumps({"time": now.isoformat(timespec="milliseconds"), "event": event, **fields})
        else:
            line = f"{now:%Y-%m-%d %H:%M:%S} {text}"
        with self.lock:
            print(line, file=self.stream, flush=True)


class Journal:
    """journal.jsonl: one JSON object per series event, appended and synced; the last event of a series is its
    state (received, predicted, failed, sent)."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()
        self.state: dict[str, dict[str, Any]] = {}
        if path.exists():
            text = path.read_text(encoding="utf-8")
            for line in text.splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by a kill
                    entry = json.loads(line)
                    self.state[entry["folder"]] = {**self.state.get(entry["folder"], {}), **entry}
            if text and not text.endswith("\n"):  # the next entry starts a line of its own
                with path.open("a", encoding="utf-8") as stream:
                    stream.write("\n")

    def add(self, folder: str, event: str, **fields: Any) -> None:
        entry = {"folder": folder, "event": event, "time": datetime.now(timezone.utc).isoformat(), **fields}
        with self.lock:
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(entry) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            self.state[folder] = {**self.state.get(folder, {}), **entry}

    def event(self, folder: str) -> str | None:
        return self.state.get(folder, {}).get("event")


@dataclass
class _Series:
    uid: str
    calling: str
    instances: int = 0
    last: float = field(default_factory=time.monotonic)  # when the last instance arrived


@dataclass
class NodeOptions:
    """How the node listens, what it accepts and where results go."""

    store: Path
    ae_title: str = "SWINSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    idle: float = 10.0
    output_type: str = "seg"
    destination: Destination | None = None
    allow: tuple[str, ...] = ()  # calling AE titles; empty: any
    max_disk: int | None = None  # bytes under the store folder
    max_instance: int = 64 * 1024**2  # bytes of one received dataset

    def __post_init__(self) -> None:
        if self.output_type not in OUTPUT_KINDS:
            raise SwinsegError(f"--output-type {self.output_type!r}: expected one of {', '.join(OUTPUT_KINDS)}")
        if self.output_type == "nifti" and self.destination is not None:
            raise SwinsegError("--output-type nifti cannot be sent by C-STORE; drop --destination (results stay "
                               "under --store)")


class Node:
    """The Storage SCP, its journal and its prediction worker (`run`, in the calling thread)."""

    def __init__(self, predictor: Predictor, options: NodeOptions, log: Log,
                 run_options: runner.RunOptions = runner.RunOptions()) -> None:
        self.predictor, self.options, self.log, self.run_options = predictor, options, log, run_options
        self.incoming, self.results, self.tmp = (options.store / name for name in ("incoming", "results", "tmp"))
        for folder in (self.incoming, self.results, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # writes cut by a kill
            stale.unlink()
        self.journal = Journal(options.store / "journal.jsonl")
        self.lock = threading.Lock()
        self.series: dict[str, _Series] = {}  # folder -> series waiting to be complete
        self.busy: str | None = None  # the folder being predicted
        self.ignored: set[str] = set()  # folders whose late instances were reported
        self.unsent: dict[str, float] = {}  # folder -> when to try sending again
        self.stored = sum(f.stat().st_size for f in options.store.rglob("*") if f.is_file())
        self.stop = threading.Event()
        self.server: Any = None
        self._resume()

    def _resume(self) -> None:
        """Schedule the series received before a restart, and the results not yet sent."""
        for folder in sorted(p.name for p in self.incoming.iterdir() if p.is_dir()):
            state = self.journal.state.get(folder, {})
            if state.get("event") in (None, "received"):
                count = sum(1 for _ in (self.incoming / folder).glob("*.dcm"))
                self.series[folder] = _Series(state.get("series", folder), state.get("calling", "?"), count)
            elif state.get("event") == "predicted" and self.options.destination is not None:
                self.unsent[folder] = 0.0
        if self.series or self.unsent:
            self.log("resumed", f"resumed: {len(self.series)} series to predict, {len(self.unsent)} result(s) to "
                     "send", predict=len(self.series), send=len(self.unsent))

    # --- the SCP ---------------------------------------------------------------------------------------------

    def start(self) -> int:
        """Listen (in background threads); returns the port (the one chosen by the system for port 0)."""
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_pdu_size = MAX_PDU
        ae.network_timeout, ae.acse_timeout, ae.dimse_timeout = 60, 30, 60
        if self.options.allow:
            ae.require_calling_aet = list(self.options.allow)
        for sop_class in IMAGE_STORAGE:
            ae.add_supported_context(sop_class, decodable_syntaxes())
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (C-ECHO)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        self.server = ae.start_server((self.options.host, self.options.port), block=False, evt_handlers=handlers)
        port = int(self.server.server_address[1])
        self.log("listening", f"{self.options.ae_title} listening on {self.options.host}:{port}",
                 ae_title=self.options.ae_title, host=self.options.host, port=port)
        return port

    def _on_rejected(self, event: Any) -> None:
        calling, address = event.assoc.requestor.ae_title, event.assoc.requestor.address
        self.log("rejected", f"association from {calling!r} ({address}) rejected: not in --allow", calling=calling,
                 address=address)

    def _on_store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        size = event.request.DataSet.seek(0, os.SEEK_END)
        if size > self.options.max_instance:
            self._drop(calling, f"dataset of {size} bytes is over --max-instance {self.options.max_instance}")
            return OUT_OF_RESOURCES
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            folder, series_uid, data = self._decode(dataset)
        except Exception as error:  # noqa: BLE001 - a malformed dataset is dropped, the node keeps serving
            self._drop(calling, f"{type(error).__name__}: {error}".splitlines()[0][:200])
            return NOT_SOP_CLASS if isinstance(error, _WrongClass) else CANNOT_UNDERSTAND
        with self.lock:
            if folder == self.busy or self.journal.event(folder) not in (None, "received"):
                if folder not in self.ignored:
                    self.ignored.add(folder)
                    self.log("ignored", f"series {series_uid}: instances arriving after its prediction began are "
                             "ignored (raise --idle if the sender pauses longer)", series=series_uid)
                return SUCCESS
            if self.options.max_disk is not None and self.stored + len(data) > self.options.max_disk:
                self.log("disk-full", f"store full ({self.stored} of --max-disk {self.options.max_disk} bytes): "
                         f"refused an instance of series {series_uid} from {calling!r}", series=series_uid,
                         calling=calling, stored=self.stored)
                return OUT_OF_RESOURCES
            if folder not in self.series:
                if self.journal.event(folder) is None:
                    self.journal.add(folder, "received", series=series_uid, calling=calling)
                self.series[folder] = _Series(series_uid, calling)
            target = self.incoming / folder / (safe_name(str(dataset.SOPInstanceUID)) + ".dcm")
            target.parent.mkdir(exist_ok=True)
            tmp = self.tmp / f"{folder}.{target.name}"
            try:
                tmp.write_bytes(data)
                if target.exists():  # the same instance sent again
                    self.stored -= target.stat().st_size
                else:
                    self.series[folder].instances += 1
                os.replace(tmp, target)
            except OSError as error:  # a full or failing disk: the sender is told, and may send it again
                tmp.unlink(missing_ok=True)
                self.log("write-failed", f"series {series_uid}: an instance from {calling!r} not stored: {error}",
                         series=series_uid, calling=calling, message=str(error))
                return OUT_OF_RESOURCES
            self.stored += len(data)
            self.series[folder].last = time.monotonic()
        return SUCCESS

    def _decode(self, dataset: Any) -> tuple[str, str, bytes]:
        """(series folder, SeriesInstanceUID, the instance as an explicit VR little endian file with its pixels
        decoded); raises for a dataset the node cannot use."""
        from pydicom.uid import ExplicitVRLittleEndian

        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in IMAGE_STORAGE:
            raise _WrongClass(f"SOP class {sop_class!r} is not CT or MR Image Storage")
        series_uid, instance_uid = str(dataset.get("SeriesInstanceUID", "")), str(dataset.get("SOPInstanceUID", ""))
        if not series_uid or not instance_uid:
            raise ValueError("no SeriesInstanceUID or SOPInstanceUID")
        if dataset.file_meta.TransferSyntaxUID.is_compressed:
            dataset.decompress(generate_instance_uid=False)  # the SEG references the sender's UIDs
        else:
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.pixel_array  # noqa: B018 - pixel data that does not decode is refused now, not at prediction
        buffer = _io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return safe_name(series_uid), series_uid, buffer.getvalue()

    def _drop(self, calling: str, reason: str) -> None:
        self.log("dropped", f"dropped a dataset from {calling!r}: {reason}", calling=calling, reason=reason)

    # --- the worker ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Predict complete series and send results until `stop` is set."""
        while not self.stop.wait(0.2):
            folder = self._next_complete()
            if folder is not None:
                try:
                    self._predict(folder)
                except Exception as error:  # noqa: BLE001 - e.g. a full disk: said, and the node keeps serving
                    self.busy = None
                    self.log("error", f"series in {folder}: {type(error).__name__}: {error}", folder=folder,
                             message=str(error))
            for folder in [f for f, when in self.unsent.items() if when <= time.monotonic()]:
                self._send(folder, self.journal.state.get(folder, {}))

    def shutdown(self) -> None:
        self.stop.set()
        if self.server is not None:
            self.server.shutdown()

    def _next_complete(self) -> str | None:
        with self.lock:
            now = time.monotonic()
            due = [f for f, s in self.series.items() if now - s.last >= self.options.idle]
            if not due:
                return None
            self.busy = min(due, key=lambda f: self.series[f].last)
            return self.busy

    def _predict(self, folder: str) -> None:
        with self.lock:
            series = self.series.pop(folder)
        waited = time.monotonic() - series.last
        kind, suffix = OUTPUT_KINDS[self.options.output_type]
        case = runner.Case(self.incoming / folder, self.results / (folder + suffix), kind=kind)
        began = time.monotonic()
        try:
            result = next(iter(runner.predict_cases(self.predictor, [case], self.run_options)))
        except Exception as error:  # noqa: BLE001 - one series failing never stops the node
            result = runner.CaseResult.failed(case, error)
        seconds = time.monotonic() - began
        fields = {"series": series.uid, "calling": series.calling, "instances": series.instances}
        with self.lock:
            self.busy = None
            if result.status == "failed":
                self.journal.add(folder, "failed", message=result.message, **fields)
            else:
                self.journal.add(folder, "predicted", output=str(case.output), **fields)
                self.stored += case.output.stat().st_size
        if result.status == "failed":
            self.log("failed", f"series {series.uid}: {series.instances} instance(s) from {series.calling!r}, "
                     f"cannot be segmented: {result.message}", message=result.message, **fields)
            return
        found = ", ".join(result.voxels) or "no foreground"
        done = (f"predicted in {seconds:.1f} s ({found})" if result.status == "done"
                else "predicted before a restart")  # the result was written, the journal not
        summary = f"series {series.uid}: {series.instances} instance(s) from {series.calling!r}, {done} -> "
        summary += str(case.output)
        fields.update(predict_seconds=round(seconds, 3), output=str(case.output), classes=list(result.voxels),
                      notes=list(result.notes))
        if self.options.destination is None:
            self.log("predicted", summary, **fields)
            return
        self._send(folder, {**fields, "waited": waited, "began": began}, summary)

    def _send(self, folder: str, state: dict[str, Any], summary: str | None = None) -> None:
        """C-STORE the result of `folder` to the destination; on failure, try again after RETRY_SECONDS."""
        destination = self.options.destination
        assert destination is not None
        output, uid = Path(state["output"]), state.get("series", folder)
        summary = summary or f"series {uid}: result {output}"
        began = time.monotonic()
        try:
            send_file(output, destination, self.options.ae_title)
        except Exception as error:  # noqa: BLE001 - logged and tried again; the node keeps serving
            self.unsent[folder] = time.monotonic() + RETRY_SECONDS
            self.log("send-failed", f"{summary}; sending to {destination} failed, retried in {RETRY_SECONDS:g} s: "
                     f"{error}", series=uid, destination=str(destination), message=str(error))
            return
        self.unsent.pop(folder, None)
        self.journal.add(folder, "sent", destination=str(destination))
        seconds = time.monotonic() - began
        extra: dict[str, Any] = {}
        if "began" in state:
            extra["total_seconds"] = round(time.monotonic() - state["began"] + state["waited"], 3)
        total = f", {extra['total_seconds']:.1f} s after the last instance" if extra else ""
        self.log("sent", f"{summary}, sent to {destination} in {seconds:.1f} s{total}", destination=str(destination),
                 send_seconds=round(seconds, 3), **extra,
                 **{k: v for k, v in state.items() if k not in ("began", "waited", "folder", "event", "time")})


class _WrongClass(ValueError):
    """A dataset whose own SOP class is not one the node segments."""


def send_file(path: Path, destination: Destination, calling_aet: str, timeout: float = 30.0) -> None:
    """C-STORE one DICOM file to `destination`; raises SwinsegError unless it is stored."""
    import pydicom
    from pynetdicom import AE

    dataset = pydicom.dcmread(path)
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    ae = AE(ae_title=calling_aet)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(dataset.SOPClassUID, list(dict.fromkeys([syntax, "1.2.840.10008.1.2.1"])))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise SwinsegError(f"{destination}: association not established (refused, or nothing listening)")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise SwinsegError(f"{destination}: no C-STORE response (timeout or aborted)")
    if code != SUCCESS and not 0xB000 <= code <= 0xBFFF:  # warnings: stored anyway
        raise SwinsegError(f"{destination}: C-STORE refused with status 0x{code:04X}")

