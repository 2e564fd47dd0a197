"""Every examples/*/run.sh runs end to end in a tiny configuration, so the examples cannot rot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from shared_files import GOLDEN, needs_shared

from swinseg.config import load_card
from swinseg.io import read_volume, write_volume
from swinseg.phantom import write_phantom_dataset

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out

ROOT = Path(__file__).resolve().parents[1]
TINY_SHAPE = ["--shape", "6", "64", "64"]


def run_example(name: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", **variables)
    result = subprocess.run(["bash", str(ROOT / "examples" / name / "run.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def phantoms(folder: Path, cases: int, seed: int) -> Path:
    return write_phantom_dataset(folder, cases, seed, shape=(6, 64, 64), spacing=(5.0, 5.0, 5.0))


def write_card(path: Path, **network: object) -> Path:
    card = load_card("swin_unet_test").to_dict()
    card["network"].update(network)
    card.pop("name")
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    return path


@needs_shared
def test_synapse_paper(tmp_path):
    phantoms(tmp_path / "nnunet", 3, seed=0)
    subprocess.run([sys.executable, "-m", "swinseg", "preprocess", str(tmp_path / "nnunet"), "-o",
                    str(tmp_path / "synapse"), "--model", "swin_unet_test", "--test-cases", "phantom_002"],
                   check=True, capture_output=True)
    # the small golden classifier (embed 24, window 7) initialises a 64-pixel, window-2 Swin-Unet
    card = write_card(tmp_path / "card.yaml", embed_dim=24)
    result = run_example("synapse_paper", tmp_path, SYNAPSE=str(tmp_path / "synapse"), MODEL=str(card),
                         PRETRAINED=str(GOLDEN / "swin_classifier_small_official.pth"), RUN=str(tmp_path / "run"),
                         EPOCHS="1", BATCH="4", DEVICE="cpu", TRAIN_ARGS="--num-workers 0")
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["protocol"] == "synapse-paper" and summary["definitions"]["distance_unit"] == "voxels"
    assert summary["n_cases"] == 1 and (tmp_path / "run" / "final.safetensors").is_file()
    assert [p.name for p in (tmp_path / "run" / "predictions").iterdir()] == ["phantom_002.nii.gz"]
    assert "spleen" in result.stdout


@needs_shared
def test_reference_checkpoint(tmp_path):
    data = phantoms(tmp_path / "data", 1, seed=3)
    scans = tmp_path / "scans"
    scans.mkdir()
    (data / "imagesTr" / "phantom_000_0000.nii.gz").rename(scans / "scan_0000.nii.gz")  # nnU-Net naming
    card = load_card("swin_unet_tiny").to_dict()  # the golden checkpoint: embed 24, heads 1-2-4-8, 224, window 7
    card["network"].update(embed_dim=24, num_heads=[1, 2, 4, 8])
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")
    run_example("reference_checkpoint", tmp_path, CHECKPOINT=str(GOLDEN / "swin_unet_small_official.pth"),
                SCANS=str(scans), MODEL=str(tmp_path / "small.yaml"), OUT=str(tmp_path / "out"))
    mask = read_volume(tmp_path / "out" / "scan.nii.gz")
    assert mask.array.shape == read_volume(scans / "scan_0000.nii.gz").array.shape
    assert (tmp_path / "out" / "scan.png").stat().st_size > 1000


def test_own_dataset_finetune(tmp_path):
    data = phantoms(tmp_path / "data", 3, seed=0)
    new = tmp_path / "new"
    (new / "labelsTr").mkdir(parents=True)
    (new / "imagesTr").symlink_to(data / "imagesTr")
    remap = np.array([0, 1, 0, 2, 2, 0], dtype=np.uint8)  # liver stays, both kidneys become "kidney"
    for label_file in sorted((data / "labelsTr").iterdir()):
        label = read_volume(label_file)
        write_volume(new / "labelsTr" / label_file.name, remap[label.array], like=label)
    (new / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "kidney": 2},
                                                  "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                  "numTraining": 3}), encoding="utf-8")
    run_example("own_dataset_finetune", tmp_path, DATA=str(data), NEW_DATA=str(new), HELDOUT="phantom_002",
                RUN=str(tmp_path / "run"),
                MODEL="swin_unet_test", EPOCHS="1", FINETUNE_EPOCHS="1",
                TRAIN_ARGS="--num-workers 0 --batch-size 4 --val-every 1 --device cpu")
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text(encoding="utf-8"))
    assert "kidney" in json.dumps(summary) and "spleen" not in json.dumps(summary)
    assert summary["n_cases"] == 1 and not summary["missing_predictions"]  # only the held-out case


def test_multi_gpu_on_two_cpu_processes(tmp_path):
    data = phantoms(tmp_path / "data", 3, seed=0)
    run_example("multi_gpu", tmp_path, DATA=str(data), SCANS=str(data / "imagesTr"), NPROC="2",
                RUN=str(tmp_path / "run"), MODEL="swin_unet_test",
                TRAIN_ARGS="--epochs 1 --batch-size 4 --num-workers 0 --val-every 1 --device cpu",
                PREDICT_ARGS="--device cpu")
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == [
        f"phantom_00{i}.nii.gz" for i in range(3)]


def test_into_pacs(tmp_path, checkpoint):
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk
    from dicom_files import dicom_series
    from dicom_judges import assert_valid_rtstruct, assert_valid_seg
    from shared_files import EXAMPLE_CT

    if EXAMPLE_CT.exists():
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_CT)))[60:68].astype(np.int16)
    else:
        ct = np.random.default_rng(0).integers(-1000, 1000, (8, 48, 48)).astype(np.int16)
    dicom_series(tmp_path / "incoming" / "patient42" / "ct", ct, spacing=3.0, pixel_mm=3.0)
    run_example("into_pacs", tmp_path, SERIES=str(tmp_path / "incoming"), CHECKPOINT=str(checkpoint),
                OUT=str(tmp_path / "pacs_out"))
    out = tmp_path / "pacs_out"
    seg = hd.seg.segread(out / "patient42_ct.dcm")  # nested series: named by their path
    assert seg.Modality == "SEG" and len(seg.segment_numbers) == 5
    assert json.loads((out / "patient42_ct_statistics.json").read_text(encoding="utf-8"))["case"] == "patient42_ct"
    assert (out / "patient42_ct_preview.png").read_bytes()[:4] == b"\x89PNG" and (out / "statistics.csv").is_file()
    rtstruct = pydicom.dcmread(out / "rtstruct" / "patient42_ct.dcm")
    assert rtstruct.Modality == "RTSTRUCT" and rtstruct.FrameOfReferenceUID == seg.FrameOfReferenceUID
    assert_valid_seg(out / "patient42_ct.dcm")
    volume = read_volume(tmp_path / "incoming" / "patient42" / "ct")
    uids = [pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID for file in volume.source_files]
    labels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)  # = RTSTRUCT's
    assert_valid_rtstruct(out / "rtstruct" / "patient42_ct.dcm", labels, volume, load_card("swin_unet_test").classes,
                          tmp_path / "judge")
