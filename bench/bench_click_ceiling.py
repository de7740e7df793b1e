"""A ceiling for click convergence: perfect answers to the RITM clicks, per sample set.

    python bench/bench_click_ceiling.py SAMPLES [--clicks 1 2 3 5]
    python bench/bench_click_ceiling.py SAMPLES --folds 2 --fold-adapters runs/automatic-study/RUN

From an empty mask, each click of the benchmark's protocol (``simulation.next_click``: the
deepest pixel of the larger error) is answered with the whole labelled landslide under it (a
positive click) or the whole false alarm under it (a negative one), 8-connected. No model is
involved: the figures say what the protocol allows, so a shortfall beyond them is the
decoder's. Also printed: how many separate landslides a label holds.

With ``--folds K --fold-adapters RUN`` (``bench_automatic_training.py --folds K``'s run folder)
the clicks start instead from the automatic mask of every training image, out of fold, and each
is answered by fixing exactly the error it lands in: the 8-connected missed part (a positive
click) or false alarm (a negative one) under it, no more. NoC@85/90 and IoU after k clicks.

    python bench/bench_click_ceiling.py SAMPLES --adapter ADAPTER [--per-set 30]

The same from ``ADAPTER``'s automatic mask on the test side of ``split.csv``: the seeded images
of each set with landslides that ``bench_full_data.py clicks --per-set`` measures the point
decoder on, so the two sit side by side.
"""

import argparse
from pathlib import Path

import numpy as np
from bench_automatic_training import folds_of
from scipy import ndimage

from translandseg.build import LITE
from translandseg.data import load_pair
from translandseg.interactive.evaluation import MAX_CLICKS, THRESHOLDS, clicks_to_reach, mask_iou
from translandseg.interactive.simulation import next_click
from translandseg.loading import load_model
from translandseg.training.recipe import (
    LANDSLIDE_FREE,
    automatic_masks,
    full_data_split,
    seeded_per_set,
)

EIGHT = np.ones((3, 3), bool)


def oracle_curve(truth: np.ndarray, valid: np.ndarray, clicks: int) -> list:
    """IoU after 0..``clicks`` perfectly answered clicks from an empty mask."""
    landslides, _ = ndimage.label(truth, EIGHT)
    mask = np.zeros_like(truth)
    curve = [mask_iou(mask & valid, truth)]
    for _ in range(clicks):
        click = next_click(mask, truth, valid)
        if click is not None and click.positive:
            mask = mask | (landslides == landslides[click.y, click.x])
        elif click is not None:
            false_alarms, _ = ndimage.label(mask & ~truth, EIGHT)
            mask = mask & (false_alarms != false_alarms[click.y, click.x])
        curve.append(mask_iou(mask & valid, truth))
    return curve


def error_oracle_curve(start: np.ndarray, truth: np.ndarray, valid: np.ndarray, clicks: int) -> list:
    """IoU after 0..``clicks`` clicks from ``start``, each fixing exactly the error region it lands in."""
    mask = start.copy()
    curve = [mask_iou(mask & valid, truth)]
    for _ in range(clicks):
        click = next_click(mask, truth, valid)
        if click is not None:
            error = (truth & ~mask) if click.positive else (mask & ~truth)
            regions, _ = ndimage.label(error & valid, EIGHT)
            mask = np.where(regions == regions[click.y, click.x], truth, mask)
        curve.append(mask_iou(mask & valid, truth))
    return curve


def from_automatic(samples: Path, folds: int, fold_adapters: Path, clicks: list) -> None:
    """The error-region oracle from each training image's out-of-fold automatic mask."""
    training, _ = full_data_split(samples)
    curves = {}  # by sample set
    for _, fold, run in folds_of(training, folds, fold_adapters):
        add_error_oracle_curves(curves, load_model(LITE, adapter=run / "adapter.safetensors"), fold)
    print_error_oracle(curves, clicks)


def from_adapter_on_test(samples: Path, adapter: Path, per_set: int, clicks: list) -> None:
    """The error-region oracle from ``adapter``'s automatic mask of seeded test-side images."""
    _, test = full_data_split(samples)
    chosen = seeded_per_set([pair for pair in test if pair.sample_set != LANDSLIDE_FREE], per_set)
    curves = {}
    add_error_oracle_curves(curves, load_model(LITE, adapter=adapter), chosen)
    print_error_oracle(curves, clicks)


def add_error_oracle_curves(curves: dict, loaded, pairs) -> None:
    """Each pair's ``error_oracle_curve`` from ``loaded``'s automatic mask, into ``curves`` by set."""
    automatic = automatic_masks(loaded)
    for pair in pairs:
        _, valid, truth = load_pair(pair)
        curves.setdefault(pair.sample_set, []).append(error_oracle_curve(automatic(pair), truth, valid, MAX_CLICKS))


def print_error_oracle(curves: dict, clicks: list) -> None:
    """NoC@85/90 and mean IoU after 0 and ``clicks`` clicks, per set and over all."""
    print("| set | NoC@85 / NoC@90 | IoU after 0 / " + " / ".join(map(str, clicks)) + " clicks |\n| --- | --- | --- |")
    for name, of_set in [*sorted(curves.items()), ("all", [c for cs in curves.values() for c in cs])]:
        noc = " / ".join(f"{np.mean([clicks_to_reach(c, t) for c in of_set]):.1f}" for t in THRESHOLDS)
        mean = np.mean(of_set, axis=0)
        print(f"| {name} ({len(of_set)}) | {noc} | " + " / ".join(f"{mean[k]:.3f}" for k in (0, *clicks)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--clicks", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--folds", type=int, help="from the automatic mask, out of fold, with this many folds")
    parser.add_argument("--fold-adapters", type=Path, help="with --folds: bench_automatic_training.py's run folder")
    parser.add_argument("--adapter", type=Path, help="from this adapter's automatic mask, on the test side")
    parser.add_argument("--per-set", type=int, default=30, help="with --adapter: seeded test images a set")
    args = parser.parse_args()
    if args.adapter:
        return from_adapter_on_test(args.samples, args.adapter, args.per_set, args.clicks)
    if args.folds:
        return from_automatic(args.samples, args.folds, args.fold_adapters, args.clicks)
    training, held_out = full_data_split(args.samples)
    print("| split | set | landslides per image: median / max | oracle IoU after "
          + " / ".join(map(str, args.clicks)) + " clicks |\n| --- | --- | --- | --- |")  # fmt: skip
    for split, pairs in (("training part", training), ("held out", held_out)):
        for sample_set in sorted({pair.sample_set for pair in pairs}):
            curves, counts = [], []
            for pair in (p for p in pairs if p.sample_set == sample_set):
                _, valid, truth = load_pair(pair)
                counts.append(ndimage.label(truth, EIGHT)[1])
                curves.append(oracle_curve(truth, valid, max(args.clicks)))
            mean = np.mean(curves, axis=0)
            print(f"| {split} | {sample_set} ({len(curves)}) | {int(np.median(counts))} / {max(counts)} | "
                  + " / ".join(f"{mean[k]:.3f}" for k in args.clicks) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
