"""Train the point-prompt decoder with simulated clicks, as SAM and RITM-style models are trained.

The frozen encoder's plain embeddings (the ones clicks use, see ``prompting``) are computed
once per training image and each of its 8 flips/rotations. Each step then plays one labelled
image like an analyst: a first positive click at random inside the landslide, SAM's three
proposals scored by the best of them (SAM's minimum-over-outputs loss); then ``clicks - 1``
more clicks, each drawn at random in the larger error of the current mask (positive in a
missed part, negative on a false alarm), with every click so far and the previous low-res
logits as ``mask_input``, one output each. Loss: the paper's BCE + IoU on every answer, plus
the mean squared error of SAM's predicted IoU (the app picks among proposals by it).
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F
from tqdm import tqdm

from .click_simulation import next_click
from .data import Pair, load_pair
from .losses import bce_iou_loss
from .modeling import TransLandSeg


@dataclass
class ClickTrainConfig:
    epochs: int = 5  # passes over every image in all 8 orientations
    clicks: int = 4  # clicks played per image and step
    lr: float = 1e-4
    weight_decay: float = 0.01
    accumulate: int = 4  # images per optimiser step
    seed: int = 42
    max_steps: Optional[int] = None  # stop early (a smoke run)


@dataclass
class ClickSample:
    embedding: torch.Tensor  # (C, G, G)
    target: torch.Tensor  # float (1, 1, S, S), padded like the input
    valid: np.ndarray  # bool (S, S): the image, not its padding


def orientations(rgb: np.ndarray, label: np.ndarray):
    """The 8 flips/rotations of an image and its label."""
    for flip in (False, True):
        image, mask = (rgb[:, ::-1], label[:, ::-1]) if flip else (rgb, label)
        for turns in range(4):
            yield np.ascontiguousarray(np.rot90(image, turns)), np.ascontiguousarray(np.rot90(mask, turns))


def prepare_samples(model: TransLandSeg, pairs: Sequence[Pair], encode: Callable[[np.ndarray], np.ndarray],
                    progress: bool = True) -> List[ClickSample]:  # fmt: skip
    """Embeddings and padded targets of every pair with a landslide, in all 8 orientations."""
    size = model.image_size
    transform = ResizeLongestSide(size)
    samples = []
    for pair in tqdm(pairs, desc="embedding training images", disable=not progress):
        rgb, _, label = load_pair(pair)
        if not label.any():
            continue  # no landslide to click on
        for image, mask in orientations(rgb, label):
            height, width = transform.get_preprocess_shape(*mask.shape, size)
            target = torch.zeros(1, 1, size, size)
            resized = F.interpolate(torch.from_numpy(mask)[None, None].float(), (height, width), mode="nearest")
            target[..., :height, :width] = resized
            valid = np.zeros((size, size), bool)
            valid[:height, :width] = True
            samples.append(ClickSample(torch.from_numpy(encode(image)), target, valid))
    return samples


def train_prompt_decoder(model: TransLandSeg, decoder: MaskDecoder, samples: Sequence[ClickSample],
                         config: Optional[ClickTrainConfig] = None, progress: bool = True,
                         on_epoch: Optional[Callable[[Dict[str, float]], None]] = None) -> List[Dict[str, float]]:  # fmt: skip
    """Train ``decoder`` in place on ``samples``; returns the mean loss per epoch."""
    if not samples:
        raise ValueError("click training needs at least one labelled image with a landslide")
    config = config or ClickTrainConfig()
    rng = np.random.default_rng(config.seed)
    decoder.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history, steps = [], 0
    for epoch in range(1, config.epochs + 1):
        losses = []
        order = rng.permutation(len(samples))
        for position, index in enumerate(tqdm(order, desc=f"clicks epoch {epoch}/{config.epochs}",
                                              disable=not progress)):  # fmt: skip
            loss = _play(model, decoder, samples[index], config.clicks, rng)
            (loss / config.accumulate).backward()
            losses.append(loss.item())
            if (position + 1) % config.accumulate == 0 or position + 1 == len(order):
                optimizer.step()
                optimizer.zero_grad()
                steps += 1
                if config.max_steps is not None and steps >= config.max_steps:
                    break
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        if on_epoch is not None:
            on_epoch(history[-1])
        if config.max_steps is not None and steps >= config.max_steps:
            break
    decoder.requires_grad_(False).eval()
    return history


def _play(model: TransLandSeg, decoder: MaskDecoder, sample: ClickSample, clicks: int,
          rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
    """The summed loss of one simulated click sequence on ``sample``."""
    target = sample.target.to(model.device)
    truth = sample.target[0, 0].numpy() > 0
    rows, cols = np.nonzero(truth)
    pick = int(rng.integers(len(rows)))
    points: List[Tuple[float, float]] = [(float(cols[pick]), float(rows[pick]))]
    labels = [1]
    mask_input = None
    total = torch.zeros((), device=model.device)
    for step in range(clicks):
        low_res, predicted_iou = _decode(model, decoder, sample.embedding, points, labels, mask_input, step == 0)
        size = model.image_size
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        losses = torch.stack([bce_iou_loss(logits[:, i : i + 1], target) for i in range(logits.shape[1])])
        best = int(losses.argmin())
        with torch.no_grad():
            actual_iou = _iou(logits > model.mask_threshold, target > 0)
        total = total + losses[best] + F.mse_loss(predicted_iou[0], actual_iou)
        mask_input = low_res[:, best : best + 1].detach()
        click = next_click((logits[0, best] > model.mask_threshold).cpu().numpy(), truth, sample.valid, rng)
        if click is None:
            break
        points.append((float(click.x), float(click.y)))
        labels.append(int(click.positive))
    return total


def _decode(model: TransLandSeg, decoder: MaskDecoder, embedding: torch.Tensor, points, labels,
            mask_input: Optional[torch.Tensor], multimask: bool) -> Tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    device = model.device
    coords = torch.tensor([points], dtype=torch.float32, device=device)
    point_labels = torch.tensor([labels], device=device)
    sparse, dense = model.prompt_encoder(points=(coords, point_labels), boxes=None, masks=mask_input)
    low_res, predicted_iou = decoder(image_embeddings=embedding.to(device)[None],
                                     image_pe=model.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                     dense_prompt_embeddings=dense, multimask_output=multimask)  # fmt: skip
    return low_res, predicted_iou


def _iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted mask (1, N, S, S) with ``target`` (1, 1, S, S), shape (N,)."""
    intersection = (predicted & target).flatten(2).sum(-1)[0].float()
    union = (predicted | target).flatten(2).sum(-1)[0].float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
