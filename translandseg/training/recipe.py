"""The recipe behind the offline default adapter (``translandseg train-default``).

``train_default`` trains TransLandSeg on LiteMedSAM from the real samples, reproducibly:

1. a fixed, seeded held-out split of each real sample set (70/30, seed 42, as the paper), used
   only for the reported figures;
2. the automatic mask: ATL (lite's default, the in-block adapter) + mask decoder, 0.5 BCE +
   0.5 Dice, on every image of the training part for the whole schedule, its last epoch kept
   (each choice cross-validated on the training part: ``bench/README.md``), LiteMedSAM's
   encoder frozen; or, with ``automatic_from``, the ATL and automatic decoder of an earlier
   adapter (its own training images must lie in this training part);
3. the point decoder, started from the automatic decoder, trained for the correction engine with
   simulated click sequences from the automatic masks and from empty (``interactive.training``);
4. the trained weights rounded to the file's precision (``storage``: int8 matrices, the rest
   float16), then automatic-mask metrics, NoC@85/90 and IoU after k clicks on the held-out
   part, written into the adapter: the figures are those of the file as it loads (the report
   also holds them before rounding).
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..adapter import AdapterInfo, adapter_storage, load_adapter, round_to_storage, save_adapter
from ..build import LITE
from ..data import Pair, distinct, find_pairs, read_split, split_pairs
from ..evaluation import evaluate
from ..interactive.embedding_cache import EmbeddingCache
from ..interactive.evaluation import click_runs, summarise
from ..interactive.prompting import PointPrompter
from ..interactive.training import ClickTrainConfig, frame_cache, prepare_frames, train_point_decoder
from ..loading import LoadedModel, load_model
from ..predict import REFERENCE_PRECISION, Predictor
from ..raster import RasterImage
from .trainer import TrainConfig, train

SAMPLE_SETS = ("bijie", "bijie-upscaled", "landslide4sense")
HELD_OUT_FRACTION, SPLIT_SEED = 0.3, 42
# The full data's sets (``split.csv``'s sides); ``uav-orthophoto`` is left to a team's own labels.
FULL_DATA_SETS = ("bijie-full", "bijie", "bijie-upscaled", "bijie-negatives", "landslide4sense-rgb", "landslide4sense")


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


@dataclass
class DefaultRecipe:
    automatic: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=1, keep_last_epoch=True))
    clicks: ClickTrainConfig = field(default_factory=lambda: ClickTrainConfig(epochs=10, click_weight=0.1))
    selection_fraction: float = 0.2  # of the training part, to pick the best automatic epoch when not keeping the last
    automatic_from: Optional[str] = None  # an adapter whose ATL and automatic decoder stage 2 starts from
    storage: str = "int8"  # the adapter file's weights (weight_storage.STORAGES); measured as stored


def held_out_split(samples: Path) -> Tuple[List[Pair], List[Pair]]:
    """(training, held-out) pairs: each sample set present split 70/30 with seed 42."""
    training, held_out = [], []
    for name in (n for n in SAMPLE_SETS if (Path(samples) / n).is_dir()):
        part_train, part_held = split_pairs(find_pairs(Path(samples) / name), HELD_OUT_FRACTION, SPLIT_SEED)
        training += part_train
        held_out += part_held
    return training, held_out


def stage_one_split(training: Sequence[Pair], recipe: DefaultRecipe) -> Tuple[List[Pair], List[Pair]]:
    """(fit, selection) of the automatic stage: every training image and no selection when it
    keeps its schedule's last epoch, else the seeded selection fraction to pick the best epoch."""
    if recipe.automatic.keep_last_epoch:
        return list(training), []
    return split_pairs(training, recipe.selection_fraction, SPLIT_SEED)


def measure(loaded: LoadedModel, pairs: Sequence[Pair], progress: bool = False) -> Dict[str, float]:
    """Automatic-mask metrics; NoC@85/90, IoU after k clicks and harmful/fallback click shares from
    the automatic and from an empty mask."""
    metrics = evaluate(Predictor(loaded.model, precision=REFERENCE_PRECISION), pairs, progress)
    cache = EmbeddingCache(256)  # each window's click embedding is computed once for both starts
    for start in ("automatic", "empty"):
        results = summarise(click_runs(loaded, pairs, start, progress=progress, cache=cache))
        metrics.update({f"{k}_from_{start}": v for k, v in results.items()})
    return metrics


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
    training, held_out = held_out_split(samples)
    torch.manual_seed(recipe.automatic.seed)  # the ATL's initial weights
    reused = Path(recipe.automatic_from) if recipe.automatic_from else None
    loaded = load_model(LITE, adapter=reused)  # a reused adapter brings its variant, ATL and automatic decoder
    if reused:
        automatic_history: object = f"reused from {reused.name}"
    else:
        fit, selection = stage_one_split(training, recipe)
        result = train(loaded, fit, selection, Path(work_dir) / "automatic", recipe.automatic, progress=progress)
        load_adapter(loaded.model, result.adapter_path, LITE, loaded.sam_sha256)  # the kept epoch
        automatic_history = result.history
    loaded.prompt_decoder.load_state_dict(loaded.model.mask_decoder.state_dict())
    prompter = PointPrompter.of(loaded, frame_cache(Path(work_dir) / "embeddings"))
    frames = prepare_frames(prompter, training, automatic_masks(loaded), recipe.clicks, progress)
    click_history = train_point_decoder(prompter, frames, recipe.clicks, progress)
    loaded.clicks_primed = prompter.primed  # measured and saved as trained
    unrounded = measure(loaded, held_out, progress) if recipe.storage != "float32" else None
    round_to_storage(loaded.model, loaded.prompt_decoder, recipe.storage)
    metrics = measure(loaded, held_out, progress)
    report = {
        "recipe": asdict(recipe),
        "training": [p.name for p in training],
        "held_out": [p.name for p in held_out],
        "automatic_history": automatic_history,
        "click_frames": len(frames),
        "click_history": click_history,
        "held_out_metrics": metrics,
        "held_out_metrics_float32": unrounded or metrics,
    }
    snapshot = json.dumps({k: report[k] for k in ("recipe", "training", "held_out")})
    info = AdapterInfo(LITE, loaded.sam_sha256, loaded.model.atl.variant.name, loaded.model.image_size,
                       snapshot, metrics, loaded.clicks_primed)  # fmt: skip
    save_adapter(loaded.model, out, info, loaded.prompt_decoder, recipe.storage)
    return report


def remeasure(samples: Path, adapter: Path, progress: bool = True, storage: Optional[str] = None) -> Dict[str, float]:
    """Measure ``adapter`` on the held-out split with today's predictor and engine defaults and
    write the figures into its metadata; its weights stay as they are, or are stored anew as
    ``storage`` (rounded first, so the figures are the new file's)."""
    _, held_out = held_out_split(samples)
    loaded = load_model(LITE, adapter=adapter)
    storage = storage or adapter_storage(adapter)
    round_to_storage(loaded.model, loaded.tuned_prompt_decoder, storage)
    metrics = measure(loaded, held_out, progress)
    save_adapter(loaded.model, adapter, replace(loaded.adapter, metrics=metrics), loaded.tuned_prompt_decoder, storage)
    return metrics
