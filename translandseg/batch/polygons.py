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
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import transform_geom
from rasterio.windows import Window

LAYER = "landslides"
BAND_ROWS = 2048  # mask rows polygonised at a time


@dataclass
class ScenePolygons:
    scene: str
    crs_wkt: str  # "" for a mask without georeferencing: it has no polygons
    polygons: List[dict]  # GeoJSON-like geometries in that CRS
    pixels: List[int]


def mask_polygons(path: Path, scene: str, level: int = 0, band_rows: int = BAND_ROWS) -> ScenePolygons:
    """The regions of a mask file whose pixels exceed ``level`` (0 for a 0/255 mask; the scaled
    threshold for a probability file), as polygons in its CRS. The mask is read ``band_rows`` rows
    at a time and the regions cut by a band's edge are joined again, so memory follows the
    regions, not the raster's area."""
    with rasterio.open(path) as dataset:
        if dataset.crs is None:
            return ScenePolygons(scene, "", [], [])
        pieces, cut = [], []
        for top in range(0, dataset.height, band_rows):
            height = min(band_rows, dataset.height - top)
            marked = (dataset.read(1, window=Window(0, top, dataset.width, height)) > level).astype(np.uint8)
            for geometry, _ in shapes(marked, mask=marked.astype(bool), connectivity=4,
                                      transform=Affine.translation(0, top)):  # fmt: skip
                polygon = shapely.geometry.shape(geometry)  # in pixels: integer corners, exact to join
                _, low, _, high = polygon.bounds
                touches_edge = (low == top and top > 0) or (high == top + height < dataset.height)
                (cut if touches_edge else pieces).append(polygon)
        pieces += list(shapely.get_parts(shapely.union_all(cut))) if cut else []
        to_crs = dataset.transform.to_shapely()
        geometries = [shapely.geometry.mapping(shapely.affinity.affine_transform(p, to_crs)) for p in pieces]
        return ScenePolygons(scene, dataset.crs.to_wkt(), geometries, [round(p.area) for p in pieces])


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
