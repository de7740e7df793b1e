"""Negative clicks stay local (issue 31.3): from the automatic mask of test-side images, one
negative click at the deepest pixel of the largest false alarm, answered by the merge that takes
the decoder's whole answer ("whole answer", before) and by the one that cuts only the piece the
click lands in (``refinement.cut_at_click``, after), side by side in one run on the same
embeddings. Counted per click: landslide pixels removed, those farther than ``--far`` pixels
from the click, false-alarm pixels removed, the IoU change. ``--sequences`` also plays whole
simulated click sequences (NoC@85/90, IoU after k clicks, harmful clicks) with both merges.

    python bench/bench_negative_clicks.py SAMPLES [--adapter FILE] [--per-set 30] [--far 64] [--sequences 12]
"""

import argparse
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
from scipy import ndimage

from translandseg.build import LITE
from translandseg.data import load_pair
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.interactive import refinement
from translandseg.interactive.correction import CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import click_runs, mask_iou, summarise
from translandseg.interactive.prompting import PointPrompter
from translandseg.interactive.simulation import interior_depth
from translandseg.loading import load_model
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.raster import RasterImage
from translandseg.training.recipe import LANDSLIDE_FREE, full_data_split, seeded_per_set

MERGES = ("whole answer", "cut at click")


@contextmanager
def merge(name: str) -> Iterator[None]:
    """Negative clicks answered by ``name``'s merge for the duration."""
    kept = refinement.cut_at_click
    if name == "whole answer":
        refinement.cut_at_click = lambda removed, *_: removed
    try:
        yield
    finally:
        refinement.cut_at_click = kept


def largest_false_alarm(automatic: np.ndarray, label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(automatic & ~label & valid, np.ones((3, 3), bool))
    if not count:
        return np.zeros_like(automatic)
    return labels == 1 + int(np.argmax(ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))))


def one_click_figures(loaded, pairs, far: float) -> Dict[str, Dict[str, float]]:
    predictor = Predictor(loaded.model, precision=REFERENCE_PRECISION)
    prompter = PointPrompter.of(loaded, EmbeddingCache(64))
    rows: Dict[str, List[Dict[str, float]]] = {name: [] for name in MERGES}
    for pair in pairs:
        _, valid, label = load_pair(pair)
        with RasterImage(pair.image) as image:
            automatic = predictor.predict_mask(image)
            depth, row, col = interior_depth(largest_false_alarm(automatic, label, valid))
            if depth < 2:
                continue
            rows_, cols_ = np.indices(label.shape)
            distant = (rows_ - row) ** 2 + (cols_ - col) ** 2 > far**2
            for name in MERGES:
                with merge(name):
                    session = CorrectionSession(image, pair.name, automatic, prompter)
                    session.click(col + 0.5, row + 0.5, False)
                removed = automatic & ~session.mask
                rows[name].append({
                    "landslide pixels removed": np.count_nonzero(removed & label),
                    f"of them farther than {far:g} px": np.count_nonzero(removed & label & distant),
                    f"clicks removing landslide farther than {far:g} px": float((removed & label & distant).any()),
                    "false-alarm pixels removed": np.count_nonzero(removed & ~label),
                    "IoU change": mask_iou(session.mask & valid, label) - mask_iou(automatic & valid, label),
                })  # fmt: skip
    return {name: {key: float(np.mean([r[key] for r in runs])) for key in runs[0]} | {"clicks": len(runs)}
            for name, runs in rows.items()}  # fmt: skip


def print_table(figures: Dict[str, Dict[str, float]]) -> None:
    keys = list(next(iter(figures.values())))
    print("| merge | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for name, row in figures.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--per-set", type=int, default=30, help="test images of each set with landslides")
    parser.add_argument("--far", type=float, default=64, help="pixels from the click beyond which removal is distant")
    parser.add_argument("--sequences", type=int, default=0, help="also play click sequences on this many a set")
    args = parser.parse_args()
    _, test = full_data_split(args.samples)
    with_landslides = [pair for pair in test if pair.sample_set != LANDSLIDE_FREE]
    loaded = load_model(LITE, adapter=args.adapter)
    print(f"One negative click on the largest false alarm, `{args.adapter.name}`, {args.per_set} test images a set\n")
    print_table(one_click_figures(loaded, seeded_per_set(with_landslides, args.per_set), args.far))
    if args.sequences:
        chosen, cache, figures = seeded_per_set(with_landslides, args.sequences), EmbeddingCache(512), {}
        for name in MERGES:
            with merge(name):
                figures[name] = summarise(click_runs(loaded, chosen, "automatic", progress=True, cache=cache))
        print(f"\nClick sequences from the automatic mask, {args.sequences} test images a set\n")
        print_table(figures)


if __name__ == "__main__":
    main()
