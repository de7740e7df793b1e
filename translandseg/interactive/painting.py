"""Edits by hand, for where the model cannot draw what the analyst means: brush and eraser strokes
and filled polygons, applied at full resolution.

A ``Stroke`` covers the pixels whose centres lie within ``radius`` of its path (a polyline with
round ends), plus the pixels its points fall in, so even a one-pixel brush leaves a trace. A
``Polygon`` covers the pixels whose centres lie inside it. Positive adds landslide, negative
removes it. Coordinates are full-resolution image pixels (pixel i spans [i, i + 1)); what lies
off the image is clipped. The footprint is a pure function of the prompt and the image's size,
so replaying stored strokes reproduces a mask bit for bit.
"""

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from rasterio.features import rasterize
from rasterio.transform import Affine

from .refinement import WindowBox

Point = Tuple[float, float]  # (x, y) in image pixels


@dataclass(frozen=True)
class Stroke:
    points: Tuple[Point, ...]
    radius: float  # image pixels
    positive: bool  # brush (True) or eraser (False)


@dataclass(frozen=True)
class Polygon:
    points: Tuple[Point, ...]  # the outline, closed implicitly
    positive: bool


Painting = (Stroke, Polygon)


@dataclass(frozen=True)
class Footprint:
    """The pixels a stroke or polygon covers, within the image."""

    window: WindowBox  # the covered pixels' bounding box, clipped to the image
    covered: np.ndarray  # bool, the window's shape
    clipped: bool  # part of it lay off the image


def footprint(prompt, shape: Tuple[int, int]) -> Footprint:
    """What ``prompt`` (a Stroke or a Polygon) covers on an image of ``shape`` (height, width)."""
    if isinstance(prompt, Stroke):
        return _stroke_footprint(prompt, shape)
    return _polygon_footprint(prompt, shape)


def _bounds(points, reach: float, shape: Tuple[int, int]) -> Tuple[WindowBox, bool]:
    """The window of pixels within ``reach`` of the points' bounding box, clipped; and whether it was."""
    xs, ys = np.array(points, float).T
    x0, y0 = math.floor(xs.min() - reach), math.floor(ys.min() - reach)
    x1, y1 = math.ceil(xs.max() + reach), math.ceil(ys.max() + reach)
    height, width = shape
    clipped = x0 < 0 or y0 < 0 or x1 > width or y1 > height
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)), clipped


def _stroke_footprint(stroke: Stroke, shape: Tuple[int, int]) -> Footprint:
    window, clipped = _bounds(stroke.points, stroke.radius, shape)
    col, row, width, height = window
    covered = np.zeros((height, width), bool)
    if not covered.size:
        return Footprint(window, covered, True)
    points = np.array(stroke.points, float)
    segments = zip(points, points[1:], strict=False) if len(points) > 1 else [(points[0], points[0])]
    for a, b in segments:
        _cover_segment(covered, col, row, a, b, stroke.radius)
    for x, y in np.floor(points).astype(int):  # the pixels under the points themselves
        if 0 <= x - col < width and 0 <= y - row < height:
            covered[y - row, x - col] = True
    return Footprint(window, covered, clipped)


def _cover_segment(covered: np.ndarray, col: int, row: int, a: np.ndarray, b: np.ndarray, radius: float) -> None:
    """Mark the pixels of ``covered`` (at image offset col, row) whose centres lie within
    ``radius`` of the segment a-b; only the segment's own bounding box is computed."""
    height, width = covered.shape
    x0, y0 = max(math.floor(min(a[0], b[0]) - radius) - col, 0), max(math.floor(min(a[1], b[1]) - radius) - row, 0)
    x1 = min(math.ceil(max(a[0], b[0]) + radius) - col, width)
    y1 = min(math.ceil(max(a[1], b[1]) + radius) - row, height)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + col + 0.5 - a[0], ys + row + 0.5 - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = np.clip((px * dx + py * dy) / length2, 0, 1) if length2 else 0.0
    distance2 = (px - t * dx) ** 2 + (py - t * dy) ** 2
    covered[y0:y1, x0:x1] |= distance2 <= radius * radius


def _polygon_footprint(polygon: Polygon, shape: Tuple[int, int]) -> Footprint:
    window, clipped = _bounds(polygon.points, 0, shape)
    col, row, width, height = window
    if len(polygon.points) < 3 or not width or not height:
        return Footprint(window, np.zeros((height, width), bool), clipped)
    ring = [*polygon.points, polygon.points[0]]
    geometry = {"type": "Polygon", "coordinates": [ring]}
    burnt = rasterize([(geometry, 1)], out_shape=(height, width), transform=Affine.translation(col, row),
                      fill=0, dtype="uint8")  # fmt: skip
    return Footprint(window, burnt.astype(bool), clipped)
