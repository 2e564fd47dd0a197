"""swinseg serve in real processes: dcmtk's storescu/echoscu send to it, it sends its DICOM SEG to an Orthanc
started here, found through Orthanc's REST API. Every process gets a deadline and is stopped in teardown; the
tests poll for events with generous deadlines (a loaded 2-core machine) instead of sleeping fixed times.

dcmtk and Orthanc are Debian packages (`apt-get install dcmtk orthanc`; .ci/run installs them): a missing tool
fails the test, never skips it."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from dicom_files import dicom_series

from swinseg.errors import SwinsegError
from swinseg.serve import Destination, Journal, parse_size, safe_name, send_file

ROOT = Path(__file__).resolve().parents[1]
STARTUP = 180.0  # seconds a node or Orthanc may take to start (importing torch on a loaded machine)
DEADLINE = 120.0  # seconds for an expected event


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y dcmtk orthanc (as .ci/run does)")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition: Callable[[], Any], what: str, timeout: float = DEADLINE, alive: Callable[[], None] = None) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive is not None:
            alive()
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _tied(command: list[str]) -> list[str]:
    """`command` killed when this process dies, even by SIGKILL (Linux: util-linux setpriv --pdeathsig), so a
    killed test run leaves no node or Orthanc behind; unchanged where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


class Node:
    """A `swinseg serve --json` process whose log lines are read from a file."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return [e for e in found if kind is None or e.get("event") == kind]

    def alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the node exited ({self.process.returncode}):\n{self.log.read_text(encoding='utf-8')}")

    def wait(self, kind: str, timeout: float = DEADLINE, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events(kind) if all(e.get(k) == v for k, v in fields.items())), None)
        return _wait(found, f"{kind} {fields} in the node's log:\n{self.log.read_text(encoding='utf-8')}", timeout,
                     self.alive)

    @property
    def port(self) -> int:
        return self.events("listening")[-1]["port"]


@contextlib.contextmanager
def run_node(folder: Path, checkpoint: Path, *args: str) -> Iterator[Node]:
    """`swinseg serve` on a free port with the tiny checkpoint, its store under `folder`; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"node-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with log.open("w") as stream:
        process = subprocess.Popen(_tied(
            [sys.executable, "-m", "swinseg", "serve", "--port", "0", "-c", str(checkpoint), "--backend", "torch",
             "--device", "cpu", "--store", str(folder / "store"), "--json", *args]),
            stdout=stream, stderr=subprocess.STDOUT, env=env)
    node = Node(process, log)
    try:
        node.wait("listening", STARTUP)
        yield node
    finally:
        _stop(process)


class Orthanc:
    """An Orthanc process with a temporary configuration and storage."""

    def __init__(self, folder: Path) -> None:
        _tool("Orthanc")
        self.dicom_port, self.http_port = _free_port(), _free_port()
        config = {
            "Name": "swinseg-test", "DicomAet": "ORTHANC", "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True, "Plugins": [],
            # stores are accepted from the node only (its port: Orthanc never calls it)
            "DicomModalities": {"swinseg": ["SWINSEG", "127.0.0.1", 11112]},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = (folder / "orthanc.log").open("w")
        self.process = subprocess.Popen(_tied([shutil.which("Orthanc"), str(folder / "orthanc.json")]),
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def up(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return "Version" in self.get("/system")
        return False

    def segs_of(self, series_uid: str) -> list[dict[str, Any]]:
        """Orthanc's instances that are SEGs referencing `series_uid` (simplified tags)."""
        found = []
        for instance in self.get("/instances"):
            tags = self.get(f"/instances/{instance}/tags?simplify")
            references = [s.get("SeriesInstanceUID") for s in tags.get("ReferencedSeriesSequence", [])]
            if tags.get("Modality") == "SEG" and series_uid in references:
                found.append(tags)
        return found

    def stop(self) -> None:
        _stop(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    folder = tmp_path_factory.mktemp("orthanc")
    for attempt in range(3):  # a port taken between choosing it and Orthanc binding it: other ports
        (folder / str(attempt)).mkdir()
        server = Orthanc(folder / str(attempt))
        try:
            end = time.monotonic() + STARTUP
            while time.monotonic() < end and server.process.poll() is None and not server.up():
                time.sleep(0.2)
            if server.up():
                yield server
                return
        finally:
            server.stop()
    pytest.fail(f"Orthanc did not start; its logs: {folder}/*/orthanc.log")


@pytest.fixture(scope="module")
def node(tmp_path_factory, checkpoint, orthanc) -> Iterator[Node]:
    """A node that sends to Orthanc and accepts the calling AE titles SENDER and ECHOER only; --idle 3 leaves
    room for senders started at once on a loaded machine."""
    with run_node(tmp_path_factory.mktemp("node"), checkpoint, "--idle", "3", "--allow", "SENDER,ECHOER",
                  "--destination", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}") as running:
        yield running


def _series(folder: Path, uid: str, slices: int = 6) -> list[Path]:
    rng = np.random.default_rng(len(uid))
    return dicom_series(folder, rng.integers(-300, 400, (slices, 48, 40)).astype(np.int16), uid=uid)


def _storescu(node: Node, files: list[Path], aet: str = "SENDER", *options: str, wait: bool = True) -> Any:
    """storescu's run (its output on stdout), or its process with `wait=False`."""
    command = [_tool("storescu"), "-v", "-nh", "-to", "30", "-ta", "30", "-td", "60", "-aet", aet, "-aec", "SWINSEG",
               *options, "127.0.0.1", str(node.port), *map(str, files)]
    if not wait:
        return subprocess.Popen(_tied(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


def _compressed_copies(files: list[Path], folder: Path) -> list[tuple[Path, str]]:
    """Each slice in another transfer syntax, with the storescu option that proposes it: JPEG-LS, JPEG lossless,
    RLE (dcmtk), JPEG 2000 (pydicom and pylibjpeg-openjpeg), deflated and implicit VR little endian (dcmtk)."""
    folder.mkdir()
    tools = [(["dcmcjpls", "+un"], "-xt"), (["dcmcjpeg", "+un"], "-xs"), (["dcmcrle"], "-xr"), ([], "-xv"),
             (["dcmconv", "+td"], "-xd"), (["dcmconv", "+ti"], "-xi")]
    copies = []
    for file, (command, propose) in zip(files, tools):
        target = folder / file.name
        if command:
            subprocess.run([_tool(command[0]), *command[1:], str(file), str(target)], check=True, timeout=60)
        else:
            dataset = pydicom.dcmread(file)
            dataset.compress(pydicom.uid.JPEG2000Lossless, generate_instance_uid=False)
            dataset.save_as(target)
        copies.append((target, propose))
    return copies


@pytest.mark.slow
def test_compressed_series_is_predicted_and_its_seg_stored_in_orthanc(node, orthanc, tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.21.1"
    originals = _series(tmp_path / "series", uid)
    senders = [_storescu(node, [file], "SENDER", propose, wait=False)  # at once: one association each
               for file, propose in _compressed_copies(originals, tmp_path / "compressed")]
    try:
        outputs = [sender.communicate(timeout=120)[0] for sender in senders]
    finally:
        for sender in senders:
            _stop(sender)
    for output in outputs:
        assert "Store Response (Success)" in output and "Store Failed" not in output, output
        converted = re.search(r"Converting transfer syntax: (.+) -> (.+)", output)
        assert converted and converted[1] == converted[2], output  # sent compressed, as it is
    event = node.wait("sent", series=uid)
    assert event["instances"] == len(originals)
    segs = orthanc.segs_of(uid)
    assert len(segs) == 1
    assert segs[0]["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == uid
    stored = Path(event["output"]).parents[1] / "incoming" / uid
    for original in originals:  # received and decoded losslessly
        instance = pydicom.dcmread(original)
        kept = pydicom.dcmread(stored / f"{instance.SOPInstanceUID}.dcm")
        np.testing.assert_array_equal(kept.pixel_array, instance.pixel_array)


@pytest.mark.slow
def test_refused_callers_classes_and_datasets_leave_the_node_serving(node, orthanc, tmp_path):
    echo = subprocess.run([_tool("echoscu"), "-to", "30", "-aet", "ECHOER", "-aec", "SWINSEG", "127.0.0.1",
                           str(node.port)], capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    good = _series(tmp_path / "good", "1.2.826.0.1.3680043.2.1125.21.2")

    intruder = _storescu(node, good[:1], "INTRUDER")
    assert "Association Rejected" in intruder.stdout, intruder.stdout
    node.wait("rejected", calling="INTRUDER")

    plan = pydicom.dcmread(good[0])  # an RT Plan: a SOP class the node cannot segment
    plan.SOPClassUID = plan.file_meta.MediaStorageSOPClassUID = pydicom.uid.RTPlanStorage
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.21.3"
    plan.save_as(tmp_path / "plan.dcm")
    truncated = pydicom.dcmread(good[0])  # pixel data cut short: dropped when received
    truncated.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.21.4"
    truncated.PixelData = truncated.PixelData[:100]
    truncated.save_as(tmp_path / "truncated.dcm")
    refused = _storescu(node, [tmp_path / "plan.dcm", tmp_path / "truncated.dcm"])
    assert "No presentation context for: (RP)" in refused.stdout, refused.stdout  # refused at association
    assert "Store Response (Error: CannotUnderstand)" in refused.stdout, refused.stdout  # C000
    node.wait("dropped", calling="SENDER")

    gap_uid = "1.2.826.0.1.3680043.2.1125.21.7"  # a slice missing: refused by the reader, the node goes on
    gapped = _series(tmp_path / "gapped", gap_uid, slices=4)
    assert _storescu(node, gapped[:1] + gapped[2:]).stdout.count("Store Response (Success)") == 3
    assert "gap in DICOM series" in node.wait("failed", series=gap_uid)["message"]

    sent = _storescu(node, good)
    assert sent.stdout.count("Store Response (Success)") == len(good), sent.stdout
    node.wait("sent", series="1.2.826.0.1.3680043.2.1125.21.2")
    assert len(orthanc.segs_of("1.2.826.0.1.3680043.2.1125.21.2")) == 1
    assert not [e for e in node.events() if "1.2.826.0.1.3680043.2.1125.21.4" in json.dumps(e)
                and e["event"] != "dropped"]


@pytest.mark.slow
def test_killed_node_predicts_its_series_once_and_sends_after_restart(checkpoint, orthanc, tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.21.5"
    files = _series(tmp_path / "series", uid, slices=5)
    folder = tmp_path / "node"
    incoming = folder / "store" / "incoming" / safe_name(uid)
    with run_node(folder, checkpoint, "--idle", "600") as first:
        assert _storescu(first, files).stdout.count("Store Response (Success)") == len(files)
        _wait(lambda: len(list(incoming.glob("*.dcm"))) == len(files), "the instances on disk", alive=first.alive)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(20)
    journal = folder / "store" / "journal.jsonl"
    assert [json.loads(line)["event"] for line in journal.read_text().splitlines()] == ["received"]

    unreachable = f"ORTHANC@127.0.0.1:{_free_port()}"  # predicted, but not sent
    with run_node(folder, checkpoint, "--idle", "1", "--destination", unreachable) as second:
        second.wait("send-failed", series=uid)
        second.process.send_signal(signal.SIGKILL)
        second.process.wait(20)

    with run_node(folder, checkpoint, "--idle", "1", "--destination",
                  f"ORTHANC@127.0.0.1:{orthanc.dicom_port}") as third:
        assert third.wait("resumed")["predict"] == 0
        third.wait("sent", series=uid)
        assert not third.events("predicted") and not third.events("failed")

    assert [json.loads(line)["event"] for line in journal.read_text().splitlines()] == [
        "received", "predicted", "sent"]
    assert len(orthanc.segs_of(uid)) == 1


@contextlib.contextmanager
def in_process_node(store: Path, predictor: Any = None, **options: Any) -> Iterator[tuple[Any, list[str]]]:
    """The node in this process, its log lines collected: the Storage SCP alone, or with `predictor` its
    prediction worker too (in a thread)."""
    from swinseg.serve import Log, Node, NodeOptions

    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.extend(line for line in text.splitlines() if line)

        def flush(self) -> None:
            pass

    node = Node(predictor, NodeOptions(store=store, port=0, **options), Log(Lines(), as_json=True))
    worker = threading.Thread(target=node.run, daemon=True)
    try:
        port = node.start()
        if predictor is not None:
            worker.start()
        yield Destination("SWINSEG", "127.0.0.1", port), lines
    finally:
        node.shutdown()
        if worker.is_alive():
            worker.join(DEADLINE)


@pytest.mark.parametrize("output_type", ["rtstruct", "nifti"])
def test_node_results_as_rtstruct_and_nifti_are_what_predict_gives(checkpoint, tmp_path, output_type):
    from dicom_judges import assert_valid_rtstruct

    from swinseg.io import read_volume
    from swinseg.predict import Predictor
    from swinseg.weights import load_checkpoint

    predictor = Predictor(*load_checkpoint(checkpoint), device="cpu")
    uid = "1.2.826.0.1.3680043.2.1125.21.9"
    files = dicom_series(tmp_path / "series", np.random.default_rng(9).integers(-300, 400, (4, 48, 40)).astype(
        np.int16), uid=uid, spacing=3.0, pixel_mm=3.0)
    with in_process_node(tmp_path / "store", predictor, idle=0.5, output_type=output_type) as (node, lines):
        for file in files:
            send_file(file, node, "SENDER")
        events = lambda: [e for e in map(json.loads, lines) if e["event"] in ("predicted", "failed")]  # noqa: E731
        event = _wait(events, "the series predicted")[0]
    assert event["event"] == "predicted" and event["instances"] == len(files), event
    volume = read_volume(tmp_path / "series")
    labels = predictor.predict_volume(volume).labels
    assert labels.any()
    if output_type == "rtstruct":
        assert_valid_rtstruct(Path(event["output"]), labels, volume, predictor.card.classes, tmp_path / "judge")
    else:
        written = read_volume(Path(event["output"]))
        np.testing.assert_array_equal(written.array, labels)
        for attribute in ("spacing", "origin", "direction"):
            np.testing.assert_allclose(getattr(written, attribute), getattr(volume, attribute), atol=1e-5)


def test_full_store_and_oversized_datasets_are_refused_out_of_resources(tmp_path):
    files = _series(tmp_path / "series", "1.2.826.0.1.3680043.2.1125.21.6", slices=3)
    size = files[0].stat().st_size
    with in_process_node(tmp_path / "a", max_disk=int(size * 1.5)) as (node, lines):
        send_file(files[0], node, "SENDER")
        with pytest.raises(SwinsegError, match="0xA700"):
            send_file(files[1], node, "SENDER")
    assert [json.loads(line)["event"] for line in lines][-1] == "disk-full"
    assert len(list((tmp_path / "a" / "incoming").rglob("*.dcm"))) == 1
    with in_process_node(tmp_path / "b", max_instance=size // 2) as (node, lines):
        with pytest.raises(SwinsegError, match="0xA700"):
            send_file(files[0], node, "SENDER")
    assert "max-instance" in json.loads(lines[-1])["reason"]
    assert not list((tmp_path / "b" / "incoming").rglob("*.dcm"))


def test_malformed_dataset_is_dropped_and_the_node_keeps_serving(tmp_path):
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import AE

    good = _series(tmp_path / "series", "1.2.826.0.1.3680043.2.1125.21.8", slices=1)[0]
    meta = pydicom.dcmread(good).file_meta
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    garbage = tmp_path / "garbage.dcm"  # a CT dataset's SOP class and instance UIDs, then nonsense
    with garbage.open("wb") as stream:
        stream.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(stream, meta)
        for element, uid in ((0x16, meta.MediaStorageSOPClassUID), (0x18, meta.MediaStorageSOPInstanceUID)):
            value = uid.encode() + b"\0" * (len(uid) % 2)
            stream.write(bytes([0x08, 0, element, 0]) + b"UI" + len(value).to_bytes(2, "little") + value)
        stream.write(b"\x10\x00\x10\x00SQ\x00\x00\x00\x00\x01\x00" + bytes(range(256)) * 4)
    with in_process_node(tmp_path / "store") as (node, lines):
        ae = AE("SENDER")
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
        try:
            assert assoc.is_established
            status = assoc.send_c_store(garbage)
        finally:
            assoc.release()
        assert status.Status == 0xC000
        send_file(good, node, "SENDER")  # still serving
    dropped = [json.loads(line) for line in lines if json.loads(line)["event"] == "dropped"]
    assert len(dropped) == 1 and "SOP class" not in dropped[0]["reason"]
    assert len(list((tmp_path / "store" / "incoming").rglob("*.dcm"))) == 1


def test_journal_line_cut_by_a_kill_loses_no_later_entry(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"folder": "1.2", "event": "received"}\n{"folder": "1.2", "event": "pred')
    journal = Journal(path)
    assert journal.event("1.2") == "received"
    journal.add("1.2", "predicted")
    assert Journal(path).event("1.2") == "predicted"


def test_file_names_from_uids_are_sanitised():
    assert safe_name("1.2.840.10008.5") == "1.2.840.10008.5"
    for hostile in ("../../etc/passwd", "1.2/../3", "..", "", "1.2.3\x00", "9" * 65):
        name = safe_name(hostile)
        assert re.fullmatch(r"x[0-9a-f]{40}", name), name
    assert safe_name("a") != safe_name("b")


def test_destination_and_sizes_are_checked():
    assert str(Destination.parse("PACS@10.0.0.5:104")) == "PACS@10.0.0.5:104"
    for bad in ("PACS@host", "@host:104", "PACS@:104", "PACS@host:0", "TOO_LONG_AE_TITLE_X@h:104"):
        with pytest.raises(SwinsegError, match="--destination"):
            Destination.parse(bad)
    assert parse_size("1.5G", "--max-disk") == int(1.5 * 1024**3)
    assert parse_size("4096", "--max-disk") == 4096
    with pytest.raises(SwinsegError, match="--max-disk"):
        parse_size("lots", "--max-disk")


def test_serve_takes_its_model_as_predict_does(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from swinseg.cli import app

    monkeypatch.setenv("SWINSEG_HOME", str(tmp_path / "home"))
    empty = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "node"), "--port", "0"])
    assert empty.exit_code == 1 and "no models stored" in empty.output and "swinseg models add" in empty.output
    run = tmp_path / "cv"
    for fold in (0, 1):
        (run / f"fold_{fold}").mkdir(parents=True)
        (run / f"fold_{fold}" / "final.safetensors").write_bytes(b"")
    ensemble = CliRunner().invoke(app, ["serve", "-c", str(run), "--store", str(tmp_path / "node"), "--port", "0"])
    assert ensemble.exit_code == 1 and "runs one model; the options name 2" in ensemble.output
