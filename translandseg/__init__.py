"""TransLandSeg: landslide segmentation with SAM and adaptive transfer learning (Hou et al., 2025)."""

__version__ = "0.1.0"
