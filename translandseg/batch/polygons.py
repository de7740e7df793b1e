"""Landslide polygons of mask GeoTIFFs, merged into one GeoPackage layer.

Each connected landslide region of a georeferenced mask becomes a polygon (holes kept) in the
mask's CRS, with the scene it came from, its pixel count and its area in the CRS's units²; scenes
in another CRS than the first are reprojected into it, so one layer holds the whole event.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import transform_geom

LAYER = "landslides"


@dataclass
class ScenePolygons:
    scene: str
    crs_wkt: str  # "" for a mask without georeferencing: it has no polygons
    polygons: List[dict]  # GeoJSON-like geometries in that CRS
    pixels: List[int]


def mask_polygons(path: Path, scene: str, level: int = 0) -> ScenePolygons:
    """The regions of a mask file whose pixels exceed ``level`` (0 for a 0/255 mask; the scaled
    threshold for a probability file), as polygons in its CRS."""
    with rasterio.open(path) as dataset:
        if dataset.crs is None:
            return ScenePolygons(scene, "", [], [])
        marked = dataset.read(1) > level
        found = list(shapes(marked.astype(np.uint8), mask=marked, connectivity=4, transform=dataset.transform))
        geometries = [geometry for geometry, _ in found]
        return ScenePolygons(scene, dataset.crs.to_wkt(), geometries, _pixel_counts(geometries, dataset.transform))


def _pixel_counts(geometries: Sequence[dict], transform) -> List[int]:
    """Each polygon's pixels: its area over one pixel's (exact, its edges follow pixel edges)."""
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    return [round(shapely.geometry.shape(geometry).area / pixel_area) for geometry in geometries]


def write_geopackage(scenes: Sequence[ScenePolygons], path: Path) -> int:
    """One GeoPackage layer of every georeferenced scene's polygons, in the first one's CRS;
    the file appears (or is replaced) only when complete. Returns the number of polygons."""
    georeferenced = [scene for scene in scenes if scene.crs_wkt]
    crs = CRS.from_wkt(georeferenced[0].crs_wkt) if georeferenced else CRS.from_epsg(4326)
    geometries, names, pixels = [], [], []
    for scene in georeferenced:
        source = CRS.from_wkt(scene.crs_wkt)
        for geometry, count in zip(scene.polygons, scene.pixels, strict=True):
            moved = geometry if source == crs else transform_geom(source, crs, geometry)
            geometries.append(shapely.geometry.shape(moved))
            names.append(scene.scene)
            pixels.append(count)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    partial.unlink(missing_ok=True)
    pyogrio.raw.write(partial, np.array(shapely.to_wkb(geometries), dtype=object), field_data=[
        np.array(names, dtype=object), np.array(pixels, dtype=np.int64), shapely.area(geometries)],
        fields=["scene", "pixels", "area"], crs=crs.to_wkt(), geometry_type="Polygon", driver="GPKG",
        layer=LAYER)  # fmt: skip
    os.replace(partial, path)
    return len(geometries)
