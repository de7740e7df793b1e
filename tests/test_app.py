import numpy as np
import pytest
import rasterio
import torch

import app
from conftest import write_geotiff, write_pairs
from translandseg.data import find_pairs, split_pairs
from translandseg.loading import load_model
from translandseg.training import TrainConfig, train


@pytest.fixture(scope="module")
def adapter(tiny_sam_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    pairs = find_pairs(write_pairs(root / "data", 4))
    return train(loaded, *split_pairs(pairs), root / "run", TrainConfig(epochs=1), progress=False).adapter_path


def test_segment_handler_shows_overlay_and_offers_a_georeferenced_mask(adapter, tiny_sam_checkpoint, tmp_path):
    args = app.parse_args(["--adapter", str(adapter), "--sam-checkpoint", str(tiny_sam_checkpoint)])
    assert args.sam == "tiny"  # taken from the adapter
    status = app.load_status(args)
    assert status.loaded is not None and "adapter.safetensors" in status.message
    scene = write_geotiff(tmp_path / "scene.tif", np.random.default_rng(0).integers(0, 255, (4, 80, 90), dtype=np.uint8))
    shown, mask_file, message = app.segment(str(scene), "", 0.5, status, tmp_path / "out")
    assert shown.shape == (80, 90, 3) and "% of the image is landslide" in message
    with rasterio.open(mask_file) as mask, rasterio.open(scene) as src:
        assert mask.crs == src.crs and mask.transform == src.transform


def test_handler_explains_bad_input_and_missing_model(adapter, tiny_sam_checkpoint, tmp_path):
    status = app.load_status(app.parse_args(["--adapter", str(adapter), "--sam-checkpoint", str(tiny_sam_checkpoint)]))
    (tmp_path / "empty.png").write_bytes(b"")
    shown, file, message = app.segment(str(tmp_path / "empty.png"), "", 0.5, status, tmp_path)
    assert shown is None and file is None and "empty" in message
    shown, file, message = app.segment(str(adapter), "", 0.5, status, tmp_path)
    assert shown is None and "not a readable image" in message
    assert "No trained adapter" in app.load_status(app.parse_args([])).message
    missing = app.load_status(app.parse_args(["--adapter", str(tmp_path / "none.safetensors")]))
    assert missing.loaded is None and "could not be loaded" in missing.message


def test_overlay_tints_only_the_mask():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = app.overlay(rgb, mask, 1.0)
    assert out[0, 0].tolist() == [255, 40, 40] and out[1, 1].tolist() == [100, 100, 100]
