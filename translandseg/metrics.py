"""The paper's metrics, from a confusion matrix accumulated over all pixels of a data set, and
the boundary F-score of one mask, which the paper's pixel counts do not see."""

from typing import Dict

import numpy as np
from scipy import ndimage

BOUNDARY_TOLERANCE = 2  # pixels: how far a boundary pixel may lie from the other mask's boundary


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


def boundary_f_score(prediction: np.ndarray, truth: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """The boundary F-score (Csurka et al., 2013) of two bool masks: the share of each mask's
    boundary pixels within ``tolerance`` pixels of the other's boundary (precision and recall),
    combined as F1. A boundary is a mask's pixels with a 4-neighbour outside it; the image's edge
    is no boundary. Two masks without a boundary agree fully; one without scores 0."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    predicted, true = _boundary(prediction), _boundary(truth)
    if not predicted.any() or not true.any():
        return float(not predicted.any() and not true.any())
    precision = float(np.mean(ndimage.distance_transform_edt(~true)[predicted] <= tolerance))
    recall = float(np.mean(ndimage.distance_transform_edt(~predicted)[true] <= tolerance))
    return _ratio(2 * precision * recall, precision + recall)


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=1)
