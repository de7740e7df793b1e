"""A large scene (issue 30): a seeded mosaic of test-side images, landslide and landslide-free,
at their native resolution, predicted whole by each adapter and window size.

The mosaic (``--side`` pixels square, 2000 by default) packs test-side images of ``bijie-full``
and ``bijie-negatives`` in shelves; the gaps are nodata. Each row gives landslide IoU over the
mosaic, the share of the landslide-free images' pixels marked, the blobs marked that touch no
labelled landslide (a tile-grid pattern shows as hundreds of them) and the time of the whole
prediction on this machine.

    python bench/bench_large_scene.py SAMPLES ADAPTER [ADAPTER ...] [--windows 256 512] [--side 2000]
"""

import argparse
import random
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
from scipy import ndimage

from translandseg.build import LITE
from translandseg.data import load_pair
from translandseg.loading import load_model
from translandseg.metrics import ConfusionMatrix
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.training.recipe import SPLIT_SEED, full_data_split

MOSAIC_SETS = ("bijie-full", "bijie-negatives")


def mosaic(samples: Path, side: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, valid, label, landslide-free) arrays of a ``side`` x ``side`` mosaic of test images."""
    _, test = full_data_split(samples)
    pairs = [pair for pair in test if pair.sample_set in MOSAIC_SETS]
    random.Random(SPLIT_SEED).shuffle(pairs)
    rgb = np.zeros((side, side, 3), np.uint8)
    valid, label, free = (np.zeros((side, side), bool) for _ in range(3))
    top = left = shelf = 0
    for pair in pairs:
        image, image_valid, image_label = load_pair(pair)
        height, width = (min(n, side) for n in image_label.shape)
        if left + width > side:
            top, left, shelf = top + shelf, 0, 0
        if top + height > side:
            break
        place = (slice(top, top + height), slice(left, left + width))
        rgb[place], valid[place] = image[:height, :width], image_valid[:height, :width]
        label[place] = image_label[:height, :width]
        free[place] = pair.sample_set == "bijie-negatives"
        left, shelf = left + width, max(shelf, height)
    return rgb, valid, label, free


def measure(predictor: Predictor, scene) -> List[float]:
    rgb, valid, label, free = scene
    started = time.perf_counter()
    marked = (predictor.predict_array(rgb, valid) > predictor.threshold) & valid
    seconds = time.perf_counter() - started
    matrix = ConfusionMatrix()
    matrix.update(marked[valid], label[valid])
    blobs, count = ndimage.label(marked)
    touching = set(np.unique(blobs[label & marked])) - {0}
    return [matrix.summary()["iou"], float(marked[free].mean()), float(count - len(touching)), seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("adapters", type=Path, nargs="+")
    parser.add_argument("--windows", type=int, nargs="+", default=[256, 512], help="tile sides in image pixels")
    parser.add_argument("--side", type=int, default=2000)
    args = parser.parse_args()
    scene = mosaic(args.samples, args.side)
    print(f"mosaic {args.side}² : {scene[1].mean():.0%} valid, {scene[2].sum() / scene[1].sum():.1%} landslide, "
          f"{scene[3].sum() / scene[1].sum():.0%} landslide-free images")  # fmt: skip
    print("| adapter | window | landslide IoU | landslide-free pixels marked | blobs away from landslides | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for adapter in args.adapters:
        model = load_model(LITE, adapter=adapter).model
        for window in args.windows:
            row = measure(Predictor(model, tile_size=window, precision=REFERENCE_PRECISION), scene)
            print(f"| `{adapter}` | {window} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.0f} | {row[3]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
