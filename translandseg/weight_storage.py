"""How an adapter file stores its weights: float32, float16, or int8 (weights loaded as float32).

"int8" stores every floating-point matrix of at least ``INT8_MIN_ELEMENTS`` values as int8 with one
float32 scale per output row (symmetric, the row's largest magnitude maps to 127), under the
weight's key and ``key + SCALE_SUFFIX``; the other floating-point tensors (biases, norms, tokens,
small matrices) as float16. ``rounded`` gives what a stored weight loads as, so a model can be
measured exactly as its file will load.
"""

from typing import Dict, Iterable, Tuple

import torch

STORAGES = ("float32", "float16", "int8")
INT8_MIN_ELEMENTS = 4096
SCALE_SUFFIX = ".int8_scale"


def encoded(tensors: Dict[str, torch.Tensor], storage: str) -> Dict[str, torch.Tensor]:
    """``tensors`` as ``storage`` keeps them (int8 matrices come with their scales)."""
    _check(storage)
    out = {}
    for key, tensor in tensors.items():
        if storage == "int8" and _quantised(tensor):
            out[key], out[key + SCALE_SUFFIX] = _to_int8(tensor)
        elif tensor.is_floating_point() and storage != "float32":
            out[key] = tensor.to(torch.float16)
        else:
            out[key] = tensor
    return out


def decoded(stored: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The float32 weights of ``encoded`` tensors (their scales consumed)."""
    out = {}
    for key, tensor in stored.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key + SCALE_SUFFIX in stored:
            out[key] = tensor.float() * stored[key + SCALE_SUFFIX].float().view(-1, *[1] * (tensor.dim() - 1))
        else:
            out[key] = tensor.float() if tensor.is_floating_point() else tensor
    return out


def rounded(tensor: torch.Tensor, storage: str) -> torch.Tensor:
    """What ``tensor`` loads as once stored as ``storage`` (in its own dtype)."""
    return decoded(encoded({"w": tensor}, storage))["w"].to(tensor.dtype)


def storage_of(dtype_names: Iterable[str]) -> str:
    """The storage of a file from its tensors' safetensors dtype names ("F32", "F16", "I8"...)."""
    names = set(dtype_names)
    if "I8" in names:
        return "int8"
    return "float16" if "F16" in names and "F32" not in names else "float32"


def _quantised(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and tensor.numel() >= INT8_MIN_ELEMENTS


def _to_int8(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    rows = weight.detach().float().reshape(len(weight), -1)
    scale = rows.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return values.reshape(weight.shape), scale


def _check(storage: str) -> None:
    if storage not in STORAGES:
        raise ValueError(f"weight storage must be one of {STORAGES}, not {storage!r}")
