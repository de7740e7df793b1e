"""Adapter files: only the trained weights in safetensors, with metadata.

An adapter holds the ATL and the mask decoder of automatic masks, and optionally a mask
decoder tuned for point prompts (keys ``prompt_decoder.*``) that replaces the base model's
decoder for clicks. A point-decoder weight equal to the automatic decoder's (a part the click
training kept, such as the shared transformer) is stored once, under ``mask_decoder.*``, and
read from there. Weights may be stored as float16 (half the file) or int8 (``weight_storage``)
and are loaded as the model's float32.
"""

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from segment_anything.modeling import MaskDecoder

from .modeling import TransLandSeg
from .weight_storage import decoded, encoded, rounded, storage_of

FORMAT = "translandseg-adapter/1"
TRAINED_PARTS = ("atl.", "mask_decoder.")
PROMPT_DECODER = "prompt_decoder."
PROMPT_DECODER_FLAG = "prompt_decoder"  # metadata: the file carries a point decoder, however few keys


class AdapterError(ValueError):
    """An adapter file that cannot be used with the model at hand."""


@dataclass
class AdapterInfo:
    base_model: str  # SAM model type, e.g. "vit_b"
    base_sha256: str  # SHA-256 of the SAM checkpoint the adapter was trained on
    atl_variant: str
    image_size: int
    training_snapshot: str = ""  # which labels trained it (a folder, or the store's snapshot id)
    metrics: Dict[str, float] = field(default_factory=dict)
    clicks_primed: bool = False  # its point decoder sees each click's disk edit in its mask input
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_metadata(self) -> Dict[str, str]:
        values = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in asdict(self).items()}
        return {"format": FORMAT, **values}

    @classmethod
    def from_metadata(cls, metadata: Dict[str, str]) -> "AdapterInfo":
        return cls(
            base_model=metadata["base_model"],
            base_sha256=metadata["base_sha256"],
            atl_variant=metadata["atl_variant"],
            image_size=int(metadata["image_size"]),
            training_snapshot=metadata.get("training_snapshot", ""),
            metrics=json.loads(metadata.get("metrics") or "{}"),
            clicks_primed=metadata.get("clicks_primed") == "True",
            created_at=metadata.get("created_at", ""),
        )


def save_adapter(model: TransLandSeg, path: Path, info: AdapterInfo, prompt_decoder: Optional[MaskDecoder] = None,
                 storage: str = "float32") -> Path:  # fmt: skip
    """Write the ATL and decoder weights of ``model`` (and a tuned ``prompt_decoder``) to ``path``
    atomically, stored as ``storage`` (``weight_storage.STORAGES``)."""
    if (info.atl_variant, info.image_size) != (model.atl.variant.name, model.image_size):
        raise ValueError(f"info describes ATL {info.atl_variant} at {info.image_size}px, the model "
                         f"{model.atl.variant.name} at {model.image_size}px: no model could load that file")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v for k, v in model.state_dict().items() if k.startswith(TRAINED_PARTS)}
    if prompt_decoder is not None:
        automatic = model.mask_decoder.state_dict()
        tensors.update({PROMPT_DECODER + k: v for k, v in prompt_decoder.state_dict().items()
                        if not torch.equal(v, automatic[k])})  # fmt: skip
    tensors = encoded({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, storage)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        metadata = {**info.to_metadata(), **({PROMPT_DECODER_FLAG: "tuned"} if prompt_decoder is not None else {})}
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@torch.no_grad()
def round_to_storage(model: TransLandSeg, prompt_decoder: Optional[MaskDecoder], storage: str) -> None:
    """Round the weights an adapter stores to ``storage`` in place (kept as the model's dtype), so
    the model in memory is exactly what loading the stored file gives."""
    modules = [model.atl, model.mask_decoder] + ([prompt_decoder] if prompt_decoder is not None else [])
    for tensor in (t for module in modules for t in module.state_dict().values()):
        if tensor.is_floating_point():
            tensor.copy_(rounded(tensor, storage))


def adapter_storage(path: Path) -> str:
    """How an adapter file stores its weights: "float32", "float16" or "int8"."""
    with safe_open(str(path), framework="pt") as f:
        return storage_of(f.get_slice(k).get_dtype() for k in f.keys())


def read_adapter_info(path: Path) -> AdapterInfo:
    """The metadata of an adapter file, without loading its weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise AdapterError(f"{path} is not a readable safetensors adapter: {error}") from error
    if metadata.get("format") != FORMAT:
        raise AdapterError(f"{path} is not a TransLandSeg adapter (format {metadata.get('format')!r})")
    return AdapterInfo.from_metadata(metadata)


def load_adapter(model: TransLandSeg, path: Path, model_type: str, base_sha256: Optional[str],
                 prompt_decoder: Optional[MaskDecoder] = None) -> AdapterInfo:  # fmt: skip
    """Load adapter weights into ``model`` (and its tuned point decoder, if it has one, into
    ``prompt_decoder``), refusing an adapter trained on another base.

    Args:
        model_type, base_sha256: the SAM base ``model`` was built from and loaded with.
    """
    info = read_adapter_info(path)
    if info.base_model != model_type:
        raise AdapterError(f"{path} was trained on SAM {info.base_model}, not on {model_type}")
    if base_sha256 is not None and info.base_sha256 != base_sha256:
        raise AdapterError(
            f"{path} was trained on the SAM checkpoint with SHA-256 {info.base_sha256[:12]}..., "
            f"not on this one ({base_sha256[:12]}...); load it with the checkpoint it was trained on"
        )
    if info.atl_variant != model.atl.variant.name or info.image_size != model.image_size:
        raise AdapterError(
            f"{path} holds ATL {info.atl_variant} at {info.image_size}px; the model is "
            f"{model.atl.variant.name} at {model.image_size}px"
        )
    with safe_open(str(path), framework="pt", device=str(model.device)) as f:
        tensors = decoded({k: f.get_tensor(k) for k in f.keys()})
        carries_prompt_decoder = _carries_prompt_decoder(f)
    tuned = {k[len(PROMPT_DECODER) :]: tensors.pop(k) for k in list(tensors) if k.startswith(PROMPT_DECODER)}
    if carries_prompt_decoder and prompt_decoder is not None:
        shared = {k[len("mask_decoder.") :]: v for k, v in tensors.items() if k.startswith("mask_decoder.")}
        prompt_decoder.load_state_dict({**shared, **tuned})
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or any(k.startswith(TRAINED_PARTS) for k in result.missing_keys):
        raise AdapterError(f"{path} does not fit the model: {result}")
    return info


def has_prompt_decoder(path: Path) -> bool:
    """Whether the adapter file carries its own point-prompt decoder."""
    with safe_open(str(path), framework="pt") as f:
        return _carries_prompt_decoder(f)


def _carries_prompt_decoder(adapter_file) -> bool:
    """Whether an open adapter file flags a tuned point decoder or holds weights of one."""
    flagged = (adapter_file.metadata() or {}).get(PROMPT_DECODER_FLAG) == "tuned"
    return flagged or any(k.startswith(PROMPT_DECODER) for k in adapter_file.keys())
