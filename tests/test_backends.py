"""ONNX export and the onnxruntime / OpenVINO backends: same masks as torch, metadata, cache, refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from shared_files import EXAMPLE_CT, needs_shared
from typer.testing import CliRunner

from swinseg import backends, io
from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.predict import Predictor, load_predictor_model
from swinseg.weights import load_checkpoint

ONNX_BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def network(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def exported(network, tmp_path_factory):
    model, card = network
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert len(backends.export_onnx(model, card, path)) == 64  # the sha256 of what was written
    return path


def images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand((count, 1, size, size), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_backend_logits_equal_torch_for_any_batch_size(network, backend):
    model, card = network
    run = backends.open_network(backend, model, card, torch.device("cpu"), None)
    for count in (1, 5):
        batch = images(count, seed=count)
        with torch.inference_mode():
            expected = model(batch)
        assert run(batch).shape == expected.shape
        assert float((run(batch) - expected).abs().max()) <= 1e-4


@needs_shared
@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_backend_masks_equal_torch_on_the_real_ct(network, backend):
    model, card = network
    volume = io.read_volume(EXAMPLE_CT)
    volume = io.Volume(volume.array[40:60].copy(), volume.spacing, volume.origin, volume.direction)  # 20 slices
    expected = Predictor(model, card, device="cpu").predict_volume(volume, probabilities=True)
    got = Predictor(model, card, device="cpu", backend=backend).predict_volume(volume, probabilities=True)
    assert np.mean(got.labels == expected.labels) >= 0.999
    assert len(np.unique(expected.labels)) > 1  # a mask that could disagree
    assert np.abs(got.probabilities.astype(np.float32) - expected.probabilities.astype(np.float32)).max() <= 1e-3


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_tta_through_a_backend_equals_torch_tta(network, backend):
    model, card = network
    slices = np.random.default_rng(3).random((3, 70, 60)).astype(np.float32)
    expected = Predictor(model, card, device="cpu", tta=True).predict_slices(slices, probabilities=True)
    got = Predictor(model, card, device="cpu", tta=True, backend=backend).predict_slices(slices, probabilities=True)
    assert np.mean(got.labels == expected.labels) >= 0.999
    assert np.abs(got.probabilities.astype(np.float32) - expected.probabilities.astype(np.float32)).max() <= 1e-3


def test_export_metadata_round_trips(network, exported):
    model, card = network
    graph = backends.read_onnx(exported)
    assert graph.card.to_dict() == card.to_dict()
    loaded, loaded_card = load_predictor_model(checkpoint=exported)
    assert isinstance(loaded, backends.OnnxGraph) and loaded_card.classes == card.classes
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(exported), load_external_data=False).metadata_props}
    assert metadata["swinseg_version"] and metadata["torch_version"] == torch.__version__
    assert json.loads(metadata["card"])["network"]["img_size"] == card.network.img_size


def test_exported_file_predicts_like_the_checkpoint(checkpoint, exported, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    array = np.random.default_rng(0).uniform(-200, 300, (4, 48, 40)).astype(np.float32)
    io.write_volume(scan, array, io.Volume(array, (3.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    runner = CliRunner()
    for name, source, backend in (("torch", checkpoint, "torch"), ("onnx", exported, "onnxruntime")):
        result = runner.invoke(app, ["predict", str(scan), "-o", str(tmp_path / f"{name}.nii.gz"), "-c", str(source),
                                     "--backend", backend])
        assert result.exit_code == 0, result.output
        assert f"({backend})" in result.output
    torch_mask, onnx_mask = (io.read_volume(tmp_path / f"{n}.nii.gz").array for n in ("torch", "onnx"))
    assert np.mean(torch_mask == onnx_mask) >= 0.999


def test_export_command_writes_a_verified_file(checkpoint, tmp_path):
    target = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert "verified against torch" in result.output and target.is_file()
    refused = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "model.onnx.txt")])
    assert refused.exit_code != 0 and "must end in .onnx" in refused.output
    before = target.stat().st_mtime_ns
    refused = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(target)])
    assert refused.exit_code == 1 and "exists; pass --overwrite" in refused.output
    assert target.stat().st_mtime_ns == before


def test_an_export_that_disagrees_with_torch_is_not_written(network, tmp_path, monkeypatch):
    model, card = network
    monkeypatch.setattr(backends, "TOLERANCE", -1.0)
    with pytest.raises(SwinsegError, match="differs from torch"):
        backends.export_onnx(model, card, tmp_path / "bad.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_the_cache_is_reused_and_a_corrupt_entry_rebuilt(network, tmp_path, monkeypatch):
    model, card = network
    monkeypatch.setenv("SWINSEG_CACHE", str(tmp_path / "cache"))
    path, built = backends.cached_graph(model, card)
    assert built and path.parent == tmp_path / "cache" / "onnx"
    assert backends.cached_graph(model, card) == (path, False)
    path.write_bytes(path.read_bytes()[:1000])  # truncated: a crash or a full disk
    assert backends.cached_graph(model, card) == (path, True)
    logits = backends.open_network("onnxruntime", model, card, torch.device("cpu"), None)(images(2))
    assert logits.shape == (2, len(card.classes), 64, 64)
    changed = type(model)(model.config).eval()  # other weights, another entry
    assert backends.cached_graph(changed, card)[0] != path


def test_auto_picks_openvino_then_onnxruntime_then_torch(monkeypatch):
    cpu = torch.device("cpu")
    assert backends.resolve_backend("auto", cpu) == "openvino"
    monkeypatch.setattr(backends, "installed", lambda package: package != "openvino")
    assert backends.resolve_backend("auto", cpu) == "onnxruntime"
    monkeypatch.setattr(backends, "installed", lambda package: False)
    assert backends.resolve_backend("auto", cpu) == "torch"
    with pytest.raises(SwinsegError, match=r"not installed: pip install 'swinseg\[openvino\]'"):
        backends.resolve_backend("openvino", cpu)
    assert backends.resolve_backend("auto", torch.device("cuda")) == "torch"
    assert backends.resolve_backend("auto", cpu, dtype=torch.bfloat16) == "torch"  # bf16 on CPU: torch's autocast


def test_a_missing_backend_is_one_line_with_the_pip_command(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda package: package != "openvino")
    scan = tmp_path / "scan.nii.gz"
    array = np.zeros((2, 16, 16), np.float32)
    io.write_volume(scan, array, io.Volume(array, (3.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    result = CliRunner().invoke(app, ["predict", str(scan), "-o", str(tmp_path / "m.nii.gz"), "-c", str(checkpoint),
                                      "--backend", "openvino"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: the openvino backend is not installed: pip install 'swinseg[openvino]'"


def test_auto_falls_back_to_torch_when_the_cache_cannot_be_written(network, tmp_path, monkeypatch):
    model, card = network
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SWINSEG_CACHE", str(tmp_path / "file" / "cache"))
    predictor = Predictor(model, card, device="cpu", backend="auto")
    assert predictor.backend == "torch" and "predicting with torch instead" in predictor.notes[0]
    with pytest.raises(SwinsegError, match="cannot create the ONNX cache folder"):
        Predictor(model, card, device="cpu", backend="openvino")


def test_a_first_export_is_announced_once(network, tmp_path, monkeypatch):
    model, card = network
    monkeypatch.setenv("SWINSEG_CACHE", str(tmp_path))
    assert "exported to ONNX" in Predictor(model, card, device="cpu", backend="onnxruntime").notes[0]
    assert Predictor(model, card, device="cpu", backend="onnxruntime").notes == []


def test_what_a_backend_cannot_honour_is_refused(network, exported):
    model, card = network
    with pytest.raises(SwinsegError, match="protocol reference"):
        Predictor(model, card, protocol="reference", backend="openvino")
    with pytest.raises(SwinsegError, match="runs float32"):
        Predictor(model, card, device="cpu", precision="bf16", backend="onnxruntime")
    with pytest.raises(SwinsegError, match="runs on the CPU"):
        backends.resolve_backend("onnxruntime", torch.device("cuda"))
    graph = backends.read_onnx(exported)
    with pytest.raises(SwinsegError, match="not torch"):
        Predictor(graph, graph.card, backend="torch")
    with pytest.raises(SwinsegError, match="tiny.onnx: --protocol reference runs the torch network"):
        Predictor(graph, graph.card, protocol="reference")
    with pytest.raises(SwinsegError, match="runs on the CPU; use --device cpu"):
        backends.resolve_backend("auto", torch.device("cuda"), onnx_only=True)
    assert Predictor(model, card, protocol="reference").backend == "torch"  # auto keeps the published path exact


def test_foreign_and_broken_onnx_files_are_refused(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(SwinsegError, match="broken.onnx: not a readable ONNX file"):
        backends.read_onnx(broken)
    import onnx

    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1])], [value("y", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(SwinsegError, match="without swinseg's metadata"):
        backends.read_onnx(foreign)
    with pytest.raises(SwinsegError, match="no such file"):
        backends.read_onnx(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_openvino_networks_freed_in_any_order_leave_signals_deliverable(exported, tmp_path):
    # Each OpenVINO core installed a signal stack of its own and restored the previous one when freed; cores
    # freed out of order left a freed stack installed, so a DataLoader worker's exit (SIGCHLD) killed the process.
    script = tmp_path / "signals.py"
    script.write_text(f"""
import os, signal
from pathlib import Path
from swinseg import backends
networks = [backends._openvino_network(Path({str(exported)!r})) for _ in range(3)]
del networks[1], networks[0]
networks.clear()
signal.signal(signal.SIGCHLD, lambda *_: None)
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print("delivered")
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "delivered"), done.stderr[-500:]
