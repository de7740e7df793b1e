"""Batch prediction on a Dask LocalCluster of two worker processes (``translandseg.batch``)."""

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from conftest import write_geotiff
from translandseg.batch.jobs import POLYGONS_FILE, open_client, predict_on_cluster
from translandseg.batch.polygons import mask_polygons
from translandseg.batch.workers import PLUGIN_NAME, ModelSpec, usable_cores
from translandseg.build import LITE
from translandseg.data import find_pairs, load_pair
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.loading import load_model
from translandseg.predict import PredictorOptions, predict_file


@pytest.fixture(scope="module")
def client():
    with open_client("local", workers=2) as client:
        yield client


def single_process_masks(spec: ModelSpec, options: PredictorOptions, scenes, out):
    loaded = load_model(spec.model_type, spec.sam_checkpoint, spec.adapter)
    predictor = options.predictor(loaded.model)
    return {scene.name: predict_file(predictor, scene, out / f"{scene.stem}_mask{'.tif' if scene.suffix == '.tif' else '.png'}")
            for scene in scenes}  # fmt: skip


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read(1), dataset.crs, dataset.transform


def georeferenced_mosaic(samples, path, side: int, crs="EPSG:32648"):
    """Real landslide patches side by side in one georeferenced GeoTIFF of ``side`` x ``side``."""
    pairs = find_pairs(samples / "landslide4sense-rgb")
    mosaic = np.zeros((side, side, 3), np.uint8)
    patch = load_pair(pairs[0])[0].shape[0]
    for i, (top, left) in enumerate((t, c) for t in range(0, side, patch) for c in range(0, side, patch)):
        rgb = load_pair(pairs[i % len(pairs)])[0]
        mosaic[top : top + patch, left : left + patch] = rgb[: side - top, : side - left]
    return write_geotiff(path, mosaic.transpose(2, 0, 1), crs=crs, transform=from_origin(600000.0, 3100000.0, 3.0, 3.0))


def test_a_local_cluster_writes_the_masks_of_one_process_with_their_georeferencing(samples, client, tmp_path):
    spec = ModelSpec.of(LITE, DEFAULT_ADAPTER)
    options = PredictorOptions()
    scenes = [georeferenced_mosaic(samples, tmp_path / "utm.tif", 512),
              georeferenced_mosaic(samples, tmp_path / "other.tif", 300, crs="EPSG:32647"),
              find_pairs(samples / "bijie-full")[0].image]  # fmt: skip
    report = predict_on_cluster(client, spec, options, scenes, tmp_path / "cluster", progress=False)
    alone = single_process_masks(spec, options, scenes, tmp_path / "alone")

    assert not report.failed and len(report.written) == 3
    for scene in scenes[:2]:
        mask, crs, transform = read(tmp_path / "cluster" / f"{scene.stem}_mask.tif")
        expected, expected_crs, expected_transform = read(alone[scene.name])
        assert np.array_equal(mask, expected) and 0 < (mask > 0).mean() < 1
        assert crs == expected_crs and transform == expected_transform
        with rasterio.open(tmp_path / "cluster" / f"{scene.stem}_mask.tif") as cog:
            assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    png = tmp_path / "cluster" / f"{scenes[2].stem}_mask.png"
    assert np.array_equal(read(png)[0], read(alone[scenes[2].name])[0])

    info = pyogrio.read_info(report.geopackage)
    assert report.geopackage.name == POLYGONS_FILE and info["crs"] == "EPSG:32648"  # the first scene's CRS
    assert info["features"] == report.polygons > 0
    scene_names, pixels = pyogrio.raw.read(report.geopackage)[3][:2]
    assert set(scene_names) == {"utm.tif", "other.tif"}  # the PNG has no georeferencing, so no polygons
    marked = (read(tmp_path / "cluster" / "utm_mask.tif")[0] > 0).sum()
    assert pixels[scene_names == "utm.tif"].sum() == marked


def test_a_large_mosaic_split_across_workers_is_identical_to_one_process(samples, client, tmp_path):
    spec = ModelSpec.of(LITE, DEFAULT_ADAPTER)
    options = PredictorOptions()
    mosaic = georeferenced_mosaic(samples, tmp_path / "mosaic.tif", 1300)
    report = predict_on_cluster(client, spec, options, [mosaic], tmp_path / "cluster", progress=False,
                                large_pixels=1000 * 1000)  # fmt: skip
    mask, crs, transform = read(report.written[0])
    expected, expected_crs, expected_transform = read(single_process_masks(spec, options, [mosaic], tmp_path)["mosaic.tif"])
    assert np.array_equal(mask, expected) and 0 < (mask > 0).mean() < 1
    assert crs == expected_crs and transform == expected_transform


def test_a_failing_scene_is_named_the_others_written_and_a_rerun_resumes(tiny_sam_checkpoint, adapter, client, tmp_path):
    spec = ModelSpec.of("tiny", adapter, sam_checkpoint=tiny_sam_checkpoint)
    rng = np.random.default_rng(0)
    good = [write_geotiff(tmp_path / f"good{i}.tif", rng.integers(0, 255, (3, 90, 110), dtype=np.uint8)) for i in range(2)]
    truncated = write_geotiff(tmp_path / "truncated.tif", rng.integers(0, 255, (3, 600, 600), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # opens; its tiles fail on a worker
    (tmp_path / "notes.tif").write_text("not an image")
    scenes = [good[0], truncated, tmp_path / "notes.tif", good[1]]

    report = predict_on_cluster(client, spec, PredictorOptions(), scenes, tmp_path / "out", progress=False)
    assert sorted(p.name for p in report.written) == ["good0_mask.tif", "good1_mask.tif"]
    assert set(report.failed) == {str(truncated), str(tmp_path / "notes.tif")}
    assert "truncated.tif: corrupt or truncated image data" in report.failed[str(truncated)]
    assert "notes.tif is not a readable image" in report.failed[str(tmp_path / "notes.tif")]
    assert not list((tmp_path / "out").glob(".*partial*"))  # nothing half-written is left
    written = {p: p.stat().st_mtime_ns for p in report.written}

    again = predict_on_cluster(client, spec, PredictorOptions(), scenes, tmp_path / "out", progress=False)
    assert again.written == [] and sorted(again.skipped) == sorted(written)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in written.items())  # not recomputed
    assert again.polygons == report.polygons


def test_a_worker_refuses_an_adapter_that_differs_from_the_clients(tiny_sam_checkpoint, adapter, client, tmp_path):
    spec = ModelSpec.of("tiny", adapter, sam_checkpoint=tiny_sam_checkpoint)
    changed = ModelSpec(spec.model_type, spec.adapter, "0" * 64, spec.sam_checkpoint)
    scene = write_geotiff(tmp_path / "scene.tif", np.zeros((3, 40, 40), np.uint8))
    report = predict_on_cluster(client, changed, PredictorOptions(), [scene], tmp_path / "out", progress=False)
    assert "not the client's 000000000000" in report.failed[str(scene)]


def test_workers_keep_their_model_for_the_next_job_with_the_same_one(tiny_sam_checkpoint, adapter, client, tmp_path):
    spec = ModelSpec.of("tiny", adapter, sam_checkpoint=tiny_sam_checkpoint)
    scenes = [write_geotiff(tmp_path / f"s{i}.tif", np.zeros((3, 40, 40), np.uint8)) for i in range(2)]

    def plugins():
        return client.run(lambda dask_worker: id(dask_worker.plugins[PLUGIN_NAME]))

    predict_on_cluster(client, spec, PredictorOptions(), scenes, tmp_path / "first", progress=False)
    held = plugins()
    predict_on_cluster(client, spec, PredictorOptions(), scenes, tmp_path / "second", progress=False)
    assert plugins() == held
    other = ModelSpec(spec.model_type, spec.adapter, spec.adapter_sha256, spec.sam_checkpoint, download=False)
    predict_on_cluster(client, other, PredictorOptions(), scenes, tmp_path / "third", progress=False)
    assert all(plugins()[worker] != plugin for worker, plugin in held.items())


def test_local_workers_share_the_cores_as_torch_threads_without_dasks_allocator_settings(
    tiny_sam_checkpoint, adapter, client, tmp_path
):
    scene = write_geotiff(tmp_path / "scene.tif", np.zeros((3, 40, 40), np.uint8))
    spec = ModelSpec.of("tiny", adapter, sam_checkpoint=tiny_sam_checkpoint)
    predict_on_cluster(client, spec, PredictorOptions(), [scene], tmp_path / "out", progress=False)

    def settings():
        import os

        import torch

        return torch.get_num_threads(), os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")

    expected = max(1, usable_cores() // 2)
    assert set(client.run(settings).values()) == {(expected, None, None)}


def test_prelabel_records_the_active_versions_masks_once_and_the_app_opens_them_without_predicting(
        tiny_sam_checkpoint, adapter, client, tmp_path):  # fmt: skip
    from annotations.labeling import LabelingSession, Workspace
    from annotations.prelabeling import prelabel
    from translandseg.interactive.embedding_cache import EmbeddingCache

    embeddings = tmp_path / "embeddings"
    loaded = load_model("tiny", tiny_sam_checkpoint, adapter)
    workspace = Workspace(tmp_path / "labels.db", tmp_path / "images", loaded, "", EmbeddingCache(folder=embeddings))
    rng = np.random.default_rng(1)
    ids = [workspace.add_upload(write_geotiff(tmp_path / f"s{i}.tif", rng.integers(0, 255, (3, 70, 90), np.uint8)),
                                f"s{i}.tif")[0] for i in range(3)]  # fmt: skip
    with workspace.store() as store:
        store.save_annotation(ids[2], np.zeros((70, 90), bool), "painted", "ana")  # labelled: nothing to prepare

    model = {"sam_checkpoint": tiny_sam_checkpoint}
    report = prelabel(client, workspace, embeddings, progress=False, **model)
    assert report.recorded == 2 and not report.failed and report.version == loaded.version
    with workspace.store() as store:
        rows = list(store.db.query("select image_id, model_version, made_with from predictions"))
    assert sorted(r["image_id"] for r in rows) == sorted(ids[:2])
    assert {r["model_version"] for r in rows} == {loaded.version}
    assert {r["made_with"] for r in rows} == {workspace.automatic_options.to_json()}
    assert prelabel(client, workspace, embeddings, progress=False, **model).recorded == 0  # nothing left to prepare

    session = LabelingSession.open_stored(workspace, ids[0])
    assert "computed beforehand" in session.message
    with workspace.store() as store:
        assert np.array_equal(session.mask, store.prediction_mask(session.prediction_id))
        assert store.db["predictions"].count == 2  # the app predicted nothing itself
    key = session.correction._first_window(45, 35)[0]
    assert key in EmbeddingCache(folder=embeddings)  # the first click's embedding waits on disk
    session.close()


def test_predict_runs_on_a_local_cluster_from_the_command_line(tiny_sam_checkpoint, adapter, tmp_path, capsys):
    from translandseg.cli import main

    rng = np.random.default_rng(2)
    scenes = [str(write_geotiff(tmp_path / f"s{i}.tif", rng.integers(0, 255, (3, 60, 80), np.uint8))) for i in range(2)]
    args = ["predict", *scenes, "--out", str(tmp_path / "out"), "--adapter", str(adapter), "--sam", "tiny",
            "--sam-checkpoint", str(tiny_sam_checkpoint), "--workers", "1"]  # fmt: skip
    assert main(args) == 0  # two scenes: a local cluster by default
    captured = capsys.readouterr()
    assert "dask: 1 workers, dashboard http" in captured.err
    assert sorted(captured.out.split()) == [str(tmp_path / "out" / "s0_mask.tif"), str(tmp_path / "out" / "s1_mask.tif")]
    with rasterio.open(tmp_path / "out" / "s0_mask.tif") as mask:
        assert mask.crs.to_epsg() == 32648 and mask.shape == (60, 80)


def test_polygons_read_in_bands_of_rows_are_the_regions_of_the_whole_mask(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.random((60, 50)) < 0.45).astype(np.uint8) * 255  # many regions, many cut by band edges
    mask[20:40, 5:45] = 255  # one region across two bands, with holes punched in it
    mask[25, 10:40:3] = mask[31:36, 20] = 0
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=50, height=60, count=1, dtype="uint8", crs="EPSG:32648",
                       transform=from_origin(500_000.0, 3_000_000.0, 10.0, 10.0)) as out:  # fmt: skip
        out.write(mask, 1)
    whole, banded = mask_polygons(path, "s", band_rows=60), mask_polygons(path, "s", band_rows=7)
    assert sorted(banded.pixels) == sorted(whole.pixels) and sum(whole.pixels) == int((mask > 0).sum())
    shapes_of = [shapely.union_all([shapely.geometry.shape(g) for g in found.polygons]) for found in (whole, banded)]
    assert shapes_of[0].symmetric_difference(shapes_of[1]).area == 0
    assert shapes_of[0].area == 100 * sum(whole.pixels)  # in the CRS: 10 m pixels
    assert shapely.box(500_000, 2_999_400, 500_500, 3_000_000).contains(shapes_of[0])
    assert any(len(shapely.geometry.shape(g).interiors) for g in banded.polygons)
