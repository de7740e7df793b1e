"""A ceiling for click convergence: perfect answers to the RITM clicks, per sample set.

    python bench/bench_click_ceiling.py SAMPLES [--clicks 1 2 3 5]

From an empty mask, each click of the benchmark's protocol (``simulation.next_click``: the
deepest pixel of the larger error) is answered with the whole labelled landslide under it (a
positive click) or the whole false alarm under it (a negative one), 8-connected. No model is
involved: the figures say what the protocol allows, so a shortfall beyond them is the
decoder's. Also printed: how many separate landslides a label holds.
"""

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from translandseg.data import load_pair
from translandseg.interactive.evaluation import mask_iou
from translandseg.interactive.simulation import next_click
from translandseg.training.recipe import held_out_split

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--clicks", type=int, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args()
    training, held_out = held_out_split(args.samples)
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
