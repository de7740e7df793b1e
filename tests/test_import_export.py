import csv
import json
import zipfile

import numpy as np
import pytest
import rasterio
from PIL import Image
from pycocotools import mask as coco_mask
from rasterio.transform import from_origin

from annotations.exporting import coco_rle, export_training_set, safe_name
from annotations.importing import Imported, import_images, import_pairs
from annotations.store import AnnotationStore, Prompt
from conftest import write_geotiff
from translandseg.data import find_pairs


def test_real_samples_round_trip_identically(samples, tmp_path):
    with AnnotationStore(tmp_path / "labels.db") as store:
        assert import_pairs(store, samples / "bijie") == Imported(14, 0)
        assert import_pairs(store, samples / "bijie") == Imported(0, 0)  # idempotent
        assert store.counts_by_status()["accepted"] == 14
        out = export_training_set(store, tmp_path / "export", formats=("png", "coco"))
    manifest = {row["image"]: row for row in csv.DictReader(open(out / "manifest.csv"))}
    assert len(manifest) == 14 and {r["split"] for r in manifest.values()} == {"train", "val"}
    assert sum(r["split"] == "val" for r in manifest.values()) == 4
    for pair in find_pairs(samples / "bijie"):
        row = manifest[pair.image.name]
        assert (row["source"], row["status"]) == ("imported", "accepted")
        exported = np.array(Image.open(out / "png" / "label" / f"{row['file']}.png")) > 0
        original = np.array(Image.open(pair.label)) > 0
        assert np.array_equal(exported, original)
        assert np.array_equal(np.array(Image.open(out / "png" / "image" / f"{row['file']}.png")),
                              np.array(Image.open(pair.image).convert("RGB")))  # fmt: skip
    exported_pairs = find_pairs(out / "png")  # the trainer reads the export as it is
    assert len(exported_pairs) == 14

    data = json.loads((out / "coco.json").read_text())
    for image in data["images"]:
        label_file = out / "png" / "label" / image["file_name"].rsplit("/", 1)[1]
        original = np.array(Image.open(label_file)) > 0
        union = np.zeros_like(original)
        for annotation in (a for a in data["annotations"] if a["image_id"] == image["id"]):
            rle = coco_mask.frPyObjects(annotation["segmentation"], image["height"], image["width"])
            decoded = coco_mask.decode(rle).astype(bool)
            assert decoded.sum() == annotation["area"] == coco_mask.area(rle)
            assert not (union & decoded).any()  # instances do not overlap
            union |= decoded
        assert np.array_equal(union, original)


def test_rle_matches_pycocotools():
    mask = np.random.default_rng(0).random((13, 7)) > 0.5
    mask[0, 0] = True
    ours = coco_rle(mask)
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert coco_mask.decode(coco_mask.frPyObjects(ours, 13, 7)).astype(bool).tolist() == mask.tolist()
    assert coco_mask.area(coco_mask.frPyObjects(ours, 13, 7)) == coco_mask.area(reference)


def test_georeferencing_survives_import_correction_export(tmp_path):
    transform = from_origin(500000.0, 3000000.0, 10.0, 10.0)  # UTM 48N, 10 m pixels
    data = np.random.default_rng(0).integers(0, 3000, (4, 60, 80), dtype=np.uint16)
    scene = write_geotiff(tmp_path / "scene.tif", data, crs="EPSG:32648", transform=transform)
    mask = np.zeros((60, 80), bool)
    mask[10:20, 30:50] = True  # 10 x 20 pixels = 200 x 100 m
    with AnnotationStore(tmp_path / "labels.db") as store:
        assert import_images(store, [scene]) == 1
        (image_id,) = [r["id"] for r in store.db["images"].rows]
        prediction = store.add_prediction(image_id, np.zeros((60, 80), bool), "tls-v3")
        store.save_annotation(image_id, mask, "clicked", "ana", [Prompt(40, 15, 1)], prediction,
                              review="accepted", reviewer="rev")  # fmt: skip
        archive = export_training_set(store, tmp_path / "export", make_zip=True)
    assert archive.suffix == ".zip" and zipfile.ZipFile(archive).testzip() is None
    out = tmp_path / "export"
    (row,) = json.loads((out / "manifest.json").read_text())
    with rasterio.open(out / "geotiff" / "image" / f"{row['file']}.tif") as chip:
        assert chip.crs.to_epsg() == 32648 and chip.transform == transform and chip.count == 4
        assert np.array_equal(chip.read(), data)
    with rasterio.open(out / "geotiff" / "label" / f"{row['file']}.tif") as label:
        assert label.crs.to_epsg() == 32648 and label.transform == transform
        assert np.array_equal(label.read(1) > 0, mask)
    (feature,) = json.loads((out / "landslides.geojson").read_text())["features"]
    props = feature["properties"]
    assert (props["annotator"], props["reviewer"], props["model_version"]) == ("ana", "rev", "tls-v3")
    assert props["area_m2"] == pytest.approx(200 * 100, rel=0.01)
    lon, lat = np.array(feature["geometry"]["coordinates"][0]).T
    # UTM 48N easting 500000 is the central meridian, 105 E; northing 3,000,000 m is about 27.1 N
    assert lon.min() == pytest.approx(105.0 + 300 / (111320 * np.cos(np.radians(27.1))), abs=2e-4)
    assert lat.max() == pytest.approx(27.1, abs=0.05) and lat.max() - lat.min() == pytest.approx(100 / 110800, rel=0.02)


def test_names_are_sanitised():
    assert safe_name("../../etc/passwd", "ab" * 32) == "passwd_abababab"
    assert safe_name("..\\..\\evil name!.png", "cd" * 32) == "evil_name_cdcdcdcd"
    assert safe_name("...", "ef" * 32) == "image_efefefef"


def test_nothing_to_export_is_a_clear_error(tmp_path):
    with AnnotationStore(tmp_path / "labels.db") as store, pytest.raises(ValueError, match="nothing to export"):
        export_training_set(store, tmp_path / "out")


def test_import_never_overwrites_a_review_unless_asked(tmp_path):
    """Issue 31.8: a reviewer's rejection survives a later import, which says what it skipped."""
    from conftest import write_pairs
    from translandseg.cli import main

    pairs = write_pairs(tmp_path / "pairs", 2)
    db = tmp_path / "labels.db"
    with AnnotationStore(db) as store:
        import_pairs(store, pairs)
        first = store.latest_annotation(store.queue()[0]["id"])
        store.review(first.id, "rejected", "rev", "a road cut")
    label = pairs / "label" / "s0.png"
    Image.fromarray(255 - np.array(Image.open(label))).save(label)  # a new label for the rejected image
    (pairs / "label" / "s1.png").unlink()  # and none for the other: it is not imported again
    (pairs / "image" / "s1.png").unlink()
    with AnnotationStore(db) as store:
        assert import_pairs(store, pairs) == Imported(0, 1)
        kept = store.latest_annotation(first.image_id)
        assert (kept.id, kept.status, kept.reviewer) == (first.id, "rejected", "rev")
    assert main(["import", str(pairs), "--db", str(db)]) in (0, None)
    with AnnotationStore(db) as store:
        assert store.latest_annotation(first.image_id).status == "rejected"
        assert import_pairs(store, pairs, replace=True) == Imported(1, 0)
        replaced = store.latest_annotation(first.image_id)
        assert (replaced.status, replaced.source) == ("accepted", "imported")
