"""``translandseg predict`` on a Dask cluster: scenes as tasks, a large mosaic as rows of tiles.

A job writes each scene's mask next to where the single-process predictor would (a georeferenced
scene's as a Cloud-Optimized GeoTIFF with overviews, CRS and transform kept; others as PNG) and
the landslide polygons of every georeferenced scene into one GeoPackage (``POLYGONS_FILE``).
Scenes whose mask already exists are not predicted again (a job stopped half way resumes); a
scene that fails is reported with its reason and the others go on. A scene of more than
``LARGE_PIXELS`` pixels is split by rows of tiles across the workers, which compute the model's
part (``Predictor.row_probabilities``) while this process blends the rows in order with the
single-process predictor's own ``Blender``: the mask is identical, and memory per worker stays
that of a few rows of tiles. Inputs, outputs and the adapter must be reachable by the same
paths from every worker (a shared file system, or one machine).
"""

import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import dask
from distributed import Client, Future, LocalCluster, as_completed
from tqdm import tqdm

from ..predict import Blender, PredictorOptions, TileGrid, default_output, encode_mask, mask_output, predict_file
from ..raster import RasterImage
from .polygons import ScenePolygons, mask_polygons, write_geopackage
from .workers import ModelSpec, usable_cores, use_model, worker_model

POLYGONS_FILE = "landslides.gpkg"
LARGE_PIXELS = 4096 * 4096  # a larger scene is split across the workers
ROWS_PER_TASK = 2  # rows of tiles a worker computes for a large scene in one task


# What a LocalCluster's worker processes start with instead of Dask's defaults: nothing. Dask's
# MALLOC_TRIM_THRESHOLD_ makes glibc map and unmap every large tensor afresh (measured: the model
# twice as slow a scene) and its OMP_NUM_THREADS=1 holds torch to fewer threads than it is given.
WORKER_ENVIRONMENT: Dict[str, str] = {}


@dataclass
class JobReport:
    written: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)  # already there: a resumed job
    failed: Dict[str, str] = field(default_factory=dict)  # input → why
    polygons: int = 0
    geopackage: Optional[Path] = None


@contextmanager
def open_client(scheduler: str, workers: Optional[int] = None) -> Iterator[Client]:
    """A client of a new ``LocalCluster`` ("local": ``workers`` processes, default one per core,
    the cores shared out as torch threads; closed afterwards) or of the running scheduler at
    ``scheduler``'s address."""
    if scheduler != "local":
        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRONMENT}):
        cluster = LocalCluster(n_workers=workers or usable_cores(), threads_per_worker=1, processes=True)
    with cluster, Client(cluster) as client:
        yield client


def predict_on_cluster(client: Client, spec: ModelSpec, options: PredictorOptions, inputs: Sequence[Path],
                       out_dir: Path, bands: Optional[Sequence[int]] = None, probability: bool = False,
                       progress: bool = True, large_pixels: int = LARGE_PIXELS) -> JobReport:  # fmt: skip
    """Predict ``inputs`` into ``out_dir`` on ``client``'s workers; see the module's docstring.
    A scene of more than ``large_pixels`` pixels that the predictor sees in tiles is split."""
    use_model(client, spec)
    report, scenes, large, planned = JobReport(), {}, [], []
    level = round(options.threshold * 255) if probability else 0
    for source in inputs:
        try:
            output, (height, width) = _planned_output(source, out_dir, bands)
        except (OSError, ValueError) as error:
            report.failed[str(source)] = str(error)
            continue
        planned.append(output)
        grid = None
        if not output.exists() and height * width > large_pixels:
            grid = client.submit(_tile_grid, options, height, width, pure=False).result()
        if output.exists():
            report.skipped.append(output)
            scenes[client.submit(mask_polygons, output, source.name, level, pure=False)] = (source, output)
        elif grid is not None:
            large.append((source, output, grid))
        else:
            task = client.submit(_predict_scene, source, output, bands, probability, options, level, pure=False)
            scenes[task] = (source, output)
    found = _gather_scenes(scenes, report, progress)
    for source, output, grid in large:
        try:
            _predict_large(client, source, output, grid, bands, probability, options, progress)
            found[source] = client.submit(mask_polygons, output, source.name, level, pure=False).result()
            report.written.append(output)
        except Exception as error:  # noqa: BLE001 - any failure of one scene is reported, the job goes on
            report.failed[str(source)] = f"{type(error).__name__}: {error}"
    report.written.sort(key=planned.index)  # in input order, as they were given
    polygons = [found[source] for source in inputs if source in found]  # in input order: the first CRS leads
    if any(scene.crs_wkt for scene in polygons):
        report.geopackage = Path(out_dir) / POLYGONS_FILE
        report.polygons = write_geopackage(polygons, report.geopackage)
    return report


def _planned_output(source: Path, out_dir: Path, bands: Optional[Sequence[int]]):
    """(where the mask of ``source`` goes, its (height, width)), reading its header: a corrupt file fails here."""
    with RasterImage(source, bands) as image:
        return default_output(source, out_dir, image.is_georeferenced), (image.height, image.width)


def _gather_scenes(scenes: Dict[Future, tuple], report: JobReport, progress: bool) -> Dict[Path, ScenePolygons]:
    """Each finished scene's polygons by its input, the failures into ``report``."""
    found = {}
    with tqdm(total=len(scenes), unit="scene", disable=not progress or not scenes) as bar:
        for task in as_completed(scenes):
            source, output = scenes[task]
            if task.status == "error":
                error = task.exception()
                report.failed[str(source)] = f"{type(error).__name__}: {error}"
            else:
                found[source] = task.result()
                if output not in report.skipped:
                    report.written.append(output)
            bar.update()
    return found


def _predict_scene(source: Path, output: Path, bands, probability: bool, options: PredictorOptions,
                   level: int) -> ScenePolygons:  # fmt: skip
    """On a worker: one scene's mask file, and its polygons."""
    predict_file(options.predictor(worker_model().model), source, output, bands, probability, cloud_optimized=True)
    return mask_polygons(output, source.name, level)


def _tile_grid(options: PredictorOptions, height: int, width: int) -> Optional[TileGrid]:
    """On a worker: the tiles of a scene seen tile by tile, or None when it is seen whole."""
    predictor = options.predictor(worker_model().model)
    return predictor.tile_grid(height, width) if predictor.seen_in_tiles(height, width) else None


def _row_probabilities(source: Path, bands, options: PredictorOptions, grid, rows: Sequence[int]) -> List[list]:
    """On a worker: the (valid, probability) tiles of ``rows`` of a large scene's grid."""
    predictor = options.predictor(worker_model().model)
    with RasterImage(source, bands) as image:
        return [predictor.row_probabilities(image.read, grid, row) for row in rows]


def _predict_large(client: Client, source: Path, output: Path, grid: TileGrid, bands, probability: bool,
                   options: PredictorOptions, progress: bool) -> None:  # fmt: skip
    """One large scene, its rows of tiles computed across the workers and blended here in order."""
    with RasterImage(source, bands) as image, mask_output(image, output, cloud_optimized=True) as writer:
        chunks = [range(r, min(r + ROWS_PER_TASK, len(grid.rows))) for r in range(0, len(grid.rows), ROWS_PER_TASK)]
        in_flight = max(2, 2 * len(client.scheduler_info()["workers"]))  # chunks held here at most
        pending: deque = deque()
        blender = Blender(grid)
        with tqdm(total=grid.tiles, unit="tile", desc=source.name, disable=not progress, file=sys.stderr) as bar:
            for chunk in chunks:
                pending.append((chunk, client.submit(_row_probabilities, source, bands, options, grid, chunk,
                                                     pure=False)))  # fmt: skip
                if len(pending) >= in_flight:
                    _blend(pending.popleft(), blender, writer, probability, options.threshold, bar)
            while pending:
                _blend(pending.popleft(), blender, writer, probability, options.threshold, bar)


def _blend(done, blender, writer, probability: bool, threshold: float, bar) -> None:
    chunk, task = done
    for row, tiles in zip(chunk, task.result(), strict=True):
        window, prob = blender.add_row(row, tiles)
        writer.write(window, encode_mask(prob, probability, threshold))
        bar.update(len(tiles))
