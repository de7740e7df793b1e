"""An image-guided upsampler for the automatic mask (issue 33): the shipped adapter's probabilities,
brought to each image's pixels bilinearly as today, then refitted to the image by the guided
filter (He, Sun and Tang, TPAMI 2013: in each window the least-squares fit of the probability
as a linear function of the image, so that its edges follow the image's), beside today's path,
per sample set. An image-guided upsampler with no weights to train.

    python bench/bench_guided_upsampling.py SAMPLES --side train --per-set 40 \
        [--guides gray color] [--radii 2 4 8] [--eps 0.0001 0.001 0.01]

Each image is predicted once (float32); every variant filters the same probabilities. Printed
per variant: landslide IoU over each set's pixels / mean boundary F-score (2 px) of its images,
the landslide-free pixels marked, and the filter's mean milliseconds an image. The variant is
chosen on the train side (``--side train``); ``--side test`` then measures it beside today's.
"""

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from translandseg.build import LITE
from translandseg.data import load_pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.loading import load_model
from translandseg.metrics import ConfusionMatrix, boundary_f_score
from translandseg.predict import DEFAULT_THRESHOLD, REFERENCE_PRECISION, Predictor
from translandseg.training.recipe import FULL_DATA_SETS, LANDSLIDE_FREE, seeded_per_set

SETS = FULL_DATA_SETS + ("uav-orthophoto",)
GUIDES = ("gray", "color")
Variant = Tuple[str, int, float]  # guide, radius, eps; radius 0: today's bilinear path
Sample = Tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # set, rgb, valid, probability, label


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean of each (2 radius + 1)² window of (N, C, H, W), over its pixels inside the image."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """``source`` (N, 1, H, W) filtered with ``guide`` (N, C, H, W), C = 1 or 3, values 0-1: in each
    window the least-squares fit ``a · guide + b`` to ``source``, ridge ``eps``; the fits of all
    windows that hold a pixel are averaged there."""
    if radius < 1 or eps <= 0:
        raise ValueError(f"the guided filter needs a radius >= 1 and eps > 0, not {radius} and {eps}")
    mean_i, mean_p = box_mean(guide, radius), box_mean(source, radius)
    cov_ip = box_mean(guide * source, radius) - mean_i * mean_p
    if guide.shape[1] == 1:
        a = cov_ip / (box_mean(guide * guide, radius) - mean_i * mean_i + eps)
    else:
        a = _solve_per_pixel(guide, mean_i, cov_ip, radius, eps)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    return (box_mean(a, radius) * guide).sum(1, keepdim=True) + box_mean(b, radius)


def _solve_per_pixel(guide: torch.Tensor, mean_i: torch.Tensor, cov_ip: torch.Tensor, radius: int,
                     eps: float) -> torch.Tensor:  # fmt: skip
    """The colour guide's coefficients (N, 3, H, W): (Σ + eps I)⁻¹ cov(I, p) at each pixel."""
    channels = guide.shape[1]
    products = guide[:, :, None] * guide[:, None]  # (N, C, C, H, W)
    n, _, _, h, w = products.shape
    second = box_mean(products.reshape(n, channels * channels, h, w), radius).reshape(n, channels, channels, h, w)
    sigma = second - mean_i[:, :, None] * mean_i[:, None] + eps * torch.eye(channels)[None, :, :, None, None]
    a = torch.linalg.solve(sigma.permute(0, 3, 4, 1, 2), cov_ip.permute(0, 2, 3, 1)[..., None])
    return a[..., 0].permute(0, 3, 1, 2)


def image_guide(rgb: np.ndarray, kind: str) -> torch.Tensor:
    """The guide (1, C, H, W), values 0-1, of RGB uint8 (H, W, 3): its gray level or its colours."""
    if kind not in GUIDES:
        raise ValueError(f"the guide must be one of {GUIDES}, not {kind!r}")
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()[None] / 255
    return image.mean(1, keepdim=True) if kind == "gray" else image


def refine_probability(prob: np.ndarray, rgb: np.ndarray, radius: int, eps: float, guide: str = "color",
                       valid: Optional[np.ndarray] = None) -> np.ndarray:  # fmt: skip
    """A probability map (H, W) at the image's pixels refitted to the image ``rgb`` (H, W, 3),
    clipped to 0-1; pixels outside ``valid`` keep their value."""
    source = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    refined = guided_filter(image_guide(rgb, guide), source, radius, eps)[0, 0].clamp_(0, 1).numpy()
    return refined if valid is None else np.where(valid, refined, prob)


def predicted(samples_root: Path, side: str, per_set: int) -> List[Sample]:
    train, test = read_split(samples_root, SETS)
    pairs = {"train": train, "test": test}[side]
    pairs = seeded_per_set(pairs, per_set) if per_set else pairs
    predictor = Predictor(load_model(LITE, adapter=DEFAULT_ADAPTER).model, precision=REFERENCE_PRECISION)
    out = []
    for pair in tqdm(pairs, desc="predict", unit="image"):
        rgb, valid, label = load_pair(pair)  # read once: the filter needs the pixels too
        out.append((pair.sample_set, rgb, valid, predictor.predict_array(rgb, valid), label))
    return out


def figures(samples: List[Sample], variant: Variant, threshold: float) -> Dict[str, str]:
    guide, radius, eps = variant
    matrices: Dict[str, ConfusionMatrix] = {}
    scores: Dict[str, List[float]] = {}
    seconds = 0.0
    for name, rgb, valid, probability, label in samples:
        start = time.perf_counter()
        if radius:
            probability = refine_probability(probability, rgb, radius, eps, guide, valid)
        seconds += time.perf_counter() - start
        mask = (probability > threshold) & valid
        matrices.setdefault(name, ConfusionMatrix()).update(mask, label)
        scores.setdefault(name, []).append(boundary_f_score(mask, label))
    row = {}
    for name in sorted(matrices):
        counts = matrices[name].counts
        if name == LANDSLIDE_FREE:
            row[name] = f"{counts[0, 1] / counts.sum():.1%}"
        else:
            row[name] = f"{matrices[name].summary()['iou']:.3f} / {np.mean(scores[name]):.3f}"
    row["ms an image"] = f"{1000 * seconds / len(samples):.0f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path)
    parser.add_argument("--side", choices=("train", "test"), default="train")
    parser.add_argument("--per-set", type=int, default=0, help="seeded images a set (default: all)")
    parser.add_argument("--guides", nargs="+", default=["gray", "color"])
    parser.add_argument("--radii", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--eps", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2])
    args = parser.parse_args()
    samples = predicted(args.samples, args.side, args.per_set)
    variants = [("", 0, 0.0)] + [(g, r, e) for g in args.guides for r in args.radii for e in args.eps]
    for variant in tqdm(variants, desc="variants", unit="variant"):
        row = figures(samples, variant, DEFAULT_THRESHOLD)
        if variant == variants[0]:
            print(f"| upsampling ({args.side} side) | " + " | ".join(row) + " |")
            print("| --- " * (len(row) + 1) + "|")
        label = "bilinear (today)" if not variant[1] else f"guided: {variant[0]}, r {variant[1]}, eps {variant[2]:g}"
        print(f"| {label} | " + " | ".join(row.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
