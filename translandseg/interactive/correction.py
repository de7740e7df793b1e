"""Correcting an automatic landslide mask with SAM clicks: a session per image.

A click **refines the landslide region it belongs to** (see ``refinement``): the connected part
of the current mask under the click or a few pixels from it. The point decoder sees a window
around that region (the whole image when it fits ``focus_min_side``), every click inside the
window and the current mask there, and its answer replaces the region: a positive click grows
or reshapes it (far from any landslide it starts a new region), a negative click shrinks or
deletes it, and no other landslide is touched. When the answer leaves the clicked pixel with the
wrong label, a disk around the click, reaching the nearest pixel that already has the clicked
label, is added or cut instead, and ``note`` says so.

A box adds (positive) or removes (negative) what the decoder finds inside it. Brush and eraser
strokes and polygons (``painting``) need no model: they add or remove exactly the pixels they
cover, except nodata.

Large images: a window is never larger than ``window_size`` pixels a side; the embeddings of
windows are cached, so clicks that share a window encode it once.

Every step is kept as the part of the mask it changed, so undo, redo and reset are exact, and
replaying a session's prompts (e.g. stored ones) reproduces its mask bit for bit.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from rasterio.windows import Window

from ..raster import RasterImage
from .embedding_cache import EmbeddingKey
from .painting import Painting, Polygon, Stroke, footprint
from .prompting import PointPrompter, SamPrompt
from .refinement import PointClick, WindowBox, centred_window, merged, plan

DEFAULT_WINDOW_SIZE = 1024


class CorrectionError(ValueError):
    """A click or box that cannot be applied, with the reason in words."""


@dataclass(frozen=True)
class Click:
    x: float  # image column; pixel i spans [i, i + 1)
    y: float  # image row
    positive: bool

    @property
    def pixel(self) -> PointClick:
        return PointClick(int(self.x), int(self.y), self.positive)


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    positive: bool


Prompt = Union[Click, Box, Stroke, Polygon]


@dataclass(frozen=True)
class _Step:
    """One prompt's change: the window it touched, and the mask there before and after."""

    prompts: Tuple[Prompt, ...]  # the prompts in effect after the step
    window: WindowBox
    before: np.ndarray
    after: np.ndarray
    note: str = ""


class CorrectionSession:
    def __init__(
        self,
        image: RasterImage,
        image_sha256: str,
        automatic: np.ndarray,
        prompter: Optional[PointPrompter],
        window_size: int = DEFAULT_WINDOW_SIZE,
        focus_min_side: Optional[int] = None,
    ) -> None:
        """Correct ``automatic`` (bool, the image's shape) with clicks on ``image``.

        Args:
          window_size: the largest window the decoder sees, in image pixels.
          focus_min_side: the smallest; default ``window_size``, so an image up to that size is
            seen whole. A smaller one (e.g. the base's input size) zooms in on the region, as
            focus crops do; with the shipped decoder that measured worse (bench/README.md).
        """
        if automatic.shape != (image.height, image.width):
            raise CorrectionError(f"the mask is {automatic.shape[1]}x{automatic.shape[0]} pixels but the image "
                                  f"is {image.width}x{image.height}")  # fmt: skip
        self.image = image
        self.image_sha256 = image_sha256
        self.automatic = automatic.astype(bool)
        self.automatic.flags.writeable = False
        self.prompter = prompter
        self.window_size = window_size
        self.focus_min_side = focus_min_side or window_size
        self._valid: Dict[WindowBox, np.ndarray] = {}
        self._steps: List[_Step] = []
        self._position = 0  # how many of the steps are applied
        self._mask = self.automatic.copy()

    @property
    def prompts(self) -> Tuple[Prompt, ...]:
        """The prompts that made the current mask, in order."""
        return self._steps[self._position - 1].prompts if self._position else ()

    @property
    def note(self) -> str:
        """What the last applied step wants the analyst to know ("" when nothing)."""
        return self._steps[self._position - 1].note if self._position else ""

    @property
    def mask(self) -> np.ndarray:
        """The corrected mask (bool, the image's shape), a read-only view that follows the session."""
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def can_undo(self) -> bool:
        return self._position > 0

    @property
    def can_redo(self) -> bool:
        return self._position < len(self._steps)

    def click(self, x: float, y: float, positive: bool) -> np.ndarray:
        """Apply a click at image pixel (x, y); returns the new mask."""
        return self.apply(Click(float(x), float(y), bool(positive)))

    def box(self, x0: float, y0: float, x1: float, y1: float, positive: bool = True) -> np.ndarray:
        """Add (or, negative, remove) what SAM finds in a box; returns the new mask."""
        corners = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        return self.apply(Box(*(float(v) for v in corners), bool(positive)))

    def stroke(self, points, radius: float, positive: bool = True) -> np.ndarray:
        """Paint (or, negative, erase) along ``points`` [(x, y), ...] with a round brush of ``radius``
        image pixels; returns the new mask."""
        return self.apply(Stroke(tuple((float(x), float(y)) for x, y in points), float(radius), bool(positive)))

    def polygon(self, points, positive: bool = True) -> np.ndarray:
        """Fill (or, negative, clear) the polygon with corners ``points``; returns the new mask."""
        return self.apply(Polygon(tuple((float(x), float(y)) for x, y in points), bool(positive)))

    def apply(self, prompt: Prompt) -> np.ndarray:
        if isinstance(prompt, Painting):
            window, after, note = self._painted(prompt)
        else:
            self._require_prompter()
            window, after, note = self._clicked(prompt) if isinstance(prompt, Click) else self._boxed(prompt)
        self._push(_Step(self.prompts + (prompt,), window, self._window_of(window).copy(), after, note))
        return self.mask

    def undo(self) -> np.ndarray:
        if not self.can_undo:
            raise CorrectionError("nothing to undo")
        step = self._steps[self._position - 1]
        self._window_of(step.window)[...] = step.before
        self._position -= 1
        return self.mask

    def redo(self) -> np.ndarray:
        if not self.can_redo:
            raise CorrectionError("nothing to redo")
        step = self._steps[self._position]
        self._window_of(step.window)[...] = step.after
        self._position += 1
        return self.mask

    def reset(self) -> np.ndarray:
        """Back to the automatic mask; undo brings the corrections back."""
        if self.prompts:
            rows, cols = np.nonzero(self._mask != self.automatic)
            if len(rows):
                window = (int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
                          int(rows.max() - rows.min() + 1))  # fmt: skip
            else:
                window = (0, 0, 0, 0)
            after = self._window_of(window, self.automatic).copy()
            self._push(_Step((), window, self._window_of(window).copy(), after))
        return self.mask

    def replay(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """Start over from the automatic mask and apply ``prompts`` in order."""
        self._steps, self._position, self._mask = [], 0, self.automatic.copy()
        for prompt in prompts:
            self.apply(prompt)
        return self.mask

    def prefetch(self, x: float = 0, y: float = 0) -> None:
        """Start encoding the window a click at (x, y) would first use, in the background."""
        self.prompter.cache.prefetch(*self._first_window(x, y))

    def encode_first_window(self, x: float = 0, y: float = 0) -> None:
        """Encode the window a click at (x, y) would first use into the cache now (``prefetch``
        done ahead of time, e.g. into a cache folder that the app reads later)."""
        self.prompter.cache.get(*self._first_window(x, y))

    def _first_window(self, x: float, y: float):
        """(cache key, encoder call) of the window a click at (x, y) would first use."""
        self._require_prompter()
        window = plan(self._mask, (), PointClick(int(x), int(y), True), self.focus_min_side, self.window_size).window
        image = self.image
        path, bands, percentiles = image.path, image.bands, image.percentiles

        def encode() -> np.ndarray:  # its own file handle: GDAL datasets are not shared across threads
            with RasterImage(path, bands, percentiles) as own:
                return self.prompter.encode(own.read(Window(*window))[0])

        return self.embedding_key(window), encode

    def embedding_key(self, window: WindowBox) -> EmbeddingKey:
        return self.prompter.key(self.image_sha256, window, self.image.rendering)

    def _push(self, step: _Step) -> None:
        del self._steps[self._position :]
        self._steps.append(step)
        self._window_of(step.window)[...] = step.after
        self._position += 1

    def _window_of(self, window: WindowBox, mask: Optional[np.ndarray] = None) -> np.ndarray:
        col, row, width, height = window
        return (self._mask if mask is None else mask)[row : row + height, col : col + width]

    def _clicked(self, click: Click) -> Tuple[WindowBox, np.ndarray, str]:
        """(window, its new mask, note) after ``click``."""
        self._check_on_image(click.x, click.y)
        pixel = click.pixel
        earlier = [p.pixel for p in self.prompts if isinstance(p, Click)]
        refinement = plan(self._mask, earlier, pixel, self.focus_min_side, self.window_size)
        if not pixel.positive and not refinement.region.any():
            raise CorrectionError(f"nothing to remove at ({pixel.x}, {pixel.y}): no landslide is marked there")
        embedding, valid = self._embedding(refinement.window)
        col, row = refinement.window[:2]
        if not valid[pixel.y - row, pixel.x - col]:
            raise CorrectionError(f"({pixel.x}, {pixel.y}) has no data (nodata): nothing to segment there")
        current = self._window_of(refinement.window)
        prompt = self.prompter.refinement_prompt(current, refinement, pixel, valid)
        answer = self.prompter.predict(embedding, valid.shape, prompt).mask & valid
        after, fallback = merged(current, refinement, answer, pixel, valid, self.prompter.output_side)
        note = ""
        if fallback:
            action = "added" if pixel.positive else "cut out"
            note = f"the model {fallback}, so a disk around the click was {action} instead"
        return refinement.window, after, note

    def _boxed(self, box: Box) -> Tuple[WindowBox, np.ndarray, str]:
        """(window, its new mask, note) after ``box``: what the decoder finds inside it added or removed."""
        self._check_on_image((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        side = max(self.focus_min_side, int(np.ceil(max(box.x1 - box.x0, box.y1 - box.y0))) + 2)
        window = centred_window((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, min(side, self.window_size),
                                self._mask.shape)  # fmt: skip
        col, row, width, height = window
        x0, x1 = np.clip([box.x0 - col, box.x1 - col], 0, width)
        y0, y1 = np.clip([box.y0 - row, box.y1 - row], 0, height)
        embedding, valid = self._embedding(window)
        answer = self.prompter.predict(embedding, valid.shape, SamPrompt(box=(x0, y0, x1, y1))).mask & valid
        inside = np.zeros_like(answer)
        inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        current = self._window_of(window)
        return window, (current | (answer & inside)) if box.positive else (current & ~(answer & inside)), ""

    def _painted(self, prompt: Union[Stroke, Polygon]) -> Tuple[WindowBox, np.ndarray, str]:
        """(window, its new mask, note) after a stroke or polygon: the pixels it covers, nodata left alone."""
        what = "stroke" if isinstance(prompt, Stroke) else "polygon"
        if not prompt.points or (isinstance(prompt, Stroke) and not prompt.radius > 0):
            raise CorrectionError(f"an empty {what} changes nothing")
        cover = footprint(prompt, self._mask.shape)
        if not cover.covered.any():
            raise CorrectionError(f"the {what} lies off the image, which is {self.image.width}x"
                                  f"{self.image.height} pixels: nothing changed")  # fmt: skip
        valid = self.image.read(Window(*cover.window))[1]
        paint = cover.covered & valid
        if not paint.any():
            raise CorrectionError(f"the {what} covers only pixels without data (nodata): nothing changed")
        current = self._window_of(cover.window)
        after = (current | paint) if prompt.positive else (current & ~paint)
        notes = ["the part off the image was clipped"] * cover.clipped
        notes += ["pixels without data (nodata) were left as they were"] * bool((cover.covered & ~valid).any())
        return cover.window, after, "; ".join(notes)

    def _embedding(self, window: WindowBox) -> Tuple[np.ndarray, np.ndarray]:
        """(the window's embedding, its valid pixels)."""
        read = None

        def read_rgb():
            nonlocal read
            read = self._read(window)
            return read[0]

        embedding = self.prompter.embedding(self.embedding_key(window), read_rgb)
        if window not in self._valid:
            self._valid[window] = (read or self._read(window))[1]
        return embedding, self._valid[window]

    def _read(self, window: WindowBox) -> Tuple[np.ndarray, np.ndarray]:
        rgb, valid = self.image.read(Window(*window))
        if not valid.any():
            raise CorrectionError("this image has no valid pixels here (all nodata): nothing to segment")
        return rgb, valid

    def _require_prompter(self) -> None:
        if self.prompter is None:
            raise CorrectionError("no SAM model is loaded, so clicks cannot be turned into masks")

    def _check_on_image(self, x: float, y: float) -> None:
        if not (0 <= x < self.image.width and 0 <= y < self.image.height):
            raise CorrectionError(f"({x:g}, {y:g}) is off the image, which is {self.image.width}x{self.image.height}"
                                  " pixels")  # fmt: skip
