"""What a prediction gives back (`Prediction`), and the volume-level calls that Predictor and Ensemble share
(`VolumePredictor`: prepare a scan, predict it, post-process, map back to the scan's array order)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from swinseg import io, postprocess
from swinseg.config import ModelCard
from swinseg.qc import Agreement

SliceProgress = Callable[[int], None]


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 labels, uint16 beyond 256 classes."""
    return np.uint8 if num_classes <= 256 else np.uint16


@dataclass(frozen=True)
class Prediction:
    """Labels (uint8, uint16 beyond 256 classes) and, where asked, softmax probabilities (C, ...) over the same
    voxels (float16; float32 holding float16 values for an ensemble's members)."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None

    def map(self, function: Callable[[np.ndarray], np.ndarray]) -> Prediction:
        """Both arrays through `function` (e.g. back to a scan's array order)."""
        probabilities = None if self.probabilities is None else function(self.probabilities)
        return Prediction(function(self.labels), probabilities)


class VolumePredictor(ABC):
    """One model or several: a scan prepared for it, predicted, post-processed and mapped back (swinseg.runner
    uses any of them)."""

    card: ModelCard
    num_classes: int
    agreement: Agreement | None  # set (swinseg.qc): predictions counted against their consensus

    @abstractmethod
    def prepare(self, volume: io.Volume, plane: str | None = None) -> Any:
        """The scan laid out for prediction; its `restore` maps results back to the scan's array order."""

    @abstractmethod
    def predict_prepared(self, prepared: Any, *, probabilities: bool = False,
                         progress: SliceProgress | None = None) -> Prediction:
        """Labels (and probabilities if asked) in the prepared layout."""

    @abstractmethod
    def slice_count(self, prepared: Any) -> int:
        """Slices a prediction of `prepared` goes through (for progress bars)."""

    @property
    @abstractmethod
    def labels_only(self) -> bool:
        """Whether predictions come without probabilities (the reference protocol)."""

    @abstractmethod
    def agreement_counter(self) -> VolumePredictor | None:
        """What counts the agreement of several predictions of a scan (TTA flips, ensemble members); None when
        one prediction is all there is."""

    def predict_volume(self, volume: io.Volume, *, plane: str | None = None, classes: Sequence[int] | None = None,
                       keep_largest: bool = False, probabilities: bool = False,
                       progress: SliceProgress | None = None) -> Prediction:
        """Labels (and softmax probabilities (C, ...) float16 if asked) in the volume's own array order (write
        them with `io.write_volume(path, prediction.labels, volume)`). Post-processing (classes, keep_largest)
        applies to the labels only."""
        prepared = self.prepare(volume, plane)
        prediction = self.predict_prepared(prepared, probabilities=probabilities, progress=progress)
        self.postprocess(prediction.labels, classes, keep_largest)
        return prediction.map(lambda array: np.ascontiguousarray(prepared.restore(array)))

    @staticmethod
    def postprocess(labels: np.ndarray, classes: Sequence[int] | None, keep_largest: bool) -> np.ndarray:
        """Class subset, then the largest connected component per class (in place)."""
        if classes is not None:
            postprocess.keep_classes(labels, classes)
        if keep_largest:
            postprocess.keep_largest_component(labels)
        return labels
