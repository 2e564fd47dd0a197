"""Quality control (swinseg.qc): each signal on hand-made inputs, the score and verdict, and `predict --qc`."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swinseg import io, qc
from swinseg.cli import app
from swinseg.config import load_card

SHAPE = (6, 40, 40)


def ct_scan(shift: float = 0.0, seed: int = 0) -> io.Volume:
    """Air (-1000 HU) around a soft-tissue body (40 HU, noisy); `shift` added to every voxel (a rescaled scan)."""
    rng = np.random.default_rng(seed)
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    body = (y - 20) ** 2 + (x - 20) ** 2 < 14 ** 2
    array[np.broadcast_to(body, SHAPE)] = 40.0
    array += rng.normal(0, 10, SHAPE).astype(np.float32) + shift
    return io.Volume(array, (5.0, 2.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def organ(value: int = 1) -> np.ndarray:
    """A labelled ball inside the body, away from the edges."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    _, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    labels[np.broadcast_to((y - 20) ** 2 + (x - 20) ** 2 < 6 ** 2, SHAPE)] = value
    return labels


def fingerprint_of(volume: io.Volume) -> dict:
    """A fingerprint as training records it, by hand: this scan's percentiles as the training scans'."""
    values = np.asarray(volume.array, dtype=np.float64)
    scan = {f"p{q:g}": float(v) for q, v in zip((0.5, 50.0, 99.5), np.percentile(values, (0.5, 50, 99.5)))}
    inside = values[organ() > 0]
    return {"cases": ["a", "b"], "spacings": [[5.0, 2.0, 2.0], [5.0, 2.0, 2.0]], "shapes": [list(SHAPE)] * 2,
            "channels": [{"index": 0, "name": "CT", "scan": scan,
                          "foreground": {"mean": float(inside.mean()), "sd": 30.0}}],
            "classes": [{"label": 1, "name": "liver", "share": 1.0, "cases": 2, "objects": 2,
                         "median_object_mm3": float((organ() > 0).sum() * 20.0)}],
            "seed": 0}


def confident(labels: np.ndarray, classes: int = 6, certainty: float = 0.98) -> np.ndarray:
    """Softmax probabilities (C, ...) that put `certainty` on each voxel's label."""
    probabilities = np.full((classes, *labels.shape), (1 - certainty) / (classes - 1), dtype=np.float32)
    np.put_along_axis(probabilities, labels[None].astype(np.int64), certainty, axis=0)
    return probabilities


@pytest.fixture(scope="module")
def card():
    clean = ct_scan()
    return dataclasses.replace(load_card("swin_unet_test"), fingerprint=fingerprint_of(clean))


def test_a_clean_confident_case_is_ok(card):
    labels = organ()
    result = qc.check(ct_scan(seed=1), labels, confident(labels), card)
    assert result.verdict == "ok", result.reasons
    assert result.score == pytest.approx(1.0)
    assert result.reasons == ()


def test_a_rescaled_scan_fails_on_its_air_level(card):
    labels = organ()
    result = qc.check(ct_scan(shift=1024.0), labels, confident(labels), card)
    assert result.signals["scores"]["air_level"] == 0.0
    assert result.verdict == "fail"
    assert any("darkest voxels" in reason for reason in result.reasons)


def test_a_card_without_fingerprint_uses_the_other_signals():
    labels = organ()
    result = qc.check(ct_scan(shift=1024.0), labels, confident(labels), load_card("swin_unet_test"))
    assert "air_level" not in result.signals["scores"]
    assert result.verdict == "ok"


def test_an_all_empty_mask_fails(card):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    result = qc.check(ct_scan(), labels, confident(labels), card)
    assert (result.verdict, result.score) == ("fail", 0.0)
    assert "nothing was segmented" in result.reasons[0]


def test_entropy_is_higher_for_flatter_probabilities(card):
    labels = organ()
    sure = qc.entropy(confident(labels, certainty=0.98), labels)
    unsure = qc.entropy(confident(labels, certainty=0.4), labels)
    assert 0 < sure < unsure <= 1
    result = qc.check(ct_scan(), labels, confident(labels, certainty=0.3), card)
    assert result.signals["scores"]["entropy"] < 0.5
    assert result.verdict != "ok"


def test_tta_disagreement_lowers_the_estimated_dice(card):
    labels = organ()
    agree, disagree = qc.Agreement(6), qc.Agreement(6)
    elsewhere = np.roll(labels, 15, axis=2)  # no overlap with the consensus
    for _ in range(3):
        agree.add(labels, labels)
    disagree.add(labels, labels)
    disagree.add(elsewhere, labels)
    disagree.add(elsewhere, labels)
    assert agree.dice() == {1: 1.0}
    assert disagree.dice()[1] == pytest.approx(1 / 3)
    scores = [qc.check(ct_scan(), labels, confident(labels), card, agreement=a).score for a in (agree, disagree)]
    assert scores[1] < scores[0]


def test_far_class_volume_field_of_view_and_border_contact_are_flagged(card):
    big = np.zeros(SHAPE, dtype=np.uint8)
    big[:, 2:-2, 2:-2] = 1
    result = qc.check(ct_scan(), big, confident(big), card)
    assert result.signals["touches_border"] == []  # 2 voxels from the edges
    assert result.signals["scores"]["class_volume"] < 1.0  # 11x the training cases' liver
    big[:, 0, 5] = 1
    cropped = io.Volume(np.ascontiguousarray(ct_scan().array[:, 10:30, 10:30]), (5.0, 2.0, 2.0), (0.0, 0.0, 0.0),
                        tuple(np.eye(3).ravel()))
    small = np.ascontiguousarray(big[:, 10:30, 10:30])
    result = qc.check(cropped, small, confident(small), card)
    assert result.signals["touches_border"] == ["liver"]
    assert result.signals["scores"]["field_of_view"] < 1.0
    speckle = organ()
    speckle[::2, ::5, ::5] = 1
    assert qc.check(ct_scan(), speckle, confident(speckle), card).signals["fragment_share"] > 0.05


def test_class_volume_is_judged_against_the_training_cases_volumes_not_their_specks(card):
    labels = organ()
    organ_ml = float((labels > 0).sum() * 20.0 / 1000)
    specks = {"label": 1, "name": "liver", "share": 1.0, "cases": 2, "objects": 40, "median_object_mm3": 20.0}
    with_volumes = dict(card.fingerprint, classes=[dict(specks, median_case_ml=organ_ml)])
    result = qc.check(ct_scan(seed=1), labels, confident(labels), dataclasses.replace(card, fingerprint=with_volumes))
    assert result.signals["scores"]["class_volume"] == pytest.approx(1.0)  # the organ's own volume: fine
    for factor, flagged in ((4.0, False), (8.0, True)):  # a liver 8x smaller than usual is worth a look
        typical = dict(card.fingerprint, classes=[dict(specks, median_case_ml=organ_ml * factor)])
        score = qc.check(ct_scan(seed=1), labels, confident(labels),
                         dataclasses.replace(card, fingerprint=typical)).signals["scores"]["class_volume"]
        assert (score < 1.0) == flagged
    older = dict(card.fingerprint, classes=[specks])  # a card from before median_case_ml: the object estimate
    result = qc.check(ct_scan(seed=1), labels, confident(labels), dataclasses.replace(card, fingerprint=older))
    assert result.signals["scores"]["class_volume"] < 1.0
    assert any(reason.startswith("class volume far from the training cases: liver") for reason in result.reasons)


def run(*args: str | Path):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_predict_qc_writes_blocks_and_a_worst_first_csv(checkpoint, card, tmp_path, monkeypatch):
    """A random network's confidence is anyone's guess: the confidence signals are lenient here, so that the
    verdicts come from the inputs' intensities against a hand-made fingerprint (ok, review, fail)."""
    for name in ("entropy", "agreement", "fragments", "touches_border", "missing_classes", "class_volume",
                 "foreground_intensity", "field_of_view"):
        monkeypatch.setitem(qc.THRESHOLDS, name, (1e9, 2e9, 0.0))
    real = qc.check
    monkeypatch.setattr(qc, "check", lambda volume, labels, probabilities, model_card, **kw: real(
        volume, labels, probabilities, dataclasses.replace(model_card, fingerprint=card.fingerprint), **kw))
    spread = card.fingerprint["channels"][0]["scan"]["p99.5"] - card.fingerprint["channels"][0]["scan"]["p0.5"]
    folder = tmp_path / "in"
    for name, shift in (("good", 0.0), ("shifted", 0.2 * spread), ("rescaled", 1024.0)):
        scan = ct_scan(shift=shift, seed=2)
        io.write_volume(folder / f"{name}.nii.gz", scan.array, scan)
    result = run(folder, "-c", checkpoint, "-o", tmp_path / "out", "--qc", "--device", "cpu", "--backend", "torch")
    assert result.exit_code == 0, result.output
    blocks = {name: json.loads((tmp_path / "out" / f"{name}_statistics.json").read_text())["qc"]
              for name in ("good", "shifted", "rescaled")}
    assert {name: block["verdict"] for name, block in blocks.items()} == {
        "good": "ok", "shifted": "review", "rescaled": "fail"}
    assert set(blocks["good"]) == {"verdict", "score", "reasons", "signals"}
    assert 0.0 <= blocks["shifted"]["score"] <= 1.0
    with open(tmp_path / "out" / "qc.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == ["rescaled", "shifted", "good"]
    assert "darkest voxels" in rows[0]["reasons"]
    lines = [line for line in result.stdout.splitlines() if line.startswith("qc ")]
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("qc ") and not any("good" in line for line in lines)
