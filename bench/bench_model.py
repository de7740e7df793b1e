"""Model benchmarks on the current machine (random weights: timing and memory only).

    python bench/bench_model.py encoder    # vit_b encoder + ATL forward at 256/512/1024
    python bench/bench_model.py train      # one training step, vit_b at 256, batch 2
    python bench/bench_model.py tiled      # peak RSS of tiled prediction up to a 10000^2 GeoTIFF
    python bench/bench_model.py variants   # one training step per ATL variant on lite, batch 1
"""

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from translandseg.build import build_translandseg
from translandseg.modeling import ATL_VARIANTS
from translandseg.predict import Predictor, predict_file
from translandseg.training.losses import bce_iou_loss


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_encoder() -> None:
    for size in (256, 512, 1024):
        model = build_translandseg("vit_b", size)
        images = torch.rand(1, 3, size, size) * 255
        with torch.inference_mode():
            model.encode(images)  # warm-up
            seconds = _timed(lambda m=model, x=images: m.encode(x), 3 if size < 1024 else 1)
        print(f"vit_b encoder+ATL forward at {size}px: {seconds:.2f} s")


def bench_train_step() -> None:
    seconds = _train_step_seconds(build_translandseg("vit_b", 256), batch=2)
    print(f"vit_b training step at 256px, batch 2: {seconds:.2f} s")


def bench_variant_steps() -> None:
    """The default recipe's training step (lite, batch 1) for every ATL variant that applies to it."""
    print("| variant | ATL weights | s/step |")
    print("| --- | --- | --- |")
    for name, variant in ATL_VARIANTS.items():
        if variant.deployment == "global":
            continue  # TinyViT has no global-attention blocks
        model = build_translandseg("lite", variant=name)
        weights = sum(p.numel() for p in model.atl.parameters())
        print(f"| {name} | {weights:,} | {_train_step_seconds(model, batch=1):.2f} |", flush=True)


def _train_step_seconds(model, batch: int) -> float:
    """Median seconds of a forward + backward + optimiser step through the frozen encoder."""
    model.train()
    size = model.image_size
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-4)
    images, masks = torch.rand(batch, 3, size, size) * 255, (torch.rand(batch, 1, size, size) > 0.5).float()

    def step():
        loss = bce_iou_loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    return _timed(step, 5)


def _write_scene(path: Path, width: int, height: int) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="uint8",
                       crs="EPSG:32648", transform=from_origin(400000, 3000000, 10, 10), tiled=True,
                       compress="deflate") as out:  # fmt: skip
        rng = np.random.default_rng(0)
        for top in range(0, height, 1000):
            rows = min(1000, height - top)
            out.write(rng.integers(0, 255, (4, rows, width), dtype=np.uint8), window=Window(0, top, width, rows))


def _peak_rss_mib() -> float:
    """VmHWM of this process (unlike ru_maxrss, not inherited from the parent on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_tiled(scene: Path) -> None:
    """Peak RSS of one prediction, against the RSS once the model is built."""
    model = build_translandseg("tiny", 256)
    before = _peak_rss_mib()
    start = time.perf_counter()
    predict_file(Predictor(model), scene, scene.with_name(scene.stem + "_mask.tif"))
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    with rasterio.open(scene) as source:
        size = f"{source.width}x{source.height}"
    print(f"tiled prediction {size} (tiny model, 256px tiles): {seconds:.0f} s, "
          f"peak RSS {peak:.0f} MiB ({peak - before:+.0f} MiB over the built model)")


def bench_tiled_sizes() -> None:
    """Each raster predicted in a fresh process, GDAL's block cache capped at 64 MB."""
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in ((2000, 2000), (10000, 2000), (10000, 10000)):
            scene = Path(tmp) / f"scene{width}x{height}.tif"
            _write_scene(scene, width, height)
            env = {**os.environ, "GDAL_CACHEMAX": "64"}
            subprocess.run([sys.executable, __file__, "tiled-one", "--scene", str(scene)], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["encoder", "train", "variants", "tiled", "tiled-one"])
    parser.add_argument("--scene", type=Path, help="with tiled-one: the GeoTIFF to predict")
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.what == "encoder":
        bench_encoder()
    elif args.what == "train":
        bench_train_step()
    elif args.what == "variants":
        bench_variant_steps()
    elif args.what == "tiled-one":
        bench_tiled(args.scene)
    else:
        bench_tiled_sizes()


if __name__ == "__main__":
    main()
