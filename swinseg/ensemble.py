"""Ensembles: several models (folds, planes, spacings, backends) as one predictor.

Each member lays the scan out its own way (its card's orientation, plane and spacing), predicts softmax
probabilities there, and maps them back to the scan's array order; the ensemble averages them there (float32)
and takes the argmax. Members must name the same classes in the same order. Memory: two float32 copies of
(classes x scan) beyond what one model needs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from swinseg import io
from swinseg.errors import SwinsegError
from swinseg.predict import Predictor
from swinseg.prediction import Prediction, SliceProgress, VolumePredictor, label_dtype
from swinseg.preprocess import PreparedVolume
from swinseg.qc import Agreement


@dataclass
class PreparedEnsemble:
    """A scan laid out for every member; results come back in the scan's own array order already."""

    parts: list[PreparedVolume]

    @staticmethod
    def restore(array: np.ndarray) -> np.ndarray:
        return array


class Ensemble(VolumePredictor):
    """Predictors averaged on each scan's own grid; used wherever a Predictor is (swinseg.runner)."""

    def __init__(self, members: Sequence[Predictor], names: Sequence[str] | None = None) -> None:
        if not members:
            raise SwinsegError("an ensemble needs at least one model")
        names = list(names or (m.card.name for m in members))
        first = members[0]
        if any(member.labels_only for member in members):
            raise SwinsegError("--protocol reference is one published model; it does not ensemble")
        for name, member in zip(names[1:], members[1:]):
            if member.card.classes != first.card.classes:
                raise SwinsegError(f"{name} predicts {', '.join(member.card.classes)} but {names[0]} predicts "
                                   f"{', '.join(first.card.classes)}; an ensemble needs the same classes in the "
                                   "same order")
        self.members = list(members)
        self.card = first.card
        self.num_classes = first.num_classes
        self.agreement: Agreement | None = None  # set (swinseg.qc): members counted against their consensus

    @property
    def labels_only(self) -> bool:
        return False

    def agreement_counter(self) -> VolumePredictor | None:
        return self if len(self.members) > 1 else self.members[0].agreement_counter()

    def prepare(self, volume: io.Volume, plane: str | None = None) -> PreparedEnsemble:
        """The scan laid out for each member (`plane` overrides every member's, as --axis does)."""
        return PreparedEnsemble([member.prepare(volume, plane) for member in self.members])

    def slice_count(self, prepared: PreparedEnsemble) -> int:
        """Slices the members go through together (for progress bars)."""
        return sum(part.slices.shape[0] for part in prepared.parts)

    def predict_prepared(self, prepared: PreparedEnsemble, *, probabilities: bool = False,
                         progress: SliceProgress | None = None) -> Prediction:
        """Labels (and the averaged probabilities (C, ...) float16 if asked) in the scan's array order. One member
        is that model exactly (its argmax over logits, not over float32 softmax values, which can tie)."""
        if len(self.members) == 1:
            part = prepared.parts[0]
            return self.members[0].predict_prepared(part, probabilities=probabilities, progress=progress).map(
                part.restore)
        total: np.ndarray | None = None
        votes = []  # each member's labels, when their agreement is counted
        for member, part in zip(self.members, prepared.parts):
            scores = member.predict_prepared(part, probabilities=True, progress=progress, exact=True).probabilities
            assert scores is not None
            scores = part.restore(scores)
            if self.agreement is not None:
                votes.append(scores.argmax(axis=0).astype(label_dtype(self.num_classes)))
            if total is None:
                total = np.array(scores, dtype=np.float32)
            else:
                total += scores
        assert total is not None
        total /= len(self.members)
        labels = total.argmax(axis=0).astype(label_dtype(self.num_classes))
        for vote in votes:
            assert self.agreement is not None
            self.agreement.add(vote, labels)
        return Prediction(labels, total.astype(np.float16) if probabilities else None)
