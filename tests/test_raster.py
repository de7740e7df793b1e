import numpy as np
import pytest
from PIL import Image
from rasterio.enums import ColorInterp

from conftest import write_geotiff
from translandseg.raster import ImageReadError, RasterImage, default_bands, read_label, read_rgb


def test_default_bands():
    gray = [ColorInterp.gray] * 14
    assert default_bands(14, gray) == (4, 3, 2)  # Sentinel-2 true colour
    assert default_bands(4, [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]) == (1, 2, 3)
    assert default_bands(3, gray) == (1, 2, 3)
    assert default_bands(1, gray) == (1, 1, 1)
    with pytest.raises(ImageReadError, match="2-band raster"):
        default_bands(2, gray)


def test_png_is_read_as_is_and_rgba_alpha_marks_invalid_pixels(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., :3] = np.arange(90, dtype=np.uint8).reshape(5, 6, 3)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb, valid = read_rgb(tmp_path / "a.png")
    assert rgb.shape == (5, 6, 3)
    assert np.array_equal(rgb[1:], rgba[1:, :, :3])
    assert not valid[0, 0] and valid.sum() == 29 and rgb[0, 0].tolist() == [0, 0, 0]


def test_multiband_uint16_is_stretched_with_bands_4_3_2_and_nodata(tmp_path):
    data = np.zeros((14, 20, 30), np.uint16)
    for band in range(14):
        data[band] = 1000 * (band + 1) + np.arange(30)[None, :] * 10
    data[:, 0, 0] = 65535
    path = write_geotiff(tmp_path / "s2.tif", data, nodata=65535)
    with RasterImage(path) as image:
        assert image.bands == (4, 3, 2) and image.crs.to_epsg() == 32648
        rgb, valid = image.read()
    assert not valid[0, 0] and valid.sum() == 599
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255  # percentile stretch to 0-255
    assert np.all(np.diff(rgb[5, :, 0].astype(int)) >= 0)  # order preserved
    with RasterImage(path, bands=(1, 1, 1)) as grey:
        r, _ = grey.read()
        assert np.array_equal(r[..., 0], r[..., 2])


def test_single_band_is_grey(tmp_path):
    path = write_geotiff(tmp_path / "dem.tif", np.arange(100, dtype=np.float32).reshape(1, 10, 10))
    rgb, _ = read_rgb(path)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and rgb[..., 0].max() == 255


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"name,value\n1,2\n", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image|corrupt"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_rgb(path)


def test_truncated_image_data_is_reported(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated|not a readable image"):
        read_rgb(tmp_path / "cut.png")


def test_wrong_band_choices_and_sizes(tmp_path):
    path = write_geotiff(tmp_path / "two.tif", np.ones((2, 4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="choose 3 bands"):
        RasterImage(path)
    with pytest.raises(ImageReadError, match="between 1 and 2"):
        RasterImage(path, bands=(1, 2, 3))
    big = write_geotiff(tmp_path / "big.tif", np.ones((3, 40, 40), np.uint8))
    with pytest.raises(ImageReadError, match="tile by tile"):
        read_rgb(big, max_pixels=1000)
    with pytest.raises(ImageReadError, match="no such file"):
        read_rgb(tmp_path / "missing.png")


def test_labels_0_255_and_0_1_and_wrong_band_count(tmp_path):
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).save(tmp_path / "b.png")
    assert read_label(tmp_path / "a.png").tolist() == read_label(tmp_path / "b.png").tolist() == [[False, True], [True, False]]
    with pytest.raises(ImageReadError, match="one band"):
        read_label(write_geotiff(tmp_path / "l.tif", np.zeros((2, 3, 3), np.uint8)))
