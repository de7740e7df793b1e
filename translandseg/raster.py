"""Read PNG/JPEG/GeoTIFF imagery as 8-bit RGB, window by window, keeping its georeferencing.

Band choice: an image whose first three bands are tagged red, green, blue (PNG, JPEG, RGB
GeoTIFF) is read as such; other rasters with 4 or more bands default to bands 4,3,2 (Sentinel-2
true colour), 3 bands to 1,2,3 and 1 band to grey. 8-bit data is used as is; other data types
get a 2-98 percentile stretch per band, computed once over the whole raster (from a decimated
read) so that tiles share one stretch. Nodata, alpha and GDAL masks mark invalid pixels.
PNG and JPEG files are also decoded once by Pillow, which, unlike GDAL, rejects truncated data.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024  # the decimated read that estimates the stretch
RGB_TAGS = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
PILLOW_CHECKED_DRIVERS = ("PNG", "JPEG")


class ImageReadError(ValueError):
    """A file that cannot be read as imagery, with the reason in words."""


def default_bands(count: int, colorinterp: Sequence[ColorInterp]) -> Tuple[int, int, int]:
    """The 1-based bands shown as red, green, blue when the user does not choose."""
    if count >= 3 and tuple(colorinterp[:3]) == RGB_TAGS:
        return (1, 2, 3)
    if count >= 4:
        return (4, 3, 2)
    if count == 3:
        return (1, 2, 3)
    if count == 1:
        return (1, 1, 1)
    raise ImageReadError(f"a {count}-band raster has no default RGB rendering; choose 3 bands to show as R,G,B (e.g. 1,2,2)")


@dataclass
class Stretch:
    """Per-band linear map of ``low..high`` to 0..255; ``None`` bounds leave 8-bit data as is."""

    low: Optional[np.ndarray] = None
    high: Optional[np.ndarray] = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        if self.low is None:
            return data.astype(np.uint8)
        scaled = (data.astype(np.float32) - self.low[:, None, None]) / (self.high - self.low)[:, None, None]
        return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).round().astype(np.uint8)


class RasterImage:
    """An open image: size, georeferencing, and windowed reads of RGB + validity."""

    def __init__(self, path: Path, bands: Optional[Sequence[int]] = None,
                 percentiles: Tuple[float, float] = STRETCH_PERCENTILES,
                 max_pixels: Optional[int] = None) -> None:  # fmt: skip
        """Open ``path``; an image of more than ``max_pixels`` pixels is refused before any decoding."""
        self.path = Path(path)
        self._dataset = _open(self.path, max_pixels)
        try:
            self.bands = self._check_bands(bands)
            self.percentiles = _check_percentiles(percentiles)
            self.stretch = self._estimate_stretch()
        except Exception:
            self._dataset.close()
            raise

    @property
    def width(self) -> int:
        return self._dataset.width

    @property
    def height(self) -> int:
        return self._dataset.height

    @property
    def crs(self):
        return self._dataset.crs

    @property
    def transform(self):
        return self._dataset.transform

    @property
    def count(self) -> int:
        return self._dataset.count

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def rendering(self) -> str:
        """Names the band choice and stretch that turn this raster into RGB."""
        stretch = "8-bit" if self.stretch.low is None else "{:g}-{:g}%".format(*self.percentiles)
        return f"bands {','.join(map(str, self.bands))}, {stretch}"

    def read(self, window: Optional[Window] = None, out_shape: Optional[Tuple[int, int]] = None):
        """RGB uint8 (H, W, 3) and a validity mask (H, W) of ``window`` (default: all),
        decimated to ``out_shape`` (height, width) when given."""
        shape = None if out_shape is None else (3, *out_shape)
        try:
            data = self._dataset.read(list(self.bands), window=window, out_shape=shape)
            masks = self._dataset.read_masks(list(set(self.bands)), window=window,
                                             out_shape=None if shape is None else (len(set(self.bands)), *out_shape))
            valid = masks.min(axis=0) > 0
        except RasterioError as error:
            raise ImageReadError(f"{self.path.name}: corrupt or truncated image data ({error})") from error
        rgb = self.stretch.apply(data)
        rgb[:, ~valid] = 0
        return np.ascontiguousarray(rgb.transpose(1, 2, 0)), valid

    def read_whole(self, max_pixels: int = 100_000_000) -> Tuple[np.ndarray, np.ndarray]:
        """``read()`` of the whole image, refused beyond ``max_pixels`` (use windows instead)."""
        self.check_size(max_pixels, "to read at once; predict it tile by tile instead")
        return self.read()

    def check_size(self, max_pixels: int, advice: str = "cut it into smaller GeoTIFFs") -> None:
        """Refuse an image of more than ``max_pixels`` pixels, saying what to do instead."""
        if self.width * self.height > max_pixels:
            raise _too_large(self.path, self.width, self.height, max_pixels, advice)

    def quicklook(self, max_side: int) -> Tuple[np.ndarray, np.ndarray]:
        """The whole image decimated so that its longer side is at most ``max_side``."""
        scale = max(self.width, self.height) / max_side
        if scale <= 1:
            return self.read()
        return self.read(out_shape=(max(1, round(self.height / scale)), max(1, round(self.width / scale))))

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> "RasterImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_bands(self, bands: Optional[Sequence[int]]) -> Tuple[int, ...]:
        count = self._dataset.count
        if bands is None:
            return default_bands(count, self._dataset.colorinterp)
        bands = tuple(int(b) for b in bands)
        if len(bands) != 3 or not all(1 <= b <= count for b in bands):
            raise ImageReadError(f"bands {bands}: choose 3 bands between 1 and {count} for {self.path.name}")
        return bands

    def _estimate_stretch(self) -> Stretch:
        if all(self._dataset.dtypes[b - 1] == "uint8" for b in self.bands):
            return Stretch()
        scale = max(1, max(self.width, self.height) // STRETCH_SAMPLE_SIDE)
        shape = (max(1, self.height // scale), max(1, self.width // scale))
        data = self._dataset.read(list(self.bands), out_shape=(3, *shape), resampling=Resampling.nearest,
                                  masked=True).astype(np.float64)  # fmt: skip
        low, high = np.zeros(3), np.ones(3)
        for i, band in enumerate(data):
            values = band.compressed()
            values = values[np.isfinite(values)]
            if values.size:
                low[i], high[i] = np.percentile(values, self.percentiles)
            if high[i] <= low[i]:
                high[i] = low[i] + 1
        return Stretch(low.astype(np.float32), high.astype(np.float32))


def _check_percentiles(percentiles: Sequence[float]) -> Tuple[float, float]:
    low, high = (float(p) for p in percentiles)
    if not 0 <= low < high <= 100:
        raise ImageReadError(f"stretch percentiles must satisfy 0 <= low < high <= 100, not {low:g}-{high:g}")
    return low, high


def _too_large(path: Path, width: int, height: int, max_pixels: int,
               advice: str = "cut it into smaller GeoTIFFs") -> ImageReadError:  # fmt: skip
    return ImageReadError(f"{path.name} has {width}x{height} pixels, more than {max_pixels:,}; {advice}")


def _open(path: Path, max_pixels: Optional[int] = None):
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path.name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as error:
        detail = str(error).replace(str(path), path.name)  # GDAL names the file by its full path
        raise ImageReadError(f"{path.name} is not a readable image (PNG, JPEG or GeoTIFF): {detail}") from error
    if dataset.width == 0 or dataset.height == 0:
        dataset.close()
        raise ImageReadError(f"{path.name} has no pixels")
    if max_pixels is not None and dataset.width * dataset.height > max_pixels:
        dataset.close()
        raise _too_large(path, dataset.width, dataset.height, max_pixels)
    if dataset.driver in PILLOW_CHECKED_DRIVERS:
        _check_decodes(path, dataset)
    return dataset


def _check_decodes(path: Path, dataset) -> None:
    """Decode PNG/JPEG fully once: GDAL pads truncated data with zeros, Pillow raises."""
    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError:
        dataset.close()
        raise _too_large(path, dataset.width, dataset.height, 2 * Image.MAX_IMAGE_PIXELS,
                         "too many to decode as PNG or JPEG; save it as a GeoTIFF") from None  # fmt: skip
    except OSError as error:
        dataset.close()
        raise ImageReadError(f"{path.name}: corrupt or truncated image data ({error})") from error


def read_rgb(path: Path, bands: Optional[Sequence[int]] = None, max_pixels: int = 100_000_000):
    """Whole-image RGB uint8 (H, W, 3) and validity mask; bigger images need tiled reads."""
    with RasterImage(path, bands) as image:
        return image.read_whole(max_pixels)


def read_label(path: Path) -> np.ndarray:
    """A landslide label (H, W) bool: 1-band (or grey RGB) with 0 = background, 0/1 or 0/255."""
    with _open(Path(path)) as dataset:
        if dataset.count != 1 and tuple(dataset.colorinterp[:3]) != RGB_TAGS:
            raise ImageReadError(f"{Path(path).name}: a label must have one band, not {dataset.count}")
        try:
            return dataset.read(1) > 0
        except RasterioError as error:
            raise ImageReadError(f"{Path(path).name}: corrupt or truncated label ({error})") from error
