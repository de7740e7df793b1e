from .atl import ATL, ATL_VARIANTS, DEFAULT_ATL_VARIANT, ATLVariant, get_variant
from .hierarchical_atl import HierarchicalATL, tiny_vit_stages
from .translandseg import TransLandSeg

__all__ = ["ATL", "ATL_VARIANTS", "ATLVariant", "DEFAULT_ATL_VARIANT", "HierarchicalATL", "TransLandSeg",
           "get_variant", "tiny_vit_stages"]
