"""Adaptive Transfer Learning (ATL): per-block prompts injected into a frozen SAM encoder.

Hou et al., "TransLandSeg", IEEE JSTARS 18 (2025). Two branches feed every prompt:

* handcrafted: the high-frequency part of the normalised image (FFT, centre square of the
  shifted spectrum zeroed, inverse FFT, absolute value), patch-embedded to ``d`` channels;
* embedding: the encoder's patch tokens projected from ``embed_dim`` to ``d``;

where ``d = embed_dim // scale_factor`` (32 in the paper). For each block the ATL is deployed
at, a lightweight module maps their sum to the prompt; MLP variants then share one
``Linear(d -> embed_dim)`` across blocks, conv variants end at ``embed_dim`` themselves.
"""

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


@dataclass(frozen=True)
class ATLVariant:
    """One ATL structure: lightweight module, where it is deployed, residual or not."""

    name: str
    middle: str  # "mlp", "conv" or "adapter" (the in-block adapter, ``inblock_adapter``)
    middle_layers: int  # Linear+GELU layers of an "mlp" module (ignored for "conv")
    deployment: str  # "every" block, "first" block only, "global" attention blocks only, or "inside" blocks
    residual: bool  # add the module's input to its output (mlp modules, d -> d)
    summary: str

    def block_indexes(self, depth: int, global_attn_indexes: Sequence[int]) -> Tuple[int, ...]:
        """Indexes of the encoder blocks that receive a prompt."""
        if self.deployment == "every":
            return tuple(range(depth))
        if self.deployment == "first":
            return (0,)
        return tuple(global_attn_indexes)


def _mlp(name, layers, deployment="every", residual=False, summary=""):
    return ATLVariant(name, "mlp", layers, deployment, residual, summary)


ATL_VARIANTS: Dict[str, ATLVariant] = {
    v.name: v
    for v in (
        _mlp("mlp1", 1, summary="paper's best (1_MidLay_m): one Linear+GELU per block, every block"),
        _mlp("mlp1_res", 1, residual=True, summary="mlp1 with a residual connection around it"),
        _mlp("mlp1_first", 1, "first", summary="mlp1 deployed before the first block only"),
        _mlp("mlp1_res_first", 1, "first", True, "mlp1_res deployed before the first block only"),
        _mlp("mlp1_global", 1, "global", summary="mlp1 before the global-attention blocks only"),
        _mlp("mlp1_res_global", 1, "global", True, "mlp1_res before the global-attention blocks"),
        _mlp("mlp2", 2, summary="2_MidLay_m: two Linear+GELU layers per block, every block"),
        _mlp("mlp2_res", 2, residual=True, summary="mlp2 with a residual connection around it"),
        ATLVariant("conv", "conv", 0, "every", False,
                   "3_MidLay_c: 1x1 conv, depthwise 3x3, 1x1 conv to embed_dim, every block"),
        ATLVariant("inblock", "adapter", 0, "inside", True,
                   "the paper code's in-block adapter: after every attention, a bottleneck MLP (width/4) "
                   "with a skip connection"),
    )
}
DEFAULT_ATL_VARIANT = "mlp2_res"  # on SAM's own bases; lite has its own (build.default_variant)


def get_variant(name: str) -> ATLVariant:
    try:
        return ATL_VARIANTS[name]
    except KeyError:
        known = ", ".join(ATL_VARIANTS)
        raise ValueError(f"unknown ATL variant {name!r}; choose one of: {known}") from None


def high_frequency(images: torch.Tensor, rate: float = 0.25) -> torch.Tensor:
    """Keep only the high frequencies of ``images`` (B, C, H, W), as the paper's public code."""
    h, w = images.shape[-2:]
    side = 2 * int(math.sqrt(h * w * rate) // 2)
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.float(), norm="forward"), dim=(-2, -1))
    top, left = h // 2 - side // 2, w // 2 - side // 2
    spectrum[..., top : top + side, left : left + side] = 0
    restored = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm="forward")
    return restored.real.abs()


class MLPModule(nn.Module):
    """``layers`` x (Linear(d, d) + GELU), optionally with a residual connection."""

    def __init__(self, dim: int, layers: int, residual: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(dim, dim), nn.GELU())])
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class ConvModule(nn.Module):
    """1x1 conv, LN, GELU, depthwise 3x3, LN, GELU, 1x1 conv to ``out_dim``, LN, GELU."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(dim, dim, 1), LayerNorm2d(dim), nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim), LayerNorm2d(dim), nn.GELU(),
            nn.Conv2d(dim, out_dim, 1), LayerNorm2d(out_dim), nn.GELU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tokens are (B, H, W, C) like SAM's encoder
        return self.layers(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def lightweight_module(variant: ATLVariant, dim: int, out_dim: int) -> nn.Module:
    """The per-block module of ``variant``: d -> d (MLP, up-projected after) or d -> out_dim (conv)."""
    if variant.middle == "conv":
        return ConvModule(dim, out_dim)
    return MLPModule(dim, variant.middle_layers, variant.residual)


class ATL(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        depth: int,
        global_attn_indexes: Sequence[int],
        variant: ATLVariant,
        patch_size: int = 16,
        in_chans: int = 3,
        scale_factor: int = 32,
        frequency_rate: float = 0.25,
    ) -> None:
        """
        Args:
            embed_dim: width of the encoder's tokens.
            depth: number of encoder blocks.
            global_attn_indexes: the encoder's global-attention blocks.
            variant: which ATL structure to build (see ``ATL_VARIANTS``).
            patch_size: the encoder's patch size (the handcrafted branch uses the same).
            in_chans: image channels.
            scale_factor: ``embed_dim / d``, the bottleneck ratio (32 in the paper).
            frequency_rate: share of the spectrum's area removed around its centre.
        """
        super().__init__()
        self.variant = variant
        self.hidden_dim = embed_dim // scale_factor
        self.frequency_rate = frequency_rate
        self.block_indexes = variant.block_indexes(depth, global_attn_indexes)
        d = self.hidden_dim
        self.handcrafted_embed = nn.Conv2d(in_chans, d, kernel_size=patch_size, stride=patch_size)
        self.embedding_down = nn.Linear(embed_dim, d)
        self.lightweight = nn.ModuleList(lightweight_module(variant, d, embed_dim) for _ in self.block_indexes)
        self.shared_up = nn.Linear(d, embed_dim) if variant.middle == "mlp" else None
        self.apply(init_atl_weights)

    def forward(self, images: torch.Tensor, patch_tokens: torch.Tensor) -> Dict[int, torch.Tensor]:
        """Prompts (B, H, W, embed_dim) keyed by the block index they are added before.

        Args:
            images: normalised images (B, C, S, S).
            patch_tokens: the encoder's patch embedding (B, S/16, S/16, embed_dim).
        """
        handcrafted = self.handcrafted_embed(high_frequency(images, self.frequency_rate))
        base = handcrafted.permute(0, 2, 3, 1) + self.embedding_down(patch_tokens)
        prompts = {}
        for index, module in zip(self.block_indexes, self.lightweight, strict=True):
            prompt = module(base)
            prompts[index] = self.shared_up(prompt) if self.shared_up is not None else prompt
        return prompts

    def encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """SAM's ViT ``encoder`` run on normalised images ``x`` with the prompts added before their blocks."""
        tokens = encoder.patch_embed(x)
        prompts = self(x, tokens)
        if encoder.pos_embed is not None:
            tokens = tokens + encoder.pos_embed
        for index, block in enumerate(encoder.blocks):
            if index in prompts:
                tokens = tokens + prompts[index]
            tokens = block(tokens)
        return encoder.neck(tokens.permute(0, 3, 1, 2))


def init_atl_weights(module: nn.Module) -> None:
    """As the paper's public code: trunc-normal Linear, fan-out normal conv, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
