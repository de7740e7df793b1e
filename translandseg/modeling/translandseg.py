"""TransLandSeg: a frozen SAM image encoder steered by ATL prompts, and a trainable decoder."""

from typing import Iterator, Tuple, Union

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn
from torch.nn import functional as F

from .atl import ATL
from .hierarchical_atl import HierarchicalATL
from .inblock_adapter import InBlockAdapters


class TransLandSeg(nn.Module):
    mask_threshold: float = 0.0  # on logits, i.e. sigmoid > 0.5

    def __init__(
        self,
        image_encoder: nn.Module,
        atl: Union[ATL, HierarchicalATL, InBlockAdapters],
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Tuple[float, ...] = (123.675, 116.28, 103.53),
        pixel_std: Tuple[float, ...] = (58.395, 57.12, 57.375),
        whole_image_box: bool = False,
    ) -> None:
        """
        Segments landslides without user prompts: as the paper, the decoder sees no sparse
        prompts and the prompt encoder's "no mask" dense embedding; or, with ``whole_image_box``,
        the box around the whole input, a constant prompt (LiteMedSAM's decoder was trained on
        boxes only: without one its output is near-constant and training did not escape that).

        Args:
          image_encoder: SAM's ViT encoder (or LiteMedSAM's TinyViT); frozen here.
          atl: the adaptive transfer learning module matching the encoder (or the in-block
            adapters); trained.
          prompt_encoder: SAM's prompt encoder; frozen, used for its dense positional
            encoding and "no mask" embedding only.
          mask_decoder: SAM's mask decoder; trained.
          pixel_mean, pixel_std: the encoder's normalisation of 0-255 RGB input.
          whole_image_box: prompt automatic masks with the whole-image box.
        """
        super().__init__()
        self.image_encoder = image_encoder
        self.atl = atl
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.Tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.Tensor(pixel_std).view(-1, 1, 1), False)
        self.whole_image_box = whole_image_box
        for frozen in (self.image_encoder, self.prompt_encoder):
            frozen.requires_grad_(False)
        # Channels-last convolutions: LiteMedSAM's encoder runs about a quarter faster on 2 CPU cores
        # (its full-resolution MBConv stage), SAM's ViT no slower (bench/README.md, "Speed").
        self.image_encoder.to(memory_format=torch.channels_last)

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The ATL and the mask decoder: the only weights TransLandSeg trains."""
        yield from self.atl.parameters()
        yield from self.mask_decoder.parameters()

    def train(self, mode: bool = True) -> "TransLandSeg":
        super().train(mode)
        self.image_encoder.eval()
        self.prompt_encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, C, G, G) of 0-255 RGB ``images`` (B, 3, S, S)."""
        return self.atl.encode(self.image_encoder, (images - self.pixel_mean) / self.pixel_std)

    def encode_plain(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's own embeddings (no ATL prompts) of 0-255 RGB ``images`` (B, 3, S, S), for point prompts."""
        return self.image_encoder((images - self.pixel_mean) / self.pixel_std)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Landslide logits (B, 1, S, S) from image embeddings, with no prompts."""
        pe = self.prompt_encoder.get_dense_pe()
        sparse, dense = self._automatic_prompt(embeddings)
        # SAM's decoder pairs one image with many prompts, so images go through one by one.
        low_res = torch.cat(
            [self.mask_decoder(e[None], pe, sparse, dense, multimask_output=False)[0] for e in embeddings]
        )
        return F.interpolate(low_res, (self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def _automatic_prompt(self, embeddings: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(sparse, dense) prompt embeddings of the automatic mask: none, or the whole-image box."""
        if self.whole_image_box:
            box = torch.tensor([[0.0, 0.0, self.image_size - 1.0, self.image_size - 1.0]], device=embeddings.device)
            return self.prompt_encoder(points=None, boxes=box, masks=None)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = dense.expand(1, -1, *embeddings.shape[-2:])
        return torch.empty((1, 0, dense.shape[1]), device=embeddings.device), dense

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Landslide logits (B, 1, S, S) of 0-255 RGB ``images`` (B, 3, S, S)."""
        return self.decode(self.encode(images))
