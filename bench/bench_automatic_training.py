"""The automatic stage of the default recipe, trained again with one setting changed: which
sample sets, which loss, which ATL variant, set-balanced epochs. Each run uses the recipe's
held-out split (never trained or selected on), its seeded selection fifth and its seed, and
prints one Markdown row:
held-out landslide IoU per set and pooled, F1 and mIoU pooled, trainable weights, seconds per
epoch. The paper's variant study on the default base is this script run once per variant.

    python bench/bench_automatic_training.py SAMPLES [--sets bijie landslide4sense]
        [--loss bce+iou] [--variant mlp2_res] [--epochs 12] [--balance-sets] [--out runs/automatic-study]
"""

import argparse
import json
from pathlib import Path

import torch

from translandseg.build import LITE
from translandseg.data import load_pair, split_pairs
from translandseg.evaluation import ConfusionMatrix
from translandseg.loading import load_model
from translandseg.modeling import DEFAULT_ATL_VARIANT
from translandseg.predict import Predictor
from translandseg.training.recipe import SAMPLE_SETS, SPLIT_SEED, DefaultRecipe, held_out_split
from translandseg.training.trainer import train


def held_out_metrics(predictor: Predictor, held_out_by_set) -> dict:
    """Landslide IoU per set and pooled; F1 and mIoU pooled."""
    pooled, row = ConfusionMatrix(), {}
    for name, pairs in held_out_by_set.items():
        matrix = ConfusionMatrix()
        for pair in pairs:
            rgb, valid, label = load_pair(pair)
            predicted = predictor.predict_array(rgb, valid) > 0.5
            matrix.update(predicted, label)
            pooled.update(predicted, label)
        row[f"{name} IoU"] = matrix.summary()["iou"]
    summary = pooled.summary()
    return {**row, "pooled IoU": summary["iou"], "F1": summary["f1"], "mIoU": summary["miou"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--sets", nargs="+", default=list(SAMPLE_SETS), help="sample sets to train on")
    parser.add_argument("--loss", default=DefaultRecipe().automatic.loss)
    parser.add_argument("--variant", default=DEFAULT_ATL_VARIANT)
    parser.add_argument("--epochs", type=int, default=DefaultRecipe().automatic.epochs)
    parser.add_argument("--balance-sets", action="store_true", help="each sample set as often per epoch as the largest")
    parser.add_argument("--out", type=Path, default=Path("runs/automatic-study"))
    args = parser.parse_args()
    recipe = DefaultRecipe()
    training, held_out = held_out_split(args.samples)
    training = [p for p in training if p.sample_set in args.sets]
    held_out_by_set = {name: [p for p in held_out if p.sample_set == name] for name in SAMPLE_SETS}
    fit, selection = split_pairs(training, recipe.selection_fraction, SPLIT_SEED)
    torch.manual_seed(recipe.automatic.seed)
    loaded = load_model(LITE, variant=args.variant)
    config = recipe.automatic
    config.loss, config.epochs, config.balance_sets = args.loss, args.epochs, args.balance_sets
    run = args.out / f"{args.variant}-{args.loss}-{'+'.join(args.sets)}{'-balanced' if args.balance_sets else ''}"
    result = train(loaded, fit, selection, run, config, progress=True)
    loaded = load_model(LITE, adapter=result.adapter_path)  # the best epoch
    row = {"variant": args.variant, "loss": args.loss, "trained on": "+".join(args.sets), "balanced": args.balance_sets,
           "training images": len(training), "best epoch": result.best_epoch,
           "trainable weights": sum(p.numel() for p in loaded.model.trainable_parameters()),
           "s/epoch": sum(r["seconds"] for r in result.history) / len(result.history),
           **held_out_metrics(Predictor(loaded.model), held_out_by_set)}  # fmt: skip
    (run / "study.json").write_text(json.dumps(row, indent=1))
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
