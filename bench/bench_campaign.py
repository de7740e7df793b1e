"""A new region learnt from its analysts' labels (issue 32): the label -> retrain -> better masks loop.

The region is ``uav-orthophoto/`` (the default never trains on it): its training side of
``split.csv`` is the pool, imported into a fresh store in a seeded random order; its test side
(``--test-images``, a seeded choice) gives the figures. A simulated analyst
(``training.campaign``) labels the queue's next images through the app's workspace, in the
queue's ``--order``: "added" (the seeded random order) or "uncertainty" (the active version's
least certain first; the starting version scores ``--rank`` images, each retraining run as many
with its new version). After each of ``--rounds`` label counts, a retraining run goes through the
Model tab's path. Each row: test-side automatic IoU / F1 / mIoU, clicks to IoU 0.85 from the
automatic mask with the version's point decoder and with the one it started from (the clicks'
learning), and the round's minutes.

    python bench/bench_campaign.py SAMPLES [--order added|uncertainty] [--rounds 10 20 40 80]
        [--out runs/campaign-ORDER]
    python bench/bench_campaign.py plot runs/campaign-*/campaign.json --out bench/campaign.png
"""

import argparse
import json
import random
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from annotations import AnnotationStore
from annotations.importing import import_images
from annotations.labeling import Workspace
from annotations.ranking import score_images, set_queue_order
from translandseg.build import LITE
from translandseg.data import Pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.evaluation import evaluate
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import click_runs, summarise
from translandseg.loading import LoadedModel, load_model
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.training.campaign import Campaign, RoundRecord, label_summary, run_campaign
from translandseg.training.retraining import RetrainSettings

REGION = "uav-orthophoto"
SEED = 42
SHORTCUT_MIOU = 0.3415  # the mask marking every pixel, on the 100 seeded test tiles (68.3 % landslide)


def figures_on(test, click_images: int) -> callable:
    """``measure(active, previous)``: automatic figures of ``active`` on ``test``; NoC@85/90 and IoU
    after k clicks from its automatic mask on ``click_images`` of them, with its point decoder and
    (``*_clicks_kept``) with ``previous``'s."""
    chosen = test[:click_images]
    cache = EmbeddingCache(512)  # plain embeddings: the same for every version

    def clicks(loaded: LoadedModel) -> Dict[str, float]:
        return summarise(click_runs(loaded, chosen, "automatic", cache=cache))

    def measure(active: LoadedModel, previous: Optional[LoadedModel]) -> Dict[str, float]:
        figures = evaluate(Predictor(active.model, precision=REFERENCE_PRECISION), test)
        figures.update(clicks(active))
        if previous is not None and previous.version != active.version:
            kept = replace(active, prompt_decoder=previous.prompt_decoder, clicks_primed=previous.clicks_primed,
                           prompt_decoder_tuned=previous.prompt_decoder_tuned)  # fmt: skip
            figures.update({f"{k}_clicks_kept": v for k, v in clicks(kept).items()})
        return figures

    return measure


def region_split(samples: Path, test_images: int) -> Tuple[List[Pair], List[Pair]]:
    """(pool, test): the region's training side in a seeded random order, and a seeded
    ``test_images`` of its test side."""
    train, test = read_split(samples, (REGION,))
    pool, test = sorted(train, key=lambda p: p.name), sorted(test, key=lambda p: p.name)
    random.Random(SEED).shuffle(pool)
    random.Random(SEED).shuffle(test)
    return pool, test[:test_images]


def campaign(args) -> None:
    pool, test = region_split(args.samples, args.test_images)
    out = args.out or Path(f"runs/campaign-{args.order}")
    out.mkdir(parents=True, exist_ok=True)
    db = out / "labels.db"
    if db.exists():
        sys.exit(f"{db} exists: a campaign starts from a fresh store (remove the folder to run it again)")
    with AnnotationStore(db) as store:
        import_images(store, [p.image for p in pool], added_by="campaign")
        set_queue_order(store, args.order)
    loaded = load_model(LITE, adapter=DEFAULT_ADAPTER)
    workspace = Workspace(db, out / "images", loaded, "the shipped default")
    if args.order == "uncertainty":
        with workspace.store() as store:
            score_images(store, loaded, loaded.version, args.rank)
    settings = RetrainSettings(LITE, epochs=args.epochs, max_minutes=args.minutes, click_epochs=args.click_epochs,
                               trains=args.trains, decoder_steps=args.decoder_steps,
                               rank_images=args.rank if args.order == "uncertainty" else 0)  # fmt: skip
    truths = {p.image.name: p.label for p in pool}
    run = Campaign(workspace, truths, args.rounds, settings)
    report: Dict = {"order": args.order, "settings": asdict(settings), "test_images": len(test), "rounds": []}

    def keep(record: RoundRecord) -> None:
        report["rounds"].append({**asdict(record), "labelling": label_summary(run.labels)})
        (out / "campaign.json").write_text(json.dumps(report, indent=1))
        print(row(record), flush=True)

    run_campaign(run, figures_on(test, args.click_images), keep)


def row(record: RoundRecord) -> str:
    f = record.figures
    kept = f"{f['noc85_clicks_kept']:.1f}" if "noc85_clicks_kept" in f else "-"
    return (f"| {record.labels} | {f['iou']:.3f} | {f['f1']:.3f} | {f['miou']:.3f} | {f['noc85']:.1f} | {kept} "
            f"| {f['iou@5']:.3f} | {record.minutes:.1f} | {_outcome(record)} |")  # fmt: skip


def _outcome(record: RoundRecord) -> str:
    """What the round's run did to the active version."""
    if not record.run_status:
        return "-"
    if record.run_status != "succeeded":
        return record.run_status
    return "activated" if "activated" in record.run_message else "not better on validation: not activated"


HEADER = ("| labels | automatic IoU | F1 | mIoU | NoC@85 | NoC@85, clicks' decoder kept | IoU after 5 clicks "
          "| round (min) | new version |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip


def campaign_name(report: Dict) -> str:
    """The queue order and what each round trained, e.g. "uncertainty order, decoder rounds"."""
    return f"{report['order']} order, {report['settings'].get('trains', 'adapter')} rounds"


def plot(args) -> None:
    """One PNG: automatic mIoU and NoC@85 against labels, a line per campaign."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (iou_axis, noc_axis) = pyplot.subplots(1, 2, figsize=(9, 3.6))
    for path in args.campaigns:
        report = json.loads(Path(path).read_text())
        rounds: List[Dict] = report["rounds"]
        labels, name = [r["labels"] for r in rounds], campaign_name(report)
        iou_axis.plot(labels, [r["figures"]["miou"] for r in rounds], marker="o", label=name)
        noc_axis.plot(labels, [r["figures"]["noc85"] for r in rounds], marker="o", label=name)
        print(f"\n{name}\n\n{HEADER}")
        for record in rounds:
            print(row(RoundRecord(**{k: v for k, v in record.items() if k != "labelling"})))
    iou_axis.axhline(SHORTCUT_MIOU, color="grey", linestyle=":", label="every pixel landslide")
    iou_axis.set(xlabel="accepted labels", ylabel="automatic mIoU (test side)", title=REGION)
    noc_axis.set(xlabel="accepted labels", ylabel="clicks to IoU 0.85 (20 max)", title="from the automatic mask")
    for axis in (iou_axis, noc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"\n{args.out}")


def main() -> None:
    if sys.argv[1:2] == ["plot"]:
        parser = argparse.ArgumentParser(description="plot campaigns")
        parser.add_argument("campaigns", nargs="+", type=Path)
        parser.add_argument("--out", type=Path, default=Path("bench/campaign.png"))
        plot(parser.parse_args(sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--order", choices=("added", "uncertainty"), default="added")
    parser.add_argument("--rounds", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--click-epochs", type=int, default=2)
    parser.add_argument("--trains", choices=("adapter", "decoder"), default="adapter", help="what each round trains")
    parser.add_argument("--decoder-steps", type=int, default=1500)
    parser.add_argument("--rank", type=int, default=100, help="images each version scores (uncertainty order)")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--click-images", type=int, default=20)
    parser.add_argument("--out", type=Path)
    campaign(parser.parse_args())


if __name__ == "__main__":
    main()
