"""Training losses on logits, chosen by name in a recipe (``TrainConfig.loss``).

- ``bce+dice``: 0.5 x binary cross-entropy + 0.5 x Dice loss, as the paper's public code trains;
  the default: with the default base's in-block adapter it ties the alternatives pooled and is
  far better on the Landslide4Sense samples, cross-validated (bench/README.md);
- ``bce+iou``: binary cross-entropy + IoU loss, as the paper's text describes it.
"""

from typing import Callable, Dict

import torch
from torch.nn import functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _overlap(logits: torch.Tensor, target: torch.Tensor):
    """(soft intersection, soft sum of both masks) per image."""
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.dim()))
    return (prob * target).sum(dims), (prob + target).sum(dims)


def iou_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU per image, averaged; ``smooth`` keeps empty masks defined."""
    intersection, total = _overlap(logits, target)
    return (1 - (intersection + smooth) / (total - intersection + smooth)).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged; ``smooth`` keeps empty masks defined."""
    intersection, total = _overlap(logits, target)
    return (1 - (2 * intersection + smooth) / (total + smooth)).mean()


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + iou_loss(logits, target)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.binary_cross_entropy_with_logits(logits, target) + 0.5 * dice_loss(logits, target)


LOSSES: Dict[str, Loss] = {"bce+dice": bce_dice_loss, "bce+iou": bce_iou_loss}
DEFAULT_LOSS = "bce+dice"
