"""NoC: how many simulated clicks the app's correction engine needs to reach an IoU with the label.

Each image is corrected in a real ``CorrectionSession`` (the engine the app uses), starting from
the automatic mask or from an empty one; every click goes where ``click_simulation.next_click``
puts it (the deepest pixel of the larger error). NoC@t is the number of clicks after which the
IoU first reaches t (0 if the start already does), ``max_clicks`` when it never does.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .click_simulation import next_click
from .correction import CorrectionError, CorrectionSession
from .data import Pair, load_pair
from .download import sha256_of
from .embedding_cache import EmbeddingCache
from .loading import LoadedModel
from .predict import Predictor
from .prompting import PointPrompter
from .raster import RasterImage

THRESHOLDS = (0.85, 0.90)
MAX_CLICKS = 20


def mask_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two bool masks; two empty masks agree fully."""
    union = np.count_nonzero(prediction | truth)
    return np.count_nonzero(prediction & truth) / union if union else 1.0


def iou_curve(session: CorrectionSession, truth: np.ndarray, valid: np.ndarray, max_clicks: int) -> List[float]:
    """IoU before any click and after each simulated click (padded with the last value)."""
    curve = [mask_iou(session.mask & valid, truth)]
    while len(curve) <= max_clicks:
        click = next_click(session.mask, truth, valid)
        if click is None:
            break
        try:
            session.click(click.x + 0.5, click.y + 0.5, click.positive)
        except CorrectionError:
            pass  # the click is spent, as an analyst's would be
        curve.append(mask_iou(session.mask & valid, truth))
    return curve + [curve[-1]] * (max_clicks + 1 - len(curve))


def clicks_to_reach(curve: Sequence[float], threshold: float) -> int:
    return next((clicks for clicks, iou in enumerate(curve) if iou >= threshold), len(curve) - 1)


def noc(loaded: LoadedModel, pairs: Sequence[Pair], start: str = "automatic", max_clicks: int = MAX_CLICKS,
        thresholds: Sequence[float] = THRESHOLDS, progress: bool = False,
        cache: Optional[EmbeddingCache] = None) -> Dict[str, float]:  # fmt: skip
    """Mean NoC@t over ``pairs`` (keys ``noc85``, ``noc90``), starting from the ``automatic`` or ``empty`` mask.
    Pass one ``cache`` to several calls on the same images to encode each image once."""
    if start not in ("automatic", "empty"):
        raise ValueError(f"start must be 'automatic' or 'empty', not {start!r}")
    cache = cache if cache is not None else EmbeddingCache(256)
    prompter = PointPrompter(loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, cache)
    predictor: Optional[Predictor] = Predictor(loaded.model) if start == "automatic" else None
    counts = {t: [] for t in thresholds}
    for pair in tqdm(pairs, desc=f"NoC from {start} masks", disable=not progress):
        _, valid, truth = load_pair(pair)
        with RasterImage(pair.image) as image:
            initial = predictor.predict_mask(image) if predictor else np.zeros(truth.shape, bool)
            session = CorrectionSession(image, sha256_of(pair.image), initial, prompter)
            curve = iou_curve(session, truth, valid, max_clicks)
        for t in thresholds:
            counts[t].append(clicks_to_reach(curve, t))
    return {f"noc{round(100 * t)}": float(np.mean(counts[t])) for t in thresholds}
