"""Simulated clicks: where an analyst would click next to correct a mask against its label.

The click goes into the larger error: a missed landslide part (a positive click) or a false
alarm (a negative click). For measuring (NoC), as RITM-style protocols do, it lands on the
error pixel farthest from the error's boundary (chessboard distance, found by erosion); for
training, SAM-style, on an error pixel drawn at random.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


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
               rng: Optional[np.random.Generator] = None) -> Optional[SimulatedClick]:  # fmt: skip
    """The next correcting click, or None when the prediction matches the target.

    Args:
        prediction, target: bool masks of one shape.
        valid: pixels that count (default all).
        rng: draw the click at random in the chosen error (training); without, its deepest pixel.
    """
    valid = np.ones_like(target, bool) if valid is None else valid
    missed = target & ~prediction & valid
    false_alarm = prediction & ~target & valid
    if rng is not None:
        positive = missed.sum() >= false_alarm.sum()
        error = missed if positive else false_alarm
        rows, cols = np.nonzero(error)
        if not len(rows):
            return None
        pick = int(rng.integers(len(rows)))
        return SimulatedClick(int(cols[pick]), int(rows[pick]), bool(positive))
    missed_depth, missed_row, missed_col = interior_depth(missed)
    alarm_depth, alarm_row, alarm_col = interior_depth(false_alarm)
    if missed_depth == alarm_depth == 0:
        return None
    if missed_depth >= alarm_depth:
        return SimulatedClick(missed_col, missed_row, True)
    return SimulatedClick(alarm_col, alarm_row, False)
