"""SAM point and box prompts on an image window: encode once, decode each click in milliseconds.

The window is prepared as ``SamPredictor`` does (longest side resized to the encoder's input
size, padded bottom-right with the mean colour) and masks are brought back to window pixels.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.utils.transforms import ResizeLongestSide
from torch.nn import functional as F

from ..loading import LoadedModel
from ..modeling import TransLandSeg
from .embedding_cache import EmbeddingCache, EmbeddingKey
from .refinement import MASK_LOGIT, PointClick, Refinement, disk_edit


@dataclass(frozen=True)
class SamPrompt:
    """Prompts for one object, in window pixel coordinates (x = column, y = row)."""

    points: Tuple[Tuple[float, float], ...] = ()
    labels: Tuple[int, ...] = ()  # 1 foreground, 0 background
    box: Optional[Tuple[float, float, float, float]] = None  # x0, y0, x1, y1
    mask_input: Optional[np.ndarray] = None  # the previous low-res logits (1, L, L)


@dataclass(frozen=True)
class SamMask:
    mask: np.ndarray  # bool (height, width) of the window
    low_res_logits: np.ndarray  # (1, L, L), the next refinement's mask_input
    score: float  # SAM's predicted IoU


class PointPrompter:
    def __init__(self, model: TransLandSeg, prompt_decoder: MaskDecoder, model_id: str, cache: EmbeddingCache,
                 primed: bool = False) -> None:  # fmt: skip
        """
        Args:
          model: supplies SAM's plain image encoder (no ATL), prompt encoder and normalisation.
          prompt_decoder: SAM's mask decoder as trained for prompts.
          model_id: names the encoder and input size in embedding cache keys.
          cache: where embeddings are kept.
          primed: the decoder was trained to see each click's disk edit in its ``mask_input``
            (``refinement_prompt``).
        """
        self.model = model
        self.prompt_decoder = prompt_decoder
        self.model_id = model_id
        self.cache = cache
        self.primed = primed
        self.transform = ResizeLongestSide(model.image_size)

    @classmethod
    def of(cls, loaded: LoadedModel, cache: EmbeddingCache) -> "PointPrompter":
        """The prompter of a loaded model's point decoder, as that decoder was trained."""
        return cls(loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, cache, loaded.clicks_primed)

    def key(self, image_sha256: str, window: Tuple[int, int, int, int], rendering: str) -> EmbeddingKey:
        return EmbeddingKey(image_sha256, self.model_id, tuple(window), rendering)

    def embedding(self, key: EmbeddingKey, read_rgb) -> np.ndarray:
        """The window's embedding (C, G, G): cached, or encoded from ``read_rgb()``."""
        return self.cache.get(key, lambda: self.encode(read_rgb()))

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """SAM's embedding (C, G, G) of an 8-bit RGB window (H, W, 3)."""
        size = self.model.image_size
        resized = self.transform.apply_image(rgb)
        height, width = resized.shape[:2]
        batch = self.model.pixel_mean.expand(1, 3, size, size).clone()
        batch[0, :, :height, :width] = torch.from_numpy(resized).permute(2, 0, 1).to(batch)
        return self.model.encode_plain(batch)[0].cpu().numpy()

    @torch.inference_mode()
    def predict(self, embedding: np.ndarray, window_shape: Tuple[int, int], prompt: SamPrompt) -> SamMask:
        """The object mask for ``prompt``: among SAM's three proposals the one it rates best when
        the prompt is ambiguous (a single point, no mask), SAM's single-object output otherwise."""
        low_res, scores = self.logits(torch.as_tensor(embedding), window_shape, prompt)
        best = int(scores[0].argmax())
        logits = low_res[:, best : best + 1]
        return SamMask(self.to_window(logits, window_shape), logits[0].cpu().numpy(), float(scores[0, best]))

    def logits(self, embedding: torch.Tensor, window_shape: Tuple[int, int],
               prompt: SamPrompt) -> Tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The decoder's low-res logits (1, N, L, L) and predicted IoUs (1, N) for ``prompt`` on
        one window's ``embedding`` (C, G, G); differentiable, for training."""
        device = self.model.device
        points = boxes = masks = None
        if prompt.points:
            coords = self.transform.apply_coords(np.asarray(prompt.points, np.float32), window_shape)
            points = (torch.as_tensor(coords, device=device)[None], torch.as_tensor(prompt.labels, device=device)[None])
        if prompt.box is not None:
            boxes = torch.as_tensor(self.transform.apply_boxes(np.asarray([prompt.box], np.float32), window_shape),
                                    device=device)  # fmt: skip
        if prompt.mask_input is not None:
            masks = torch.as_tensor(prompt.mask_input, device=device)[None]
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.prompt_decoder(
            image_embeddings=embedding.to(device)[None],
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=len(prompt.points) == 1 and prompt.box is None and prompt.mask_input is None,
        )

    def refinement_prompt(self, current: np.ndarray, refinement: Refinement, click: PointClick,
                          valid: Optional[np.ndarray] = None) -> SamPrompt:  # fmt: skip
        """The decoder's prompt for ``click`` on ``current``, its window's mask: the window's clicks,
        and the mask as ``mask_input``, when ``primed`` with the click's disk edit
        (``refinement.disk_edit``) already made."""
        shown = disk_edit(current, refinement, click, valid, self.output_side) if self.primed else current
        return SamPrompt(refinement.points, refinement.labels, mask_input=self.mask_input(shown))

    def mask_input(self, mask: np.ndarray) -> np.ndarray:
        """A window's current mask (bool) as the decoder's ``mask_input`` logits (1, L, L), laid out
        as the window is for the encoder: longest side resized, padding counted as background."""
        side = self.model.prompt_encoder.mask_input_size[0]
        height, width = self.transform.get_preprocess_shape(*mask.shape, side)
        resized = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], (height, width),
                                mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
        share = torch.zeros(1, side, side)
        share[0, :height, :width] = resized[0, 0]
        return ((2 * share - 1) * MASK_LOGIT).numpy()

    @property
    def output_side(self) -> int:
        """The side of the decoder's low-res output."""
        return self.model.prompt_encoder.mask_input_size[0]

    def to_window(self, low_res: torch.Tensor, window_shape: Tuple[int, int]) -> np.ndarray:
        size = self.model.image_size
        height, width = self.transform.get_preprocess_shape(*window_shape, size)
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)[..., :height, :width]
        logits = F.interpolate(logits, window_shape, mode="bilinear", align_corners=False)
        return (logits[0, 0] > self.model.mask_threshold).cpu().numpy()
