import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from conftest import write_geotiff
from translandseg.build import build_translandseg
from translandseg.data import find_pairs, load_pair
from translandseg.predict import VIEW_ORDER, Predictor, blend_weights, fast_precision, predict_file, tile_starts, viewed
from translandseg.raster import ImageReadError


@pytest.fixture(scope="module")
def predictor_factory():
    torch.manual_seed(0)
    model = build_translandseg("tiny", 64)
    return lambda **kw: Predictor(model, **kw)


def test_tiles_cover_the_image_and_end_flush():
    assert tile_starts(100, 64, 48) == [0, 36]
    assert tile_starts(64, 64, 48) == [0] and tile_starts(10, 64, 48) == [0]
    assert tile_starts(256, 64, 48) == [0, 48, 96, 144, 192]
    weights = blend_weights(8, 8, 3)
    assert weights.min() > 0 and weights[3:5, 3:5].min() == 1 and weights[0, 0] < weights[1, 1]


def test_overlap_and_no_overlap_agree_away_from_seams(predictor_factory):
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    plain = predictor_factory(overlap=0, scale="native").predict_array(rgb)
    blended = predictor_factory(overlap=16, scale="native").predict_array(rgb)
    # Tiles at 0 and 192 exist in both grids (strides 64 and 48); their parts that no other
    # tile covers must be identical, while seams are blended.
    np.testing.assert_allclose(blended[:48, :48], plain[:48, :48], atol=1e-6)
    np.testing.assert_allclose(blended[208:, 208:], plain[208:, 208:], atol=1e-6)
    assert not np.allclose(blended[60:68], plain[60:68], atol=1e-3)


def test_blend_is_the_weighted_mean_of_the_overlapping_tiles(predictor_factory):
    predictor = predictor_factory(overlap=16, scale="native")
    rgb = np.random.default_rng(1).integers(0, 255, (64, 112, 3), dtype=np.uint8)
    out = predictor.predict_array(rgb)
    left, right = predictor.tile_probability(rgb[:, :64]), predictor.tile_probability(rgb[:, 48:])
    w = blend_weights(64, 64, 16)
    expected = (left[:, 48:] * w[:, 48:] + right[:, :16] * w[:, :16]) / (w[:, 48:] + w[:, :16])
    np.testing.assert_allclose(out[:, 48:64], expected, atol=1e-6)


def test_tiles_in_batches_give_what_tiles_one_by_one_give(predictor_factory):
    rgb = np.random.default_rng(3).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    one_by_one = predictor_factory(scale="native", batch_size=1).predict_array(rgb)
    batched = predictor_factory(scale="native", batch_size=4).predict_array(rgb)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert np.array_equal(batched > 0.5, one_by_one > 0.5)


def test_a_scene_is_seen_whole_or_fused_up_to_the_whole_scene_limit(predictor_factory):
    rgb = np.random.default_rng(4).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    predictor = predictor_factory()
    assert predictor.scale == "whole" and predictor.batch_size == 1  # the defaults on CPU
    whole = predictor.predict_array(rgb)
    np.testing.assert_allclose(whole, predictor.tile_probability(rgb), atol=1e-6)  # one pass, resized
    native = predictor_factory(scale="native").predict_array(rgb)
    np.testing.assert_allclose(predictor_factory(scale="fused").predict_array(rgb), (whole + native) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="scale must be one of"):
        predictor_factory(scale="zoomed")


class MarkingModel(torch.nn.Module):
    """A model whose logits (1, S, S) are given, whatever the image."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.image_size = logits.shape[-1]
        self.register_buffer("logits", logits)

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1, -1, -1)


def test_a_thin_landslide_survives_the_automatic_path_when_the_logits_mark_it(samples):
    """A 3-pixel-wide strip in a real 512² scene, marked on the model's 256² grid (the cells it
    covers at least half), comes back whole at the scene's pixels and no wider than its cells."""
    rgb, _, _ = load_pair(find_pairs(samples / "bijie-upscaled")[0])
    rgb = rgb[:512, :512]
    strip = np.zeros((512, 512), bool)
    strip[:, 301:304] = True  # odd columns: one grid cell fully covered, one half
    rows = np.arange(512)
    strip[rows, np.clip(rows // 2 + 40, 0, 511)] = True  # and a slanting one, 3 px wide
    strip[rows, np.clip(rows // 2 + 41, 0, 511)] = True
    strip[rows, np.clip(rows // 2 + 42, 0, 511)] = True
    share = torch.nn.functional.avg_pool2d(torch.from_numpy(strip.astype(np.float32))[None, None], 2)
    logits = torch.where(share[0] >= 0.5, 8.0, -8.0)
    mask = Predictor(MarkingModel(logits), precision="float32").predict_array(rgb) > 0.5
    assert mask[strip].mean() >= 0.97
    widened = np.zeros_like(strip)
    for shift in range(-2, 3):
        widened |= np.roll(strip, shift, axis=1)
    assert not (mask & ~widened).any()


def test_the_eight_views_are_the_square_s_symmetries_and_undo_maps_each_back():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen = [viewed(images, view) for view in VIEW_ORDER]
    assert len({tuple(v.flatten().tolist()) for v in seen}) == 8
    for view, image in zip(VIEW_ORDER, seen, strict=True):
        assert torch.equal(viewed(image, view, undo=True), images)
    assert torch.equal(seen[1], images.flip(3)) and torch.equal(seen[3], images.flip(2))  # views 2 and 4: mirrors


def test_eight_views_make_the_mask_turn_and_mirror_with_the_image(predictor_factory):
    rgb = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for views, equivariant in ((1, False), (8, True)):
        predictor = predictor_factory(views=views)
        turned = predictor.predict_array(np.rot90(rgb).copy())
        mirrored = predictor.predict_array(rgb[:, ::-1].copy())
        plain = predictor.predict_array(rgb)
        agree = np.allclose(turned, np.rot90(plain), atol=1e-5) and np.allclose(mirrored, plain[:, ::-1], atol=1e-5)
        assert agree == equivariant  # one view: what the (random) model happens to see; eight: every symmetry
    with pytest.raises(ValueError, match="views must be one of"):
        predictor_factory(views=3)


def test_auto_precision_takes_bfloat16_only_where_the_cpu_computes_it_natively(predictor_factory, monkeypatch):
    for avx512_bf16, amx, expected in ((False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert fast_precision(torch.device("cpu")) == expected
        assert predictor_factory().precision == expected  # "auto", the default
    assert fast_precision(torch.device("cuda")) == "float32"
    assert predictor_factory(precision="float32").precision == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        predictor_factory(precision="float16")


def test_georeferenced_multiband_raster_keeps_crs_transform_and_size(predictor_factory, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (4, 2000, 3000), dtype=np.uint16)
    data[:, :100, :100] = 0
    transform = from_origin(430000.0, 2990000.0, 10.0, 10.0)
    source = write_geotiff(tmp_path / "scene.tif", data, crs="EPSG:32648", transform=transform, nodata=0)
    out = predict_file(predictor_factory(tile_size=256), source, tmp_path / "out" / "scene_mask.tif")
    with rasterio.open(source) as src, rasterio.open(out) as mask:
        assert mask.crs == src.crs and mask.crs.to_epsg() == 32648
        assert mask.transform == src.transform
        assert (mask.width, mask.height, mask.count, mask.dtypes[0]) == (3000, 2000, 1, "uint8")
        values = mask.read(1)
    assert set(np.unique(values)) <= {0, 255}
    assert values[:100, :100].max() == 0  # nodata is never a landslide
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scene_mask.tif"]


def test_png_in_png_out_and_probability(predictor_factory, tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    predictor = predictor_factory()
    out = predict_file(predictor, tmp_path / "a.png", tmp_path / "a_mask.png", probability=True)
    saved = np.array(Image.open(out))
    assert saved.shape == (90, 70)
    expected = np.round(predictor.predict_array(rgb) * 255)
    assert np.abs(saved.astype(int) - expected).max() <= 1


def test_the_threshold_decides_which_probabilities_are_landslide(predictor_factory, tmp_path):
    rgb = np.random.default_rng(6).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    probability = predictor_factory().predict_array(rgb)
    threshold = float(np.median(probability))  # half the pixels above it, whatever the random model says
    out = predict_file(predictor_factory(threshold=threshold), tmp_path / "a.png", tmp_path / "a_mask.png")
    assert np.array_equal(np.array(Image.open(out)) == 255, probability > threshold)
    assert (probability > threshold).any() and (probability > threshold).sum() != (probability > 0.5).sum()
    for wrong in (0, 1, 1.5):
        with pytest.raises(ValueError, match="threshold must lie between 0 and 1"):
            predictor_factory(threshold=wrong)


def test_bad_input_leaves_no_output(predictor_factory, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError):
        predict_file(predictor_factory(), tmp_path / "notes.png", tmp_path / "notes_mask.png")
    assert not (tmp_path / "notes_mask.png").exists()
    with pytest.raises(ValueError, match="overlap must be"):
        predictor_factory(overlap=64, scale="native")  # native tiles: the input side, 64
