"""The paper's training loss: binary cross-entropy plus IoU loss, on logits."""

import torch
from torch.nn import functional as F


def iou_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft IoU per image, averaged; ``smooth`` keeps empty masks defined."""
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.dim()))
    intersection = (prob * target).sum(dims)
    union = (prob + target).sum(dims) - intersection
    return (1 - (intersection + smooth) / (union + smooth)).mean()


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + iou_loss(logits, target)
