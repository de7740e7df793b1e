"""Correction and export benchmarks on the current machine (random weights: timing only).

    python bench/bench_correction.py clicks   # vit_b at 1024: encode (cache miss), disk/memory hits, clicks
    python bench/bench_correction.py export   # export 1,000 masks in every format
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rasterio.transform import from_origin

from annotations import AnnotationStore
from annotations.exporting import FORMATS, export_training_set
from translandseg.build import build_translandseg
from translandseg.interactive.correction import CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.prompting import PointPrompter
from translandseg.raster import RasterImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_geotiff  # noqa: E402


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_clicks(clicks: int) -> None:
    torch.manual_seed(0)
    model = build_translandseg("vit_b", 1024)
    decoder = copy.deepcopy(model.mask_decoder)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = np.random.default_rng(0).integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
        scene = write_geotiff(folder / "scene.tif", data)

        def session(cache: EmbeddingCache) -> CorrectionSession:
            prompter = PointPrompter(model, decoder, "vit_b-random-1024", cache)
            return CorrectionSession(RasterImage(scene), "scene", np.zeros((1024, 1024), bool), prompter)

        cache = EmbeddingCache(512, folder / "embeddings")
        first = session(cache)
        print(f"first click, cache miss (encode + decode): {_seconds(lambda: first.click(512, 512, True)):.2f} s")
        from_disk = session(EmbeddingCache(512, folder / "embeddings"))
        print(f"first click, disk cache hit: {_seconds(lambda: from_disk.click(512, 512, True)) * 1000:.0f} ms")
        in_memory = session(cache)
        print(f"first click, memory cache hit: {_seconds(lambda: in_memory.click(512, 512, True)) * 1000:.0f} ms")
        rng = np.random.default_rng(1)
        times = []
        for _ in range(clicks):
            x, y = rng.integers(0, 1024, 2)
            positive = not in_memory.mask[y, x] or bool(rng.integers(2))  # a negative click needs landslide under it
            times.append(_seconds(lambda x=x, y=y, p=positive: in_memory.click(x, y, p)))
        times_ms = np.array(times) * 1000
        print(f"{clicks} clicks with a cached embedding: median {statistics.median(times_ms):.0f} ms, "
              f"p95 {np.percentile(times_ms, 95):.0f} ms")  # fmt: skip


def bench_export(count: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with AnnotationStore(folder / "labels.db") as store:
            for i in range(count):
                data = rng.integers(0, 255, (3, 256, 256), dtype=np.uint8)
                path = write_geotiff(folder / "img.tif", data, transform=from_origin(500000.0 + 2560 * i, 3e6, 10, 10))
                image_id = store.add_image(path, name=f"scene{i}.tif")
                mask = np.zeros((256, 256), bool)
                y, x = rng.integers(0, 160, 2)
                mask[y : y + rng.integers(20, 96), x : x + rng.integers(20, 96)] = True
                store.save_annotation(image_id, mask, "clicked", "bench", review="accepted")
            for formats in [(f,) for f in FORMATS] + [FORMATS]:
                out = folder / ("export-" + "-".join(formats))
                seconds = _seconds(lambda o=out, f=formats: export_training_set(store, o, formats=f))
                print(f"export {count} masks of 256^2 as {' + '.join(formats)}: {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["clicks", "export"])
    parser.add_argument("--count", type=int, default=None, help="clicks (default 50) or masks (default 1000)")
    args = parser.parse_args()
    if args.which == "clicks":
        bench_clicks(args.count or 50)
    else:
        bench_export(args.count or 1000)


if __name__ == "__main__":
    main()
