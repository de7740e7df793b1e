"""The automatic stage of the default recipe, trained again with one setting changed: which
sample sets, which loss, which ATL variant, set-balanced epochs, random zoom-in crops, epochs and
learning rate. Each run uses the test side of ``split.csv`` (never trained or selected on), its
stage-one split (the seeded selection fifth, or every training image when the last epoch is
kept) and its seed, and prints one Markdown row:
held-out landslide IoU per set and pooled, F1 and mIoU pooled, trainable weights, seconds per
epoch. The paper's variant study on the default base is this script run once per variant.

With ``--folds K`` the setting is cross-validated on the training part instead, to choose
between settings without the held-out split: K seeded folds, each sample set dealt evenly
across them; each fold is predicted by the model the automatic stage makes from the other
folds (the fold itself chooses nothing), and the row gives out-of-fold landslide IoU per set,
pooled and averaged over the sets.

    python bench/bench_automatic_training.py SAMPLES [--sets bijie landslide4sense]
        [--loss bce+dice] [--variant inblock] [--epochs 12] [--lr 2e-4] [--seed 42] [--balance-sets]
        [--zoom 1.5] [--no-keep-last-epoch] [--folds K [--thresholds 0.3 0.5]] [--out runs/automatic-study]
"""

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from translandseg.build import LITE, LITE_ATL_VARIANT
from translandseg.data import split_pairs, stratified_folds
from translandseg.evaluation import ConfusionMatrix, confusions
from translandseg.loading import LoadedModel, load_model
from translandseg.predict import DEFAULT_THRESHOLD, Predictor
from translandseg.training.recipe import FULL_DATA_SETS, SPLIT_SEED, DefaultRecipe, full_data_split
from translandseg.training.trainer import TrainResult, train


def confusion_by_set(predictor: Predictor, pairs, matrices: Dict[float, Dict[str, ConfusionMatrix]]) -> None:
    """Add the predictor's confusion on each sample set's pairs to that set's matrix, per threshold."""
    for name in next(iter(matrices.values())):
        of_set = confusions(predictor, [pair for pair in pairs if pair.sample_set == name], list(matrices))
        for threshold, matrix in of_set.items():
            matrices[threshold][name].counts += matrix.counts


def metrics_by_set(matrices: Dict[str, ConfusionMatrix]) -> dict:
    """Landslide IoU per set, pooled and averaged over the sets; F1 and mIoU pooled."""
    pooled = ConfusionMatrix()
    for matrix in matrices.values():
        pooled.counts += matrix.counts
    per_set = {f"{name} IoU": matrix.summary()["iou"] for name, matrix in matrices.items()}
    summary = pooled.summary()
    return {**per_set, "pooled IoU": summary["iou"], "mean IoU of the sets": sum(per_set.values()) / len(per_set),
            "F1": summary["f1"], "mIoU": summary["miou"]}  # fmt: skip


def held_out_metrics(predictor: Predictor, held_out) -> dict:
    matrices = {predictor.threshold: {name: ConfusionMatrix() for name in FULL_DATA_SETS}}
    confusion_by_set(predictor, held_out, matrices)
    return metrics_by_set(matrices[predictor.threshold])


def train_stage_one(training, variant: str, recipe: DefaultRecipe, run: Path) -> Tuple[LoadedModel, TrainResult]:
    """The recipe's automatic stage on ``training``: the model with the epoch it keeps, and the run."""
    fit, selection = (training, []) if recipe.automatic.keep_last_epoch else split_pairs(training, 0.2, SPLIT_SEED)
    torch.manual_seed(recipe.automatic.seed)
    loaded = load_model(LITE, variant=variant)
    result = train(loaded, fit, selection, run, recipe.automatic, progress=True)
    return load_model(LITE, adapter=result.adapter_path), result


def seconds_per_epoch(history) -> float:
    return sum(r["seconds"] for r in history) / len(history)


def folds_of(training, folds: int, run: Path) -> List[Tuple[list, list, Path]]:
    """(the other folds' pairs, the fold's pairs, the fold's run folder) for each seeded fold."""
    return [([pair for pair in training if pair not in fold], fold, run / f"fold-{index + 1}-of-{folds}")
            for index, fold in enumerate(stratified_folds(training, folds, SPLIT_SEED))]  # fmt: skip


def cross_validate(training, args, recipe: DefaultRecipe, run: Path) -> List[dict]:
    """Out-of-fold metrics of the setting, one row per mask threshold: each fold predicted by a
    model trained on the others (a fold already trained in ``run`` is reused)."""
    sets = sorted({p.sample_set for p in training})
    matrices = {t: {name: ConfusionMatrix() for name in sets} for t in args.thresholds}
    history = []
    for rest, fold, fold_run in folds_of(training, args.folds, run):
        loaded, result = train_stage_one(rest, args.variant, recipe, fold_run)
        history += result.history
        confusion_by_set(Predictor(loaded.model), fold, matrices)  # one prediction per image, every threshold
    return [{"folds": args.folds, "threshold": threshold, "s/epoch": seconds_per_epoch(history),
             **metrics_by_set(by_set)} for threshold, by_set in matrices.items()]  # fmt: skip


def held_out_run(training, held_out, args, recipe: DefaultRecipe, run: Path) -> dict:
    """Train as the recipe's automatic stage does; held-out metrics of the epoch it keeps."""
    loaded, result = train_stage_one(training, args.variant, recipe, run)
    return {"training images": len(training), "kept epoch": result.best_epoch,
            "trainable weights": sum(p.numel() for p in loaded.model.trainable_parameters()),
            "s/epoch": seconds_per_epoch(result.history), **held_out_metrics(Predictor(loaded.model), held_out)}


def run_name(args) -> str:
    """The run's folder: every setting spelled out, so that no other setting's run is resumed or reused."""
    name = f"{args.variant}-{args.loss}-{'+'.join(args.sets)}{'-balanced' if args.balance_sets else ''}"
    name += f"-{args.epochs}epochs-lr{args.lr:g}-{'last' if args.keep_last_epoch else 'best'}"
    name += f"-zoom{args.zoom:g}" if args.zoom != 1 else ""
    name += f"-cv{args.folds}" if args.folds else ""
    return name + (f"-seed{args.seed}" if args.seed != DefaultRecipe().automatic.seed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--sets", nargs="+", default=list(FULL_DATA_SETS), help="sample sets to train on")
    parser.add_argument("--loss", default=DefaultRecipe().automatic.loss)
    parser.add_argument("--variant", default=LITE_ATL_VARIANT)
    parser.add_argument("--epochs", type=int, default=DefaultRecipe().automatic.epochs)
    parser.add_argument("--lr", type=float, default=DefaultRecipe().automatic.lr)
    parser.add_argument("--seed", type=int, default=DefaultRecipe().automatic.seed,
                        help="training seed (initial weights, order, augmentation); the splits keep theirs")
    parser.add_argument("--balance-sets", action="store_true", help="each sample set as often per epoch as the largest")
    parser.add_argument("--zoom", type=float, default=DefaultRecipe().automatic.zoom,
                        help="training crops' largest random zoom-in (1: the whole image)")
    parser.add_argument("--keep-last-epoch", action=argparse.BooleanOptionalAction,
                        default=DefaultRecipe().automatic.keep_last_epoch,
                        help="train on every training image and keep the last epoch (else: best on the selection fifth)")
    parser.add_argument("--folds", type=int, help="cross-validate on the training part with this many folds")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[DEFAULT_THRESHOLD],
                        help="with --folds: a row for each of these mask thresholds")
    parser.add_argument("--out", type=Path, default=Path("runs/automatic-study"))
    args = parser.parse_args()
    recipe = DefaultRecipe()
    training, held_out = full_data_split(args.samples)
    training = [p for p in training if p.sample_set in args.sets]
    config = recipe.automatic
    config.loss, config.epochs, config.lr, config.seed = args.loss, args.epochs, args.lr, args.seed
    config.balance_sets, config.keep_last_epoch, config.zoom = args.balance_sets, args.keep_last_epoch, args.zoom
    run = args.out / run_name(args)
    setting = {"variant": args.variant, "loss": args.loss, "trained on": "+".join(args.sets),
               "balanced": args.balance_sets, "zoom": args.zoom, "epochs": args.epochs, "lr": f"{args.lr:g}",
               "seed": args.seed,
               "kept": "last epoch" if args.keep_last_epoch else "best on the selection fifth"}  # fmt: skip
    if args.folds:
        rows = [{**setting, "training images": len(training), **r} for r in cross_validate(training, args, recipe, run)]
    else:
        rows = [{**setting, **held_out_run(training, held_out, args, recipe, run)}]
    (run / "study.json").write_text(json.dumps(rows if args.folds else rows[0], indent=1))
    print("| " + " | ".join(rows[0]) + " |")
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
