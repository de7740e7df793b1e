"""Correcting an automatic landslide mask with SAM clicks: a session per image.

What a click does depends on what lies under it:

- on an object already corrected (inside its SAM mask): refines that object, passing SAM all
  its clicks so far and its previous low-res logits as ``mask_input``;
- positive, anywhere else: **adds** a new object, the SAM mask at the click;
- negative on landslide: **removes** a new object, the SAM mask of the false alarm at the click;
- negative on background with nothing to remove: refused with a message.

For a removed object the click labels are turned around before SAM sees them (a positive
click means "keep this part"). The mask shown is the automatic mask with the objects applied
in order, so correcting one object never disturbs another. A box adds (or removes) its object.

Large images: an image up to ``window_size`` pixels a side is encoded whole, once. A larger
one is encoded window by window: a new object gets the window of a half-overlapping grid whose
centre is nearest its first click, and its later clicks reuse that window's embedding.

Every state is kept, so undo, redo and reset are exact, and replaying a session's prompts
(e.g. stored ones) reproduces its mask bit for bit.
"""

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from rasterio.windows import Window

from .embedding_cache import EmbeddingKey
from .predict import tile_starts
from .prompting import PointPrompter, SamPrompt
from .raster import RasterImage

DEFAULT_WINDOW_SIZE = 1024
WindowBox = Tuple[int, int, int, int]  # col_off, row_off, width, height


class CorrectionError(ValueError):
    """A click or box that cannot be applied, with the reason in words."""


@dataclass(frozen=True)
class Click:
    x: float  # image column; pixel i spans [i, i + 1)
    y: float  # image row
    positive: bool


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    positive: bool


Prompt = Union[Click, Box]


@dataclass(frozen=True)
class CorrectedObject:
    adds: bool  # its mask is added to the automatic mask, or removed from it
    window: WindowBox
    prompt: SamPrompt  # SAM's view: window coordinates, labels as SAM reads them
    mask: np.ndarray  # bool, the window's shape

    def covers(self, x: float, y: float) -> bool:
        col, row = int(x) - self.window[0], int(y) - self.window[1]
        return 0 <= row < self.mask.shape[0] and 0 <= col < self.mask.shape[1] and bool(self.mask[row, col])


@dataclass(frozen=True)
class _State:
    prompts: Tuple[Prompt, ...]
    objects: Tuple[CorrectedObject, ...]


class CorrectionSession:
    def __init__(
        self,
        image: RasterImage,
        image_sha256: str,
        automatic: np.ndarray,
        prompter: Optional[PointPrompter],
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        """Correct ``automatic`` (bool, the image's shape) with clicks on ``image``."""
        if automatic.shape != (image.height, image.width):
            raise CorrectionError(f"the mask is {automatic.shape[1]}x{automatic.shape[0]} pixels but the image "
                                  f"is {image.width}x{image.height}")  # fmt: skip
        self.image = image
        self.image_sha256 = image_sha256
        self.automatic = automatic.astype(bool)
        self.automatic.flags.writeable = False
        self.prompter = prompter
        self.window_size = window_size
        self._valid: Dict[WindowBox, np.ndarray] = {}
        self._history: List[_State] = [_State((), ())]
        self._position = 0
        self._mask = self.automatic.copy()  # kept current window by window

    @property
    def prompts(self) -> Tuple[Prompt, ...]:
        """The prompts that made the current mask, in order."""
        return self._state.prompts

    @property
    def objects(self) -> Tuple[CorrectedObject, ...]:
        return self._state.objects

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
        return self._position < len(self._history) - 1

    def click(self, x: float, y: float, positive: bool) -> np.ndarray:
        """Apply a click at image pixel (x, y); returns the new mask."""
        return self.apply(Click(float(x), float(y), bool(positive)))

    def box(self, x0: float, y0: float, x1: float, y1: float, positive: bool = True) -> np.ndarray:
        """Add (or, negative, remove) the object SAM finds in a box; returns the new mask."""
        corners = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        return self.apply(Box(*(float(v) for v in corners), bool(positive)))

    def apply(self, prompt: Prompt) -> np.ndarray:
        objects = self._applied(prompt)
        self._push(_State(self.prompts + (prompt,), objects))
        return self.mask

    def undo(self) -> np.ndarray:
        if not self.can_undo:
            raise CorrectionError("nothing to undo")
        self._move_to(self._position - 1)
        return self.mask

    def redo(self) -> np.ndarray:
        if not self.can_redo:
            raise CorrectionError("nothing to redo")
        self._move_to(self._position + 1)
        return self.mask

    def reset(self) -> np.ndarray:
        """Back to the automatic mask; undo brings the corrections back."""
        if self.prompts:
            self._push(_State((), ()))
        return self.mask

    def replay(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """Start over from the automatic mask and apply ``prompts`` in order."""
        self._history, self._position, self._mask = [_State((), ())], 0, self.automatic.copy()
        for prompt in prompts:
            self.apply(prompt)
        return self.mask

    def prefetch(self, x: float = 0, y: float = 0) -> None:
        """Start encoding the window around (x, y) (the whole image when it fits) in the background."""
        self._require_prompter()
        window = self.window_for(x, y)
        image = self.image
        path, bands, percentiles = image.path, image.bands, image.percentiles

        def encode() -> np.ndarray:  # its own file handle: GDAL datasets are not shared across threads
            with RasterImage(path, bands, percentiles) as own:
                return self.prompter.encode(own.read(Window(*window))[0])

        self.prompter.cache.prefetch(self.embedding_key(window), encode)

    def window_for(self, x: float, y: float) -> WindowBox:
        """The encoder window that a new object at (x, y) uses."""
        width, height = min(self.window_size, self.image.width), min(self.window_size, self.image.height)
        return _grid_start(x, self.image.width, width), _grid_start(y, self.image.height, height), width, height

    @property
    def _state(self) -> _State:
        return self._history[self._position]

    def _push(self, state: _State) -> None:
        del self._history[self._position + 1 :]
        self._history.append(state)
        self._move_to(len(self._history) - 1)

    def _move_to(self, position: int) -> None:
        """Make state ``position`` current, recomposing only the windows of objects that changed."""
        before = self.objects
        self._position = position
        kept = {id(obj) for obj in before} & {id(obj) for obj in self.objects}
        for window in {obj.window for obj in before + self.objects if id(obj) not in kept}:
            self._compose(window)

    def _compose(self, window: WindowBox) -> None:
        """The automatic mask with every object applied in order, within ``window``."""
        col, row, width, height = window
        self._mask[row : row + height, col : col + width] = self.automatic[row : row + height, col : col + width]
        for obj in self.objects:
            left, top = max(col, obj.window[0]), max(row, obj.window[1])
            right = min(col + width, obj.window[0] + obj.window[2])
            bottom = min(row + height, obj.window[1] + obj.window[3])
            if left >= right or top >= bottom:
                continue
            part = obj.mask[top - obj.window[1] : bottom - obj.window[1], left - obj.window[0] : right - obj.window[0]]
            target = self._mask[top:bottom, left:right]
            if obj.adds:
                target |= part
            else:
                target &= ~part

    def _applied(self, prompt: Prompt) -> Tuple[CorrectedObject, ...]:
        """The objects after ``prompt``: one refined, or one new."""
        self._require_prompter()
        x, y = _anchor(prompt)
        self._check_on_image(x, y)
        objects = self.objects
        if isinstance(prompt, Click):
            for index in range(len(objects) - 1, -1, -1):
                if objects[index].covers(x, y):
                    refined = self._refined(objects[index], prompt)
                    return objects[:index] + (refined,) + objects[index + 1 :]
            if not prompt.positive and not self._mask[int(y), int(x)]:
                raise CorrectionError(f"nothing to remove at ({int(x)}, {int(y)}): it is not marked as landslide")
        return objects + (self._new_object(prompt),)

    def _new_object(self, prompt: Prompt) -> CorrectedObject:
        window = self.window_for(*_anchor(prompt))
        col, row, width, height = window
        if isinstance(prompt, Click):
            sam_prompt = SamPrompt(points=((prompt.x + 0.5 - col, prompt.y + 0.5 - row),), labels=(1,))
        else:
            x0, x1 = np.clip([prompt.x0 - col, prompt.x1 - col], 0, width)
            y0, y1 = np.clip([prompt.y0 - row, prompt.y1 - row], 0, height)
            sam_prompt = SamPrompt(box=(float(x0), float(y0), float(x1), float(y1)))
        return self._segmented(CorrectedObject(prompt.positive, window, sam_prompt, np.zeros((0, 0), bool)))

    def _refined(self, obj: CorrectedObject, click: Click) -> CorrectedObject:
        col, row = obj.window[:2]
        label = int(click.positive == obj.adds)  # SAM labels say "this object", not "landslide"
        prompt = replace(obj.prompt, points=obj.prompt.points + ((click.x + 0.5 - col, click.y + 0.5 - row),),
                         labels=obj.prompt.labels + (label,))  # fmt: skip
        return self._segmented(replace(obj, prompt=prompt))

    def _segmented(self, obj: CorrectedObject) -> CorrectedObject:
        rgb_valid = None

        def read_rgb():
            nonlocal rgb_valid
            rgb_valid = self._read(obj.window)
            return rgb_valid[0]

        embedding = self.prompter.embedding(self.embedding_key(obj.window), read_rgb)
        valid = self._valid.get(obj.window)
        if valid is None:
            valid = self._valid[obj.window] = (rgb_valid or self._read(obj.window))[1]
        result = self.prompter.predict(embedding, valid.shape, obj.prompt)
        mask = result.mask & valid
        mask.flags.writeable = False
        return replace(obj, prompt=replace(obj.prompt, mask_input=result.low_res_logits), mask=mask)

    def _read(self, window: WindowBox) -> Tuple[np.ndarray, np.ndarray]:
        rgb, valid = self.image.read(Window(*window))
        if not valid.any():
            raise CorrectionError("this image has no valid pixels here (all nodata): nothing to segment")
        return rgb, valid

    def embedding_key(self, window: WindowBox) -> EmbeddingKey:
        return self.prompter.key(self.image_sha256, window, self.image.rendering)

    def _require_prompter(self) -> None:
        if self.prompter is None:
            raise CorrectionError("no SAM model is loaded, so clicks cannot be turned into masks")

    def _check_on_image(self, x: float, y: float) -> None:
        if not (0 <= x < self.image.width and 0 <= y < self.image.height):
            raise CorrectionError(f"({x:g}, {y:g}) is off the image, which is {self.image.width}x{self.image.height}"
                                  " pixels")  # fmt: skip


def _anchor(prompt: Prompt) -> Tuple[float, float]:
    """The pixel that routes a prompt: a click's own, a box's centre."""
    if isinstance(prompt, Click):
        return prompt.x, prompt.y
    return (prompt.x0 + prompt.x1) / 2, (prompt.y0 + prompt.y1) / 2


def _grid_start(centre: float, length: int, size: int) -> int:
    starts = tile_starts(length, size, max(size // 2, 1))
    return min(starts, key=lambda start: abs(start + size / 2 - centre))
