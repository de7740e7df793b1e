"""How the automatic mask sees a scene, measured: native tiles, the whole scene resized, or both
fused; tiles one by one or in batches; one view or several averaged; the mask's threshold; float32
or bfloat16 arithmetic.
The test side of ``split.csv`` only (``train-default`` never trains on it), per sample set and
pooled: landslide IoU over the set's pixels, and seconds per image on this machine.

    python bench/bench_automatic.py SAMPLES [--adapter FILE] [--threads 2] [--settings NAME ...]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from translandseg.build import LITE
from translandseg.data import load_pair
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.evaluation import ConfusionMatrix
from translandseg.loading import load_model
from translandseg.predict import Predictor
from translandseg.training.recipe import full_data_split

SETTINGS = {  # name: Predictor keyword arguments
    "native, one tile at a time": {"scale": "native", "batch_size": 1},
    "native, batches of 4": {"scale": "native", "batch_size": 4},
    "whole scene resized": {"scale": "whole"},
    "whole, float32": {"scale": "whole", "precision": "float32"},
    "whole, bfloat16": {"scale": "whole", "precision": "bfloat16"},
    "fused (whole + native)": {"scale": "fused", "batch_size": 4},
    "whole, 2 views (mirrored)": {"scale": "whole", "views": 2},
    "whole, 4 views (mirrored)": {"scale": "whole", "views": 4},
    "whole, 8 views (mirrored and turned)": {"scale": "whole", "views": 8},
    "whole, threshold 0.4": {"scale": "whole", "threshold": 0.4},
    "whole, threshold 0.3": {"scale": "whole", "threshold": 0.3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="NAME",
                        help="which rows to measure (default all)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, held_out = full_data_split(args.samples)
    loaded = load_model(LITE, adapter=args.adapter)
    images = [(pair.sample_set, *load_pair(pair)) for pair in held_out]
    sets = sorted({name for name, *_ in images})
    Predictor(loaded.model).predict_array(images[0][1], images[0][2])  # warm-up
    print(f"{len(images)} held-out images, adapter {args.adapter.name}, {args.threads} threads\n")
    print("| setting | " + " | ".join(f"{s} IoU | {s} s/image" for s in sets) + " | pooled IoU |")
    print("| --- |" + " --- | --- |" * len(sets) + " --- |")
    for name in args.settings:
        predictor = Predictor(loaded.model, **SETTINGS[name])
        cells, pooled = [], ConfusionMatrix()
        for part in sets:
            matrix, seconds = ConfusionMatrix(), []
            for _, rgb, valid, label in (i for i in images if i[0] == part):
                start = time.perf_counter()
                prob = predictor.predict_array(rgb, valid)
                seconds.append(time.perf_counter() - start)
                matrix.update(prob > predictor.threshold, label)
                pooled.update(prob > predictor.threshold, label)
            cells += [f"{matrix.summary()['iou']:.3f}", f"{np.mean(seconds):.2f}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {pooled.summary()['iou']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
