"""Simulated clicks: where an analyst would click next to correct a mask against its label.

The click goes into the larger error: a missed landslide part (a positive click) or a false
alarm (a negative click). For measuring (NoC), as RITM-style protocols do, it lands on the
error pixel farthest from the error's boundary (chessboard distance, found by erosion). For
training the click is drawn at random (``placement``): on any pixel of the larger error by area,
SAM-style (``"random"``), or, as RITM's iterative training does, in the error whose deepest
pixel lies deeper (Euclidean distance to its boundary), on a pixel deeper than half that depth
(``"inner"``), so that training sees the errors, and the places in them, that the measuring
protocol and an analyst click on.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SimulatedClick:
    x: int  # column
    y: int  # row
    positive: bool


def erode(region: np.ndarray) -> np.ndarray:
    """3x3 binary erosion; pixels outside the array count as background."""
    padded = np.pad(region, 1)
    out = region.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= padded[dy : dy + region.shape[0], dx : dx + region.shape[1]]
    return out


def interior_depth(region: np.ndarray) -> Tuple[int, int, int]:
    """(depth, row, col): how many erosions the region's deepest pixel survives, and that pixel."""
    depth, current = 0, region.astype(bool)
    if not current.any():
        return 0, -1, -1
    while True:
        eroded = erode(current)
        if not eroded.any():
            rows, cols = np.nonzero(current)
            middle = len(rows) // 2  # the middle of the deepest pixels, in reading order
            return depth + 1, int(rows[middle]), int(cols[middle])
        depth, current = depth + 1, eroded


def next_click(prediction: np.ndarray, target: np.ndarray, valid: Optional[np.ndarray] = None,
               rng: Optional[np.random.Generator] = None,
               placement: str = "random") -> Optional[SimulatedClick]:  # fmt: skip
    """The next correcting click, or None when the prediction matches the target.

    Args:
        prediction, target: bool masks of one shape.
        valid: pixels that count (default all).
        rng: draw the click at random as ``placement`` says (training); without, the deepest
            pixel of the deeper error (measuring).
        placement: with ``rng``, a name in ``PLACEMENTS``.
    """
    valid = np.ones_like(target, bool) if valid is None else valid
    missed = target & ~prediction & valid
    false_alarm = prediction & ~target & valid
    if rng is not None:
        check_placement(placement)
        return PLACEMENTS[placement](missed, false_alarm, rng)
    missed_depth, missed_row, missed_col = interior_depth(missed)
    alarm_depth, alarm_row, alarm_col = interior_depth(false_alarm)
    if missed_depth == alarm_depth == 0:
        return None
    if missed_depth >= alarm_depth:
        return SimulatedClick(missed_col, missed_row, True)
    return SimulatedClick(alarm_col, alarm_row, False)


def _random_click(missed: np.ndarray, false_alarm: np.ndarray, rng: np.random.Generator) -> Optional[SimulatedClick]:
    """Any pixel of the larger error by area."""
    positive = missed.sum() >= false_alarm.sum()
    return _drawn(missed if positive else false_alarm, positive, rng)


def _inner_click(missed: np.ndarray, false_alarm: np.ndarray, rng: np.random.Generator) -> Optional[SimulatedClick]:
    """A pixel deeper than half the largest depth, in the error that reaches it (RITM's rule)."""
    missed_depth, alarm_depth = _edge_distance(missed), _edge_distance(false_alarm)
    deepest_missed, deepest_alarm = float(missed_depth.max()), float(alarm_depth.max())
    positive = deepest_missed > deepest_alarm
    depth = missed_depth if positive else alarm_depth
    return _drawn(depth > max(deepest_missed, deepest_alarm) / 2, positive, rng)


def _edge_distance(region: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel outside ``region`` (outside the array
    counts as outside)."""
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def _drawn(candidates: np.ndarray, positive: bool, rng: np.random.Generator) -> Optional[SimulatedClick]:
    rows, cols = np.nonzero(candidates)
    if not len(rows):
        return None
    pick = int(rng.integers(len(rows)))
    return SimulatedClick(int(cols[pick]), int(rows[pick]), bool(positive))


PLACEMENTS = {"random": _random_click, "inner": _inner_click}  # how training draws a click


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {sorted(PLACEMENTS)}, not {placement!r}")
