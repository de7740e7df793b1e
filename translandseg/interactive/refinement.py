"""What one click changes: the region it refines, the window the decoder sees, and the merge.

These are plain array functions, shared by the correction engine (``correction``) and by the
point decoder's training (``training``), so the decoder is trained on exactly what it is given
in use:

1. **Region.** The connected parts of the current mask under the click or within ``REACH``
   pixels of it (8-connected, searched within the largest window around the click). Empty when
   the click is on background far from any landslide.
2. **Window.** A square around the region and the click, enlarged by ``FOCUS_EXPANSION``, never
   smaller than ``min_side`` nor larger than ``max_side`` (and never larger than the image),
   its start snapped to 16 pixels so that nearby clicks share one cached embedding. With
   ``min_side`` at least the image's side the window is the whole image.
3. **Merge.** The decoder sees every click inside the window and the current mask there (as
   logits, ``mask_logits``). A positive click replaces the region by the decoder's answer, kept
   to the parts of it that touch the region or the click; a negative click only removes pixels
   of the region, and of those only the piece it lands in (``cut_at_click``): strips the answer
   shaves off elsewhere along the outline, or distant parts it drops, stay. Other landslides in
   the window are never touched.
4. **Consistency.** Clicks are constraints. When the answer leaves the clicked pixel with the
   wrong label, or gives an earlier click in the window the other label while the current mask
   still honours that click, the answer is dropped and a disk around the click is added
   (positive) or cut from the region (negative) instead, and the caller is told why. The disk
   reaches the nearest pixel that already carries the clicked label (a click in the middle of a
   missed strip fills it up to the mask's edge), at least ``FALLBACK_OUTPUT_PIXELS`` decoder
   pixels (and ``REACH``), at most ``FALLBACK_REACH`` times that and, beyond the smallest,
   ``FALLBACK_WINDOW_SHARE`` of the window's longer side, so that on a small image a click stays
   a local edit (bench/README.md: on 128² patches the wider disks were most of the clicks that
   lowered IoU).
5. **Priming.** A decoder trained so (``PointPrompter.primed``) is shown that disk edit already
   made in its ``mask_input``, and refines it; the merge and its consistency check are the same.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

WindowBox = Tuple[int, int, int, int]  # col_off, row_off, width, height

REACH = 3  # pixels: a click this close to a landslide refines it
FOCUS_EXPANSION = 1.4  # the window's side over the region's longest side
SNAP = 16  # window starts are multiples of this
MASK_LOGIT = 8.0  # the logit that a fully landslide (or background) pixel of the current mask gets
FALLBACK_OUTPUT_PIXELS = 2  # the consistency disk's smallest radius, in decoder output pixels
FALLBACK_REACH = 4  # its largest radius over its smallest
FALLBACK_WINDOW_SHARE = 0.05  # and its largest radius, when larger than the smallest, over the window's longer side
LINK_OUTPUT_PIXELS = 1.5  # a negative click's cut: links narrower than this (decoder output pixels) are broken
CUT_DEPTHS = 2  # and it reaches this many times the click's depth in the mask from the click
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class PointClick:
    x: int  # column of the clicked pixel
    y: int  # row
    positive: bool


@dataclass(frozen=True)
class Refinement:
    """What the decoder is asked for one click."""

    window: WindowBox
    region: np.ndarray  # bool, the window's shape: the region the click refines
    points: Tuple[Tuple[float, float], ...]  # the clicked pixels' indices in the window (x, y)
    labels: Tuple[int, ...]  # 1 landslide, 0 background


def click_region(mask: np.ndarray, click: PointClick, max_side: int) -> Tuple[np.ndarray, WindowBox]:
    """(region, area): the region a click refines, within the ``area`` searched around it."""
    area = centred_window(click.x, click.y, max_side, mask.shape)
    col, row, width, height = area
    part = mask[row : row + height, col : col + width]
    labels, _ = ndimage.label(part, _EIGHT)
    near = _disk(part.shape, click.x - col, click.y - row, REACH)
    ids = np.unique(labels[near])
    ids = ids[ids > 0]
    return (np.isin(labels, ids) if len(ids) else np.zeros(part.shape, bool)), area


def focus_window(region: np.ndarray, area: WindowBox, click: PointClick, shape: Tuple[int, int],
                 min_side: int, max_side: int) -> WindowBox:  # fmt: skip
    """The square window the decoder sees for ``click`` on ``region`` (found in ``area``)."""
    top, left, bottom, right = click.y, click.x, click.y + 1, click.x + 1
    rows, cols = np.nonzero(region)
    if len(rows):
        top, bottom = min(top, rows.min() + area[1]), max(bottom, rows.max() + area[1] + 1)
        left, right = min(left, cols.min() + area[0]), max(right, cols.max() + area[0] + 1)
    side = int(np.ceil(FOCUS_EXPANSION * max(bottom - top, right - left)))
    side = min(max(side, min_side), max_side)
    if side >= max_side:  # a region larger than the largest window: the part around the click
        return centred_window(click.x, click.y, side, shape)
    return _placed((top + bottom) / 2, (left + right) / 2, side, shape)


def centred_window(x: float, y: float, side: int, shape: Tuple[int, int]) -> WindowBox:
    """A window of ``side`` (at most the image) centred on (x, y) as far as the image allows."""
    return _placed(y + 0.5, x + 0.5, side, shape)


def _placed(centre_row: float, centre_col: float, side: int, shape: Tuple[int, int]) -> WindowBox:
    height, width = min(side, shape[0]), min(side, shape[1])
    row = _snapped_start(centre_row - height / 2, height, shape[0])
    col = _snapped_start(centre_col - width / 2, width, shape[1])
    return col, row, width, height


def _snapped_start(start: float, size: int, length: int) -> int:
    snapped = int(round(start / SNAP)) * SNAP
    return int(min(max(snapped, 0), length - size))


def plan(mask: np.ndarray, clicks: Sequence[PointClick], click: PointClick, min_side: int,
         max_side: int) -> Refinement:  # fmt: skip
    """The refinement for ``click`` on ``mask``, given the ``clicks`` that came before it."""
    region, area = click_region(mask, click, max_side)
    window = focus_window(region, area, click, mask.shape, min_side, max_side)
    col, row, width, height = window
    inside = [c for c in (*clicks, click) if col <= c.x < col + width and row <= c.y < row + height]
    return Refinement(
        window,
        _moved(region, area, window),
        tuple((float(c.x - col), float(c.y - row)) for c in inside),  # as the shipped decoder was trained
        tuple(int(c.positive) for c in inside),
    )


def _moved(region: np.ndarray, area: WindowBox, window: WindowBox) -> np.ndarray:
    """``region`` (laid out in ``area``) laid out in ``window``."""
    out = np.zeros((window[3], window[2]), bool)
    left, top = max(area[0], window[0]), max(area[1], window[1])
    right = min(area[0] + area[2], window[0] + window[2])
    bottom = min(area[1] + area[3], window[1] + window[3])
    if left < right and top < bottom:
        out[top - window[1] : bottom - window[1], left - window[0] : right - window[0]] = region[
            top - area[1] : bottom - area[1], left - area[0] : right - area[0]
        ]
    return out


def merged(current: np.ndarray, refinement: Refinement, answer: np.ndarray, click: PointClick,
           valid: Optional[np.ndarray] = None, output_side: int = 256) -> Tuple[np.ndarray, str]:  # fmt: skip
    """(the window's new mask, why the consistency fallback was applied: "" when it was not).

    Args:
        current: the current mask within the window.
        answer: the decoder's mask within the window.
        click: in image pixels.
        valid: the window's valid pixels (default all).
        output_side: the decoder's output side, which sets the fallback disk's size.
    """
    region = refinement.region
    x, y = click.x - refinement.window[0], click.y - refinement.window[1]
    if click.positive:
        seeds = region | _disk(region.shape, x, y, REACH)
        labels, _ = ndimage.label(answer, _EIGHT)
        ids = np.unique(labels[seeds & answer])
        kept = np.isin(labels, ids[ids > 0])
        new = (current & ~region) | kept
    else:
        new = current & ~cut_at_click(region & ~answer, x, y, output_side, current)
    if valid is not None:
        new &= valid | current  # nothing is added on nodata
    if bool(new[y, x]) != click.positive:
        reason = f"left the clicked pixel {'unmarked' if click.positive else 'marked'}"
    elif _undoes_an_earlier_click(current, new, refinement):
        reason = "undid an earlier click"
    else:
        return new, ""
    return disk_edit(current, refinement, click, valid, output_side), reason


def cut_at_click(removed: np.ndarray, x: int, y: int, output_side: int = 256,
                 current: Optional[np.ndarray] = None) -> np.ndarray:  # fmt: skip
    """What a negative click at (x, y) takes out of the pixels its answer ``removed``: the piece it
    lands in or touches, once links narrower than ``LINK_OUTPUT_PIXELS`` decoder pixels are broken
    (a strip shaved off along the whole outline), with that piece's own edges; else a disk of that
    width around the click. With the ``current`` mask, never farther from the click than
    ``CUT_DEPTHS`` times the click's depth in it (its distance to unmarked pixels) plus that width:
    a click near the edge of a landslide trims that edge, not the landslide's far side."""
    width = max(1.0, LINK_OUTPUT_PIXELS * max(removed.shape) / output_side)
    if current is not None:
        reach = CUT_DEPTHS * _distance_to(~current, x, y, max(removed.shape)) + width + REACH
        removed = removed & _disk(removed.shape, x, y, reach)
    near = _disk(removed.shape, x, y, REACH + width)
    labels, _ = ndimage.label(ndimage.distance_transform_edt(removed) > width / 2, _EIGHT)
    ids = np.unique(labels[near])
    piece = np.isin(labels, ids[ids > 0])
    if not piece.any():
        return removed & near
    return removed & (ndimage.distance_transform_edt(~piece) <= width / 2 + 1)


def disk_edit(current: np.ndarray, refinement: Refinement, click: PointClick, valid: Optional[np.ndarray] = None,
              output_side: int = 256) -> np.ndarray:  # fmt: skip
    """The window's mask with a disk around ``click`` added (positive) or cut from its region
    (negative): the consistency fallback, and what a primed decoder is shown (``merged``'s arguments)."""
    region = refinement.region
    x, y = click.x - refinement.window[0], click.y - refinement.window[1]
    side = max(region.shape)
    smallest = max(REACH, int(np.ceil(FALLBACK_OUTPUT_PIXELS * side / output_side)))
    largest = max(smallest, min(FALLBACK_REACH * smallest, FALLBACK_WINDOW_SHARE * side))
    labelled = current if click.positive else ~current
    disk = _disk(region.shape, x, y, max(smallest, _distance_to(labelled, x, y, largest)))
    if click.positive:
        return current | (disk & (valid if valid is not None else True))
    return current & ~(disk & region)


def _undoes_an_earlier_click(current: np.ndarray, new: np.ndarray, refinement: Refinement) -> bool:
    """Whether ``new`` gives an earlier click of the window the other label where ``current`` gives
    it the click's own (a click the analyst has painted over since is no constraint)."""
    for (x, y), label in zip(refinement.points[:-1], refinement.labels[:-1], strict=True):
        row, col = int(y), int(x)
        honoured = current[row, col] == bool(label)
        if honoured and new[row, col] != bool(label):
            return True
    return False


def _distance_to(mask: np.ndarray, x: int, y: int, limit: float) -> float:
    """The distance from pixel (x, y) to the nearest True pixel of ``mask``, or ``limit`` when none is nearer."""
    reach = int(np.ceil(limit))
    top, left = max(0, y - reach), max(0, x - reach)
    rows, cols = np.nonzero(mask[top : y + reach + 1, left : x + reach + 1])
    if not len(rows):
        return limit
    return float(min(limit, np.sqrt(((rows + top - y) ** 2 + (cols + left - x) ** 2).min())))


def _disk(shape: Tuple[int, int], x: float, y: float, radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
