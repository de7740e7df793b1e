from .atl import ATL, ATL_VARIANTS, DEFAULT_ATL_VARIANT, ATLVariant, get_variant
from .translandseg import TransLandSeg

__all__ = ["ATL", "ATL_VARIANTS", "ATLVariant", "DEFAULT_ATL_VARIANT", "TransLandSeg", "get_variant"]
