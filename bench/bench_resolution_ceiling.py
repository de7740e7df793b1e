"""What a perfect model could show through each mask path (issue 33): the ground truth itself
passed through the path's logit grid and back, per sample set.

    python bench/bench_resolution_ceiling.py SAMPLES [--side test|train|all]

A perfect model's logits on a grid are the truth's share of each grid cell (antialiased
resampling, as the click path lays out masks), thresholded at one half. Paths:

- ``automatic``: the app's automatic mask. The image is stretched to the model's input (256²)
  and its logits are brought back by ``predict.at_tile_pixels``. Scenes larger than
  ``WHOLE_MAX_SIDE`` are seen in windows instead and are left out (one image).
- ``clicks``: a click's answer on a window (the whole image up to 1,024 px): the longest side
  resized to the input, padded, laid out by ``PointPrompter.mask_input`` and brought back by
  ``PointPrompter.to_window``.
- ``64²`` and ``128²``: stretched grids for reference, the coarser outputs a path could have.

Printed per set with landslides: images, then mean IoU / boundary F-score (2 px) / lowest IoU
of each path.
"""

import argparse
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from translandseg.build import LITE
from translandseg.data import load_pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import mask_iou
from translandseg.interactive.prompting import PointPrompter
from translandseg.loading import load_model
from translandseg.metrics import boundary_f_score
from translandseg.predict import WHOLE_MAX_SIDE, at_tile_pixels
from translandseg.training.recipe import FULL_DATA_SETS, LANDSLIDE_FREE

SETS = tuple(s for s in FULL_DATA_SETS if s != LANDSLIDE_FREE) + ("uav-orthophoto",)
MaskPath = Callable[[np.ndarray], np.ndarray]


def through_grid(side: int) -> MaskPath:
    """The truth through a stretched ``side``² logit grid and ``at_tile_pixels``."""

    def path(truth: np.ndarray) -> np.ndarray:
        mask = torch.from_numpy(truth.astype(np.float32))[None, None]
        share = F.interpolate(mask, (side, side), mode="bilinear", align_corners=False, antialias=True)[0]
        return (at_tile_pixels(share - 0.5, truth.shape) > 0)[0].numpy()

    return path


def through_clicks(prompter: PointPrompter) -> MaskPath:
    """The truth through a click answer's layout (``mask_input``) and ``to_window``."""

    def path(truth: np.ndarray) -> np.ndarray:
        return prompter.to_window(torch.from_numpy(prompter.mask_input(truth))[None], truth.shape)

    return path


def ceilings(truths: List[np.ndarray], paths: Dict[str, MaskPath]) -> Dict[str, str]:
    row = {}
    for name, path in paths.items():
        shown = [path(truth) for truth in truths]
        ious = [mask_iou(s, t) for s, t in zip(shown, truths, strict=True)]
        scores = [boundary_f_score(s, t) for s, t in zip(shown, truths, strict=True)]
        row[name] = f"{np.mean(ious):.3f} / {np.mean(scores):.3f} / {min(ious):.2f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path)
    parser.add_argument("--side", choices=("test", "train", "all"), default="test")
    args = parser.parse_args()
    train, test = read_split(args.samples, SETS)
    pairs = {"test": test, "train": train, "all": train + test}[args.side]
    loaded = load_model(LITE, adapter=DEFAULT_ADAPTER)
    paths = {
        "automatic": through_grid(loaded.model.image_size),
        "clicks": through_clicks(PointPrompter.of(loaded, EmbeddingCache(1))),
        "128²": through_grid(128),
        "64²": through_grid(64),
    }
    print(f"| set ({args.side} side) | images | " + " | ".join(paths) + " |")
    print("| --- " * (len(paths) + 2) + "|")
    for name in SETS:
        truths = []
        for pair in tqdm([p for p in pairs if p.sample_set == name], desc=name, unit="image", leave=False):
            truth = load_pair(pair)[2]
            if truth.any() and max(truth.shape) <= WHOLE_MAX_SIDE:
                truths.append(truth)
        if truths:
            row = ceilings(truths, paths)
            print(f"| {name} | {len(truths)} | " + " | ".join(row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
