"""Train the ATL and mask decoder of TransLandSeg; SAM's encoder stays frozen.

As the paper: 0.5 BCE + 0.5 Dice loss, as its public code (``loss``; BCE + IoU, as its text, is
the other choice), AdamW at 2e-4 with a cosine schedule down to 1e-7, the best epoch chosen by
validation mIoU, or the last epoch kept (``keep_last_epoch``: validation images, if any, then
only measure; when the schedule was chosen beforehand, every image can train). Beyond
it: early stopping, a time budget, resuming after an interruption (from the last finished epoch,
or with ``checkpoint_every`` from the last checkpointed step) to the weights an uninterrupted run
reaches, and control over what an epoch visits: each pair once, each sample set equally often
(``balance_sets``: a small set's images come round more than once), or ``epoch_steps`` batches
drawn from the sample sets in the proportions ``set_weights`` gives (large sets, streamed from
disk one image at a time).

Every random choice of a step (its images, their augmentation) derives from the seed, the epoch
and the step's position, so a resumed run draws exactly what the interrupted one would have.

``out_dir`` receives ``adapter.safetensors`` (the best or kept epoch), ``checkpoint.pt`` (the last
epoch or step, for resuming) and ``history.json`` (loss and validation metrics per epoch).
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..adapter import AdapterInfo, save_adapter
from ..data import LandslideDataset, Pair, check_zoom
from ..evaluation import evaluate
from ..loading import LoadedModel
from ..predict import REFERENCE_PRECISION, Predictor
from .losses import DEFAULT_LOSS, LOSSES

ADAPTER_FILE, CHECKPOINT_FILE, HISTORY_FILE = "adapter.safetensors", "checkpoint.pt", "history.json"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 2
    lr: float = 2e-4
    min_lr: float = 1e-7
    weight_decay: float = 0.01
    patience: int = 10  # epochs without a better validation mIoU before stopping
    augment: bool = True
    seed: int = 42
    max_seconds: Optional[float] = None  # time budget: no new epoch starts after it is spent
    loss: str = DEFAULT_LOSS  # a name in losses.LOSSES
    balance_sets: bool = False  # each sample set (Pair.sample_set) as often per epoch as the largest
    keep_last_epoch: bool = False  # the whole schedule, its last epoch kept: validation images are optional
    zoom: float = 1.0  # random crops' largest zoom-in (LandslideDataset); 1: always the whole image
    set_weights: Optional[Dict[str, float]] = None  # draw each sample set in these proportions (``epoch_plan``)
    epoch_steps: Optional[int] = None  # batches an epoch draws with ``set_weights``
    checkpoint_every: int = 0  # also checkpoint every this many steps within an epoch (0: at its end only)
    validate_last_only: bool = False  # with keep_last_epoch, measure the validation images after the last epoch only

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, not {self.loss!r}")
        check_zoom(self.zoom)
        if (self.set_weights is None) != (self.epoch_steps is None):
            raise ValueError("set_weights and epoch_steps go together: the proportions, and how many batches")
        if self.set_weights is not None and (self.balance_sets or min(self.set_weights.values()) <= 0):
            raise ValueError(f"set_weights must be positive, and replace balance_sets, not {self.set_weights!r}")


@dataclass
class TrainResult:
    adapter_path: Path
    best_epoch: int  # the epoch kept: the best by validation mIoU, or the last with keep_last_epoch
    best_metrics: Dict[str, float]
    history: List[Dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def train(
    loaded: LoadedModel,
    train_pairs: Sequence[Pair],
    val_pairs: Sequence[Pair],
    out_dir: Path,
    config: Optional[TrainConfig] = None,
    training_snapshot: str = "",
    progress: bool = True,
    on_epoch: Optional[Callable[[Dict[str, float]], None]] = None,
) -> TrainResult:
    """Train ``loaded.model`` in place; resumes from ``out_dir/checkpoint.pt`` if present (a run
    with the same settings but for ``RESUMABLE_CHANGES``; another run's checkpoint is refused)."""
    config = config or TrainConfig()
    if not train_pairs or not (val_pairs or config.keep_last_epoch):
        raise ValueError(f"training needs at least one training and one validation image "
                         f"(got {len(train_pairs)} and {len(val_pairs)}); label at least 2 images")  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    dataset = LandslideDataset(train_pairs, model.image_size, augment=config.augment, zoom=config.zoom)
    steps_per_epoch = -(-len(epoch_plan(train_pairs, config, 1)) // config.batch_size)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = cosine_schedule(optimizer, config, config.epochs * steps_per_epoch)
    state = _TrainingState()
    checkpoint = out_dir / CHECKPOINT_FILE
    if checkpoint.exists():
        state = _resume(checkpoint, loaded, config, optimizer, scheduler)

    def save_checkpoint() -> None:
        _save_checkpoint(checkpoint, loaded, config, optimizer, scheduler, state)

    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.monotonic() - state.seconds
        loss = _train_epoch(model, dataset, optimizer, scheduler, config, epoch, state, save_checkpoint, progress)
        last = epoch == config.epochs or _over_budget(state, config, time.monotonic() - started)
        measured = bool(val_pairs) and (last or not (config.keep_last_epoch and config.validate_last_only))
        metrics = evaluate(Predictor(model, precision=REFERENCE_PRECISION), val_pairs) if measured else {}
        record = {"epoch": epoch, "loss": loss, "seconds": time.monotonic() - started, **metrics}
        state.history.append(record)
        if config.keep_last_epoch or metrics["miou"] > state.best_miou:
            state.best_miou, state.best_epoch = metrics.get("miou", -1.0), epoch
            info = AdapterInfo(loaded.model_type, loaded.sam_sha256, model.atl.variant.name, model.image_size,
                               training_snapshot, metrics, loaded.clicks_primed)  # fmt: skip
            save_adapter(model, out_dir / ADAPTER_FILE, info, loaded.tuned_prompt_decoder)  # clicks' decoder kept
        state.epoch, state.step, state.losses, state.seconds = epoch, 0, [], 0.0
        save_checkpoint()
        (out_dir / HISTORY_FILE).write_text(json.dumps(state.history, indent=1))
        if on_epoch is not None:
            on_epoch(record)
        if epoch - state.best_epoch >= config.patience or _over_budget(state, config):
            break
    best = next(r for r in state.history if r["epoch"] == state.best_epoch)
    return TrainResult(out_dir / ADAPTER_FILE, state.best_epoch, best, state.history,
                       stopped_early=state.epoch < config.epochs)  # fmt: skip


def _over_budget(state: "_TrainingState", config: TrainConfig, pending: float = 0.0) -> bool:
    """Whether the epochs recorded, and ``pending`` seconds of one not yet recorded, spent the budget."""
    spent = sum(r["seconds"] for r in state.history) + pending
    return config.max_seconds is not None and spent >= config.max_seconds


def cosine_schedule(optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from ``config.lr`` to ``config.min_lr`` over ``total_steps``.

    Unlike ``CosineAnnealingLR``, its state is only the step count, so a resumed run may
    ask for more epochs than the interrupted one and still follow the new curve.
    """
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_indices(pairs: Sequence[Pair], balance_sets: bool) -> List[int]:
    """The dataset indices one epoch visits (in any order): each pair once, or with
    ``balance_sets`` each sample set's pairs repeated to about the largest set's count."""
    if not balance_sets:
        return list(range(len(pairs)))
    by_set = _members_by_set(pairs)
    largest = max(len(indices) for indices in by_set.values())
    return [i for indices in by_set.values() for i in indices * max(1, round(largest / len(indices)))]


def epoch_plan(pairs: Sequence[Pair], config: TrainConfig, epoch: int) -> List[int]:
    """The dataset indices epoch ``epoch`` visits, in order: ``epoch_indices`` shuffled, or with
    ``set_weights`` ``epoch_steps`` batches, each image's sample set drawn by weight and the image
    drawn from that set's members."""
    if config.set_weights is None:
        indices = epoch_indices(pairs, config.balance_sets)
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        return [indices[i] for i in order.tolist()]
    by_set = _members_by_set(pairs)
    unknown = sorted(set(by_set) - set(config.set_weights))
    if unknown:
        raise ValueError(f"set_weights gives no weight to the sample set(s) {', '.join(unknown)}")
    names = sorted(by_set)
    weights = np.array([config.set_weights[name] for name in names])
    rng = np.random.default_rng([config.seed, epoch])
    chosen = rng.choice(len(names), size=config.epoch_steps * config.batch_size, p=weights / weights.sum())
    return [int(rng.choice(by_set[names[k]])) for k in chosen]


def _members_by_set(pairs: Sequence[Pair]) -> Dict[str, List[int]]:
    by_set: Dict[str, List[int]] = {}
    for index, pair in enumerate(pairs):
        by_set.setdefault(pair.sample_set, []).append(index)
    return by_set


def _train_epoch(model, dataset: LandslideDataset, optimizer, scheduler, config: TrainConfig, epoch: int,
                 state: "_TrainingState", save_checkpoint: Callable[[], None], progress: bool) -> float:  # fmt: skip
    """The rest of epoch ``epoch`` from ``state.step``; returns the epoch's mean loss."""
    plan = epoch_plan(dataset.pairs, config, epoch)
    batches = [plan[start : start + config.batch_size] for start in range(0, len(plan), config.batch_size)]
    loss_function = LOSSES[config.loss]
    started = time.monotonic() - state.seconds
    model.train()
    with tqdm(total=len(batches), initial=state.step, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
              disable=not progress) as bar:  # fmt: skip
        for step in range(state.step, len(batches)):
            first = step * config.batch_size
            items = [dataset.item(index, np.random.default_rng([config.seed, epoch, first + offset]))
                     for offset, index in enumerate(batches[step])]  # fmt: skip
            images, masks = (torch.stack(parts).to(model.device) for parts in zip(*items, strict=True))
            loss = loss_function(model(images), masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.losses.append(loss.item())
            state.step, state.seconds = step + 1, time.monotonic() - started
            bar.update()
            bar.set_postfix(loss=f"{np.mean(state.losses):.4f}")
            if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.step < len(batches):
                save_checkpoint()
    model.eval()
    return float(np.mean(state.losses))


@dataclass
class _TrainingState:
    epoch: int = 0
    best_epoch: int = 0
    best_miou: float = -1.0
    history: List[Dict[str, float]] = field(default_factory=list)
    step: int = 0  # batches done of the epoch after ``epoch`` (a checkpoint within it)
    losses: List[float] = field(default_factory=list)  # their losses
    seconds: float = 0.0  # and the time they took


RESUMABLE_CHANGES = ("patience", "max_seconds", "checkpoint_every")  # settings a resumed run may change: when to stop


def _schedule(config: TrainConfig) -> Dict[str, object]:
    """The settings that shape a run's trajectory: a checkpoint resumes only under the same ones."""
    return {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}


def _identity(loaded: LoadedModel) -> Dict[str, object]:
    model = loaded.model
    return {"base_model": loaded.model_type, "base_sha256": loaded.sam_sha256,
            "atl_variant": model.atl.variant.name, "image_size": model.image_size}  # fmt: skip


def _save_checkpoint(path: Path, loaded: LoadedModel, config: TrainConfig, optimizer, scheduler,
                     state: _TrainingState) -> None:  # fmt: skip
    trained = {k: v for k, v in loaded.model.state_dict().items() if k.startswith(("atl.", "mask_decoder."))}
    payload = {"identity": _identity(loaded), "schedule": _schedule(config), "weights": trained,
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": asdict(state)}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _resume(path: Path, loaded: LoadedModel, config: TrainConfig, optimizer, scheduler) -> _TrainingState:
    payload = torch.load(path, map_location=loaded.model.device, weights_only=True)
    if payload["identity"] != _identity(loaded):
        raise ValueError(f"{path} belongs to another model ({payload['identity']}); use a new output folder")
    schedule = payload.get("schedule")
    if schedule is None:
        raise ValueError(f"{path} was written without its training settings, so it cannot be resumed safely; "
                         "use a new output folder")  # fmt: skip
    defaults = asdict(TrainConfig())  # a setting added since the checkpoint was written had its default
    changed = {k: (schedule.get(k, defaults[k]), v) for k, v in _schedule(config).items()
               if schedule.get(k, defaults[k]) != v}  # fmt: skip
    if changed:
        words = ", ".join(f"{k} {was!r} (now {now!r})" for k, (was, now) in changed.items())
        raise ValueError(f"{path} is a run with other settings: {words}; use a new output folder or its settings")
    loaded.model.load_state_dict(payload["weights"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return _TrainingState(**payload["state"])
