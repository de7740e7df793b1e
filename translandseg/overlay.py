"""Draw a mask and the clicks that made it over an image, for review in the browser."""

from typing import Iterable, Tuple

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOUR = np.array([255, 40, 40], np.float32)
POSITIVE_COLOUR, NEGATIVE_COLOUR = (40, 220, 60), (255, 40, 40)


def resize_mask(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """``mask`` brought to ``shape`` (height, width) by nearest neighbour."""
    if mask.shape == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows[:, None], cols[None, :]]


def render(rgb: np.ndarray, mask: np.ndarray, opacity: float,
           points: Iterable[Tuple[float, float, bool]] = (),
           boxes: Iterable[Tuple[float, float, float, float, bool]] = ()) -> np.ndarray:  # fmt: skip
    """``rgb`` with mask pixels tinted at ``opacity``, clicks as green (positive) or red (negative)
    dots (a white ring, so a negative dot shows on the red mask) and boxes as outlines; coordinates
    are in ``rgb`` pixels. Markers scale with the picture, so they look alike on screen whatever
    the image's size."""
    out = rgb.astype(np.float32)
    shown = resize_mask(mask, rgb.shape[:2])
    out[shown] = (1 - opacity) * out[shown] + opacity * MASK_COLOUR
    picture = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(4, round(max(rgb.shape[:2]) / 70))
    ring = max(1, radius // 3)
    for x, y, positive in points:
        colour = POSITIVE_COLOUR if positive else NEGATIVE_COLOUR
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255),
                     width=ring)  # fmt: skip
    for x0, y0, x1, y1, positive in boxes:
        draw.rectangle((x0, y0, x1, y1), outline=POSITIVE_COLOUR if positive else NEGATIVE_COLOUR, width=2)
    return np.asarray(picture)
