"""The recipe behind the offline default adapter (``translandseg train-default``).

``train_default`` trains TransLandSeg on LiteMedSAM from the real samples, reproducibly:

1. ``split.csv``'s fixed train/test side of every pair of ``FULL_DATA_SETS`` (copies of one
   original on one side; the training side without copies): the test side only for the figures;
2. the automatic mask: ATL (lite's default, the in-block adapter) + mask decoder, 0.5 BCE +
   0.5 Dice, ``epoch_steps`` images an epoch drawn from the sample sets by the square root of
   their sizes (landslide-free Bijie images included), streamed from disk and checkpointed every
   100 steps, the last epoch kept, LiteMedSAM's encoder frozen; or, with ``automatic_from``, the
   ATL and automatic decoder of an earlier adapter;
3. the point decoder, started from the automatic decoder, trained for the correction engine with
   simulated click sequences from the automatic masks and from empty (``interactive.training``),
   on every training image with a landslide, its plain embedding cached on disk as float16;
4. the trained weights rounded to the file's precision (``storage``: int8 matrices, the rest
   float16), then measured as the file loads: automatic-mask metrics on the whole test side
   (pooled and per set; the share of landslide-free pixels marked), NoC@85/90 and IoU after k
   clicks on a seeded ``click_images`` of each test set, written into the adapter.
"""

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..adapter import AdapterInfo, adapter_storage, load_adapter, round_to_storage, save_adapter
from ..build import LITE
from ..data import SPLIT_FILE, Pair, distinct, read_split
from ..evaluation import confusion, predictions
from ..interactive.embedding_cache import EmbeddingCache
from ..interactive.evaluation import click_runs, summarise
from ..interactive.prompting import PointPrompter
from ..interactive.training import ClickTrainConfig, frame_cache, prepare_frames, train_point_decoder
from ..loading import LoadedModel, load_model
from ..metrics import ConfusionMatrix, boundary_f_score
from ..predict import REFERENCE_PRECISION, Predictor
from ..raster import RasterImage
from .trainer import TrainConfig, train

SPLIT_SEED = 42  # seeded choices: the click figures' test images, a learning curve's subsets
# The full data's sets (``split.csv``'s sides); ``uav-orthophoto`` is left to a team's own labels.
FULL_DATA_SETS = ("bijie-full", "bijie", "bijie-upscaled", "bijie-negatives", "landslide4sense-rgb", "landslide4sense")
LANDSLIDE_FREE = "bijie-negatives"  # its labels are all background: figures of false alarms only


def full_data_split(samples: Path) -> Tuple[List[Pair], List[Pair]]:
    """(training, test) by ``samples/split.csv`` over ``FULL_DATA_SETS``: the training side without
    copies (``bijie/`` repeats ``bijie-full/`` pixel for pixel), the test side per set as listed."""
    training, test = read_split(samples, FULL_DATA_SETS)
    return distinct(training), test


def square_root_weights(pairs: Sequence[Pair]) -> Dict[str, float]:
    """Each sample set's share of the draws, in proportion to the square root of its size: a small
    set comes round more often than its share of the images, and a large one still leads."""
    sizes: Dict[str, int] = {}
    for pair in pairs:
        sizes[pair.sample_set] = sizes.get(pair.sample_set, 0) + 1
    total = sum(size**0.5 for size in sizes.values())
    return {name: round(size**0.5 / total, 4) for name, size in sorted(sizes.items())}


def seeded_per_set(pairs: Sequence[Pair], count: int) -> List[Pair]:
    """A seeded choice of ``count`` pairs of each sample set (all of a smaller one)."""
    chosen: List[Pair] = []
    for name in sorted({pair.sample_set for pair in pairs}):
        members = [pair for pair in pairs if pair.sample_set == name]
        random.Random(SPLIT_SEED).shuffle(members)
        chosen += members[:count]
    return chosen


@dataclass
class DefaultRecipe:
    automatic: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=1, keep_last_epoch=True,
                                                                       checkpoint_every=100))  # fmt: skip
    epoch_steps: int = 1000  # images an automatic epoch draws, the sets in square-root proportions
    clicks: ClickTrainConfig = field(default_factory=lambda: ClickTrainConfig(epochs=2, click_weight=0.1,
                                                                              orientations=1))  # fmt: skip
    click_images: int = 30  # of each test set with landslides, for the click figures
    automatic_from: Optional[str] = None  # an adapter whose ATL and automatic decoder stage 2 starts from
    storage: str = "int8"  # the adapter file's weights (weight_storage.STORAGES); measured as stored

    def automatic_config(self, training: Sequence[Pair]) -> TrainConfig:
        """The automatic stage's settings, its draws weighted over the sample sets of ``training``."""
        return replace(self.automatic, set_weights=square_root_weights(training), epoch_steps=self.epoch_steps)


def automatic_figures(loaded: LoadedModel, test: Sequence[Pair], progress: bool = False) -> Dict[str, float]:
    """Automatic-mask metrics pooled over the test sets with landslides (``iou``...) and per set
    (``SET/iou``...), with the mean boundary F-score of their images (``boundary_f``); on the
    landslide-free images, the share of their pixels and of the images marked."""
    predictor = Predictor(loaded.model, precision=REFERENCE_PRECISION)
    figures: Dict[str, float] = {}
    pooled, boundaries = ConfusionMatrix(), []
    for name in sorted({pair.sample_set for pair in test} - {LANDSLIDE_FREE}):
        matrix, scores = ConfusionMatrix(), []
        for probability, label in predictions(predictor, [pair for pair in test if pair.sample_set == name], progress):
            mask = probability > predictor.threshold
            matrix.update(mask, label)
            scores.append(boundary_f_score(mask, label))
        pooled.counts += matrix.counts
        boundaries += scores
        own = {**matrix.summary(), "boundary_f": float(np.mean(scores))}
        figures.update({f"{name}/{key}": value for key, value in own.items()})
    figures = {**pooled.summary(), "boundary_f": float(np.mean(boundaries)) if boundaries else 0.0, **figures}
    free = [confusion(predictor, [pair]).counts for pair in test if pair.sample_set == LANDSLIDE_FREE]
    if free:
        figures["landslide_free_pixels_marked"] = sum(int(c[0, 1]) for c in free) / sum(int(c.sum()) for c in free)
        figures["landslide_free_images_marked"] = sum(1 for c in free if c[0, 1]) / len(free)
    return figures


def click_figures(loaded: LoadedModel, test: Sequence[Pair], per_set: int, progress: bool = False) -> Dict[str, float]:
    """NoC@85/90, IoU after k clicks and harmful/fallback click shares, from the automatic and from
    an empty mask, on a seeded ``per_set`` images of each test set with landslides: over them all
    (``noc85_from_automatic``...) and per set (``SET/noc85_from_automatic``...)."""
    chosen = seeded_per_set([pair for pair in test if pair.sample_set != LANDSLIDE_FREE], per_set)
    cache = EmbeddingCache(512)  # each window's click embedding is computed once for both starts
    figures: Dict[str, float] = {}
    for start in ("automatic", "empty"):
        runs = click_runs(loaded, chosen, start, progress=progress, cache=cache)
        figures.update({f"{k}_from_{start}": v for k, v in summarise(runs).items()})
        for name in sorted({pair.sample_set for pair in chosen}):
            own = summarise([run for run, pair in zip(runs, chosen, strict=True) if pair.sample_set == name])
            figures.update({f"{name}/{k}_from_{start}": v for k, v in own.items()})
    return figures


def measure(loaded: LoadedModel, test: Sequence[Pair], click_images: int, progress: bool = False) -> Dict[str, float]:
    """The recipe's figures of ``loaded`` on the test side: automatic masks, then clicks."""
    return {**automatic_figures(loaded, test, progress), **click_figures(loaded, test, click_images, progress)}


def automatic_masks(loaded: LoadedModel) -> Callable[[Pair], np.ndarray]:
    """A pair's automatic mask as the app predicts it (in float32, on any CPU): what the point
    decoder's training starts from."""
    predictor = Predictor(loaded.model, precision=REFERENCE_PRECISION)

    def automatic_mask(pair: Pair) -> np.ndarray:
        with RasterImage(pair.image) as image:
            return predictor.predict_mask(image)

    return automatic_mask


def train_default(samples: Path, out: Path, work_dir: Path, recipe: Optional[DefaultRecipe] = None,
                  progress: bool = True) -> Dict[str, object]:  # fmt: skip
    """Run the whole recipe; writes the adapter to ``out`` and returns its report."""
    recipe = recipe or DefaultRecipe()
    training, test = full_data_split(samples)
    torch.manual_seed(recipe.automatic.seed)  # the ATL's initial weights
    reused = Path(recipe.automatic_from) if recipe.automatic_from else None
    loaded = load_model(LITE, adapter=reused)  # a reused adapter brings its variant, ATL and automatic decoder
    started = time.monotonic()
    if reused:
        automatic_history: object = f"reused from {reused.name}"
    else:
        config = recipe.automatic_config(training)
        result = train(loaded, training, [], Path(work_dir) / "automatic", config, progress=progress)
        load_adapter(loaded.model, result.adapter_path, LITE, loaded.sam_sha256)  # the kept epoch
        automatic_history = result.history
    automatic_minutes = (time.monotonic() - started) / 60
    loaded.prompt_decoder.load_state_dict(loaded.model.mask_decoder.state_dict())
    prompter = PointPrompter.of(loaded, frame_cache(Path(work_dir) / "embeddings"))
    frames = prepare_frames(prompter, training, automatic_masks(loaded), recipe.clicks, progress)
    frames_minutes = (time.monotonic() - started) / 60 - automatic_minutes
    click_history = train_point_decoder(prompter, frames, recipe.clicks, progress)
    clicks_minutes = (time.monotonic() - started) / 60 - automatic_minutes - frames_minutes
    loaded.clicks_primed = prompter.primed  # measured and saved as trained
    round_to_storage(loaded.model, loaded.prompt_decoder, recipe.storage)
    metrics = measure(loaded, test, recipe.click_images, progress)
    report = {
        "recipe": asdict(recipe),
        "split": f"{SPLIT_FILE} of {', '.join(FULL_DATA_SETS)}",
        "training": [p.name for p in training],
        "test": [p.name for p in test],
        "minutes": {"automatic": automatic_minutes, "click frames": frames_minutes, "clicks": clicks_minutes,
                    "measuring": (time.monotonic() - started) / 60 - automatic_minutes - frames_minutes - clicks_minutes},
        "automatic_history": automatic_history,
        "click_frames": len(frames),
        "click_history": click_history,
        "test_metrics": metrics,
    }  # fmt: skip
    snapshot = json.dumps({k: report[k] for k in ("recipe", "split", "training", "test")})
    info = AdapterInfo(LITE, loaded.sam_sha256, loaded.model.atl.variant.name, loaded.model.image_size,
                       snapshot, metrics, loaded.clicks_primed)  # fmt: skip
    save_adapter(loaded.model, out, info, loaded.prompt_decoder, recipe.storage)
    return report


def remeasure(samples: Path, adapter: Path, progress: bool = True, storage: Optional[str] = None,
              click_images: int = DefaultRecipe.click_images) -> Dict[str, float]:  # fmt: skip
    """Measure ``adapter`` on the test side of ``split.csv`` with today's predictor and engine
    defaults and write the figures into its metadata; its weights stay as they are, or are stored
    anew as ``storage`` (rounded first, so the figures are the new file's)."""
    _, test = full_data_split(samples)
    loaded = load_model(LITE, adapter=adapter)
    storage = storage or adapter_storage(adapter)
    round_to_storage(loaded.model, loaded.tuned_prompt_decoder, storage)
    metrics = measure(loaded, test, click_images, progress)
    save_adapter(loaded.model, adapter, replace(loaded.adapter, metrics=metrics), loaded.tuned_prompt_decoder, storage)
    return metrics
