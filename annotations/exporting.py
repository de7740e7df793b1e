"""Export accepted labels as a training set: PNG pairs, GeoTIFF chips, GeoJSON, COCO, manifest.

Layout of ``out``::

    png/image/NAME.png, png/label/NAME.png          the trainer's image/ + label/ layout
    geotiff/image/NAME.tif, geotiff/label/NAME.tif  all bands, CRS and transform kept
    landslides.geojson                              RFC 7946 (WGS84) polygons, georeferenced images
    coco.json                                       one RLE instance per landslide polygon
    manifest.csv, manifest.json                     provenance and the train/val split

NAME is the sanitised original name plus the first 8 hex digits of the image's SHA-256.
"""

import csv
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.features import rasterize, shapes
from rasterio.transform import Affine
from rasterio.warp import transform_geom
from tqdm import tqdm

from translandseg.data import split_pairs
from translandseg.raster import RasterImage

from .store import Annotation, AnnotationStore

FORMATS = ("png", "geotiff", "geojson", "coco")
EQUAL_AREA = CRS.from_epsg(6933)  # WGS 84 / NSIDC EASE-Grid 2.0 Global, for areas in m²
WGS84 = CRS.from_epsg(4326)


@dataclass
class ExportItem:
    annotation: Annotation
    image: Dict  # the images row
    name: str
    split: str

    @property
    def crs(self):
        return CRS.from_wkt(self.image["crs_wkt"]) if self.image["crs_wkt"] else None

    @property
    def transform(self) -> Affine:
        return Affine(*json.loads(self.image["transform"])) if self.image["transform"] else Affine.identity()


def safe_name(original: str, image_id: str) -> str:
    """A file stem that cannot leave its folder: letters, digits, '.', '_', '-' and the id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(original.replace("\\", "/")).stem).strip("._")
    return f"{stem[:80] or 'image'}_{image_id[:8]}"


def export_training_set(
    store: AnnotationStore,
    out: Path,
    formats: Sequence[str] = FORMATS,
    statuses: Sequence[str] = ("accepted",),
    val_fraction: float = 0.3,
    seed: int = 42,
    make_zip: bool = False,
    progress: bool = False,
) -> Path:
    """Export the latest annotation of every image whose review status is in ``statuses``.

    Returns ``out``, or the zip file when ``make_zip``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from {FORMATS}")
    items = _items(store, statuses, val_fraction, seed)
    if not items:
        raise ValueError(f"nothing to export: no image has an annotation with status {', '.join(statuses)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in tqdm(items, desc="export", unit="image", disable=not progress):
        with store.image_file(item.image["id"]) as path:
            if "png" in formats:
                _write_png_pair(path, item, out / "png")
            if "geotiff" in formats:
                _write_geotiff_pair(path, item, out / "geotiff")
    if "geojson" in formats:
        (out / "landslides.geojson").write_text(json.dumps(geojson(items)))
    if "coco" in formats:
        (out / "coco.json").write_text(json.dumps(coco(items)))
    _write_manifest(items, out)
    if make_zip:
        return Path(shutil.make_archive(str(out), "zip", root_dir=out))
    return out


def _items(store: AnnotationStore, statuses, val_fraction: float, seed: int) -> List[ExportItem]:
    annotations = store.latest_annotations(statuses)  # ordered by image id: the split is deterministic
    train, val = split_pairs(annotations, val_fraction, seed)
    split = {a.id: "train" for a in train} | {a.id: "val" for a in val}
    items = []
    for annotation in annotations:
        image = store.image(annotation.image_id)
        items.append(ExportItem(annotation, image, safe_name(image["name"], image["id"]), split[annotation.id]))
    return items


def _write_png_pair(path: Path, item: ExportItem, root: Path) -> None:
    for folder in ("image", "label"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with RasterImage(path) as image:
        rgb, _ = image.read()
    Image.fromarray(rgb).save(root / "image" / f"{item.name}.png")
    Image.fromarray(item.annotation.mask.astype(np.uint8) * 255).save(root / "label" / f"{item.name}.png")


def _write_geotiff_pair(path: Path, item: ExportItem, root: Path) -> None:
    for folder in ("image", "label"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    georef = {"crs": item.crs, "transform": item.transform}
    with rasterio.open(path) as source:
        profile = {"driver": "GTiff", "width": source.width, "height": source.height, "count": source.count,
                   "dtype": source.dtypes[0], "nodata": source.nodata, "compress": "deflate", **georef}  # fmt: skip
        with rasterio.open(root / "image" / f"{item.name}.tif", "w", **profile) as chip:
            chip.write(source.read())
    mask = item.annotation.mask.astype(np.uint8) * 255
    with rasterio.open(root / "label" / f"{item.name}.tif", "w", driver="GTiff", width=mask.shape[1],
                       height=mask.shape[0], count=1, dtype="uint8", compress="deflate", **georef) as label:
        label.write(mask, 1)


def _polygons(item: ExportItem, transform: Affine) -> Iterable[dict]:
    mask = item.annotation.mask.astype(np.uint8)
    for geometry, _ in shapes(mask, mask=mask.astype(bool), transform=transform, connectivity=4):
        yield geometry


def geojson(items: Sequence[ExportItem]) -> dict:
    """Landslide polygons of the georeferenced items in WGS84 longitude/latitude."""
    features = []
    for item in items:
        if item.crs is None:
            continue
        for geometry in _polygons(item, item.transform):
            area = _area_m2(transform_geom(item.crs, EQUAL_AREA, geometry))
            properties = {"image_id": item.image["id"], "image": item.image["name"], "file": item.name,
                          "area_m2": round(area, 2), "status": item.annotation.status, "source": item.annotation.source,
                          "annotator": item.annotation.annotator, "reviewer": item.annotation.reviewer,
                          "model_version": item.annotation.model_version}  # fmt: skip
            features.append({"type": "Feature", "geometry": transform_geom(item.crs, WGS84, geometry),
                             "properties": properties})  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def _area_m2(geometry: dict) -> float:
    """Planar area of a polygon in an equal-area CRS (outer ring minus holes)."""

    def ring_area(ring) -> float:
        x, y = np.asarray(ring, dtype=np.float64).T
        return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    outer, *holes = geometry["coordinates"]
    return ring_area(outer) - sum(ring_area(h) for h in holes)


def coco_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with background."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def coco(items: Sequence[ExportItem]) -> dict:
    """COCO instance segmentation: one landslide instance per polygon, masks as RLE."""
    images, annotations = [], []
    for number, item in enumerate(items, start=1):
        height, width = item.annotation.mask.shape
        images.append({"id": number, "file_name": f"png/image/{item.name}.png", "width": width, "height": height,
                       "translandseg_image_id": item.image["id"], "split": item.split})  # fmt: skip
        for geometry in _polygons(item, Affine.identity()):
            instance = rasterize([geometry], out_shape=(height, width), dtype=np.uint8).astype(bool)
            rows, cols = np.nonzero(instance)
            bbox = [int(cols.min()), int(rows.min()), int(np.ptp(cols) + 1), int(np.ptp(rows) + 1)]
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": 1, "iscrowd": 0,
                                "segmentation": coco_rle(instance), "area": int(instance.sum()), "bbox": bbox})
    categories = [{"id": 1, "name": "landslide", "supercategory": "landslide"}]
    return {"images": images, "annotations": annotations, "categories": categories}


MANIFEST_COLUMNS = ("file", "image_id", "image", "split", "source", "status", "annotator", "reviewer",
                    "model_version", "annotation_id", "crs")  # fmt: skip


def _write_manifest(items: Sequence[ExportItem], out: Path) -> None:
    rows = [
        {"file": i.name, "image_id": i.image["id"], "image": i.image["name"], "split": i.split,
         "source": i.annotation.source, "status": i.annotation.status, "annotator": i.annotation.annotator,
         "reviewer": i.annotation.reviewer, "model_version": i.annotation.model_version,
         "annotation_id": i.annotation.id, "crs": i.crs.to_string() if i.crs else None}  # fmt: skip
        for i in items
    ]
    (out / "manifest.json").write_text(json.dumps(rows, indent=1))
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def describe_export(out: Path, formats: Sequence[str]) -> str:
    """What an export folder holds, per format, in words; says why a format came out empty."""
    rows = json.loads((out / "manifest.json").read_text())
    georeferenced = sum(1 for row in rows if row["crs"])
    parts = []
    if "png" in formats:
        parts.append(f"PNG: {len(list((out / 'png' / 'label').glob('*.png')))} image/label pairs")
    if "geotiff" in formats:
        parts.append(f"GeoTIFF: {len(list((out / 'geotiff' / 'label').glob('*.tif')))} chip/label pairs")
    if "geojson" in formats:
        features = len(json.loads((out / "landslides.geojson").read_text())["features"])
        text = f"GeoJSON: {features} landslide polygons from {georeferenced} georeferenced image(s)"
        if not georeferenced:
            text += " (empty: no exported image has a CRS, so there is nothing to place on a map)"
        elif georeferenced < len(rows):
            text += f"; {len(rows) - georeferenced} image(s) without a CRS are left out"
        parts.append(text)
    if "coco" in formats:
        instances = len(json.loads((out / "coco.json").read_text())["annotations"])
        parts.append(f"COCO: {instances} landslide instances" + (" (empty: every mask is empty)" if not instances else ""))
    return f"{len(rows)} image(s). " + "; ".join(parts) + "."
