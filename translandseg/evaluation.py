"""Evaluate a model on labelled pairs at each label's own resolution, as ``predict`` sees them."""

from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .data import Pair, load_pair
from .metrics import ConfusionMatrix
from .predict import Predictor


def evaluate(predictor: Predictor, pairs: Sequence[Pair], progress: bool = False) -> Dict[str, float]:
    """The paper's metrics over all pixels of ``pairs`` (see ``ConfusionMatrix.summary``)."""
    return confusion(predictor, pairs, progress).summary()


def confusion(predictor: Predictor, pairs: Sequence[Pair], progress: bool = False) -> ConfusionMatrix:
    """The confusion matrix of the predictor's masks against the labels, over all pixels of ``pairs``."""
    return confusions(predictor, pairs, None, progress)[predictor.threshold]


def confusions(predictor: Predictor, pairs: Sequence[Pair], thresholds: Optional[Sequence[float]] = None,
               progress: bool = False) -> Dict[float, ConfusionMatrix]:  # fmt: skip
    """A confusion matrix for each mask threshold (default: the predictor's), from one prediction
    of each pair."""
    matrices = {t: ConfusionMatrix() for t in (thresholds or [predictor.threshold])}
    for probability, label in predictions(predictor, pairs, progress):
        for threshold, matrix in matrices.items():
            matrix.update(probability > threshold, label)
    return matrices


def predictions(predictor: Predictor, pairs: Sequence[Pair], progress: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(landslide probability, label) of each pair, one pair at a time."""
    for pair in tqdm(pairs, desc="evaluate", unit="image", disable=not progress):
        rgb, valid, label = load_pair(pair)
        yield predictor.predict_array(rgb, valid), label
