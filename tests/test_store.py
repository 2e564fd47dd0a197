"""The model store: `swinseg models add|list|show|remove|default|export`, stored names and the default model
in predict/evaluate/export/finetune, digests, concurrent adds, train --register."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_predict_cli import one_error_line, scan
from typer.testing import CliRunner

from swinseg import io, store
from swinseg.cli import app
from swinseg.config import load_card
from swinseg.errors import SwinsegError
from swinseg.model import build_model


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A clean, empty store for one test."""
    folder = tmp_path / "home"
    monkeypatch.setenv("SWINSEG_HOME", str(folder))
    return folder


def cli(*args: str | Path):
    return CliRunner().invoke(app, [*map(str, args)])


def labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_add_list_show_default_export_remove_and_add_again(checkpoint, home, tmp_path):
    added = cli("models", "add", checkpoint, "--name", "tiny", "--no-prepare")
    assert added.exit_code == 0, added.output
    assert "stored 'tiny' (default)" in added.stdout  # the first model becomes the default
    assert "predict with: swinseg predict scan.nii.gz -o mask.nii.gz" in added.stdout
    entry = store.get("tiny")
    manifest = json.loads((home / "models" / "tiny" / "manifest.json").read_text())
    assert manifest["files"]["model_0.safetensors"] == io.file_sha256(entry.members[0])
    assert manifest["card"]["classes"][1] == "liver" and manifest["added"][:4].isdigit()
    assert entry.members[0].read_bytes() == checkpoint.read_bytes()

    second = cli("models", "add", checkpoint, "--name", "other", "--no-prepare")
    assert second.exit_code == 0 and "(default)" not in second.stdout and "-m other" in second.stdout
    listed = cli("models", "list", "--json")
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny"]["default"] and not rows["other"]["default"]
    assert rows["tiny"]["classes"][1:] == ["liver", "spleen", "kidney_left", "kidney_right", "aorta"]
    assert rows["tiny"]["spacing"] == "whole slices" and rows["tiny"]["size_mb"] > 0
    table = cli("models", "list")
    assert table.exit_code == 0 and "tiny" in table.stdout and "*" in table.stdout
    shown = json.loads(cli("models", "show", "other").stdout)
    assert shown["name"] == "other" and shown["default"] is False

    assert cli("models", "default", "other").exit_code == 0
    assert store.default_name() == "other"
    again = cli("models", "add", checkpoint, "--name", "other", "--no-prepare")
    one_error_line(again, "'other' is stored already")

    exported = tmp_path / "exported"
    assert cli("models", "export", "other", "-o", exported).exit_code == 0
    assert (exported / "manifest.json").is_file() and (exported / "model_0.safetensors").is_file()
    assert cli("models", "remove", "other").exit_code == 0
    assert store.stored_names() == ["tiny"] and store.default_name() is None
    readded = cli("models", "add", exported, "--name", "other", "--default")
    assert readded.exit_code == 0, readded.output
    assert store.default_name() == "other"
    assert store.get("other").manifest["files"]["model_0.safetensors"] == manifest["files"]["model_0.safetensors"]
    one_error_line(cli("models", "show", "missing"), "no stored model 'missing'", "tiny")


def test_default_model_predicts_with_no_model_option(checkpoint, home, tmp_path):
    source = scan(tmp_path / "scan.nii.gz")
    refused = cli("predict", source, "-o", tmp_path / "none.nii.gz")
    one_error_line(refused, "no model", "swinseg models add")
    assert cli("models", "add", checkpoint, "--name", "tiny", "--no-default", "--no-prepare").exit_code == 0
    listed = cli("predict", source, "-o", tmp_path / "none.nii.gz")
    one_error_line(listed, "stored models: tiny", "swinseg models default NAME")

    assert cli("models", "default", "tiny").exit_code == 0
    result = cli("predict", source, "-o", tmp_path / "mask.nii.gz", "--backend", "torch")
    assert result.exit_code == 0, result.output
    direct = cli("predict", source, "-o", tmp_path / "direct.nii.gz", "-c", checkpoint, "--backend", "torch")
    assert direct.exit_code == 0
    assert np.array_equal(labels(tmp_path / "mask.nii.gz"), labels(tmp_path / "direct.nii.gz"))
    named = cli("predict", source, "-o", tmp_path / "named.nii.gz", "-m", "tiny", "--backend", "torch")
    assert named.exit_code == 0 and np.array_equal(labels(tmp_path / "named.nii.gz"), labels(tmp_path / "mask.nii.gz"))


@pytest.mark.slow
def test_prepared_onnx_graph_is_used_and_a_damaged_file_is_refused(checkpoint, home, tmp_path):
    pytest.importorskip("onnxruntime")
    added = cli("models", "add", checkpoint, "--name", "tiny")
    assert added.exit_code == 0, added.output
    entry = store.get("tiny")
    graph = entry.prepared[0]
    assert graph is not None
    assert entry.manifest["files"][graph.relative_to(entry.folder).as_posix()] == io.file_sha256(graph)
    source = scan(tmp_path / "scan.nii.gz")
    onnx = cli("predict", source, "-o", tmp_path / "onnx.nii.gz", "--backend", "onnxruntime")
    assert onnx.exit_code == 0, onnx.output
    assert "exported to ONNX" not in onnx.output  # the prepared graph, not the export cache
    traced = cli("predict", source, "-o", tmp_path / "torch.nii.gz", "--backend", "torch")  # the TorchScript trace
    direct = cli("predict", source, "-o", tmp_path / "direct.nii.gz", "-c", checkpoint, "--backend", "torch")
    assert traced.exit_code == 0 and direct.exit_code == 0
    assert np.array_equal(labels(tmp_path / "torch.nii.gz"), labels(tmp_path / "direct.nii.gz"))
    assert (labels(tmp_path / "onnx.nii.gz") == labels(tmp_path / "torch.nii.gz")).mean() > 0.999
    exported = cli("export", "-m", "tiny", "-o", tmp_path / "tiny.onnx")
    assert exported.exit_code == 0, exported.output

    with graph.open("r+b") as handle:  # one byte changed
        handle.seek(graph.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    refused = cli("predict", source, "-o", tmp_path / "bad.nii.gz", "--backend", "onnxruntime")
    one_error_line(refused, str(graph), "fails its sha256 check")
    for damaged in (entry.traced[0], entry.members[0]):
        damaged.write_bytes(damaged.read_bytes()[:-10])
    refused = cli("predict", source, "-o", tmp_path / "bad.nii.gz", "--backend", "torch")
    one_error_line(refused, str(entry.traced[0]), "fails its sha256 check")
    assert not (tmp_path / "bad.nii.gz").exists()
    one_error_line(cli("export", "-m", "tiny", "-o", tmp_path / "bad.onnx"), str(entry.members[0]), "sha256")


def test_a_file_is_hashed_again_only_when_its_stat_changed(checkpoint, home, monkeypatch):
    import os

    store.add(checkpoint, "tiny", prepare=False)
    entry = store.get("tiny")
    member = entry.members[0]
    entry.verified(member)  # hashed, stamp recorded
    hashed = []
    monkeypatch.setattr(store, "file_sha256", lambda path: hashed.append(path) or "0" * 64)
    assert entry.verified(member) == member and hashed == []  # unchanged: not hashed
    with pytest.raises(SwinsegError, match="fails its sha256 check"):
        entry.verify()  # export and checks hash every file
    monkeypatch.undo()
    times = member.stat()
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 1
    member.write_bytes(bytes(data))  # same size, then the same modification time: the ctime still moves
    os.utime(member, ns=(times.st_atime_ns, times.st_mtime_ns))
    with pytest.raises(SwinsegError, match="fails its sha256 check"):
        entry.verified(member)


def test_two_adds_at_once(checkpoint, home):
    errors: list[Exception] = []

    def add(name: str) -> None:
        try:
            store.add(checkpoint, name, prepare=False)
        except SwinsegError as error:
            errors.append(error)

    threads = [threading.Thread(target=add, args=(name,)) for name in ("a", "b", "same", "same")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.stored_names() == ["a", "b", "same"]
    assert len(errors) == 1 and "'same'" in str(errors[0])  # one of the two, in one line
    for name in store.stored_names():
        store.get(name).verify()
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_run_folders_reference_checkpoints_and_card_lookups(checkpoint, home, tmp_path):
    run = tmp_path / "cv"
    for fold in range(2):
        (run / f"fold_{fold}").mkdir(parents=True)
        shutil.copyfile(checkpoint, run / f"fold_{fold}" / "final.safetensors")
    (run / "config.yaml").write_text("data: /data/phantoms\nepochs: 7\nrecipe: scratch\nfolds: 2\n")
    (run / "crossval").mkdir()
    (run / "crossval" / "summary.json").write_text(json.dumps({
        "folds": [{"dice": 0.5}, {"dice": 0.7}], "pooled": {"dice": 0.6, "dice_per_class": {"liver": 0.6}}}))
    entry = store.add(run, "cv", prepare=False)
    assert [p.name for p in entry.members] == ["model_0.safetensors", "model_1.safetensors"]
    training = entry.manifest["training"]
    assert training["epochs"] == 7 and training["recipe"] == "scratch" and training["validation_dice"] == 0.6
    assert training["crossval"]["fold_dice"] == [0.5, 0.7]
    assert len(store.resolve("cv")) == 2  # an ensemble
    one_error_line(cli("export", "-m", "cv", "-o", tmp_path / "cv.onnx"), "an ensemble of 2 models")
    one_error_line(cli("finetune", "-m", "cv", "--data", tmp_path, "-o", tmp_path / "ft"), "an ensemble of 2 models")

    torch.manual_seed(1)
    card = load_card("swin_unet_test")
    reference = tmp_path / "reference.pth"
    torch.save({"model": build_model(card.network).state_dict()}, reference)
    refused = cli("models", "add", reference, "--name", "ref", "--no-prepare")
    assert refused.exit_code == 1
    converted = cli("models", "add", reference, "--name", "ref", "-m", "swin_unet_test", "--no-prepare")
    assert converted.exit_code == 0, converted.output
    assert store.get("ref").card.classes == card.classes
    assert store.model_card("ref").name == "swin_unet_test" and store.model_card("swin_unet_test").name == card.name
    with pytest.raises(SwinsegError, match="letters, digits"):
        store.add(checkpoint, "../escape", prepare=False)


@pytest.mark.slow
def test_train_register_stores_the_finished_run(home, tmp_path):
    from swinseg.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "ds", 3, seed=0, shape=(4, 64, 64), spacing=(10.0, 5.5, 5.5))
    run = tmp_path / "run"
    result = cli("train", "--data", data, "--model", "swin_unet_test", "--batch-size", "4", "--val-fraction",
                 "0.34", "--num-workers", "0", "--device", "cpu", "--epochs", "1", "--val-every", "1", "-o", run,
                 "--register", "phantoms")
    assert result.exit_code == 0, result.output
    assert "stored as 'phantoms'; predict with: swinseg predict scan.nii.gz -o mask.nii.gz" in result.stdout
    entry = store.get("phantoms")
    assert entry.members[0].read_bytes() == (run / "final.safetensors").read_bytes()
    training = entry.manifest["training"]
    assert training["epochs"] == 1 and training["data"] == str(data)
    assert set(training["validation_dice_per_class"]) == {"liver", "spleen", "kidney_left", "kidney_right", "aorta"}
    refused = cli("train", "--data", data, "-o", tmp_path / "again", "--register", "phantoms")
    one_error_line(refused, "--register phantoms", "remove it first")

    tuned = cli("finetune", "-m", "phantoms", "--data", data, "--batch-size", "4", "--val-fraction", "0.34",
                "--num-workers", "0", "--device", "cpu", "--epochs", "1", "--val-every", "0", "-o", tmp_path / "ft",
                "--register", "tuned")
    assert tuned.exit_code == 0, tuned.output
    config = (tmp_path / "ft" / "config.yaml").read_text()
    assert str(entry.members[0]) in config  # started from the stored model's verified file
    assert store.get("tuned").card.classes == entry.card.classes and store.default_name() == "phantoms"
