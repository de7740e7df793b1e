"""Retrain the adapter from the labels in a store, in a separate process, one run at a time.

``start_retraining`` records the run and its snapshot (see ``annotations.training_runs``) and
starts ``python -m translandseg.training.retraining DB RUN`` in its own session, so labeling goes on
undisturbed. That process lowers its CPU priority (``RetrainSettings.niceness``), then:

1. writes the snapshot's images and labels to a temporary folder, split as recorded;
2. loads the active version's adapter to start from (or a fresh ATL and the base decoder) and
   measures it on the validation split, so the new version is compared on the same images;
3. trains the automatic stage with a time budget, reporting epoch, loss, validation metrics and
   ETA to the store, and keeps the last epoch (``RetrainSettings.keep_last_epoch``);
4. trains the point decoder on simulated click sequences over the training labels, from the new
   automatic masks, and on the analysts' own clicks where their stored prompts still reproduce
   their label (``click_epochs``; plain embeddings cached in ``models/embeddings`` for later runs);
5. writes the adapter into ``models/`` next to the store (temporary file, then rename) and
   registers the version with its SHA-256, metrics and run; activates it only when the store's
   ``auto_activate`` setting is on and it beats the active version's validation mIoU;
6. with the queue ordered by uncertainty, scores up to ``rank_images`` unlabelled images with the
   new version (``annotations.ranking``), so the queue offers the least certain first.

SIGTERM (``request_cancel``) ends it as "cancelled"; an error as "failed" with the message;
a SIGKILL leaves the run for ``reap_dead_runs`` to mark failed. No path changes the active
model except a successful run's activation.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from annotations.store import AnnotationStore, session_prompts
from annotations.training_runs import (
    activate,
    auto_activate,
    create_run,
    finish_run,
    run,
    snapshot,
    update_run,
)

from ..data import Pair
from ..download import sha256_of

MODELS_FOLDER = "models"
TRAINS = ("adapter", "decoder")  # what a run trains: RetrainSettings.trains
REPORTED_METRICS = ("iou", "f1", "miou")  # the validation figures a run reports as it goes


@dataclass
class RetrainSettings:
    """What a run trains: its base model (when no version is active) and CPU-feasible defaults."""

    model_type: str
    sam_checkpoint: Optional[str] = None
    cache_dir: Optional[str] = None
    device: str = "cpu"
    statuses: Tuple[str, ...] = ("accepted",)
    epochs: int = 10
    batch_size: int = 2
    image_size: Optional[int] = 256  # the base model's own size when the base is lite; None: 1024
    max_minutes: float = 30.0
    seed: int = 42
    # The last epoch is kept, so the validation images only measure: choosing the best epoch on
    # them would favour the new version in its comparison with the active one on those images.
    keep_last_epoch: bool = True
    # "adapter": the ATL and the mask decoder, as the paper; "decoder": the mask decoder alone, on
    # embeddings of the active version's ATL computed once (``decoder_round``: a round of minutes)
    trains: str = "adapter"
    decoder_steps: int = 1500  # the decoder's steps when it trains alone (about 4 min on 2 cores)
    click_epochs: int = 2  # passes of simulated click sequences over the labels for the point decoder (0: kept as is)
    rank_images: int = 100  # unlabelled images the new version scores when the queue is ordered by uncertainty
    # the run's CPU priority (0-19, as ``nice``): above 0 the cores go to labeling first whenever
    # the app needs them, and to the run the rest of the time (bench/README, issue 32)
    niceness: int = 10

    def __post_init__(self) -> None:
        if self.trains not in TRAINS:
            raise ValueError(f"trains must be one of {', '.join(TRAINS)}, not {self.trains!r}")
        if not 0 <= self.niceness <= 19:
            raise ValueError(f"niceness must lie between 0 and 19, not {self.niceness!r}")


class Cancelled(Exception):
    pass


def models_dir(db_path: Path) -> Path:
    return Path(db_path).resolve().parent / MODELS_FOLDER


def start_retraining(db_path: Path, settings: RetrainSettings, requested_by: str = "") -> Tuple[int, subprocess.Popen]:
    """Record a run and start its process; raises ``RetrainRefused`` with the reason when it cannot."""
    with AnnotationStore(db_path) as store:
        run_id = create_run(store, settings.statuses, requested_by, asdict(settings))
        log = models_dir(db_path) / f"run-{run_id:04d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            command = [sys.executable, "-m", "translandseg.training.retraining", str(db_path), str(run_id)]
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        update_run(store, run_id, pid=process.pid)
    threading.Thread(target=process.wait, daemon=True).start()  # reap it, so a dead worker is never a zombie
    return run_id, process


def main(argv: Optional[Sequence[str]] = None) -> int:
    db_path, run_id = (sys.argv[1:] if argv is None else argv)[:2]
    signal.signal(signal.SIGTERM, _cancel)
    with AnnotationStore(Path(db_path)) as store:
        try:
            return _run(store, int(run_id))
        except Cancelled:
            finish_run(store, int(run_id), "cancelled", "cancelled on request; the active model is unchanged")
        except Exception as error:  # noqa: BLE001 - every failure is reported to the run
            traceback.print_exc()
            finish_run(store, int(run_id), "failed", f"{type(error).__name__}: {error}")
    return 1


def lower_priority(niceness: int) -> None:
    """Raise this process's nice value by ``niceness``, and its session's where the kernel shares
    the CPU between sessions first (Linux's autogroup): a run has a session of its own, so its own
    nice value alone would not yield the cores to the app."""
    if not niceness or not hasattr(os, "nice"):
        return
    os.nice(niceness)
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        try:
            autogroup.write_text(str(niceness))
        except OSError:  # a kernel or container that refuses it: the process's own priority stays lowered
            pass


def _cancel(signum, frame) -> None:
    raise Cancelled()


def _run(store: AnnotationStore, run_id: int) -> int:
    from ..evaluation import evaluate
    from ..predict import REFERENCE_PRECISION, Predictor
    from .trainer import train

    record = run(store, run_id)
    settings = RetrainSettings(**{**record["settings"], "statuses": tuple(record["settings"]["statuses"])})
    lower_priority(settings.niceness)
    update_run(store, run_id, status="running", epochs=settings.epochs, message="loading the model")
    base = next((m for m in store.models() if m["version"] == record["base_version"]), None)
    loaded = _load(settings, base)
    with tempfile.TemporaryDirectory(prefix="translandseg-retrain-") as folder:
        update_run(store, run_id, message="preparing the training set")
        train_pairs, val_pairs = _materialise(store, run_id, Path(folder))
        if base is not None:
            update_run(store, run_id, message=f"measuring {base['version']} on the validation split")
            baseline = evaluate(Predictor(loaded.model, precision=REFERENCE_PRECISION), val_pairs)
            update_run(store, run_id, baseline_metrics=baseline)
        work = models_dir(store.path) / f"run-{run_id:04d}"
        if settings.trains == "decoder":
            result = _train_decoder(store, run_id, loaded, train_pairs, val_pairs, work, settings)
        else:
            update_run(store, run_id, message=f"training epoch 1/{settings.epochs}")
            result = train(loaded, train_pairs, val_pairs, work, train_config(settings), f"run {run_id}",
                           progress=False, on_epoch=lambda r: _report(store, run_id, r, settings.epochs))  # fmt: skip
        if settings.click_epochs:
            _train_clicks(store, run_id, loaded, train_pairs, settings, result)
    model_id, version = _register(store, run_id, result.adapter_path, loaded, result.best_metrics)
    shutil.rmtree(work, ignore_errors=True)
    trained = (f"the decoder, {settings.decoder_steps} steps" if settings.trains == "decoder"
               else f"epoch {result.best_epoch} of {settings.epochs}")  # fmt: skip
    message = f"version {version} ({trained}): validation mIoU {result.best_metrics['miou']:.3f}"
    baseline = run(store, run_id)["baseline_metrics"]
    if baseline:
        message += f" (active {record['base_version']}: {baseline['miou']:.3f} on the same images)"
    if auto_activate(store) and result.best_metrics["miou"] > baseline.get("miou", -1.0):
        activate(store, version)
        message += "; activated automatically"
    _rank(store, run_id, loaded, version, settings.rank_images)
    finish_run(store, run_id, "succeeded", message, model_id)
    return 0


def _train_decoder(store: AnnotationStore, run_id: int, loaded, train_pairs: List[Pair], val_pairs: List[Pair],
                   work: Path, settings: RetrainSettings):  # fmt: skip
    """The automatic stage of a decoder-only round (``decoder_round``), measured on the validation
    labels and saved in ``work`` as a full run's would be."""
    import time

    from ..adapter import AdapterInfo, save_adapter
    from ..evaluation import evaluate
    from ..predict import REFERENCE_PRECISION, Predictor
    from .decoder_round import DecoderRoundConfig, embed_labels, train_mask_decoder
    from .trainer import ADAPTER_FILE, TrainResult

    config = DecoderRoundConfig(steps=settings.decoder_steps, seed=settings.seed)
    model, total = loaded.model, len(train_pairs)
    items = embed_labels(model, train_pairs, config.orientations, lambda done: update_run(
        store, run_id, message=f"embedding the training labels: {done}/{total}"))  # fmt: skip
    started = time.monotonic()

    def report(done: int, loss: float) -> None:
        eta = (time.monotonic() - started) / done * (config.steps - done)
        update_run(store, run_id, loss=loss, progress=done / config.steps, eta_seconds=eta,
                   message=f"training the automatic decoder, step {done}/{config.steps}"
                   if done < config.steps else "measuring the new version on the validation split")  # fmt: skip

    losses = train_mask_decoder(model, items, config, report)
    metrics = evaluate(Predictor(model, precision=REFERENCE_PRECISION), val_pairs) if val_pairs else {}
    update_run(store, run_id, val_metrics={k: metrics[k] for k in REPORTED_METRICS if k in metrics})
    work.mkdir(parents=True, exist_ok=True)
    info = AdapterInfo(loaded.model_type, loaded.sam_sha256, model.atl.variant.name, model.image_size,
                       f"run {run_id}", metrics, loaded.clicks_primed)  # fmt: skip
    save_adapter(model, work / ADAPTER_FILE, info, loaded.tuned_prompt_decoder)
    return TrainResult(work / ADAPTER_FILE, config.steps, metrics, [{"step": config.steps, "loss": losses[-1]}])


def _train_clicks(store: AnnotationStore, run_id: int, loaded, pairs: List[Pair], settings: RetrainSettings,
                  result) -> None:  # fmt: skip
    """Train the point decoder, from the active version's, on simulated click sequences over the
    training labels from the new automatic masks; their plain embeddings are kept beside the store
    for later runs. The adapter at ``result.adapter_path`` is written again with it."""
    from ..adapter import AdapterInfo, save_adapter
    from ..interactive.prompting import PointPrompter
    from ..interactive.training import frame_cache, prepare_frames, train_point_decoder
    from .recipe import automatic_masks

    config = click_config(settings, loaded.clicks_primed)
    prompter = PointPrompter.of(loaded, frame_cache(models_dir(store.path) / "embeddings"))
    update_run(store, run_id, message="replaying the analysts' clicks", eta_seconds=None)
    replayed, refused = replayed_frames(store, snapshot(store, run_id), prompter)
    update_run(store, run_id, message=f"embedding {len(pairs)} labels for the clicks' decoder "
               f"({len(replayed)} analysts' click sequences replayed, {refused} no longer reproduce their label)")  # fmt: skip
    frames = prepare_frames(prompter, pairs, automatic_masks(loaded), config, progress=False) + replayed
    if not frames:
        return  # no landslide in the training labels: nothing to click on
    update_run(store, run_id, message=f"training the clicks' decoder, pass 1/{config.epochs}")

    def report(epoch: Dict[str, float]) -> None:
        following = epoch["epoch"] + 1
        if following <= config.epochs:
            update_run(store, run_id, message=f"training the clicks' decoder, pass {following}/{config.epochs}")

    train_point_decoder(prompter, frames, config, progress=False, on_epoch=report)
    loaded.prompt_decoder_tuned, loaded.clicks_primed = True, prompter.primed
    model = loaded.model
    info = AdapterInfo(loaded.model_type, loaded.sam_sha256, model.atl.variant.name, model.image_size,
                       f"run {run_id}", result.best_metrics, loaded.clicks_primed)  # fmt: skip
    save_adapter(model, result.adapter_path, info, loaded.prompt_decoder)


def replayed_frames(store: AnnotationStore, items: Sequence[Tuple[int, str, str]], prompter) -> Tuple[List, int]:
    """Click-training frames of the analysts' own clicks, from the training labels of ``items``
    (annotation id, image id, split) that hold clicks and whose image fits one engine window (its
    longer side at most the model's input): each label's clicks in order from the automatic mask
    they started on. A label is used only when its stored prompts, replayed by ``prompter`` (the
    engine that made them), reproduce it; returns (frames, labels that did not)."""
    from annotations.store import decode_mask

    from ..interactive.correction import Click, CorrectionError, CorrectionSession
    from ..interactive.training import ClickFrame
    from ..raster import RasterImage

    frames, refused = [], 0
    for annotation_id, image_id, split in items:
        prompts = session_prompts(store.prompts(annotation_id))
        clicks = tuple(p.pixel for p in prompts if isinstance(p, Click))
        row = store.db["annotations"].get(annotation_id)
        label = decode_mask(row["mask"])
        if split != "train" or not clicks or max(label.shape) > prompter.model.image_size:
            continue
        start = store.prediction_mask(row["parent_prediction_id"]) if row["parent_prediction_id"] else np.zeros_like(label)
        with store.image_file(image_id) as path, RasterImage(path) as image:
            session = CorrectionSession(image, image_id, start, prompter)
            try:
                reproduced = np.array_equal(session.replay(prompts), label)
            except CorrectionError:
                reproduced = False
            rgb, valid = image.read()
        if reproduced:  # the frame is the whole image, as the engine's window was: its embedding is reused
            key = session.embedding_key((0, 0, image.width, image.height))
            frames.append(ClickFrame(key, rgb, label, valid, start, clicks))
        refused += not reproduced
    return frames, refused


def click_config(settings: RetrainSettings, primed: bool):
    """How a run trains the point decoder: the default recipe's sequences, four orientations of
    each label (a region's labels are few), ``settings.click_epochs`` passes."""
    from ..interactive.training import ClickTrainConfig

    return ClickTrainConfig(epochs=settings.click_epochs, click_weight=0.1, orientations=4, primed_clicks=primed,
                            seed=settings.seed)  # fmt: skip


def _rank(store: AnnotationStore, run_id: int, loaded, version: str, limit: int) -> None:
    """Score up to ``limit`` unlabelled images with the new version when the queue is ordered by
    uncertainty (a minute and a half a hundred images on 2 cores, spent only where it orders)."""
    from annotations.ranking import queue_order, score_images

    def report(done: int, total: int) -> None:
        update_run(store, run_id, message=f"version {version} saved; ranking the queue: {done}/{total} images scored")

    if limit and queue_order(store) == "uncertainty":
        score_images(store, loaded, version, limit, report)


def train_config(settings: RetrainSettings):
    """How a run trains: the settings' schedule, budget and seed, and which epoch it keeps; the
    validation images are measured once, on the epoch kept (the one the versions compare on)."""
    from .trainer import TrainConfig

    return TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
                       max_seconds=60 * settings.max_minutes, keep_last_epoch=settings.keep_last_epoch,
                       validate_last_only=True)  # fmt: skip


def _load(settings: RetrainSettings, base: Optional[Dict]):
    from ..build import LITE
    from ..loading import load_model

    if base is not None:
        return load_model(base["base_model"], settings.sam_checkpoint, Path(base["file"]), device=settings.device,
                          cache=settings.cache_dir, download=False)  # fmt: skip
    image_size = None if settings.model_type == LITE else settings.image_size
    return load_model(settings.model_type, settings.sam_checkpoint, None, image_size, device=settings.device,
                      cache=settings.cache_dir, download=False)  # fmt: skip


def _materialise(store: AnnotationStore, run_id: int, folder: Path) -> Tuple[List[Pair], List[Pair]]:
    """Write the snapshot's images and labels under ``folder``; (training, validation) pairs."""
    splits: Dict[str, List[Pair]] = {"train": [], "val": []}
    for annotation_id, image_id, split in snapshot(store, run_id):
        (folder / "image").mkdir(exist_ok=True)
        (folder / "label").mkdir(exist_ok=True)
        with store.image_file(image_id) as path:
            image = folder / "image" / f"{image_id}{path.suffix}"
            shutil.copyfile(path, image)
        label = folder / "label" / f"{image_id}.png"
        label.write_bytes(store.db["annotations"].get(annotation_id)["mask"])
        splits[split].append(Pair(image, label))
    return splits["train"], splits["val"]


def _report(store: AnnotationStore, run_id: int, record: Dict[str, float], epochs: int) -> None:
    epoch = int(record["epoch"])
    metrics = {k: record[k] for k in REPORTED_METRICS if k in record}  # the last epoch's only, by default
    following = f"training epoch {epoch + 1}/{epochs}" if epoch < epochs else "saving the new version"
    update_run(store, run_id, epoch=epoch, loss=record["loss"], progress=epoch / epochs, message=following,
               eta_seconds=record["seconds"] * (epochs - epoch), **({"val_metrics": metrics} if metrics else {}))  # fmt: skip


def _register(store: AnnotationStore, run_id: int, trained: Path, loaded, metrics: Dict) -> Tuple[int, str]:
    """Copy the adapter into ``models/`` (temporary file, then rename) and record its version."""
    folder = models_dir(store.path)
    target = folder / f"retrain-{run_id:04d}.safetensors"
    partial = folder / f".{target.name}.partial"
    shutil.copyfile(trained, partial)
    partial.replace(target)
    sha256 = sha256_of(target)
    version = f"{target.stem}-{sha256[:12]}"
    model = loaded.model
    model_id = store.register_model(version, str(target), sha256, model.atl.variant.name, loaded.model_type,
                                    loaded.sam_sha256, f"run {run_id}", metrics, run_id)  # fmt: skip
    return model_id, version


if __name__ == "__main__":
    sys.exit(main())
