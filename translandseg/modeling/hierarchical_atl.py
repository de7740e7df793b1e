"""ATL for a hierarchical encoder: LiteMedSAM's TinyViT, whose stages differ in width and resolution.

TinyViT (as LiteMedSAM builds it at 256x256 input) runs four stages:

=====  ======  ==========  ======  ================================
stage  blocks  resolution  width   block type
=====  ======  ==========  ======  ================================
0      2       256 x 256   64      MBConv (tokens as B, C, H, W)
1      2       128 x 128   128     TinyViT attention (tokens B, L, C)
2      6       64 x 64     160     TinyViT attention
3      2       64 x 64     320     TinyViT attention
=====  ======  ==========  ======  ================================

The paper's design maps onto it stage by stage. Each stage ``s`` has its own bottleneck width
``d_s = width_s // scale_factor`` (8, 16, 20, 40 with the default 8: TinyViT is 2.4-12x narrower
than ViT-B, so the paper's ratio 32 would leave 2 channels) and its own two-branch base:

* handcrafted: the image's high frequencies (as the ViT ATL), patch-embedded by a conv whose
  kernel and stride are the stage's downsampling factor (1, 2, 4, 4);
* embedding: the encoder's patch embedding (stage 0's input, 64 channels) average-pooled to
  the stage's resolution and projected to ``d_s``.

Every block the variant deploys at gets its own lightweight module (MLP or conv, as the ViT
ATL); MLP variants share one up-projection ``Linear(d_s -> width_s)`` per stage, as the paper
shares one across the blocks of its single-width encoder. The prompt is added to the block's
input. Deployment "every" prompts all 12 blocks, "first" the first block only; TinyViT has no
global-attention blocks, so the "global" variants do not apply.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .atl import ATLVariant, high_frequency, init_atl_weights, lightweight_module


@dataclass(frozen=True)
class Stage:
    """One stage of a hierarchical encoder."""

    width: int
    resolution: int
    blocks: int


def tiny_vit_stages(encoder: nn.Module) -> Tuple[Stage, ...]:
    """The stages of a TinyViT encoder, read from its layers."""
    return tuple(Stage(layer.dim, layer.input_resolution[0], len(layer.blocks)) for layer in encoder.layers)


class HierarchicalATL(nn.Module):
    def __init__(
        self,
        stages: Tuple[Stage, ...],
        variant: ATLVariant,
        image_size: int,
        patch_dim: int,
        in_chans: int = 3,
        scale_factor: int = 8,
        frequency_rate: float = 0.25,
    ) -> None:
        """
        Args:
            stages: the encoder's stages, first to last.
            variant: which ATL structure to build (see ``ATL_VARIANTS``); not a "global" one.
            image_size: the encoder's input side.
            patch_dim: channels of the encoder's patch embedding.
            in_chans: image channels.
            scale_factor: ``width_s / d_s``, the bottleneck ratio of every stage.
            frequency_rate: share of the spectrum's area removed around its centre.
        """
        super().__init__()
        if variant.deployment == "global":
            raise ValueError(f"ATL variant {variant.name} prompts global-attention blocks; a hierarchical "
                             "encoder has none")  # fmt: skip
        self.variant = variant
        self.stages = stages
        self.frequency_rate = frequency_rate
        depth = sum(stage.blocks for stage in stages)
        self.block_indexes = variant.block_indexes(depth, ())
        self.block_stage = [s for s, stage in enumerate(stages) for _ in range(stage.blocks)]
        dims = [max(1, stage.width // scale_factor) for stage in stages]
        factors = [image_size // stage.resolution for stage in stages]
        self.handcrafted_embed = nn.ModuleList(nn.Conv2d(in_chans, d, f, stride=f) for d, f in zip(dims, factors, strict=True))
        self.embedding_down = nn.ModuleList(nn.Linear(patch_dim, d) for d in dims)
        self.lightweight = nn.ModuleList(
            lightweight_module(variant, dims[self.block_stage[i]], stages[self.block_stage[i]].width)
            for i in self.block_indexes
        )
        used = sorted({self.block_stage[i] for i in self.block_indexes})
        self.shared_up = (
            nn.ModuleDict({str(s): nn.Linear(dims[s], stages[s].width) for s in used})
            if variant.middle == "mlp" else None
        )  # fmt: skip
        self.apply(init_atl_weights)

    def forward(self, images: torch.Tensor, patch_tokens: torch.Tensor) -> Dict[int, torch.Tensor]:
        """Prompts (B, H_s, W_s, width_s) keyed by the (encoder-wide) block index they are added before.

        Args:
            images: normalised images (B, C, S, S).
            patch_tokens: the encoder's patch embedding (B, patch_dim, S, S).
        """
        high = high_frequency(images, self.frequency_rate)
        bases: List[torch.Tensor] = []
        for stage, embed, down in zip(self.stages, self.handcrafted_embed, self.embedding_down, strict=True):
            pooled = F.adaptive_avg_pool2d(patch_tokens, stage.resolution)
            bases.append(embed(high).permute(0, 2, 3, 1) + down(pooled.permute(0, 2, 3, 1)))
        prompts = {}
        for index, module in zip(self.block_indexes, self.lightweight, strict=True):
            stage = self.block_stage[index]
            prompt = module(bases[stage])
            prompts[index] = self.shared_up[str(stage)](prompt) if self.shared_up is not None else prompt
        return prompts

    def encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """TinyViT ``encoder`` run on normalised images ``x`` with the prompts added before their blocks."""
        tokens = encoder.patch_embed(x)
        prompts = self(x, tokens)
        index = 0
        for layer in encoder.layers:
            for block in layer.blocks:
                if index in prompts:
                    tokens = tokens + _as_layout(prompts[index], tokens)
                tokens = block(tokens)
                index += 1
            if layer.downsample is not None:
                tokens = layer.downsample(tokens)
        side = self.stages[-1].resolution
        return encoder.neck(tokens.view(len(tokens), side, side, -1).permute(0, 3, 1, 2))


def _as_layout(prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """A (B, H, W, C) prompt in the layout of ``tokens``: (B, C, H, W) maps or (B, L, C) sequences."""
    if tokens.dim() == 4:
        return prompt.permute(0, 3, 1, 2)
    return prompt.reshape(tokens.shape)
