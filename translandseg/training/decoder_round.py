"""A fast retraining round: only the automatic mask decoder trains, on cached ATL embeddings.

SAM's encoder and the active version's ATL stay as they are, so each label's embedding is computed
once per orientation (kept as float16) and every step after that is a decoder pass alone, a
fraction of a full training step. BCE + Dice as the full recipe, AdamW with a cosine schedule,
``steps`` steps over the embeddings, each pass in a seeded order. A round lasts minutes, so it does not
checkpoint: a stopped round is started again.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import Pair, load_pair, to_model_input, to_model_target
from ..interactive.training import orientations
from ..modeling.translandseg import TransLandSeg
from .losses import DEFAULT_LOSS, LOSSES
from .trainer import cosine_schedule


@dataclass
class DecoderRoundConfig:
    steps: int = 1500  # a round's length whatever the number of labels (about 4 min on 2 cores)
    orientations: int = 4  # of the 8 flips and quarter turns of each label
    lr: float = 2e-4
    min_lr: float = 1e-7
    weight_decay: float = 0.01
    seed: int = 42


REPORT_EVERY = 100  # steps between progress reports
Embedded = Tuple[torch.Tensor, torch.Tensor]  # (ATL embedding (1, C, G, G) float16, target (1, 1, S, S))


def embed_labels(model: TransLandSeg, pairs: Sequence[Pair], count: int,
                 on_label: Optional[Callable[[int], None]] = None) -> List[Embedded]:  # fmt: skip
    """The ATL embedding and the target of ``count`` orientations of each pair."""
    size, items = model.image_size, []
    with torch.no_grad():
        for done, pair in enumerate(pairs, 1):
            rgb, _, label = load_pair(pair)
            for image, mask in orientations(rgb, label.astype(np.uint8), count=count):
                embedding = model.encode(to_model_input(image, size)[None].to(model.device))
                items.append((embedding.half(), to_model_target(mask, size).to(model.device)))
            if on_label is not None:
                on_label(done)
    return items


def train_mask_decoder(model: TransLandSeg, items: Sequence[Embedded], config: DecoderRoundConfig,
                       on_report: Optional[Callable[[int, float], None]] = None) -> List[float]:  # fmt: skip
    """Train ``model``'s mask decoder in place for ``config.steps`` steps over ``items``, each pass
    in a seeded order; every ``REPORT_EVERY`` steps, ``on_report(steps done, their mean loss)``.
    Returns those means."""
    model.train()
    optimizer = torch.optim.AdamW(model.mask_decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = cosine_schedule(optimizer, config, config.steps)
    loss_function, rng = LOSSES[DEFAULT_LOSS], np.random.default_rng(config.seed)
    order: List[int] = []
    means, recent = [], []
    try:
        for done in range(1, config.steps + 1):
            order = order or rng.permutation(len(items)).tolist()
            embedding, target = items[order.pop()]
            loss = loss_function(model.decode(embedding.float()), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            recent.append(loss.item())
            if done % REPORT_EVERY == 0 or done == config.steps:
                means.append(float(np.mean(recent)))
                recent = []
                if on_report is not None:
                    on_report(done, means[-1])
    finally:
        model.eval()
    return means
