import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from translandseg.build import build_translandseg

SAMPLES = Path(os.environ.get("TRANSLANDSEG_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/landslide-samples"))


@pytest.fixture(scope="session")
def samples() -> Path:
    if not (SAMPLES / "bijie" / "image").is_dir():
        pytest.skip(f"real landslide samples not found at {SAMPLES} (set TRANSLANDSEG_SAMPLES)")
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory) -> Path:
    """A SAM checkpoint with the official key structure and tiny dimensions."""
    torch.manual_seed(0)
    model = build_translandseg("tiny", image_size=64, variant="mlp1")  # the same SAM weights whatever the default ATL
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("atl.")}
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def adapter(tiny_sam_checkpoint, tmp_path_factory):
    """An adapter trained for one epoch on generated pairs, over the tiny SAM."""
    from translandseg.data import find_pairs, split_pairs
    from translandseg.loading import load_model
    from translandseg.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    pairs = find_pairs(write_pairs(root / "data", 4))
    return train(loaded, *split_pairs(pairs), root / "run", TrainConfig(epochs=1), progress=False).adapter_path


def small_split_copy(samples: Path, root: Path, sets, per_side: int = 2) -> Path:
    """A copy of a few real pairs of each of ``sets`` from both sides of ``split.csv`` under ``root``,
    with its own ``split.csv`` listing just them (what ``read_split`` asks of a samples folder)."""
    import csv
    import shutil

    with open(samples / "split.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["set"] in sets]
    kept = [row for side in ("train", "test") for name in sets
            if (picked := [r for r in rows if r["set"] == name and r["split"] == side][:per_side])
            for row in picked]  # fmt: skip
    for row in kept:
        for folder in ("image", "label"):
            source = next((samples / row["set"] / folder).glob(row["name"] + ".*"))
            (root / row["set"] / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / row["set"] / folder / source.name)
    with open(root / "split.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return root


def write_geotiff(path: Path, data: np.ndarray, crs="EPSG:32648", transform=None, nodata=None) -> Path:
    """Write (bands, H, W) ``data`` as a GeoTIFF; default transform: 10 m pixels in UTM 48N."""
    transform = transform or from_origin(500000.0, 3000000.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True) as out:
        out.write(data)
    return path


def write_pairs(root: Path, count: int, size: int = 48, seed: int = 0) -> Path:
    """Generated image/label PNG pairs: bright squares (landslides) on a darker textured ground."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    for i in range(count):
        image = rng.integers(40, 90, (size, size, 3), dtype=np.uint8)
        label = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        label[y : y + size // 3, x : x + size // 3] = 255
        image[label > 0] = rng.integers(170, 230, (int((label > 0).sum()), 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "image" / f"s{i}.png")
        Image.fromarray(label).save(root / "label" / f"s{i}.png")
    return root


def brute_force_stroke(points, radius, shape):
    """Pixels whose centres lie within ``radius`` of the polyline, or that hold one of its points."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    covered = np.zeros(shape, bool)
    pairs = list(zip(points, points[1:], strict=False)) or [(points[0], points[0])]
    for (ax, ay), (bx, by) in pairs:
        dx, dy = bx - ax, by - ay
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / (dx * dx + dy * dy), 0, 1) if dx or dy else 0
        covered |= (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2 <= radius**2
    for x, y in points:
        if 0 <= x < shape[1] and 0 <= y < shape[0]:
            covered[int(y), int(x)] = True
    return covered
