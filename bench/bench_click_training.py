"""Point-decoder training settings compared on the training part (issue 11).

    python bench/bench_click_training.py SAMPLES [--adapter FILE] \\
        --setting now='{}' --setting inner='{"click_placement": "inner"}'
    python bench/bench_click_training.py SAMPLES --folds 2 --fold-adapters runs/automatic-study/RUN \\
        --setting now='{}'

Every setting (a name and ``ClickTrainConfig`` fields over the recipe's) trains a point decoder
from an adapter's automatic decoder, as ``train-default`` does, and is measured with the app's
correction engine: NoC@85/90, IoU after k clicks, harmful and fallback clicks, from the
automatic mask and from empty, pooled and per sample set. The held-out split plays no part.

- By default it trains on the **fit part** of the training split (``full_data_split``'s training
  part less its seeded selection fifth, 20 %, seed 42) and measures on that **selection fifth**
  (9 images). Stage 1 (ATL and automatic decoder) is ``--adapter``'s, which was trained on the
  whole training part, selection fifth included, as the recipe's stage 2 sees it: the automatic
  starts there are better than on unseen images.
- With ``--folds K`` every training image is measured, out of fold: the K seeded folds of
  ``bench_automatic_training.py --folds K``, whose fold adapters (``--fold-adapters``, its run
  folder) give each fold a stage 1 that never saw it. Each fold's point decoder trains on the
  other folds, starting from that adapter's automatic decoder, and each fold's clicks start from
  that adapter's automatic masks, as on images nothing was trained on.

The training frames are made once per split for each distinct ``orientations`` /
``focus_frames``, and the click embeddings once per split, shared by every setting.
"""

import argparse
import functools
import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from bench_automatic_training import folds_of

from translandseg.build import LITE
from translandseg.data import split_pairs
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import click_runs, summarise
from translandseg.interactive.prompting import PointPrompter
from translandseg.interactive.training import frame_cache, prepare_frames, train_point_decoder
from translandseg.loading import load_model
from translandseg.training.recipe import SPLIT_SEED, DefaultRecipe, automatic_masks, full_data_split

COLUMNS = ("noc85", "noc90", "iou@1", "iou@3", "iou@5", "iou@10", "harmful_clicks", "fallback_clicks")
BY_SET = ("noc85", "noc90", "iou@1", "iou@3", "iou@10")
STARTS = ("automatic", "empty")
SELECTION_FRACTION = 0.2  # of the training side, measured when not cross-validating


def splits(samples: Path, adapter: Path, folds: Optional[int], fold_adapters: Optional[Path]):
    """(fit pairs, measured pairs, stage-1 adapter) for each split of the training part."""
    training, _ = full_data_split(samples)
    if not folds:
        fit, selection = split_pairs(training, SELECTION_FRACTION, SPLIT_SEED)
        return [(fit, selection, adapter)]
    return [(rest, fold, run / "adapter.safetensors") for rest, fold, run in folds_of(training, folds, fold_adapters)]


def compare(parts, settings: dict) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    recipe = DefaultRecipe().clicks
    runs = {name: {start: [] for start in STARTS} for name in settings}  # ClickRuns of every split
    measured_pairs = []
    for fit, measured, adapter in parts:
        print(f"fit: {len(fit)} images; measured: {', '.join(p.name for p in measured)}; stage 1: {adapter}",
              flush=True)  # fmt: skip
        measured_pairs += measured
        loaded = load_model(LITE, adapter=adapter)
        start = loaded.model.mask_decoder.state_dict()  # the recipe starts the point decoder here
        prompter = PointPrompter.of(loaded, frame_cache(Path("runs/embeddings")))
        frames = {}  # (orientations, focus_frames): the fit images' frames
        automatic = functools.cache(automatic_masks(loaded))  # each fit image's automatic mask, predicted once
        cache = EmbeddingCache(256)  # the measured images' click embeddings, shared by every setting
        for name, overrides in settings.items():
            config = replace(recipe, **overrides)
            framing = (config.orientations, config.focus_frames)
            if framing not in frames:
                frames[framing] = prepare_frames(prompter, fit, automatic, config)
            loaded.prompt_decoder.load_state_dict(start)
            began = time.perf_counter()
            history = train_point_decoder(prompter, frames[framing], config)
            loaded.clicks_primed = prompter.primed  # measured as trained, as train-default does
            minutes = (time.perf_counter() - began) / 60
            for begin in STARTS:
                runs[name][begin] += click_runs(loaded, measured, begin, cache=cache)
            print(f"{name} ({json.dumps(overrides)}): {minutes:.1f} min, last loss {history[-1]['loss']:.3f}",
                  flush=True)  # fmt: skip
    rows = {name: summary_row(runs[name], measured_pairs) for name in settings}
    for row in rows.values():
        print(json.dumps(row), flush=True)
    report(rows)


def summary_row(runs: dict, pairs) -> dict:
    """The figures of one setting's ``runs`` (by start, one per pair), pooled and per sample set."""
    row = {f"{key} from {begin}": summarise(runs[begin])[key] for begin in STARTS for key in COLUMNS}
    for begin, sample_set in itertools.product(STARTS, sorted({pair.sample_set for pair in pairs})):
        of_set = [run for run, pair in zip(runs[begin], pairs, strict=True) if pair.sample_set == sample_set]
        summary = summarise(of_set)
        row.update({f"{key} from {begin}, {sample_set}": summary[key] for key in BY_SET})
    return row


def report(rows: dict) -> None:
    keys = list(next(iter(rows.values())))
    print("\n| | " + " | ".join(rows) + " |")
    print("| --- " * (len(rows) + 1) + "|")
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{rows[name][key]:.3f}" for name in rows) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER, help="stage 1 and the decoder to start from")
    parser.add_argument("--folds", type=int, help="measure every training image out of fold, with this many folds")
    parser.add_argument("--fold-adapters", type=Path, help="with --folds: bench_automatic_training.py's run folder")
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=JSON",
                        help="a setting: its name and ClickTrainConfig fields over the recipe's")  # fmt: skip
    args = parser.parse_args()
    settings = {}
    for text in args.setting:
        name, _, overrides = text.partition("=")
        settings[name] = json.loads(overrides or "{}")
    if bool(args.folds) != bool(args.fold_adapters):
        parser.error("--folds and --fold-adapters go together")
    compare(splits(args.samples, args.adapter, args.folds, args.fold_adapters), settings)


if __name__ == "__main__":
    main()
