"""A faster retraining round, measured once (issue 32): only the automatic mask decoder trains, on
the active version's ATL embeddings computed once per label and orientation.

The labels are the first ``--labels`` of the campaign's pool order (``bench_campaign.py``), those
on the store's training side (``validation_split``), with their ground truth; the default adapter
starts; BCE + Dice, AdamW, ``--passes`` passes in a seeded order. Prints the embedding and
training seconds and the automatic IoU / F1 / mIoU on the campaign's test tiles.

    python bench/bench_decoder_round.py SAMPLES [--labels 40] [--passes 30] [--orientations 4]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_campaign import region_split
from torch.nn import functional as F

from annotations.training_runs import validation_split
from translandseg.build import LITE
from translandseg.data import load_pair, to_model_input
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.download import sha256_of
from translandseg.evaluation import evaluate
from translandseg.interactive.training import orientations
from translandseg.loading import load_model
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.training.losses import DEFAULT_LOSS, LOSSES


def embedded(model, pairs, count: int):
    """(ATL embedding, target (1, 1, S, S)) of ``count`` orientations of each pair."""
    size, items = model.image_size, []
    with torch.no_grad():
        for pair in pairs:
            rgb, _, label = load_pair(pair)
            for image, mask in orientations(rgb, label.astype(np.uint8), count=count):
                embedding = model.encode(to_model_input(image, size)[None].to(model.device))
                target = F.interpolate(torch.from_numpy(mask)[None, None].float(), (size, size), mode="nearest")
                items.append((embedding, target))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--labels", type=int, default=40)
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--orientations", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--test-images", type=int, default=100)
    args = parser.parse_args()
    pool, test = region_split(args.samples, args.test_images)
    labelled = [p for p in pool[: args.labels] if validation_split(sha256_of(p.image)) == "train"]
    torch.manual_seed(0)
    model = load_model(LITE, adapter=DEFAULT_ADAPTER).model
    started = time.monotonic()
    items = embedded(model, labelled, args.orientations)
    embedding_seconds = time.monotonic() - started
    decoder = model.mask_decoder.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(0)
    for _ in range(args.passes):
        for index in rng.permutation(len(items)):
            embedding, target = items[index]
            loss = LOSSES[DEFAULT_LOSS](model.decode(embedding), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    decoder.requires_grad_(False).eval()
    training_seconds = time.monotonic() - started - embedding_seconds
    figures = evaluate(Predictor(model, precision=REFERENCE_PRECISION), test)
    print(f"{len(labelled)} training labels x {args.orientations} orientations: embedded in {embedding_seconds:.0f} s, "
          f"{args.passes} passes in {training_seconds:.0f} s; test IoU {figures['iou']:.3f}, F1 {figures['f1']:.3f}, "
          f"mIoU {figures['miou']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
