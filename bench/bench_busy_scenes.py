"""Busy scenes (issue 33): 512² scenes of many small landslides, seen by each automatic-mask path.

Each scene is 4 x 4 Landslide4Sense RGB patches (128², 10 m, several small landslides each) of
one side of ``split.csv``, at their native resolution: a stand-in for the busy 512² scenes the
issue measured, which ``../shared`` does not hold. Paths (``Predictor`` settings):

- ``whole``: today's default for scenes up to 1,024 px, the scene stretched to the model's 256²
  input: the logit grid is half the scene's resolution;
- ``native``: 256² windows at the scene's own pixels (``scale="native"``);
- ``zoomed``: 128² windows, each enlarged to 256² (``scale="native", tile_size=128``): the scale
  at which the model learned these patches (each one resized to 256² in training).

Per path: the **ceiling** (the truth itself through the path, from a model whose logits are the
truth: mean IoU and boundary F-score), then the shipped adapter's landslide IoU / F1 over all
pixels, mean boundary F-score (2 px) and seconds per scene on this machine. For reference, the
same patches one by one (as the test figures of ``landslide4sense-rgb`` are measured).

With ``--clicks``, the simulated analyst (``interactive.evaluation``, 20-click cap) corrects the
scenes instead, from the automatic mask of today's app (``whole``, clicks answered on the whole
scene) and of ``zoomed`` with clicks answered whole or in focus windows of at least 128 px
(``focus_min_side``), each enlarged to the point decoder's input: NoC@85/90, IoU after
1/3/5/10 clicks and the share of harmful clicks.

    python bench/bench_busy_scenes.py SAMPLES [--side test|train] [--scenes 12] [--adapter PATH] [--clicks]
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from translandseg.build import LITE
from translandseg.data import Pair, find_pairs, load_pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.interactive.evaluation import click_runs, mask_iou, summarise
from translandseg.loading import LoadedModel, load_model
from translandseg.metrics import ConfusionMatrix, boundary_f_score
from translandseg.predict import REFERENCE_PRECISION, Predictor

SET = "landslide4sense-rgb"
GRID = 4  # patches a side
PATHS: Dict[str, Dict] = {
    "whole": {},
    "native": {"scale": "native"},
    "zoomed": {"scale": "native", "tile_size": 128},
}
CLICK_PATHS = {  # label: (automatic path, focus_min_side)
    "whole, clicks on the scene (today)": ("whole", None),
    "zoomed, clicks on the scene": ("zoomed", None),
    "zoomed, clicks in focus windows": ("zoomed", 128),
}
CLICK_FIGURES = ("noc85", "noc90", "iou@1", "iou@3", "iou@5", "iou@10", "harmful_clicks")
Scene = Tuple[np.ndarray, np.ndarray]


def scenes(samples: Path, side: str) -> List[Scene]:
    """(rgb, truth) of each 512² scene: the side's patches in ``split.csv`` order, 16 a scene."""
    train, test = read_split(samples, (SET,))
    loaded = [load_pair(pair) for pair in (test if side == "test" else train)]
    out = []
    for start in range(0, len(loaded) - GRID * GRID + 1, GRID * GRID):
        rows = [loaded[start + r * GRID : start + (r + 1) * GRID] for r in range(GRID)]
        rgb = np.concatenate([np.concatenate([p[0] for p in row], axis=1) for row in rows])
        truth = np.concatenate([np.concatenate([p[2] for p in row], axis=1) for row in rows])
        out.append((rgb, truth))
    return out


class TruthModel(torch.nn.Module):
    """A perfect model: its logits are its input's first channel, the truth coded 0/255."""

    image_size = 256

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images[:, :1] / 255 - 0.5) * 16


def ceiling(settings: Dict, busy: List[Scene]) -> Tuple[float, float]:
    predictor = Predictor(TruthModel(), precision=REFERENCE_PRECISION, **settings)
    shown = [predictor.predict_array(np.repeat(255 * truth[..., None], 3, -1).astype(np.uint8)) > 0.5
             for _, truth in busy]  # fmt: skip
    pairs = list(zip(shown, (truth for _, truth in busy), strict=True))
    return float(np.mean([mask_iou(s, t) for s, t in pairs])), float(np.mean([boundary_f_score(s, t) for s, t in pairs]))


def figures(predictor: Predictor, busy: List[Scene]) -> Tuple[Dict[str, float], float, float]:
    matrix, scores, started = ConfusionMatrix(), [], time.perf_counter()
    for rgb, truth in busy:
        mask = predictor.predict_array(rgb) > predictor.threshold
        matrix.update(mask, truth)
        scores.append(boundary_f_score(mask, truth))
    return matrix.summary(), float(np.mean(scores)), (time.perf_counter() - started) / len(busy)


def patch_by_patch(predictor: Predictor, busy: List[Scene]) -> Tuple[Dict[str, float], float]:
    """The same patches predicted one by one, each stretched to the model's input."""
    matrix, scores = ConfusionMatrix(), []
    for rgb, truth in busy:
        for r in range(GRID):
            for c in range(GRID):
                part = (slice(128 * r, 128 * (r + 1)), slice(128 * c, 128 * (c + 1)))
                mask = predictor.predict_array(rgb[part]) > predictor.threshold
                matrix.update(mask, truth[part])
                scores.append(boundary_f_score(mask, truth[part]))
    return matrix.summary(), float(np.mean(scores))


def written(busy: List[Scene], folder: Path) -> List[Pair]:
    """The scenes as PNG image/label pairs under ``folder``, for the click simulation."""
    for sub in ("image", "label"):
        (folder / sub).mkdir()
    for i, (rgb, truth) in enumerate(busy):
        Image.fromarray(rgb).save(folder / "image" / f"scene{i:02d}.png")
        Image.fromarray((255 * truth).astype(np.uint8)).save(folder / "label" / f"scene{i:02d}.png")
    return find_pairs(folder)


def click_table(loaded: LoadedModel, busy: List[Scene]) -> None:
    print("| automatic path, clicks | " + " | ".join(CLICK_FIGURES) + " |")
    print("| --- " * (len(CLICK_FIGURES) + 1) + "|")
    with tempfile.TemporaryDirectory() as folder:
        pairs = written(busy, Path(folder))
        for label, (path, focus) in CLICK_PATHS.items():
            automatic = Predictor(loaded.model, precision=REFERENCE_PRECISION, **PATHS[path])
            figures = summarise(click_runs(loaded, pairs, automatic=automatic, focus_min_side=focus))
            print(f"| {label} | " + " | ".join(f"{figures[k]:.3f}" for k in CLICK_FIGURES) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path)
    parser.add_argument("--side", choices=("test", "train"), default="test")
    parser.add_argument("--scenes", type=int, default=12, help="the side's first N scenes (float32: ~30 s a scene)")
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--clicks", action="store_true", help="the click figures instead of the automatic ones")
    args = parser.parse_args()
    busy = scenes(args.samples, args.side)[: args.scenes]
    loaded = load_model(LITE, adapter=args.adapter)
    print(f"{len(busy)} scenes of 512² ({args.side} side of {SET}), adapter `{args.adapter}`\n", flush=True)
    if args.clicks:
        return click_table(loaded, busy)
    model = loaded.model
    print("| path | ceiling: mean IoU / boundary F | IoU | F1 | boundary F | s per scene |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, settings in PATHS.items():
        top_iou, top_boundary = ceiling(settings, busy)
        summary, boundary, seconds = figures(Predictor(model, precision=REFERENCE_PRECISION, **settings), busy)
        print(f"| {name} | {top_iou:.3f} / {top_boundary:.3f} | {summary['iou']:.3f} | {summary['f1']:.3f} "
              f"| {boundary:.3f} | {seconds:.2f} |", flush=True)  # fmt: skip
    summary, boundary = patch_by_patch(Predictor(model, precision=REFERENCE_PRECISION), busy)
    print(f"| patch by patch (reference) | 1.000 / 1.000 | {summary['iou']:.3f} | {summary['f1']:.3f} "
          f"| {boundary:.3f} | |")  # fmt: skip


if __name__ == "__main__":
    main()
