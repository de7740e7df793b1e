"""Training data: image/label folder pairs, a seeded split, and an augmenting torch Dataset.

A data set is a folder with ``image/NAME.EXT`` and ``label/NAME.EXT`` (the Bijie and
Landslide4Sense layout, and what the annotation store exports); EXT is png, jpg, jpeg, tif
or tiff, so GeoTIFF chips work too. A folder of such sets may hold ``split.csv``
(``set,name,original,split``): a fixed train/test side for every pair, copies of one original
image on one side (``read_split``).
"""

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from .raster import read_label, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path

    @property
    def sample_set(self) -> str:
        """The folder the pair's ``image/`` and ``label/`` folders sit in."""
        return self.image.parent.parent.name

    @property
    def name(self) -> str:
        return f"{self.sample_set}/{self.image.stem}"


def find_pairs(root: Path) -> List[Pair]:
    """Every ``image/NAME`` under ``root`` with its ``label/NAME`` (any supported suffix)."""
    root = Path(root)
    image_dir, label_dir = root / "image", root / "label"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise FileNotFoundError(f"{root} needs image/ and label/ folders")
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    images = sorted((p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)
    pairs = [Pair(image, labels[image.stem]) for image in images if image.stem in labels]
    if not pairs:
        raise FileNotFoundError(f"{root}: no image/label pairs with matching names")
    return pairs


def find_all_pairs(roots: Iterable[Path]) -> List[Pair]:
    return [pair for root in roots for pair in find_pairs(root)]


SPLIT_FILE = "split.csv"


def read_split(root: Path, sets: Sequence[str]) -> Tuple[List[Pair], List[Pair]]:
    """(train, test) pairs of the named ``sets`` under ``root`` (those present), as ``root/split.csv``
    puts them. Refused, saying which: an original image on both sides (its copies would leak the
    test side into training), a listed pair that is missing, a pair the file does not list."""
    root = Path(root)
    with open(root / SPLIT_FILE, newline="") as file:
        rows = list(csv.DictReader(file))
    sides: Dict[str, set] = {}
    for row in rows:
        sides.setdefault(row["original"], set()).add(row["split"])
    straddling = sorted(original for original, seen in sides.items() if len(seen) > 1)
    if straddling:
        raise ValueError(f"{root / SPLIT_FILE} puts copies of {len(straddling)} original image(s) on both the train "
                         f"and the test side ({', '.join(straddling[:5])}); each original must keep to one side")  # fmt: skip
    train: List[Pair] = []
    test: List[Pair] = []
    for name in (n for n in sets if (root / n).is_dir()):
        pairs = {pair.image.stem: pair for pair in find_pairs(root / name)}
        listed = {row["name"]: row["split"] for row in rows if row["set"] == name}
        missing, unlisted = sorted(set(listed) - set(pairs)), sorted(set(pairs) - set(listed))
        if missing or unlisted:
            raise ValueError(f"{root / SPLIT_FILE} and {root / name} disagree: "
                             f"{len(missing)} listed pair(s) missing ({', '.join(missing[:3])}), "
                             f"{len(unlisted)} pair(s) not listed ({', '.join(unlisted[:3])})")  # fmt: skip
        for stem, pair in sorted(pairs.items()):
            (train if listed[stem] == "train" else test).append(pair)
    return train, test


def distinct(pairs: Sequence[Pair]) -> List[Pair]:
    """``pairs`` without copies of an earlier pair's image: the same pixels, whatever the file's
    encoding (one set copying another)."""
    seen, kept = set(), []
    for pair in pairs:
        rgb, _ = read_rgb(pair.image)
        digest = hashlib.sha256(repr(rgb.shape).encode() + rgb.tobytes()).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(pair)
    return kept


def split_pairs(pairs: Sequence[Pair], val_fraction: float = 0.3, seed: int = 42) -> Tuple[List[Pair], List[Pair]]:
    """A seeded random train/validation split (70/30 with seed 42, as the paper)."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 else 0
    return order[n_val:], order[:n_val]


def stratified_folds(pairs: Sequence[Pair], k: int, seed: int = 42) -> List[List[Pair]]:
    """``k`` seeded folds for cross-validation, each sample set dealt across them evenly."""
    if not 2 <= k <= len(pairs):
        raise ValueError(f"cross-validation needs 2 to {len(pairs)} folds, not {k}")
    folds: List[List[Pair]] = [[] for _ in range(k)]
    dealt = 0
    for sample_set in sorted({pair.sample_set for pair in pairs}):
        members = [pair for pair in pairs if pair.sample_set == sample_set]
        random.Random(seed).shuffle(members)
        for pair in members:
            folds[dealt % k].append(pair)
            dealt += 1
    return folds


def load_pair(pair: Pair) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3), valid pixels and landslide mask (H, W) bool; sizes must agree."""
    rgb, valid = read_rgb(pair.image)
    label = read_label(pair.label)
    if label.shape != rgb.shape[:2]:
        raise ValueError(f"{pair.name}: label is {label.shape[::-1]} pixels, image {rgb.shape[1::-1]}")
    return rgb, valid, label & valid


def to_model_input(rgb: np.ndarray, size: int) -> torch.Tensor:
    """A float 0-255 tensor (3, size, size) from RGB uint8 (H, W, 3), resized bilinearly."""
    image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]
    return F.interpolate(image, (size, size), mode="bilinear", align_corners=False)[0]


def to_model_target(label: np.ndarray, size: int) -> torch.Tensor:
    """A float 0/1 tensor (1, 1, size, size) from a label mask (H, W), resized by nearest neighbour."""
    return F.interpolate(torch.from_numpy(label)[None, None].float(), (size, size), mode="nearest")


def check_zoom(zoom: float) -> None:
    """Refuse a random zoom-in below 1 (1: always the whole image)."""
    if zoom < 1:
        raise ValueError(f"zoom must be at least 1 (1: the whole image), not {zoom!r}")


class LandslideDataset(Dataset):
    """(image 0-255 float (3, S, S), mask float (1, S, S)) pairs, optionally augmented.

    Augmentation: random horizontal/vertical flips, 90-degree rotations and a mild colour
    jitter (brightness and contrast within +-10 %); with ``zoom`` above 1, first a random crop
    whose sides are the image's divided by a factor drawn from [1, zoom], so that landslides are
    also seen larger than the whole image shows them.
    """

    def __init__(self, pairs: Sequence[Pair], image_size: int, augment: bool = False,
                 seed: Optional[int] = None, zoom: float = 1.0) -> None:  # fmt: skip
        check_zoom(zoom)
        self.pairs = list(pairs)
        self.image_size = image_size
        self.augment = augment
        self.zoom = zoom
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.item(index, self.rng)

    def item(self, index: int, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pair ``index``, its random crop and augmentation drawn from ``rng``."""
        rgb, _, label = load_pair(self.pairs[index])
        if self.augment and self.zoom > 1:
            rgb, label = _zoomed_in(rgb, label, self.zoom, rng)
        image = to_model_input(rgb, self.image_size)
        mask = to_model_target(label, self.image_size)[0]
        return _augmented(image, mask, rng) if self.augment else (image, mask)


def _zoomed_in(rgb: np.ndarray, label: np.ndarray, zoom: float, rng: np.random.Generator):
    """A random crop of image and label at native resolution, its sides 1 to ``zoom`` times smaller."""
    factor = rng.uniform(1, zoom)
    height, width = (max(1, round(side / factor)) for side in label.shape)
    top, left = rng.integers(label.shape[0] - height + 1), rng.integers(label.shape[1] - width + 1)
    return rgb[top : top + height, left : left + width], label[top : top + height, left : left + width]


def _augmented(image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator):
    """Random flips, quarter turns and a mild brightness/contrast jitter of image and mask."""
    for axis in (1, 2):
        if rng.random() < 0.5:
            image, mask = image.flip(axis), mask.flip(axis)
    turns = int(rng.integers(4))
    image, mask = image.rot90(turns, (1, 2)), mask.rot90(turns, (1, 2))
    brightness, contrast = rng.uniform(0.9, 1.1, size=2)
    mean = image.mean()
    image = ((image - mean) * contrast + mean * brightness).clamp(0, 255)
    return image.contiguous(), mask.contiguous()
