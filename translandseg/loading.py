"""Assemble a ready TransLandSeg model: SAM base weights, then an adapter if one is given."""

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from segment_anything.modeling import MaskDecoder

from .adapter import AdapterInfo, has_prompt_decoder, load_adapter, read_adapter_info
from .build import LITE, build_translandseg
from .download import sha256_of
from .modeling import TransLandSeg
from .sam_checkpoints import resolve_sam_checkpoint
from .sam_weights import load_sam_weights, read_sam_state_dict


@dataclass
class LoadedModel:
    """TransLandSeg for automatic masks, and SAM's own decoder for point prompts."""

    model: TransLandSeg
    model_type: str
    sam_checkpoint: Path
    sam_sha256: str
    prompt_decoder: MaskDecoder
    adapter: Optional[AdapterInfo] = None
    adapter_path: Optional[Path] = None
    adapter_sha256: Optional[str] = None
    prompt_decoder_tuned: bool = False  # the adapter brought its own point-prompt decoder
    clicks_primed: bool = False  # that decoder sees each click's disk edit in its mask input

    @property
    def tuned_prompt_decoder(self) -> Optional[MaskDecoder]:
        """The point decoder the adapter brought, which an adapter saved from this model carries on;
        None when clicks use the base's own decoder."""
        return self.prompt_decoder if self.prompt_decoder_tuned else None

    @property
    def version(self) -> Optional[str]:
        """Names the trained model that makes automatic masks; None without an adapter."""
        if self.adapter_path is None:
            return None
        return f"{self.adapter_path.stem}-{self.adapter_sha256[:12]}"

    @property
    def prompt_model_id(self) -> str:
        """Names the plain SAM encoder whose embeddings point prompts use (for embedding caches)."""
        return f"{self.model_type}-{self.sam_sha256[:16]}-{self.model.image_size}"

    def describe(self) -> str:
        base = "LiteMedSAM" if self.model_type == LITE else f"SAM {self.model_type}"
        line = f"{base} ({self.sam_checkpoint.name}), {self.model.image_size}px"
        if self.adapter_path is None:
            return line + f", untrained ATL {self.model.atl.variant.name}"
        clicks = ", its own click decoder" if self.prompt_decoder_tuned else ""
        return line + f", adapter {self.adapter_path.name} (ATL {self.adapter.atl_variant}{clicks})"


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint, computed once per file version in this process."""
    stat = Path(path).stat()
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def load_model(
    model_type: str,
    sam_checkpoint: Optional[Path] = None,
    adapter: Optional[Path] = None,
    image_size: Optional[int] = None,
    variant: Optional[str] = None,
    device: str = "cpu",
    cache: Optional[Path] = None,
    download: bool = True,
) -> LoadedModel:
    """Build TransLandSeg on SAM ``model_type`` and load its weights.

    With an adapter, its recorded ATL variant and input size are used (``image_size`` and
    ``variant`` must then agree or be left out); without, they default to the base model's
    input size and ATL variant (``build.default_variant``). An adapter's tuned point decoder
    replaces SAM's for clicks.
    """
    info = read_adapter_info(adapter) if adapter is not None else None
    if info is not None:
        image_size = image_size or info.image_size
        variant = variant or info.atl_variant
    checkpoint = resolve_sam_checkpoint(model_type, sam_checkpoint, cache=cache, download=download)
    model = build_translandseg(model_type, image_size, variant)
    load_sam_weights(model, read_sam_state_dict(checkpoint))
    model.to(torch.device(device))
    prompt_decoder = copy.deepcopy(model.mask_decoder).requires_grad_(False).eval()  # before any adapter
    loaded = LoadedModel(model, model_type, checkpoint, checkpoint_sha256(checkpoint), prompt_decoder)
    if adapter is not None:
        loaded.adapter = load_adapter(model, adapter, model_type, loaded.sam_sha256, prompt_decoder)
        loaded.prompt_decoder_tuned = has_prompt_decoder(adapter)
        loaded.clicks_primed = loaded.prompt_decoder_tuned and loaded.adapter.clicks_primed
        loaded.adapter_path = Path(adapter)
        loaded.adapter_sha256 = checkpoint_sha256(adapter)
    model.eval()
    return loaded
