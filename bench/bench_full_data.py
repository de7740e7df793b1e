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

    python bench/bench_full_data.py SAMPLES train [--images 200] [--epochs 3] [--epoch-steps 1000]
        [--out runs/full-data]
    python bench/bench_full_data.py SAMPLES measure ADAPTER [ADAPTER ...]
    python bench/bench_full_data.py SAMPLES clicks ADAPTER [ADAPTER ...] [--per-set 30]
    python bench/bench_full_data.py SAMPLES decoder ADAPTER [--steps 4000] [--orientations 1]
        [--out runs/full-data-decoder]

``decoder`` buys steps where they are cheap: ADAPTER's ATL stays, each training image's ATL
embedding is computed once per orientation (``training.decoder_round``), and the automatic
decoder alone trains ``--steps`` more steps on them (a fraction of a full step each); the
adapter is written as ADAPTER is stored, its point decoder kept, for ``measure``.
"""

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from translandseg.adapter import adapter_storage, save_adapter
from translandseg.build import LITE
from translandseg.data import Pair
from translandseg.loading import load_model
from translandseg.training.decoder_round import DecoderRoundConfig, embed_labels, train_mask_decoder
from translandseg.training.recipe import (
    SPLIT_SEED,
    DefaultRecipe,
    automatic_figures,
    click_figures,
    full_data_split,  # fmt: skip
)
from translandseg.training.trainer import train

# What the tables show of the recipe's figures, per set and pooled (``SET/`` prefixes).
AUTOMATIC_KEYS = ("iou", "f1", "miou", "boundary_f")
CLICK_KEYS = ("noc85", "noc90", "iou@0", "iou@1", "iou@2", "iou@3", "iou@5", "iou@10", "harmful_clicks")


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
    """The recipe's automatic stage on the training side, or a seeded subset of it."""
    training, _ = full_data_split(samples)
    fit = subset(training, args.images) if args.images else training
    recipe = DefaultRecipe(epoch_steps=args.epoch_steps)
    config = recipe.automatic_config(fit)
    config.epochs = args.epochs
    run = args.out / f"images{len(fit)}-{args.epochs}x{args.epoch_steps}"
    torch.manual_seed(config.seed)
    loaded = load_model(LITE)
    result = train(loaded, fit, [], run, config, training_snapshot=f"split.csv training side: {len(fit)} images")
    (run / "training.json").write_text(json.dumps({"images": [p.name for p in fit], "config": vars(config)}, indent=1))
    print(f"{len(fit)} images, {config.epochs} x {config.epoch_steps} steps, weights {config.set_weights}: "
          f"{result.adapter_path}")  # fmt: skip
    return result.adapter_path


def train_decoder_stage(samples: Path, args) -> Path:
    """More automatic-decoder steps on ``args.adapter``'s ATL embeddings of the training side."""
    training, _ = full_data_split(samples)
    loaded = load_model(LITE, adapter=args.adapter)
    config = DecoderRoundConfig(steps=args.steps, orientations=args.orientations)
    started = time.monotonic()

    def embedded(done: int) -> None:
        if done % 100 == 0:
            print(f"embedded {done}/{len(training)}", flush=True)

    items = embed_labels(loaded.model, training, config.orientations, embedded)
    print(f"{len(items)} embeddings in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    started = time.monotonic()
    train_mask_decoder(loaded.model, items, config,
                       lambda done, loss: print(f"step {done}/{config.steps}: loss {loss:.4f}", flush=True))  # fmt: skip
    print(f"{config.steps} decoder steps in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    snapshot = f"{loaded.adapter.training_snapshot}; then the automatic decoder alone: {vars(config)}"
    out = args.out / f"decoder-{config.orientations}x{config.steps}.safetensors"
    info = replace(loaded.adapter, training_snapshot=snapshot, metrics={})
    save_adapter(loaded.model, out, info, loaded.tuned_prompt_decoder, adapter_storage(args.adapter))
    print(out)
    return out


def side_by_side(figures: Dict[str, Dict[str, float]], keys: Sequence[str]) -> None:
    """A markdown table: a row per set (and pooled) and figure, a column per adapter."""
    columns = list(figures)
    first = figures[columns[0]]
    print("| | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    prefixes = [""] + sorted({key.split("/")[0] + "/" for key in first if "/" in key})
    for prefix in prefixes:
        for key in (f"{prefix}{k}" for k in keys):
            if key in first:
                values = " | ".join(f"{figures[c].get(key, float('nan')):.3f}" for c in columns)
                print(f"| {key.replace('/', ' ') if prefix else 'pooled ' + key} | {values} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train")
    training.add_argument("--images", type=int, help="a seeded subset of the training side (a learning curve)")
    training.add_argument("--epochs", type=int, default=DefaultRecipe().automatic.epochs)
    training.add_argument("--epoch-steps", type=int, default=DefaultRecipe.epoch_steps)
    training.add_argument("--out", type=Path, default=Path("runs/full-data"))
    measuring = commands.add_parser("measure")
    measuring.add_argument("adapters", type=Path, nargs="+")
    clicking = commands.add_parser("clicks")
    clicking.add_argument("adapters", type=Path, nargs="+")
    clicking.add_argument("--per-set", type=int, default=DefaultRecipe.click_images,
                          help="test images of each set, a seeded choice")  # fmt: skip
    decoder = commands.add_parser("decoder")
    decoder.add_argument("adapter", type=Path)
    decoder.add_argument("--steps", type=int, default=4000)
    decoder.add_argument("--orientations", type=int, default=1)
    decoder.add_argument("--out", type=Path, default=Path("runs/full-data-decoder"))
    args = parser.parse_args()
    if args.command in ("train", "decoder"):
        (train_stage_one if args.command == "train" else train_decoder_stage)(args.samples, args)
        return
    _, test = full_data_split(args.samples)
    figures = {}
    for adapter in args.adapters:
        loaded = load_model(LITE, adapter=adapter)
        if args.command == "measure":
            figures[f"`{adapter}`"] = automatic_figures(loaded, test, progress=True)
        else:
            figures[f"`{adapter}`"] = click_figures(loaded, test, args.per_set, progress=True)
    if args.command == "measure":
        side_by_side(figures, (*AUTOMATIC_KEYS, "landslide_free_pixels_marked", "landslide_free_images_marked"))
    else:
        side_by_side(figures, [f"{k}_from_{start}" for start in ("automatic", "empty") for k in CLICK_KEYS])


if __name__ == "__main__":
    main()
