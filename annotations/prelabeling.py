"""Pre-labelling a store on a Dask cluster (``translandseg prelabel``): every image without a label
gets the active version's automatic mask, recorded as a prediction with the settings it was made
with, and the embedding of the window its first click would use, written into the app's embedding
cache folder; the app then opens those images without waiting for either. Images that already
have such a mask are skipped, so a stopped run resumes; one that fails is named and the rest go on.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from distributed import Client, as_completed
from tqdm import tqdm

from translandseg.batch.workers import ModelSpec, use_model, worker_model
from translandseg.interactive.correction import CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.prompting import PointPrompter
from translandseg.predict import PredictorOptions
from translandseg.raster import RasterImage

from .labeling import Workspace
from .training_runs import active_model


@dataclass
class PrelabelReport:
    version: str
    recorded: int = 0
    failed: Dict[str, str] = field(default_factory=dict)  # image name → why


def prelabel(client: Client, workspace: Workspace, embeddings: Optional[Path] = None, limit: Optional[int] = None,
             progress: bool = True, **model_options) -> PrelabelReport:  # fmt: skip
    """Record the active version's automatic mask (with ``workspace.automatic_options``) of up to
    ``limit`` images without a label or such a mask, computed on ``client``'s workers, and encode
    their first click window into ``embeddings`` (a folder shared with the app) when given.
    ``model_options``: ``ModelSpec``'s (device, cache_dir, sam_checkpoint, download)."""
    options = workspace.automatic_options
    with workspace.store() as store:
        active = active_model(store)
        if active is None:
            raise ValueError(f"{workspace.db_path} has no active model version; open it in the app first")
        todo = store.unpredicted_images(active["version"], options.to_json())[:limit]
    spec = ModelSpec.of(active["base_model"], Path(active["file"]), **model_options)
    if spec.adapter_sha256 != active["sha256"]:
        raise ValueError(f"{active['file']} is no longer the file of version {active['version']} (its SHA-256 changed)")
    use_model(client, spec)
    report = PrelabelReport(active["version"])
    tasks = {client.submit(_prepare, workspace.image_path(image_id), image_id, options, workspace.window_size,
                           workspace.focus_min_side, embeddings, pure=False): image_id for image_id in todo}  # fmt: skip
    for task in tqdm(as_completed(tasks), total=len(tasks), unit="image", disable=not progress):
        image_id = tasks[task]
        if task.status == "error":
            error = task.exception()
            report.failed[workspace.image_name(image_id)] = f"{type(error).__name__}: {error}"
            continue
        packed, shape = task.result()
        mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        with workspace.store() as store:
            store.add_prediction(image_id, mask, active["version"], made_with=options.to_json())
        report.recorded += 1
    return report


def _prepare(path: Path, image_id: str, options: PredictorOptions, window_size: int, focus_min_side: Optional[int],
             embeddings: Optional[Path]) -> Tuple[np.ndarray, Tuple[int, int]]:  # fmt: skip
    """On a worker: the image's automatic mask (bit-packed, and its shape), its first click window
    encoded into ``embeddings``."""
    loaded = worker_model()
    with RasterImage(path) as image:
        mask = options.predictor(loaded.model).predict_mask(image)
        if embeddings is not None:
            prompter = PointPrompter.of(loaded, EmbeddingCache(folder=embeddings))
            correction = CorrectionSession(image, image_id, mask, prompter, window_size, focus_min_side)
            correction.encode_first_window(image.width / 2, image.height / 2)
    return np.packbits(mask), mask.shape
