"""Evaluate a model on labelled pairs at each label's own resolution, as ``predict`` sees them."""

from typing import Dict, Sequence

from tqdm import tqdm

from .data import Pair, load_pair
from .metrics import ConfusionMatrix
from .predict import Predictor


def evaluate(predictor: Predictor, pairs: Sequence[Pair], progress: bool = False) -> Dict[str, float]:
    """The paper's metrics over all pixels of ``pairs`` (see ``ConfusionMatrix.summary``)."""
    return confusion(predictor, pairs, progress).summary()


def confusion(predictor: Predictor, pairs: Sequence[Pair], progress: bool = False) -> ConfusionMatrix:
    """The confusion matrix of the predictor's masks against the labels, over all pixels of ``pairs``."""
    matrix = ConfusionMatrix()
    for pair in tqdm(pairs, desc="evaluate", unit="image", disable=not progress):
        rgb, valid, label = load_pair(pair)
        matrix.update(predictor.predict_array(rgb, valid) > predictor.threshold, label)
    return matrix
