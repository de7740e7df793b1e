"""Automatic landslide masks for images of any size: sliding window, blended, streamed to disk.

How a scene is seen (``scale``): an image up to ``WHOLE_MAX_SIDE`` pixels is by default resized
to the model's input as a whole ("whole", one encoder pass, as in training); a larger one is cut
into windows of ``WINDOW_SIDE`` pixels (or the input's side, if larger), each resized to the
input as a whole image is. With "native", any image larger than the input is cut into tiles of
the input's side at native resolution; "fused" averages both. Tiles and windows
(``tile_size``) overlap by ``overlap`` pixels, their probabilities blended with weights that ramp
down towards their edges. ``bench/bench_automatic.py`` measures the three. With ``views`` above 1
each tile is also seen mirrored and turned (test-time augmentation over the square's eight
symmetries, which training augments with) and the logits are averaged: sharper masks for
that many encoder passes. ``precision`` "bfloat16" runs the model under bfloat16 autocast, about
1.7 times faster on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX); "auto", the
default, does so only on such a CPU (``fast_precision``). Tiles go through the
model in batches of ``batch_size``, one row of tiles at a time, and finished rows are written out
at once, so memory grows with the raster's width, never with its area.
"""

import json
import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
import torch
from PIL import Image
from rasterio.windows import Window
from torch.nn import functional as F
from tqdm import tqdm

from .data import to_model_input
from .modeling import TransLandSeg
from .raster import RasterImage

VIEW_ORDER = (0, 4, 2, 6, 1, 5, 3, 7)  # views 2 and 4 are the mirror images; 8 adds the quarter turns
VIEWS = (1, 2, 4, 8)  # how many of them a Predictor averages
DEFAULT_THRESHOLD = 0.5  # the probability above which a pixel is landslide
PRECISIONS = ("auto", "float32", "bfloat16")
REFERENCE_PRECISION = "float32"  # training and the metrics it records: the same figures on any machine
ReadWindow = Callable[[Window], Tuple[np.ndarray, np.ndarray]]
WriteWindow = Callable[[Window, np.ndarray], None]


def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """Offsets of tiles of ``tile`` pixels covering ``length``; the last one ends flush."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


SCALES = ("native", "whole", "fused")
WHOLE_MAX_SIDE = 1024  # larger scenes are always seen in windows
# A large scene's windows under "whole": on a 2000² mosaic of test images (bench/README.md), 512²
# windows resized to LiteMedSAM's 256² beat native 256² tiles (IoU 0.42 vs 0.13, no tile grid,
# a fifth of the time).
WINDOW_SIDE = 512


def viewed(images: torch.Tensor, view: int, undo: bool = False) -> torch.Tensor:
    """View ``view`` (0-7) of square images (N, C, S, S): ``view % 4`` quarter turns, then a
    left-right mirror from view 4 on; ``undo`` maps the view back."""
    turns, mirrored = view % 4, view >= 4
    if undo:
        return torch.rot90(images.flip(3) if mirrored else images, -turns, (2, 3))
    turned = torch.rot90(images, turns, (2, 3))
    return turned.flip(3) if mirrored else turned


def fast_precision(device: torch.device) -> str:
    """"bfloat16" on a CPU that computes it natively (AVX512-BF16 or AMX), else "float32".

    Elsewhere bfloat16 is emulated and slower; CUDA keeps float32 (fast enough, no drift).
    """
    if device.type != "cpu":
        return "float32"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent in other torch versions
    return "bfloat16" if any(getattr(torch.cpu, name, lambda: False)() for name in checks) else "float32"


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Per-pixel weights, 1 inside and ramping linearly down over the ``overlap`` margins."""

    def ramp(n: int) -> np.ndarray:
        i = np.arange(n)
        return np.minimum(1.0, np.minimum(i + 1, n - i) / (overlap + 1)).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


class Predictor:
    """Landslide probabilities from a TransLandSeg model, for arrays and rasters."""

    def __init__(self, model: TransLandSeg, tile_size: Optional[int] = None, overlap: Optional[int] = None,
                 scale: str = "whole", batch_size: Optional[int] = None, views: int = 1,
                 threshold: float = DEFAULT_THRESHOLD, precision: str = "auto") -> None:  # fmt: skip
        """
        Args:
            model: a trained TransLandSeg model.
            tile_size: tile or window side in image pixels (default: the model's input size;
                under "whole", ``WINDOW_SIDE`` if larger).
            overlap: overlap of neighbouring tiles in pixels (default: a quarter tile).
            scale: how a scene larger than one tile and at most ``WHOLE_MAX_SIDE`` is seen:
                "whole" (resized to the input, as in training; the default, best and fastest on
                the test side, bench/README.md), "native" tiles, or "fused" (both, averaged).
            batch_size: tiles per model call (default 1 on CPU, where batches measured no faster, else 4).
            views: how many views of each tile to average (``VIEWS``): 1 (the default, fastest),
                2 or 4 mirror images, or 8 with the quarter turns; each costs one encoder pass.
            threshold: the probability above which a pixel is landslide in masks.
            precision: "float32", "bfloat16" (autocast) or "auto" (``fast_precision``).
        """
        self.model = model.eval()
        self.tile_size = tile_size or (max(WINDOW_SIDE, model.image_size) if scale == "whole" else model.image_size)
        self.overlap = self.tile_size // 4 if overlap is None else overlap
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"overlap must be between 0 and the tile size ({self.tile_size}), got {self.overlap}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
        self.scale = scale
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}, not {views!r}")
        self.views = views
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must lie between 0 and 1, not {threshold!r}")
        self.threshold = threshold
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = fast_precision(model.device) if precision == "auto" else precision
        self.batch_size = max(1, batch_size or (1 if model.device.type == "cpu" else 4))

    def tile_probability(self, rgb: np.ndarray) -> np.ndarray:
        """Probability (H, W) float32 of RGB uint8 (H, W, 3), resized through the model input."""
        return self.tile_probabilities([rgb])[0]

    @torch.inference_mode()
    def tile_probabilities(self, tiles: Sequence[np.ndarray]) -> List[np.ndarray]:
        """``tile_probability`` of several tiles, through the model in batches of ``batch_size``."""
        out = []
        for start in range(0, len(tiles), self.batch_size):
            batch = tiles[start : start + self.batch_size]
            images = torch.stack([to_model_input(rgb, self.model.image_size) for rgb in batch]).to(self.model.device)
            logits = self._averaged_logits(images)
            for rgb, tile_logits in zip(batch, logits, strict=True):
                out.append(torch.sigmoid(at_tile_pixels(tile_logits, rgb.shape[:2]))[0].cpu().numpy())
        return out

    def _averaged_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits (N, 1, S, S), averaged over ``views`` views."""
        views = VIEW_ORDER[: self.views]
        bfloat16 = self.precision == "bfloat16"
        with torch.autocast(images.device.type, torch.bfloat16) if bfloat16 else nullcontext():
            logits = [viewed(self.model(viewed(images, view)).float(), view, undo=True) for view in views]
        return sum(logits) / len(views)

    def predict_array(self, rgb: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
        """Probability (H, W) float32 of a whole in-memory image."""
        height, width = rgb.shape[:2]
        valid = np.ones((height, width), bool) if valid is None else valid
        out = np.zeros((height, width), np.float32)

        def read(w: Window):
            rows, cols = w.toslices()
            return rgb[rows, cols], valid[rows, cols]

        def write(w: Window, prob: np.ndarray):
            out[w.toslices()] = prob

        self.predict_windows(read, height, width, write)
        return out

    def predict_mask(self, image: RasterImage, progress: bool = False) -> np.ndarray:
        """Landslide mask (H, W) bool of a whole raster, predicted tile by tile (with a tqdm bar)."""
        mask = np.zeros((image.height, image.width), bool)

        def write(w: Window, prob: np.ndarray):
            mask[w.toslices()] = prob > self.threshold

        self.predict_windows(image.read, image.height, image.width, write, progress)
        return mask

    def uncertainty(self, image: RasterImage) -> float:
        """How unsure the automatic mask of ``image`` is: the mean binary entropy of its landslide
        probabilities over its valid pixels, in bits (0: every pixel certain, 1: every one at 0.5)."""
        total, count = 0.0, 0

        def add(window: Window, prob: np.ndarray) -> None:
            nonlocal total, count
            _, valid = image.read(window)
            total += float(binary_entropy(prob[valid]).sum())
            count += int(valid.sum())

        self.predict_windows(image.read, image.height, image.width, add)
        return total / count if count else 0.0

    def predict_windows(self, read: ReadWindow, height: int, width: int, write: WriteWindow,
                        progress: bool = False) -> None:  # fmt: skip
        """Landslide probabilities over a ``height`` x ``width`` image, written a band of rows at a time."""
        if self.seen_in_tiles(height, width):
            return self._tiled(read, height, width, write, progress)
        whole = Window(0, 0, width, height)
        rgb, valid = read(whole)
        prob = np.where(valid, self.tile_probability(rgb), 0)
        if self.scale == "fused":
            native = np.zeros_like(prob)

            def keep(window: Window, part: np.ndarray) -> None:
                native[window.toslices()] = part

            self._tiled(read, height, width, keep, progress)
            prob = (prob + native) / 2
        write(whole, prob)

    def seen_in_tiles(self, height: int, width: int) -> bool:
        """Whether a ``height`` x ``width`` image is seen tile by tile only (else whole, or fused)."""
        tiled = max(height, width) > self.tile_size
        return tiled and (self.scale == "native" or max(height, width) > WHOLE_MAX_SIDE)

    def tile_grid(self, height: int, width: int) -> "TileGrid":
        """The native-resolution tiles over a ``height`` x ``width`` image, in rows."""
        tile_h, tile_w = min(self.tile_size, height), min(self.tile_size, width)
        stride = self.tile_size - self.overlap
        return TileGrid(tile_starts(height, tile_h, stride), tile_starts(width, tile_w, stride), tile_h, tile_w,
                        width, self.overlap)  # fmt: skip

    def row_probabilities(self, read: ReadWindow, grid: "TileGrid", row: int) -> List[Tuple[np.ndarray, np.ndarray]]:
        """(valid, probability) of each tile of the grid's ``row``, left to right: the model's part
        of a tiled prediction, which any process holding the image and the model can compute."""
        reads = [read(window) for window in grid.row_windows(row)]
        probs = self.tile_probabilities([rgb for rgb, _ in reads])
        return [(valid, prob) for (_, valid), prob in zip(reads, probs, strict=True)]

    def _tiled(self, read: ReadWindow, height: int, width: int, write: WriteWindow, progress: bool) -> None:
        """Blend tile probabilities at native resolution, writing finished rows."""
        grid = self.tile_grid(height, width)
        blender = Blender(grid)
        with tqdm(total=grid.tiles, unit="tile", disable=not progress) as bar:
            for row in range(len(grid.rows)):
                write(*blender.add_row(row, self.row_probabilities(read, grid, row)))
                bar.update(len(grid.cols))


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles of ``tile_h`` x ``tile_w`` pixels at ``rows`` x ``cols`` offsets."""

    rows: List[int]
    cols: List[int]
    tile_h: int
    tile_w: int
    width: int  # the image's
    overlap: int

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    def row_windows(self, row: int) -> List[Window]:
        return [Window(left, self.rows[row], self.tile_w, self.tile_h) for left in self.cols]


class Blender:
    """Tile probabilities blended with weights that ramp down towards tile edges, a row of tiles
    at a time: the rows must come in order, and each returns the band of image rows it finished.
    Memory holds one row of tiles across the image's width."""

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid
        self.weights = blend_weights(grid.tile_h, grid.tile_w, grid.overlap)
        self.weighted = np.zeros((grid.tile_h, grid.width), np.float32)
        self.total = np.zeros((grid.tile_h, grid.width), np.float32)

    def add_row(self, row: int, tiles: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[Window, np.ndarray]:
        """Blend row ``row``'s (valid, probability) tiles; the finished (window, probability)."""
        grid, top = self.grid, self.grid.rows[row]
        for left, (valid, prob) in zip(grid.cols, tiles, strict=True):
            self.weighted[:, left : left + grid.tile_w] += np.where(valid, prob, 0) * self.weights
            self.total[:, left : left + grid.tile_w] += self.weights
        done = grid.rows[row + 1] - top if row + 1 < len(grid.rows) else grid.tile_h
        finished = (Window(0, top, grid.width, done), self.weighted[:done] / self.total[:done])
        self.weighted, self.total = _shift(self.weighted, done), _shift(self.total, done)
        return finished


@dataclass(frozen=True)
class PredictorOptions:
    """A ``Predictor``'s settings without its model: what a command line or a batch job's workers
    build one from."""

    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    scale: str = "whole"
    views: int = 1
    threshold: float = DEFAULT_THRESHOLD
    precision: str = "auto"

    def predictor(self, model: TransLandSeg) -> "Predictor":
        return Predictor(model, **asdict(self))

    def to_json(self) -> str:
        """The settings as stored beside a mask made with them."""
        return json.dumps(asdict(self), sort_keys=True)


def at_tile_pixels(logits: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """A tile's logits (1, S, S) on the model's grid brought to the tile's own pixels (1, H, W)."""
    return F.interpolate(logits[None], shape, mode="bilinear", align_corners=False)[0]


def binary_entropy(prob: np.ndarray) -> np.ndarray:
    """The entropy in bits of a yes/no outcome of probability ``prob``, elementwise."""
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _shift(buffer: np.ndarray, rows: int) -> np.ndarray:
    """``buffer`` moved up by ``rows`` rows, zero-filled at the bottom."""
    shifted = np.zeros_like(buffer)
    shifted[: len(buffer) - rows] = buffer[rows:]
    return shifted


def encode_mask(prob: np.ndarray, probability: bool, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """uint8 output: 0/255 landslide mask (above ``threshold``), or the probability scaled to 0-255."""
    if probability:
        return (prob * 255).round().astype(np.uint8)
    return np.where(prob > threshold, 255, 0).astype(np.uint8)


def default_output(input_path: Path, out_dir: Path, georeferenced: bool) -> Path:
    return Path(out_dir) / f"{Path(input_path).stem}_mask{'.tif' if georeferenced else '.png'}"


def predict_file(predictor: Predictor, input_path: Path, output_path: Path, bands: Optional[Sequence[int]] = None,
                 probability: bool = False, progress: bool = False, cloud_optimized: bool = False) -> Path:  # fmt: skip
    """Write the mask of ``input_path`` to ``output_path`` (.tif keeps CRS and transform; .png);
    ``cloud_optimized``: a .tif is a Cloud-Optimized GeoTIFF with overviews.

    The mask appears at ``output_path`` only when complete.
    """
    with RasterImage(input_path, bands) as image, mask_output(image, output_path, cloud_optimized) as writer:

        def write(window: Window, prob: np.ndarray) -> None:
            writer.write(window, encode_mask(prob, probability, predictor.threshold))

        predictor.predict_windows(image.read, image.height, image.width, write, progress)
    return Path(output_path)


@contextmanager
def mask_output(image: RasterImage, output_path: Path,
                cloud_optimized: bool = False) -> Iterator["GeoTiffMaskWriter | PngMaskWriter"]:  # fmt: skip
    """A mask writer matching ``image``'s size and georeferencing; the file appears only when
    complete (as a Cloud-Optimized GeoTIFF when ``cloud_optimized`` and a .tif is asked for)."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(f".{output_path.stem}.partial{output_path.suffix}")
    writer = _open_writer(partial, image)
    try:
        yield writer
        writer.close()
        if cloud_optimized and isinstance(writer, GeoTiffMaskWriter):
            to_cloud_optimized(partial, output_path)
        else:
            os.replace(partial, output_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)


def to_cloud_optimized(source: Path, target: Path) -> None:
    """Copy a mask GeoTIFF to ``target`` as a Cloud-Optimized GeoTIFF (deflate, 512² blocks,
    overviews by nearest neighbour so they stay 0/255); ``target`` appears only when complete."""
    partial = target.with_name(f".{target.stem}.cog{target.suffix}")
    try:
        rasterio.shutil.copy(source, partial, driver="COG", compress="DEFLATE", blocksize=512,
                             overview_resampling="NEAREST")  # fmt: skip
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


class GeoTiffMaskWriter:
    """A single-band uint8 GeoTIFF with the source's size, CRS and transform, written by window."""

    def __init__(self, path: Path, image: RasterImage) -> None:
        self.dataset = rasterio.open(path, "w", driver="GTiff", width=image.width, height=image.height, count=1,
                                     dtype="uint8", crs=image.crs, transform=image.transform, tiled=True,
                                     blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip

    def write(self, window: Window, array: np.ndarray) -> None:
        self.dataset.write(array, 1, window=window)

    def close(self) -> None:
        self.dataset.close()


class PngMaskWriter:
    """A grey PNG, assembled in memory (PNG cannot be written by window) and saved on close."""

    def __init__(self, path: Path, image: RasterImage) -> None:
        self.path = path
        self.array: Optional[np.ndarray] = np.zeros((image.height, image.width), np.uint8)

    def write(self, window: Window, array: np.ndarray) -> None:
        self.array[window.toslices()] = array

    def close(self) -> None:
        if self.array is not None:
            Image.fromarray(self.array).save(self.path, format="PNG")
            self.array = None


def _open_writer(path: Path, image: RasterImage):
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return GeoTiffMaskWriter(path, image)
    if suffix == ".png":
        return PngMaskWriter(path, image)
    raise ValueError(f"{path.name}: masks are written as .tif or .png")
