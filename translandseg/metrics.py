"""The paper's metrics, from a confusion matrix accumulated over all pixels of a data set."""

from typing import Dict

import numpy as np


class ConfusionMatrix:
    """2x2 counts: rows are the truth (background, landslide), columns the prediction."""

    def __init__(self) -> None:
        self.counts = np.zeros((2, 2), dtype=np.int64)

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
        index = 2 * truth.astype(np.int64).ravel() + prediction.astype(np.int64).ravel()
        self.counts += np.bincount(index, minlength=4).reshape(2, 2)

    def summary(self) -> Dict[str, float]:
        """Overall accuracy, precision, recall, F1 and IoU of landslides, mIoU of both classes.

        A ratio with nothing to count (e.g. precision with no landslide predicted) is 0.
        """
        (tn, fp), (fn, tp) = self.counts
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        iou_landslide = _ratio(tp, tp + fp + fn)
        iou_background = _ratio(tn, tn + fp + fn)
        return {
            "overall_accuracy": _ratio(tp + tn, self.counts.sum()),
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "iou": iou_landslide,
            "miou": (iou_landslide + iou_background) / 2,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0
