"""NoC and IoU after k clicks: simulated analysts on the app's own correction engine.

Each image is corrected in a real ``CorrectionSession`` (the engine the app uses), starting from
the automatic mask or from an empty one; every click goes where ``simulation.next_click`` puts
it (the deepest pixel of the larger error, as RITM's protocol). NoC@t is the number of clicks
after which the IoU first reaches t (0 if the start already does), ``max_clicks`` when it never
does.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..data import Pair, load_pair
from ..download import sha256_of
from ..loading import LoadedModel
from ..predict import REFERENCE_PRECISION, Predictor
from ..raster import RasterImage
from .correction import CorrectionError, CorrectionSession
from .embedding_cache import EmbeddingCache
from .prompting import PointPrompter
from .simulation import next_click

THRESHOLDS = (0.85, 0.90)
MAX_CLICKS = 20
REPORTED_CLICKS = (1, 2, 3, 5, 10)
HARMFUL_DROP = 0.02  # a click that lowers IoU by more than this counts as harmful


@dataclass(frozen=True)
class ClickRun:
    """One image corrected by simulated clicks."""

    curve: List[float]  # IoU before any click and after each, padded with the last value
    clicks: int  # clicks played (fewer than the curve's length once the mask matched)
    fallbacks: int  # clicks the engine answered with its consistency fallback
    refused: int  # clicks the engine refused


def mask_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two bool masks; two empty masks agree fully."""
    union = np.count_nonzero(prediction | truth)
    return np.count_nonzero(prediction & truth) / union if union else 1.0


def run_clicks(session: CorrectionSession, truth: np.ndarray, valid: np.ndarray, max_clicks: int) -> ClickRun:
    """Click where the error is largest until the mask matches or ``max_clicks`` are spent."""
    curve, fallbacks, refused = [mask_iou(session.mask & valid, truth)], 0, 0
    while len(curve) <= max_clicks:
        click = next_click(session.mask, truth, valid)
        if click is None:
            break
        try:
            session.click(click.x + 0.5, click.y + 0.5, click.positive)
            fallbacks += bool(session.note)
        except CorrectionError:
            refused += 1  # the click is spent, as an analyst's would be
        curve.append(mask_iou(session.mask & valid, truth))
    return ClickRun(curve + [curve[-1]] * (max_clicks + 1 - len(curve)), len(curve) - 1, fallbacks, refused)


def clicks_to_reach(curve: Sequence[float], threshold: float) -> int:
    return next((clicks for clicks, iou in enumerate(curve) if iou >= threshold), len(curve) - 1)


def click_runs(loaded: LoadedModel, pairs: Sequence[Pair], start: str = "automatic", max_clicks: int = MAX_CLICKS,
               progress: bool = False, cache: Optional[EmbeddingCache] = None, automatic: Optional[Predictor] = None,
               focus_min_side: Optional[int] = None) -> List[ClickRun]:  # fmt: skip
    """One ``ClickRun`` per pair, starting from the ``automatic`` mask (by ``automatic``, default
    the app's predictor in float32, as training measures) or an ``empty`` one, the clicks answered
    in windows of at least ``focus_min_side`` (``CorrectionSession``'s). Pass one ``cache`` to
    several calls on the same images to encode each window once."""
    if start not in ("automatic", "empty"):
        raise ValueError(f"start must be 'automatic' or 'empty', not {start!r}")
    cache = cache if cache is not None else EmbeddingCache(256)
    prompter = PointPrompter.of(loaded, cache)
    if start == "automatic":
        automatic = automatic or Predictor(loaded.model, precision=REFERENCE_PRECISION)
    runs = []
    for pair in tqdm(pairs, desc=f"clicks from {start} masks", disable=not progress):
        _, valid, truth = load_pair(pair)
        with RasterImage(pair.image) as image:
            initial = automatic.predict_mask(image) if start == "automatic" else np.zeros(truth.shape, bool)
            session = CorrectionSession(image, sha256_of(pair.image), initial, prompter,
                                        focus_min_side=focus_min_side)  # fmt: skip
            runs.append(run_clicks(session, truth, valid, max_clicks))
    return runs


def summarise(runs: Sequence[ClickRun], thresholds: Sequence[float] = THRESHOLDS) -> Dict[str, float]:
    """Mean NoC@t (``noc85``...), mean IoU after k clicks (``iou@k``), the share of clicks that lower
    IoU by more than ``HARMFUL_DROP`` (``harmful_clicks``) and of fallback answers (``fallback_clicks``)."""
    curves = np.array([run.curve for run in runs])
    summary = {f"noc{round(100 * t)}": float(np.mean([clicks_to_reach(c, t) for c in curves])) for t in thresholds}
    summary.update({f"iou@{k}": float(curves[:, k].mean()) for k in (0, *REPORTED_CLICKS) if k < curves.shape[1]})
    drops = np.diff(curves, axis=1)  # zero where padded
    made = max(1, sum(run.clicks for run in runs))
    summary["harmful_clicks"] = float(np.sum(drops < -HARMFUL_DROP) / made)
    summary["fallback_clicks"] = float(sum(run.fallbacks for run in runs) / made)
    return summary

