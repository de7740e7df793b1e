"""Train the point decoder for the correction engine with simulated click sequences (RITM-style).

A training frame is a labelled image in one of its flips/rotations, or a focus window of it (the
window the engine uses once the mask is near the landslide), with its plain-encoder embedding
computed once. One step plays one analyst on a frame: the mask starts as the automatic model's
mask of the frame or empty (``automatic_share`` of the time the former), then 1 to
``max_clicks`` clicks follow (a random number, as RITM's iterative training), each drawn at
random in an error (``click_placement``: ``simulation.next_click``), or a real analyst's
clicks replayed in order from the automatic mask (``ClickFrame.clicks``), each planned, prompted
and merged exactly as the engine does
(``refinement.plan``, ``PointPrompter.refinement_prompt``, ``refinement.merged``). Every answer is
scored against the frame's label with the paper's BCE + IoU loss plus ``click_weight`` times a
BCE at the clicked pixels against their labels, which makes the decoder follow the clicks itself
(0.1 in the default recipe; measured in bench/README.md). With ``primed_clicks`` the decoder is
shown each click's disk edit already made (``refinement.disk_edit``). With ``ema_decay`` training keeps an
exponential moving average of the weights instead of the last step's, and with ``soup_seeds``
one decoder is trained per seed from the same start and their weights are averaged (a "model
soup"); both measured in bench/README.md.
"""

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..data import Pair, load_pair
from ..training.losses import bce_iou_loss
from .embedding_cache import EmbeddingCache, EmbeddingKey
from .prompting import PointPrompter, SamPrompt
from .refinement import PointClick, focus_window, merged, plan
from .simulation import check_placement, next_click

ORIENTATION_ORDER = (0, 5, 2, 7, 1, 4, 3, 6)  # spread: the first n mix rotations and flips


@dataclass
class ClickTrainConfig:
    epochs: int = 3  # passes over every frame
    max_clicks: int = 6  # clicks per sequence: 1 to this many
    automatic_share: float = 0.5  # sequences that start from the automatic mask (else from empty)
    orientations: int = 4  # flips/rotations of each image, of 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    accumulate: int = 4  # sequences per optimiser step
    click_weight: float = 0.0  # of the BCE at the clicked pixels (the default recipe's 0.1: bench/README.md)
    click_placement: str = "random"  # where a simulated click lands (simulation.PLACEMENTS)
    focus_frames: bool = True  # also frame each larger image's focus window (``frame_windows``)
    primed_clicks: bool = False  # the decoder sees each click's disk edit in its mask input (``PointPrompter.primed``)
    ema_decay: Optional[float] = None  # keep this exponential moving average of the weights over steps, not the last
    soup_seeds: Tuple[int, ...] = ()  # train once per seed (``seed`` unused) and keep the weights' average
    kept: Tuple[str, ...] = ()  # decoder parts left as they start (an adapter stores them once)
    seed: int = 42
    max_steps: Optional[int] = None  # stop early (a smoke run)

    def __post_init__(self) -> None:
        check_placement(self.click_placement)
        if self.ema_decay is not None and not 0 <= self.ema_decay <= 1:
            raise ValueError(f"ema_decay must lie between 0 and 1, not {self.ema_decay!r}")
        if len(set(self.soup_seeds)) != len(self.soup_seeds):
            raise ValueError(f"soup_seeds must differ, not {self.soup_seeds!r}")


@dataclass
class ClickFrame:
    """A window of a labelled image in one orientation. Its plain-encoder embedding lives in the
    prompter's cache under ``key`` (on disk for many frames), encoded again from ``rgb`` if dropped."""

    key: EmbeddingKey
    rgb: np.ndarray  # uint8 (H, W, 3)
    label: np.ndarray  # bool (H, W)
    valid: np.ndarray  # bool (H, W)
    automatic: np.ndarray  # bool (H, W): the automatic model's mask
    clicks: Tuple[PointClick, ...] = ()  # an analyst's clicks, replayed in order from ``automatic`` (else simulated)


def frame_cache(folder: Path, memory_mb: float = 1024) -> EmbeddingCache:
    """Where training frames' embeddings are kept: every one in ``folder`` as float16 (2 MiB a
    frame for LiteMedSAM), the latest ``memory_mb`` in memory. Runs on the same images reuse it."""
    return EmbeddingCache(memory_mb, folder, math.inf, disk_dtype="float16")


def frame_key(prompter: PointPrompter, rgb: np.ndarray) -> EmbeddingKey:
    """The cache key of a frame's embedding: its pixels and the prompter's encoder, so another
    base model or input size never reads a stale file."""
    digest = hashlib.sha256(repr(rgb.shape).encode() + np.ascontiguousarray(rgb).tobytes()).hexdigest()
    return prompter.key(digest, (0, 0, rgb.shape[1], rgb.shape[0]), "training frame")


def orientations(*arrays: np.ndarray, count: int = 8) -> Iterator[Tuple[np.ndarray, ...]]:
    """``count`` of the 8 flips/rotations of equally shaped arrays, in ``ORIENTATION_ORDER``."""
    for index in ORIENTATION_ORDER[:count]:
        flip, turns = divmod(index, 4)
        yield tuple(np.ascontiguousarray(np.rot90(a[:, ::-1] if flip else a, turns)) for a in arrays)


def frame_windows(label: np.ndarray, min_side: int, focus: bool = True) -> List[Tuple[int, int, int, int]]:
    """The whole image, and with ``focus``, when the image is larger than ``min_side``, the focus
    window the engine uses around its landslides when it zooms in."""
    height, width = label.shape
    windows = [(0, 0, width, height)]
    rows, cols = np.nonzero(label)
    if focus and max(height, width) > min_side and len(rows):
        centre = PointClick(int(np.median(cols)), int(np.median(rows)), True)
        windows.append(focus_window(label, (0, 0, width, height), centre, label.shape, min_side, max(label.shape)))
    return list(dict.fromkeys(windows))


def prepare_frames(prompter: PointPrompter, pairs: Sequence[Pair], automatic: Callable[[Pair], np.ndarray],
                   config: ClickTrainConfig, progress: bool = True) -> List[ClickFrame]:  # fmt: skip
    """Frames of every pair with a landslide, each embedded once into ``prompter.cache``:
    ``automatic(pair)`` gives the automatic mask."""
    frames = []
    for pair in tqdm(pairs, desc="embedding training frames", disable=not progress):
        rgb, valid, label = load_pair(pair)
        if not label.any():
            continue  # no landslide to click on
        auto = automatic(pair)
        for col, row, width, height in frame_windows(label, prompter.model.image_size, config.focus_frames):
            part = (slice(row, row + height), slice(col, col + width))
            for image, *masks in orientations(rgb[part], label[part], valid[part], auto[part],
                                              count=config.orientations):  # fmt: skip
                frame = ClickFrame(frame_key(prompter, image), image, *masks)
                embedding_of(prompter, frame)
                frames.append(frame)
    return frames


def embedding_of(prompter: PointPrompter, frame: ClickFrame) -> torch.Tensor:
    """The frame's plain-encoder embedding (C, G, G), from the prompter's cache."""
    return torch.from_numpy(prompter.embedding(frame.key, lambda: frame.rgb))


def train_point_decoder(prompter: PointPrompter, frames: Sequence[ClickFrame], config: Optional[ClickTrainConfig] = None,
                        progress: bool = True,
                        on_epoch: Optional[Callable[[Dict[str, float]], None]] = None) -> List[Dict[str, float]]:  # fmt: skip
    """Train ``prompter.prompt_decoder`` in place on ``frames``, and prime ``prompter`` as it was
    trained; returns the mean loss per epoch (and its seed, for a soup)."""
    if not frames:
        raise ValueError("click training needs at least one labelled image with a landslide")
    config = config or ClickTrainConfig()
    prompter.primed = config.primed_clicks
    if config.soup_seeds:
        return _soup(prompter, frames, config, progress, on_epoch)
    return _train(prompter, frames, config, progress, on_epoch)


def _soup(prompter: PointPrompter, frames: Sequence[ClickFrame], config: ClickTrainConfig, progress: bool,
          on_epoch: Optional[Callable[[Dict[str, float]], None]]) -> List[Dict[str, float]]:  # fmt: skip
    """One decoder trained per seed of ``config.soup_seeds`` from the same start, then their weights' mean."""
    decoder = prompter.prompt_decoder
    start = {name: value.clone() for name, value in decoder.state_dict().items()}
    members, history = [], []
    for seed in config.soup_seeds:
        decoder.load_state_dict(start)
        report = (lambda epoch, seed=seed: on_epoch({**epoch, "seed": seed})) if on_epoch else None
        member_history = _train(prompter, frames, replace(config, seed=seed), progress, report)
        history += [{**epoch, "seed": seed} for epoch in member_history]
        members.append({name: value.clone() for name, value in decoder.state_dict().items()})
    decoder.load_state_dict({name: torch.stack([member[name] for member in members]).mean(0) for name in start})
    return history


def _train(prompter: PointPrompter, frames: Sequence[ClickFrame], config: ClickTrainConfig, progress: bool,
           on_epoch: Optional[Callable[[Dict[str, float]], None]]) -> List[Dict[str, float]]:  # fmt: skip
    """One decoder trained at ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    decoder = prompter.prompt_decoder
    decoder.requires_grad_(True).train()
    for part in config.kept:
        getattr(decoder, part).requires_grad_(False)
    trained = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    average = WeightAverage(trained, config.ema_decay) if config.ema_decay is not None else None
    history, steps = [], 0
    for epoch in range(1, config.epochs + 1):
        losses = []
        order = rng.permutation(len(frames))
        for position, index in enumerate(tqdm(order, desc=f"clicks epoch {epoch}/{config.epochs}",
                                              disable=not progress)):  # fmt: skip
            losses.append(play(prompter, frames[index], config, rng, scale=1 / config.accumulate))
            if (position + 1) % config.accumulate == 0 or position + 1 == len(order):
                optimizer.step()
                optimizer.zero_grad()
                if average is not None:
                    average.update()
                steps += 1
                if config.max_steps is not None and steps >= config.max_steps:
                    break
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        if on_epoch is not None:
            on_epoch(history[-1])
        if config.max_steps is not None and steps >= config.max_steps:
            break
    if average is not None:
        average.apply()
    decoder.requires_grad_(False).eval()
    return history


class WeightAverage:
    """An exponential moving average of parameters over optimiser steps, started at their values."""

    def __init__(self, parameters: Sequence[torch.nn.Parameter], decay: float) -> None:
        self.parameters = list(parameters)
        self.decay = decay
        self.averages = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        for average, parameter in zip(self.averages, self.parameters, strict=True):
            average.lerp_(parameter, 1 - self.decay)

    @torch.no_grad()
    def apply(self) -> None:
        """Give the parameters their averages."""
        for average, parameter in zip(self.averages, self.parameters, strict=True):
            parameter.copy_(average)


def play(prompter: PointPrompter, frame: ClickFrame, config: ClickTrainConfig, rng: np.random.Generator,
         scale: float = 1.0) -> float:  # fmt: skip
    """Play one simulated click sequence on ``frame``, back-propagating ``scale`` times each click's
    loss; returns the mean loss per click."""
    start_automatic = bool(frame.clicks) or rng.random() < config.automatic_share
    mask = frame.automatic.copy() if start_automatic else np.zeros_like(frame.label)
    target = _padded_target(prompter, frame.label)
    embedding = embedding_of(prompter, frame)
    side = max(frame.label.shape)  # the frame is the window: the engine's plan, held to it
    clicks: List[PointClick] = []
    losses = []
    for turn in range(len(frame.clicks) or int(rng.integers(1, config.max_clicks + 1))):
        click = frame.clicks[turn] if frame.clicks else _simulated(mask, frame, config, rng)
        if click is None:
            break
        refinement = plan(mask, clicks, click, side, side)
        prompt = prompter.refinement_prompt(mask, refinement, click, frame.valid)
        low_res, _ = prompter.logits(embedding, mask.shape, prompt)
        size = prompter.model.image_size
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        loss = bce_iou_loss(logits, target) + config.click_weight * _click_loss(prompter, logits, prompt, mask.shape)
        (loss * scale).backward()
        losses.append(loss.item())
        answer = prompter.to_window(low_res.detach(), mask.shape) & frame.valid
        mask, _ = merged(mask, refinement, answer, click, frame.valid, prompter.output_side)
        clicks.append(click)
    return float(np.mean(losses)) if losses else 0.0


def _simulated(mask: np.ndarray, frame: ClickFrame, config: ClickTrainConfig,
               rng: np.random.Generator) -> Optional[PointClick]:  # fmt: skip
    """A simulated analyst's next click on ``frame`` (None when ``mask`` matches its label)."""
    simulated = next_click(mask, frame.label, frame.valid, rng, config.click_placement)
    return None if simulated is None else PointClick(simulated.x, simulated.y, simulated.positive)


def _click_loss(prompter: PointPrompter, logits: torch.Tensor, prompt: SamPrompt, window_shape) -> torch.Tensor:
    """BCE of the answer's logits (1, 1, S, S) at the prompt's clicks against the clicks' labels."""
    size = logits.shape[-1]
    coords = prompter.transform.apply_coords(np.asarray(prompt.points, np.float32), window_shape)
    cols, rows = np.clip(coords.astype(int), 0, size - 1).T
    at_clicks = logits[0, 0, torch.as_tensor(rows), torch.as_tensor(cols)]
    labels = torch.as_tensor(prompt.labels, dtype=at_clicks.dtype, device=at_clicks.device)
    return F.binary_cross_entropy_with_logits(at_clicks, labels)


def _padded_target(prompter: PointPrompter, label: np.ndarray) -> torch.Tensor:
    """The label (1, 1, S, S) laid out as the encoder sees its window: resized, padded."""
    size = prompter.model.image_size
    height, width = prompter.transform.get_preprocess_shape(*label.shape, size)
    target = torch.zeros(1, 1, size, size)
    resized = F.interpolate(torch.from_numpy(label)[None, None].float(), (height, width), mode="nearest")
    target[..., :height, :width] = resized
    return target.to(prompter.model.device)
