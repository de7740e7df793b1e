"""Learning from the full data (issue 30): train the automatic stage on the training side of
``split.csv`` and measure automatic masks on its test side, per sample set.

``train`` runs the recipe's automatic stage on the training side (without copies), or on a
seeded subset of ``--images`` of it for a learning curve (each set keeps its share), streaming
the images from disk and drawing the sets by ``square_root_weights``; it checkpoints every 100
steps and resumes when run again with the same settings. ``measure`` gives, for each adapter,
landslide IoU / F1 / mIoU per test set and pooled over the sets with landslides, and on the
landslide-free test images the share of pixels marked and of images with any mark. ``clicks``
simulates analysts (``interactive.evaluation``) on a seeded ``--per-set`` of each test set with
landslides, from the automatic mask and from empty: NoC@85/90 (20-click cap), IoU after k clicks
and the share of harmful clicks, per set.

    python bench/bench_full_data.py SAMPLES train [--images 200] [--epochs 4] [--epoch-steps 1000]
        [--out runs/full-data]
    python bench/bench_full_data.py SAMPLES measure ADAPTER [ADAPTER ...] [--precision float32]
    python bench/bench_full_data.py SAMPLES clicks ADAPTER [ADAPTER ...] [--per-set 30]
"""

import argparse
import json
import random
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from translandseg.build import LITE
from translandseg.data import Pair
from translandseg.evaluation import confusion
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import click_runs, summarise
from translandseg.loading import load_model
from translandseg.metrics import ConfusionMatrix
from translandseg.predict import PRECISIONS, REFERENCE_PRECISION, Predictor
from translandseg.training.recipe import SPLIT_SEED, full_data_split, square_root_weights
from translandseg.training.trainer import TrainConfig, train

LANDSLIDE_FREE = "bijie-negatives"


def subset(pairs: Sequence[Pair], count: int) -> List[Pair]:
    """A seeded subset of ``count`` pairs, each sample set keeping its share (at least one)."""
    if count >= len(pairs):
        return list(pairs)
    kept: List[Pair] = []
    for name in sorted({pair.sample_set for pair in pairs}):
        members = [pair for pair in pairs if pair.sample_set == name]
        random.Random(SPLIT_SEED).shuffle(members)
        kept += members[: max(1, round(count * len(members) / len(pairs)))]
    return kept


def train_stage_one(samples: Path, args) -> Path:
    training, _ = full_data_split(samples)
    fit = subset(training, args.images) if args.images else training
    config = TrainConfig(epochs=args.epochs, batch_size=1, keep_last_epoch=True, set_weights=square_root_weights(fit),
                         epoch_steps=args.epoch_steps, checkpoint_every=100)  # fmt: skip
    run = args.out / f"images{len(fit)}-{args.epochs}x{args.epoch_steps}"
    torch.manual_seed(config.seed)
    loaded = load_model(LITE)
    result = train(loaded, fit, [], run, config, training_snapshot=f"split.csv training side: {len(fit)} images")
    (run / "training.json").write_text(json.dumps({"images": [p.name for p in fit], "config": vars(config)}, indent=1))
    print(f"{len(fit)} images, {config.epochs} x {config.epoch_steps} steps, weights {config.set_weights}: "
          f"{result.adapter_path}")  # fmt: skip
    return result.adapter_path


def measure(samples: Path, adapter: Path, precision: str) -> Dict[str, float]:
    """Landslide IoU/F1/mIoU per test set and pooled; false alarms on the landslide-free images."""
    _, test = full_data_split(samples)
    predictor = Predictor(load_model(LITE, adapter=adapter).model, precision=precision)
    row: Dict[str, float] = {}
    pooled = ConfusionMatrix()
    for name in sorted({pair.sample_set for pair in test} - {LANDSLIDE_FREE}):
        matrix = confusion(predictor, [pair for pair in test if pair.sample_set == name], progress=True)
        pooled.counts += matrix.counts
        summary = matrix.summary()
        row.update({f"{name} IoU": summary["iou"], f"{name} F1": summary["f1"], f"{name} mIoU": summary["miou"]})
    summary = pooled.summary()
    row.update({"pooled IoU": summary["iou"], "pooled F1": summary["f1"], "pooled mIoU": summary["miou"]})
    marked = [confusion(predictor, [pair]).counts for pair in test if pair.sample_set == LANDSLIDE_FREE]
    if marked:
        row["landslide-free pixels marked"] = sum(int(c[0, 1]) for c in marked) / sum(int(c.sum()) for c in marked)
        row["landslide-free images marked"] = sum(1 for c in marked if c[0, 1]) / len(marked)
    return row


def click_figures(samples: Path, adapter: Path, per_set: int) -> Dict[str, Dict[str, float]]:
    """Per test set with landslides and start: NoC@85/90, IoU after k clicks, harmful clicks."""
    _, test = full_data_split(samples)
    loaded = load_model(LITE, adapter=adapter)
    figures = {}
    for name in sorted({pair.sample_set for pair in test} - {LANDSLIDE_FREE}):
        members = [pair for pair in test if pair.sample_set == name]
        random.Random(SPLIT_SEED).shuffle(members)
        cache = EmbeddingCache(512)  # each window encoded once for both starts
        for start in ("automatic", "empty"):
            runs = click_runs(loaded, members[:per_set], start, progress=True, cache=cache)
            figures[f"{name} ({len(runs)}), from {start}"] = summarise(runs)
    return figures


def print_table(rows: Dict[str, Dict[str, float]]) -> None:
    keys = list(next(iter(rows.values())))
    print("| | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row.get(k, float('nan')):.3f}" for k in keys) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train")
    training.add_argument("--images", type=int, help="a seeded subset of the training side (a learning curve)")
    training.add_argument("--epochs", type=int, default=4)
    training.add_argument("--epoch-steps", type=int, default=1000)
    training.add_argument("--out", type=Path, default=Path("runs/full-data"))
    measuring = commands.add_parser("measure")
    measuring.add_argument("adapters", type=Path, nargs="+")
    measuring.add_argument("--precision", choices=PRECISIONS, default=REFERENCE_PRECISION)
    clicking = commands.add_parser("clicks")
    clicking.add_argument("adapters", type=Path, nargs="+")
    clicking.add_argument("--per-set", type=int, default=30, help="test images of each set, a seeded choice")
    args = parser.parse_args()
    if args.command == "train":
        train_stage_one(args.samples, args)
    elif args.command == "measure":
        print_table({f"`{a}`": measure(args.samples, a, args.precision) for a in args.adapters})
    else:
        for adapter in args.adapters:
            print(f"`{adapter}`")
            print_table(click_figures(args.samples, adapter, args.per_set))


if __name__ == "__main__":
    main()
