"""Registry of TransLandSeg builders, one per SAM size, in the style of ``build_sam.py``."""

from dataclasses import dataclass
from functools import partial
from typing import Tuple

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from .modeling import ATL, DEFAULT_ATL_VARIANT, TransLandSeg, get_variant

PATCH_SIZE = 16


@dataclass(frozen=True)
class SamConfig:
    """The dimensions of one SAM model."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: Tuple[int, ...]
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    mask_in_chans: int = 16


SAM_CONFIGS = {
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    # About 0.3 M parameters with SAM's key structure, for tests and quick checks.
    "tiny": SamConfig(64, 4, 2, (1, 3), window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64,
                      decoder_num_heads=2, mask_in_chans=8),
}  # fmt: skip


def check_image_size(image_size: int) -> int:
    if image_size < PATCH_SIZE or image_size % PATCH_SIZE:
        raise ValueError(f"image size must be a positive multiple of {PATCH_SIZE}, got {image_size}")
    return image_size


def build_translandseg(
    model_type: str, image_size: int = 1024, variant: str = DEFAULT_ATL_VARIANT
) -> TransLandSeg:
    """A TransLandSeg model with SAM's ``model_type`` dimensions, untrained (no weights loaded).

    Pretrained SAM weights are loaded by ``translandseg.sam_weights.load_sam_weights``.
    """
    if model_type not in SAM_CONFIGS:
        raise ValueError(f"unknown SAM model type {model_type!r}; choose one of: {', '.join(SAM_CONFIGS)}")
    config = SAM_CONFIGS[model_type]
    grid = check_image_size(image_size) // PATCH_SIZE
    image_encoder = ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    atl = ATL(
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        global_attn_indexes=config.encoder_global_attn_indexes,
        variant=get_variant(variant),
        patch_size=PATCH_SIZE,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=config.prompt_embed_dim,
    )
    return TransLandSeg(image_encoder, atl, prompt_encoder, mask_decoder).eval()


translandseg_model_registry = {name: partial(build_translandseg, name) for name in SAM_CONFIGS}
