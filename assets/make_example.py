"""Generate ``example_hillside.tif``: a georeferenced 3-band scene with two landslide-like scars.

    python assets/make_example.py

Procedural (seeded), so the project ships no third-party imagery: a shaded, textured hillside
in UTM zone 48N (10 m pixels, near Bijie, Guizhou), with two bare, bright, tongue-shaped
scars running downslope. It exists to try the app and its georeferencing, not to measure it.
"""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

SIZE = 384
OUT = Path(__file__).with_name("example_hillside.tif")


def smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.standard_normal((size // scale + 2, size // scale + 2))
    rows = np.linspace(0, coarse.shape[0] - 2, size)
    cols = np.linspace(0, coarse.shape[1] - 2, size)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def scar(size: int, head: tuple, length: float, width: float) -> np.ndarray:
    """A tongue: narrow at its head, widening downslope (down the rows)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    along = (y - head[0]) / length
    half_width = width * (0.35 + 0.65 * np.clip(along, 0, 1))
    return (along >= 0) & (along <= 1) & (np.abs(x - head[1]) <= half_width)


def make(path: Path = OUT, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    relief = smooth_noise(rng, SIZE, 48) + 0.5 * smooth_noise(rng, SIZE, 12)
    shade = 0.75 + 0.15 * np.tanh(np.gradient(relief, axis=1) * 8)
    vegetation = np.stack([60 + 10 * relief, 95 + 15 * relief, 50 + 8 * relief]) * shade
    texture = rng.normal(0, 6, (3, SIZE, SIZE))
    scene = vegetation + texture
    for head, length, width in (((60, 110), 150, 28), ((170, 270), 120, 20)):
        mask = scar(SIZE, head, length, width)
        bare = np.array([175, 160, 140])[:, None] + rng.normal(0, 12, (3, int(mask.sum())))
        scene[:, mask] = bare
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32648", transform=from_origin(435000.0, 2910000.0, 10.0, 10.0),
                       photometric="RGB", compress="deflate", tiled=True) as out:  # fmt: skip
        out.write(np.clip(scene, 0, 255).round().astype(np.uint8))
    return path


if __name__ == "__main__":
    print(make())
