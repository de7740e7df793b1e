"""Quality of the offline default model on the held-out real samples, and retraining speed.

    python bench/bench_default_model.py quality SAMPLES   # LiteMedSAM as shipped vs the tuned default
    python bench/bench_default_model.py retrain SAMPLES   # seconds per retraining epoch, 30 labels

SAMPLES is ../shared/data/landslide-samples; quality is measured on the test side of its
``split.csv``, which ``translandseg train-default`` never trains on.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from translandseg.build import LITE
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.loading import load_model
from translandseg.training.recipe import DefaultRecipe, full_data_split, measure


def bench_quality(samples: Path) -> None:
    _, held_out = full_data_split(samples)
    print(f"{len(held_out)} held-out images: {', '.join(p.name for p in held_out)}")
    shipped = load_model(LITE, variant="mlp2_res")  # untrained ATL: its prompts move the embedding by ~0.02 %
    tuned = load_model(LITE, adapter=DEFAULT_ADAPTER)
    for name, loaded in (("LiteMedSAM as shipped", shipped), ("tuned default", tuned)):
        metrics = measure(loaded, held_out, DefaultRecipe().click_images)
        print(name, json.dumps({k: round(v, 3) for k, v in metrics.items()}))


def bench_retrain(samples: Path) -> None:
    """Wall time per retraining epoch over 30 labelled images (the 28 samples + 2 mirrored)."""
    from annotations import AnnotationStore
    from annotations.importing import import_pairs
    from annotations.training_runs import current_run
    from translandseg.training.retraining import RetrainSettings, start_retraining

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "labels.db"
        extra = Path(folder) / "extra"
        for sub in ("image", "label"):
            (extra / sub).mkdir(parents=True)
        for name in ("df003", "df004"):
            for sub in ("image", "label"):
                image = Image.open(samples / "bijie" / sub / f"{name}.png")
                image.transpose(Image.FLIP_LEFT_RIGHT).save(extra / sub / f"{name}-mirrored.png")
        with AnnotationStore(db) as store:
            for source in (samples / "bijie", samples / "landslide4sense", extra):
                import_pairs(store, source, "bench")
        start = time.monotonic()
        start_retraining(db, RetrainSettings(LITE, epochs=3))
        epoch_seen = {}  # epoch -> when the run first reported it
        while True:
            with AnnotationStore(db) as store:
                run = current_run(store)
            if run["epoch"] and run["epoch"] not in epoch_seen:
                epoch_seen[run["epoch"]] = time.monotonic()
            if run["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        total = time.monotonic() - start
        print(f"run {run['status']}: {run['snapshot']}; {run['message']}")
        print(f"whole run (process start, baseline, 3 epochs, registration): {total:.0f} s")
        times = [epoch_seen[e] for e in sorted(epoch_seen)]
        gaps = np.diff(times).round(1).tolist()
        print("seconds per epoch after the first (training + validation):", gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "retrain"))
    parser.add_argument("samples", type=Path)
    args = parser.parse_args()
    np.random.seed(0)
    {"quality": bench_quality, "retrain": bench_retrain}[args.what](args.samples)


if __name__ == "__main__":
    main()
