"""Point-decoder training settings compared on the training part's selection fifth (issue 11).

    python bench/bench_click_training.py SAMPLES [--adapter FILE] \\
        --setting now='{}' --setting inner='{"click_placement": "inner"}'

Every setting (a name and ``ClickTrainConfig`` fields over the recipe's) trains a point decoder
from the adapter's automatic decoder, as ``train-default`` does, on the **fit part** of the
training split (``held_out_split``'s training part less its seeded selection fifth, 20 %, seed
42) and is measured on that **selection fifth** with the app's correction engine: NoC@85/90, IoU
after k clicks, harmful and fallback clicks, from the automatic mask and from empty. The
held-out split plays no part. Stage 1 (ATL and automatic decoder) is the adapter's, which was
trained on the whole training part, selection fifth included, as the recipe's stage 2 sees it.
The training frames are made once for each distinct ``orientations`` / ``focus_frames`` and the
click embeddings once, shared by every setting.
"""

import argparse
import functools
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from translandseg.build import LITE
from translandseg.data import split_pairs
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import click_runs, summarise
from translandseg.interactive.prompting import PointPrompter
from translandseg.interactive.training import prepare_frames, train_point_decoder
from translandseg.loading import load_model
from translandseg.training.recipe import SPLIT_SEED, DefaultRecipe, automatic_masks, held_out_split

COLUMNS = ("noc85", "noc90", "iou@1", "iou@3", "iou@5", "iou@10", "harmful_clicks", "fallback_clicks")


def compare(samples: Path, adapter: Path, settings: dict) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    training, _ = held_out_split(samples)
    fit, selection = split_pairs(training, DefaultRecipe().selection_fraction, SPLIT_SEED)
    print(f"fit part: {len(fit)} images; selection fifth: {', '.join(p.name for p in selection)}", flush=True)
    loaded = load_model(LITE, adapter=adapter)
    start = loaded.model.mask_decoder.state_dict()  # the recipe starts the point decoder here
    prompter = PointPrompter(loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, EmbeddingCache(0))
    recipe = DefaultRecipe().clicks
    frames = {}  # (orientations, focus_frames): the fit part's frames
    automatic = functools.cache(automatic_masks(loaded))  # each fit image's automatic mask, predicted once
    cache = EmbeddingCache(256)  # the selection images' click embeddings, shared by every setting
    rows = {}
    for name, overrides in settings.items():
        config = replace(recipe, **overrides)
        framing = (config.orientations, config.focus_frames)
        if framing not in frames:
            frames[framing] = prepare_frames(prompter, fit, automatic, config)
        loaded.prompt_decoder.load_state_dict(start)
        began = time.perf_counter()
        history = train_point_decoder(prompter, frames[framing], config)
        minutes = (time.perf_counter() - began) / 60
        row = {}
        for begin in ("automatic", "empty"):
            summary = summarise(click_runs(loaded, selection, begin, cache=cache))
            row.update({f"{key} from {begin}": summary[key] for key in COLUMNS})
        rows[name] = row
        print(f"{name} ({json.dumps(overrides)}): {minutes:.1f} min, last loss {history[-1]['loss']:.3f}", flush=True)
        print(json.dumps(row), flush=True)
    report(rows)


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
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=JSON",
                        help="a setting: its name and ClickTrainConfig fields over the recipe's")  # fmt: skip
    args = parser.parse_args()
    settings = {}
    for text in args.setting:
        name, _, overrides = text.partition("=")
        settings[name] = json.loads(overrides or "{}")
    compare(args.samples, args.adapter, settings)


if __name__ == "__main__":
    main()
