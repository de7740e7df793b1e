from .atl import ATL, ATL_VARIANTS, DEFAULT_ATL_VARIANT, ATLVariant, get_variant
from .hierarchical_atl import HierarchicalATL, tiny_vit_stages
from .inblock_adapter import InBlockAdapters
from .translandseg import TransLandSeg

__all__ = ["ATL", "ATL_VARIANTS", "ATLVariant", "DEFAULT_ATL_VARIANT", "HierarchicalATL", "InBlockAdapters",
           "TransLandSeg", "get_variant", "tiny_vit_stages"]
