"""Batch prediction on Dask (issue 34): throughput by workers, and one large mosaic across workers.

``throughput``: 40 scenes of 512² (4 x 4 Landslide4Sense RGB patches each, both sides of
``split.csv``; written as GeoTIFFs with a made-up UTM transform, so the job writes COGs and
polygons) predicted by the shipped adapter in this process one after another (``predict_file``,
the single-process path), then by a LocalCluster of 1 and of 2 worker processes sharing the
machine's cores, and of 1 and 2 workers each pinned to a core of its own (scaling at equal cores
a worker; each job timed from submission to its GeoPackage, the cluster started and each
worker's model loaded beforehand, as this process's is). ``mosaic``: a generated ``--side``² 3-band GeoTIFF (real patches laid side by side,
tiled, deflate) predicted in this process and by a 2-worker LocalCluster (rows of tiles across
the workers); the masks compared block by block, and the peak resident memory of the
single-process run (a child process), of each worker and of the client. ``unchanged``: the
single-process ``translandseg predict`` of this tree against a checkout of an earlier commit, on
the same scenes and a mosaic: seconds and identical masks.

    python bench/bench_batch.py SAMPLES throughput [--scenes 40]
    python bench/bench_batch.py SAMPLES mosaic [--side 20000] [--work /tmp/translandseg-mosaic]
    python bench/bench_batch.py SAMPLES unchanged --baseline OLD_CHECKOUT [--scenes 40] [--side 2500]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import rasterio
from bench_busy_scenes import SET, scenes
from rasterio.transform import from_origin
from rasterio.windows import Window

from translandseg.batch.jobs import open_client, predict_on_cluster
from translandseg.batch.workers import PLUGIN_NAME, ModelSpec, use_model
from translandseg.build import LITE
from translandseg.data import load_pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.loading import load_model
from translandseg.predict import PredictorOptions, predict_file

CRS = "EPSG:32648"


def write_scene(path: Path, rgb: np.ndarray, top: float = 3_000_000.0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], count=3, dtype="uint8",
                       crs=CRS, transform=from_origin(500_000.0, top, 10.0, 10.0), tiled=True) as out:
        out.write(rgb.transpose(2, 0, 1))
    return path


def load_now(dask_worker) -> None:
    """On a worker: load its model before the job is timed."""
    dask_worker.plugins[PLUGIN_NAME].model()


def throughput(samples: Path, count: int) -> None:
    spec, options = ModelSpec.of(LITE, DEFAULT_ADAPTER), PredictorOptions()
    with tempfile.TemporaryDirectory() as folder:
        made = (scenes(samples, "test") + scenes(samples, "train"))[:count]
        paths = [write_scene(Path(folder) / f"scene{i:02d}.tif", rgb, 3_000_000.0 - 6000 * i) for i, (rgb, _) in enumerate(made)]
        predictor = options.predictor(load_model(LITE, adapter=DEFAULT_ADAPTER).model)
        started = time.perf_counter()
        for path in paths:
            predict_file(predictor, path, Path(folder) / "alone" / f"{path.stem}_mask.tif")
        rows = [("this process, one scene after another", time.perf_counter() - started)]
        for workers, pinned in ((1, False), (2, False), (1, True), (2, True)):
            with open_client("local", workers) as client:
                if pinned:
                    for core, address in enumerate(sorted(client.scheduler_info(n_workers=-1)["workers"])):
                        client.run(os.sched_setaffinity, 0, {core}, workers=[address])
                use_model(client, spec)
                client.run(load_now)  # loaded beforehand, as this process's model is
                started = time.perf_counter()
                report = predict_on_cluster(client, spec, options, paths, Path(folder) / f"{workers}{pinned}", progress=False)
                cores = "a core each" if pinned else "sharing the cores"
                rows.append((f"LocalCluster, {workers} worker{'s' if workers > 1 else ''}, {cores}",
                             time.perf_counter() - started))  # fmt: skip
                assert not report.failed, report.failed
    print(f"| {len(paths)} scenes of 512² | seconds | scenes / min |\n| --- | --- | --- |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {60 * len(paths) / seconds:.1f} |")


def mosaic(samples: Path, side: int, path: Path) -> None:
    """A ``side``² GeoTIFF of the set's patches laid side by side, written a band of rows at a time."""
    train, test = read_split(samples, (SET,))
    patches = [load_pair(pair)[0] for pair in train + test]
    patch = patches[0].shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs=CRS,
                       transform=from_origin(500_000.0, 3_000_000.0, 10.0, 10.0), tiled=True, compress="deflate",
                       blockxsize=512, blockysize=512, BIGTIFF="YES") as out:  # fmt: skip
        for k, top in enumerate(range(0, side, patch)):
            height = min(patch, side - top)
            row = np.concatenate([patches[(k * 157 + i) % len(patches)] for i in range(-(-side // patch))], axis=1)
            out.write(row[:height, :side].transpose(2, 0, 1), window=Window(0, top, side, height))


def same_masks(a: Path, b: Path) -> int:
    """How many pixels of two masks differ, compared a band of rows at a time."""
    differ = 0
    with rasterio.open(a) as first, rasterio.open(b) as second:
        for top in range(0, first.height, 1024):
            window = Window(0, top, first.width, min(1024, first.height - top))
            differ += int((first.read(1, window=window) != second.read(1, window=window)).sum())
    return differ


def large(samples: Path, side: int, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"mosaic{side}.tif"
    if not source.exists():
        mosaic(samples, side, source)
    alone, cluster = work / "alone" / "mosaic_mask.tif", work / "cluster"
    started = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, str(samples), "alone", str(source), str(alone)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    rows: List[tuple] = [("this process", time.perf_counter() - started, run.stdout.strip() + " MiB")]
    with open_client("local", 2) as client:
        started = time.perf_counter()
        report = predict_on_cluster(client, ModelSpec.of(LITE, DEFAULT_ADAPTER), PredictorOptions(), [source], cluster)
        seconds = time.perf_counter() - started
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    assert not report.failed, report.failed
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rows.append(("LocalCluster, 2 workers", seconds,
                 f"workers {' / '.join(str(p) for p in peaks.values())} MiB, client {client_peak} MiB"))  # fmt: skip
    print(f"| {side}² mosaic | seconds | peak resident memory |\n| --- | --- | --- |")
    for label, seconds, memory in rows:
        print(f"| {label} | {seconds:.0f} | {memory} |")
    print(f"pixels that differ: {same_masks(alone, report.written[0])}; {report.polygons} polygons")


def alone(source: Path, output: Path) -> None:
    """The single-process run, in its own process: prints its peak resident memory in MiB."""
    predictor = PredictorOptions().predictor(load_model(LITE, adapter=DEFAULT_ADAPTER).model)
    predict_file(predictor, source, output)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def unchanged(samples: Path, baseline: Path, count: int, side: int) -> None:
    """``translandseg predict`` in this process, by this tree and by ``baseline`` (a checkout of an
    earlier commit), on ``count`` 512² scenes and one ``side``² mosaic: seconds (each command run
    three times, the trees alternating, its fastest run kept), and whether the masks are identical."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        made = (scenes(samples, "test") + scenes(samples, "train"))[:count]
        many = [write_scene(work / f"scene{i:02d}.tif", rgb) for i, (rgb, _) in enumerate(made)]
        mosaic(samples, side, work / "mosaic.tif")
        print(f"| single-process `predict` | {count} scenes of 512², s | {side}² mosaic, s |\n| --- | --- | --- |")
        trees = {"baseline": (baseline, []), "this": (Path(__file__).resolve().parents[1], ["--scheduler", "none"])}
        seconds: dict = {label: [] for label in trees}
        for inputs, name in ((many, "many"), ([work / "mosaic.tif"], "mosaic")):
            runs: dict = {label: [] for label in trees}
            for _ in range(3):  # the trees alternate, so a drift of the machine's speed touches both
                for label, (tree, extra) in trees.items():
                    out = work / label / name
                    command = [sys.executable, "-m", "translandseg", "predict", *map(str, inputs), "--out", str(out), *extra]
                    runs[label].append(_timed(command, tree))
            for label in trees:
                seconds[label].append(min(runs[label]))
        for label, (tree, _) in trees.items():
            print(f"| {label} (`{tree}`) | {seconds[label][0]:.1f} | {seconds[label][1]:.1f} |")
        masks = sorted((work / "baseline").rglob("*_mask.tif"))
        differ = sum(same_masks(mask, work / "this" / mask.relative_to(work / "baseline")) for mask in masks)
        print(f"{len(masks)} masks; pixels that differ between the two trees' masks: {differ}")


def _timed(command: List[str], tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("throughput").add_argument("--scenes", type=int, default=40)
    mosaic_parser = commands.add_parser("mosaic")
    mosaic_parser.add_argument("--side", type=int, default=20000)
    mosaic_parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "translandseg-mosaic")
    unchanged_parser = commands.add_parser("unchanged")
    unchanged_parser.add_argument("--baseline", type=Path, required=True, help="a checkout of an earlier commit")
    unchanged_parser.add_argument("--scenes", type=int, default=40)
    unchanged_parser.add_argument("--side", type=int, default=2500)
    alone_parser = commands.add_parser("alone")  # the single-process run of ``mosaic``, in its own process
    alone_parser.add_argument("source", type=Path)
    alone_parser.add_argument("output", type=Path)
    args = parser.parse_args()
    if args.command == "throughput":
        throughput(args.samples, args.scenes)
    elif args.command == "mosaic":
        large(args.samples, args.side, args.work)
    elif args.command == "unchanged":
        unchanged(args.samples, args.baseline.resolve(), args.scenes, args.side)
    else:
        alone(args.source, args.output)


if __name__ == "__main__":
    main()
