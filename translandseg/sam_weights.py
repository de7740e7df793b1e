"""Load SAM checkpoint weights into a TransLandSeg model, at any input size.

SAM was trained at 1024x1024. At another size S (a multiple of 16) the absolute position
embedding (64x64 -> S/16 x S/16) is resized bicubically and the relative-position tables of
the global-attention blocks (127 -> 2*S/16 - 1 rows) linearly, as SAM fine-tuning projects do;
windowed blocks keep their 14x14 tables. The ATL's weights are not in a SAM checkpoint.
"""

from pathlib import Path
from typing import Dict, Mapping

import torch
from torch.nn import functional as F

from .modeling import TransLandSeg

SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


class CheckpointError(ValueError):
    """A file that is not a usable SAM checkpoint."""


def read_sam_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """The state dict of a SAM checkpoint file, read with ``weights_only=True``."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not hold a SAM state dict (a mapping of names to tensors)")
    return dict(state_dict)


def fit_sam_state_dict(state_dict: Mapping[str, torch.Tensor], model: TransLandSeg) -> Dict[str, torch.Tensor]:
    """The SAM weights of ``state_dict``, checked against ``model`` and resized to its input size.

    Raises ``CheckpointError`` naming missing, unexpected or misshapen keys.
    """
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith(SAM_PARTS)}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            "checkpoint does not match this SAM model type: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    fitted = {}
    for key, shape in expected.items():
        tensor = state_dict[key]
        if tensor.shape != shape:
            tensor = _resize(key, tensor, shape)
        fitted[key] = tensor
    return fitted


def _resize(key: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if key == "image_encoder.pos_embed" and tensor.shape[::3] == shape[::3]:
        grid = F.interpolate(tensor.permute(0, 3, 1, 2).float(), size=tuple(shape[1:3]), mode="bicubic",
                             align_corners=False)  # fmt: skip
        return grid.permute(0, 2, 3, 1).to(tensor.dtype)
    if key.endswith(("rel_pos_h", "rel_pos_w")) and tensor.shape[1] == shape[1]:
        table = F.interpolate(tensor.t()[None].float(), size=shape[0], mode="linear", align_corners=False)
        return table[0].t().to(tensor.dtype)
    raise CheckpointError(f"{key}: checkpoint shape {tuple(tensor.shape)} does not fit the model's {tuple(shape)}")


def load_sam_weights(model: TransLandSeg, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy SAM's pretrained weights into ``model``; the ATL keeps its own initialisation."""
    fitted = fit_sam_state_dict(state_dict, model)
    result = model.load_state_dict(fitted, strict=False)
    assert not result.unexpected_keys and all(k.startswith("atl.") for k in result.missing_keys)
