"""The ``translandseg`` command: train, evaluate, predict, info."""

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import torch

from .adapter import read_adapter_info
from .build import LITE, LITE_ATL_VARIANT, MODEL_TYPES, build_translandseg, default_image_size
from .data import find_all_pairs, split_pairs
from .default_model import DEFAULT_ADAPTER
from .modeling import ATL_VARIANTS, DEFAULT_ATL_VARIANT
from .predict import DEFAULT_THRESHOLD, PRECISIONS, SCALES, VIEWS, WHOLE_MAX_SIDE
from .sam_checkpoints import CACHE_ENV
from .training.losses import DEFAULT_LOSS, LOSSES
from .training.retraining import TRAINS
from .user_input import USER_ERRORS, probability_threshold, tile_side
from .weight_storage import STORAGES

CPU_TRAIN_SIZE = 256


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # the web app parses its own options
        from .app.webapp import main as serve

        serve(argv[1:])
        return 0
    args = _parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="translandseg",
        description="Landslide segmentation with TransLandSeg: SAM's frozen encoder steered by a small "
        "trained adapter (ATL + mask decoder).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an adapter on image/label folders",
                                description="Train the ATL and mask decoder; SAM's encoder stays frozen. "
                                "Resumes from OUT/checkpoint.pt when present.")  # fmt: skip
    train.add_argument("data", nargs="+", type=Path, help="folders holding image/ and label/")
    train.add_argument("--out", type=Path, required=True, help="output folder (adapter.safetensors, ...)")
    _model_options(train, with_variant=True)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a better mIoU")
    train.add_argument("--loss", choices=sorted(LOSSES), default=DEFAULT_LOSS,
                       help="0.5 BCE + 0.5 Dice as the paper's public code (default; with the in-block "
                       "adapter, cross-validated: bench/README.md), or BCE + IoU as its text")  # fmt: skip
    train.add_argument("--val-fraction", type=float, default=0.3)
    train.add_argument("--keep-last-epoch", action="store_true",
                       help="train on every image for all --epochs and keep the last (no validation split; "
                       "the offline default's recipe, chosen by cross-validation: bench/README.md)")  # fmt: skip
    train.add_argument("--seed", type=int, default=42, help="seed of the train/validation split and training")
    train.add_argument("--no-augment", action="store_true", help="no flips, rotations or colour jitter")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="metrics of an adapter on image/label folders")
    evaluate.add_argument("data", nargs="+", type=Path, help="folders holding image/ and label/")
    _model_options(evaluate, for_inference=True)
    _tile_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="landslide masks of PNG/JPEG/GeoTIFF images",
                                  description="Writes NAME_mask.tif (same CRS, transform and size) for "
                                  "georeferenced input and NAME_mask.png otherwise.")  # fmt: skip
    predict.add_argument("inputs", nargs="+", type=Path, help="images to segment")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--bands", type=_bands, help="three 1-based bands as R,G,B (default 4,3,2 for 4+ bands)")
    predict.add_argument("--probability", action="store_true", help="write probability x 255 instead of 0/255")
    _scheduler_options(predict, "auto", "'none' (this process), 'local' (a Dask LocalCluster on this machine) or a "
                       "Dask scheduler's address (tcp://HOST:8786); 'auto' (default) takes local for several scenes "
                       "or a large raster. On Dask, GeoTIFF masks are Cloud-Optimized, the polygons go to "
                       "OUT/landslides.gpkg, and masks already in OUT are kept (resume)")  # fmt: skip
    _model_options(predict, for_inference=True)
    _tile_options(predict)
    predict.set_defaults(run=_predict)

    default = commands.add_parser("train-default", help="train the offline default model (LiteMedSAM) on real samples",
                                  description="The recipe behind assets/translandseg-lite.safetensors: automatic "
                                  "mask, then the click decoder with simulated clicks, then figures on the test side of split.csv.")  # fmt: skip
    default.add_argument("samples", type=Path,
                         help="folder with split.csv and the sets it lists (bijie-full/, landslide4sense-rgb/... "
                         "each with image/ and label/)")
    default.add_argument("--out", type=Path, default=DEFAULT_ADAPTER, help="adapter file to write")
    default.add_argument("--work-dir", type=Path, default=Path("runs/train-default"),
                         help="checkpoints and report (resumes the automatic stage from here)")
    default.add_argument("--epochs", type=int, help="epochs of the automatic stage (default: the recipe's)")
    default.add_argument("--epoch-steps", type=int, help="images an automatic epoch draws (default: the recipe's)")
    default.add_argument("--click-epochs", type=int, help="passes of the click stage (default: the recipe's)")
    default.add_argument("--click-steps", type=int, help="stop the click stage after this many steps (smoke runs)")
    default.add_argument("--automatic-from", type=Path,
                         help="skip the automatic stage: take the ATL and automatic decoder of this adapter")
    default.add_argument("--storage", choices=STORAGES,
                         help="how the adapter stores its weights (default: the recipe's; with --measure-only, "
                         "the file's own)")  # fmt: skip
    default.add_argument("--measure-only", action="store_true",
                         help="train nothing: measure the adapter at --out on the test side with today's "
                         "predictor and correction engine, and write the figures into its metadata")  # fmt: skip
    default.set_defaults(run=_train_default)

    commands.add_parser("serve", add_help=False, help="start the web app (options: translandseg serve --help)")
    info = commands.add_parser("info", help="parameter counts, ATL variants, adapter metadata",
                               description="Works without any checkpoint: models are built on the meta device.")
    info.add_argument("--sam", choices=MODEL_TYPES, default="vit_l")
    info.add_argument("--variant", choices=ATL_VARIANTS, help="ATL structure (default: the base's, as in train)")
    info.add_argument("--image-size", type=int, help="model input (default: the base model's)")
    info.add_argument("--adapter", type=Path, help="print this adapter's metadata")
    info.set_defaults(run=_info)
    _store_commands(commands)
    return parser


def _store_commands(commands) -> None:
    from annotations.store import QUEUE_ORDERS  # here, so only the CLI's parsing loads the store's modules

    importer = commands.add_parser("import", help="import image/label folders (or images) into a label store")
    importer.add_argument("folders", nargs="+", type=Path,
                          help="folders with image/ and label/ (imported as accepted labels), or image files")
    importer.add_argument("--db", type=Path, required=True, help="the SQLite label store (created if absent)")
    importer.add_argument("--by", default="import", help="name recorded as annotator and reviewer")
    importer.add_argument("--replace", action="store_true",
                          help="import over labels already in the store (kept and counted as skipped otherwise)")
    importer.set_defaults(run=_import)

    exporter = commands.add_parser("export", help="export labels as a training set",
                                   description="Writes PNG pairs, GeoTIFF chips, GeoJSON, COCO and a manifest.")
    exporter.add_argument("--db", type=Path, required=True)
    exporter.add_argument("--out", type=Path, required=True)
    exporter.add_argument("--formats", default="png,geotiff,geojson,coco", help="comma-separated subset")
    exporter.add_argument("--status", default="accepted", help="comma-separated review statuses to export")
    exporter.add_argument("--val-fraction", type=float, default=0.3)
    exporter.add_argument("--seed", type=int, default=42)
    exporter.add_argument("--zip", action="store_true", help="also pack the folder into OUT.zip")
    exporter.set_defaults(run=_export)

    retrain = commands.add_parser("retrain", help="retrain the adapter from a label store's labels",
                                  description="Starts a run in its own process (starting from the store's active "
                                  "version) and follows it with a progress bar; Ctrl-C cancels it.")  # fmt: skip
    retrain.add_argument("--db", type=Path, required=True)
    retrain.add_argument("--status", default="accepted", help="comma-separated review statuses to train on")
    retrain.add_argument("--epochs", type=int, default=10)
    retrain.add_argument("--minutes", type=float, default=30.0, help="time budget")
    retrain.add_argument("--click-epochs", type=int, default=2,
                         help="passes of simulated clicks for the point decoder (0: keep the active version's)")
    retrain.add_argument("--trains", choices=TRAINS, default="adapter",
                         help="adapter: the ATL and the mask decoder (the paper's); decoder: the mask decoder alone, "
                         "on the active version's ATL embeddings computed once (a round of minutes)")  # fmt: skip
    retrain.add_argument("--decoder-steps", type=int, default=1500, help="steps of a decoder-only run")
    retrain.add_argument("--detach", action="store_true", help="start the run and return at once")
    retrain.add_argument("--cancel", action="store_true", help="cancel the running run instead")
    _model_options(retrain)
    retrain.set_defaults(run=_retrain)

    models = commands.add_parser("models", help="list a label store's model versions, or activate one")
    models.add_argument("--db", type=Path, required=True)
    models.add_argument("--activate", metavar="VERSION", help="make VERSION active (also to roll back)")
    models.add_argument("--auto-activate", choices=("on", "off"),
                        help="activate new versions automatically when they beat the active one")
    models.add_argument("--queue-order", choices=QUEUE_ORDERS,
                        help="the app's queue: the active version's least certain first (the default), or as added")
    models.set_defaults(run=_models)

    rank = commands.add_parser("rank", help="score a label store's unlabelled images by the active version's uncertainty",
                               description="Records the mean binary entropy of each unlabelled image's automatic "
                               "probabilities, so the queue puts the least certain first (retraining does this "
                               "for the versions it makes).")  # fmt: skip
    rank.add_argument("--db", type=Path, required=True)
    rank.add_argument("--limit", type=int, help="score at most this many (a fixed sample per version)")
    rank.add_argument("--cache-dir", type=Path, help="where base checkpoints are cached")
    rank.add_argument("--device", default="cpu")
    rank.set_defaults(run=_rank)

    prelabel = commands.add_parser("prelabel", help="compute a label store's automatic masks ahead, on a Dask cluster",
                                   description="Records the active version's automatic mask of every image without "
                                   "a label, and encodes the window of its first click into the app's embedding "
                                   "cache, so the app opens them at once. Use the app's own --scale, --tile-size, "
                                   "--views, --threshold, --precision and --focus-side: masks made with other "
                                   "settings are not reused.")  # fmt: skip
    prelabel.add_argument("--db", type=Path, required=True)
    prelabel.add_argument("--limit", type=int, help="prepare at most this many images")
    prelabel.add_argument("--cache-dir", type=Path,
                          help="base checkpoints and the app's embeddings (default $TRANSLANDSEG_CACHE_DIR)")
    prelabel.add_argument("--sam-checkpoint", type=Path, help="the base checkpoint file (default: from the cache)")
    prelabel.add_argument("--device", default="cpu")
    prelabel.add_argument("--focus-side", type=tile_side, help="the app's --focus-side")
    _scheduler_options(prelabel, "local", "'local' (default: a Dask LocalCluster on this machine) or a Dask "
                       "scheduler's address (tcp://HOST:8786)")  # fmt: skip
    _tile_options(prelabel)
    prelabel.set_defaults(run=_prelabel)

    user = commands.add_parser("add-user", help="add an analyst to the app's users file (serve --users FILE)",
                               description="Adds NAME (or replaces its line) with a salted scrypt hash of the "
                               "password, asked twice; reviewers may also accept and reject.")  # fmt: skip
    user.add_argument("file", type=Path)
    user.add_argument("name")
    user.add_argument("--role", choices=("annotator", "reviewer"), default="annotator")
    user.set_defaults(run=_add_user)

    db = commands.add_parser("db", help="label store commands").add_subparsers(required=True, metavar="COMMAND")
    info = db.add_parser("info", help="counts by review status, models")
    info.add_argument("--db", type=Path, required=True)
    info.set_defaults(run=_db_info)


def _model_options(parser, with_variant: bool = False, for_inference: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--sam", choices=MODEL_TYPES,
                       help="base model (default: the adapter's; else vit_b when its checkpoint is cached or "
                       "given, else lite, the offline default)")  # fmt: skip
    group.add_argument("--sam-checkpoint", type=Path, help="SAM checkpoint file (default: download to the cache)")
    group.add_argument("--cache-dir", type=Path,
                       help=f"checkpoint cache (default ${CACHE_ENV} or ~/.cache/translandseg)")
    group.add_argument("--no-download", action="store_true", help="never download; fail if the checkpoint is absent")
    group.add_argument("--adapter", type=Path,
                       help="trained adapter (.safetensors)" + (" (default: assets' offline default when the base "
                       "is lite)" if for_inference else " to start from"))  # fmt: skip
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if with_variant:
        group.add_argument("--variant", choices=ATL_VARIANTS,
                           help=f"ATL structure (default {LITE_ATL_VARIANT} on lite, {DEFAULT_ATL_VARIANT} on SAM's)")
        group.add_argument("--image-size", type=int,
                           help=f"model input, a multiple of 16 (default {CPU_TRAIN_SIZE} on CPU, 1024 on GPU)")


def _scheduler_options(parser, default: str, where: str) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("--scheduler", default=default, help=f"where to compute: {where}")
    group.add_argument("--workers", type=int, help="workers of a local cluster (default: one per core)")


def _tile_options(parser) -> None:
    group = parser.add_argument_group("tiling")
    group.add_argument("--tile-size", type=tile_side, help="tile or window side in pixels (default: the model input size; with "
                       "--scale whole, 512 if larger)")
    group.add_argument("--overlap", type=int, help="tile overlap in pixels (default: a quarter tile)")
    group.add_argument("--scale", choices=SCALES, default="whole",
                       help=f"scenes larger than one tile and at most {WHOLE_MAX_SIDE} px: resized whole (default, as "
                       "in training), native tiles, or both fused (larger scenes are always tiled)")  # fmt: skip
    group.add_argument("--views", type=int, choices=VIEWS, default=1,
                       help="views of each tile to average (mirror images, then quarter turns): 8 gives sharper "
                       "masks and takes 8 times as long")  # fmt: skip
    group.add_argument("--threshold", type=probability_threshold, default=DEFAULT_THRESHOLD,
                       help=f"probability above which a pixel is landslide (default {DEFAULT_THRESHOLD}; lower finds "
                       "more)")  # fmt: skip
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="arithmetic of the model: auto (default) takes bfloat16, about twice as fast, on a CPU "
                       "that computes it natively, else float32")  # fmt: skip


def _bands(text: str):
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must look like 4,3,2, not {text!r}") from None


def _load(args, needs_adapter: bool = False):
    from .default_model import choose_model
    from .loading import load_model

    choice = choose_model(args.sam, args.sam_checkpoint, args.adapter, args.cache_dir)
    if choice.reason:
        print(f"model: {choice.reason}", file=sys.stderr)
    if needs_adapter and choice.adapter is None:
        raise ValueError("this command needs a trained adapter: pass --adapter FILE")
    image_size = getattr(args, "image_size", None)
    if image_size is None and choice.adapter is None and args.device == "cpu" and choice.model_type != LITE:
        image_size = CPU_TRAIN_SIZE
    loaded = load_model(choice.model_type, args.sam_checkpoint, choice.adapter, image_size,
                        getattr(args, "variant", None), args.device, args.cache_dir,
                        download=not args.no_download)  # fmt: skip
    print(f"model: {loaded.describe()}", file=sys.stderr)
    return loaded


def _predictor(args, loaded):
    return _predictor_options(args).predictor(loaded.model)


def _predictor_options(args):
    from .predict import PredictorOptions

    return PredictorOptions(args.tile_size, args.overlap, args.scale, args.views, args.threshold, args.precision)


def _train(args) -> None:
    from .training.trainer import TrainConfig, train

    pairs = find_all_pairs(args.data)
    train_pairs, val_pairs = (pairs, []) if args.keep_last_epoch else split_pairs(pairs, args.val_fraction, args.seed)
    print(f"{len(pairs)} labelled images: {len(train_pairs)} train, {len(val_pairs)} validation", file=sys.stderr)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         augment=not args.no_augment, seed=args.seed, loss=args.loss,
                         keep_last_epoch=args.keep_last_epoch)  # fmt: skip
    snapshot = ",".join(str(p.resolve()) for p in args.data)
    result = train(_load(args), train_pairs, val_pairs, args.out, config, training_snapshot=snapshot)
    print(json.dumps({"adapter": str(result.adapter_path), "kept_epoch": result.best_epoch,
                      "metrics": result.best_metrics}, indent=1))  # fmt: skip


def _train_default(args) -> None:
    from .training.recipe import DefaultRecipe, remeasure, train_default

    if args.measure_only:
        metrics = remeasure(args.samples, args.out, storage=args.storage)
        print(json.dumps({"adapter": str(args.out), "test_metrics": metrics}, indent=1))
        return
    recipe = DefaultRecipe()
    recipe.automatic.epochs = args.epochs or recipe.automatic.epochs
    recipe.epoch_steps = args.epoch_steps or recipe.epoch_steps
    recipe.clicks.epochs = args.click_epochs or recipe.clicks.epochs
    recipe.clicks.max_steps = args.click_steps
    recipe.automatic_from = str(args.automatic_from) if args.automatic_from else None
    recipe.storage = args.storage or recipe.storage
    report = train_default(args.samples, args.out, args.work_dir, recipe)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"adapter": str(args.out), "minutes": report["minutes"], "test_metrics": report["test_metrics"]},
                     indent=1))


def _evaluate(args) -> None:
    from .evaluation import evaluate

    pairs = find_all_pairs(args.data)
    metrics = evaluate(_predictor(args, _load(args, needs_adapter=True)), pairs, progress=True)
    print(json.dumps({"images": len(pairs), **metrics}, indent=1))


def _predict(args) -> int:
    scheduler = _scheduler(args)
    if scheduler is not None:
        return _predict_on_cluster(args, scheduler)
    from .predict import default_output, predict_file
    from .raster import RasterImage

    predictor = _predictor(args, _load(args, needs_adapter=True))
    for path in args.inputs:
        with RasterImage(path, args.bands) as image:
            output = default_output(path, args.out, image.is_georeferenced)
        predict_file(predictor, path, output, args.bands, args.probability, progress=True)
        print(output)
    return 0


def _scheduler(args) -> Optional[str]:
    """The Dask scheduler a prediction runs on, or None for this process."""
    if args.scheduler == "none":
        return None
    if args.scheduler != "auto":
        return args.scheduler
    from .batch.jobs import LARGE_PIXELS
    from .raster import RasterImage

    def large(path: Path) -> bool:
        with RasterImage(path, args.bands) as image:
            return image.width * image.height > LARGE_PIXELS

    return "local" if len(args.inputs) > 1 or large(args.inputs[0]) else None


def _predict_on_cluster(args, scheduler: str) -> int:
    from .batch.jobs import predict_on_cluster
    from .batch.workers import ModelSpec
    from .default_model import choose_model

    choice = choose_model(args.sam, args.sam_checkpoint, args.adapter, args.cache_dir)
    if choice.adapter is None:
        raise ValueError("this command needs a trained adapter: pass --adapter FILE")
    spec = ModelSpec.of(choice.model_type, choice.adapter, sam_checkpoint=args.sam_checkpoint, device=args.device,
                        cache_dir=args.cache_dir, download=not args.no_download)  # fmt: skip
    with _cluster(scheduler, args.workers) as client:
        report = predict_on_cluster(client, spec, _predictor_options(args), args.inputs, args.out, args.bands,
                                    args.probability)  # fmt: skip
    for output in report.written:
        print(output)
    for output in report.skipped:
        print(f"{output} (already there)", file=sys.stderr)
    if report.geopackage:
        print(f"{report.geopackage}: {report.polygons} landslide polygons", file=sys.stderr)
    for source, reason in report.failed.items():
        print(f"error: {source}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _import(args) -> None:
    from annotations import AnnotationStore
    from annotations.importing import import_images, import_pairs

    with AnnotationStore(args.db) as store:
        for path in args.folders:
            if path.is_dir():
                imported = import_pairs(store, path, args.by, args.replace, progress=True)
                print(f"{path}: {imported.added} new labels" + (
                    f"; {imported.skipped} image(s) skipped: the store holds another label for them "
                    "(an analyst's or reviewer's; --replace imports over it)" if imported.skipped else ""))
            else:
                print(f"{path}: {import_images(store, [path], args.by)} image")


def _export(args) -> None:
    from annotations import AnnotationStore
    from annotations.exporting import export_training_set

    with AnnotationStore(args.db) as store:
        out = export_training_set(store, args.out, args.formats.split(","), args.status.split(","),
                                  args.val_fraction, args.seed, args.zip, progress=True)  # fmt: skip
    print(out)


def _retrain(args) -> None:
    from annotations import AnnotationStore
    from annotations.training_runs import request_cancel

    from .default_model import choose_model
    from .training.retraining import RetrainSettings, start_retraining

    if args.cancel:
        with AnnotationStore(args.db) as store:
            run_id = request_cancel(store)
        print(f"cancelling run {run_id}" if run_id else "no retraining is running")
        return
    choice = choose_model(args.sam, args.sam_checkpoint, None, args.cache_dir)
    settings = RetrainSettings(choice.model_type, args.sam_checkpoint and str(args.sam_checkpoint),
                               args.cache_dir and str(args.cache_dir), args.device, tuple(args.status.split(",")),
                               args.epochs, max_minutes=args.minutes, trains=args.trains,
                               decoder_steps=args.decoder_steps, click_epochs=args.click_epochs)  # fmt: skip
    run_id, process = start_retraining(args.db, settings, requested_by="cli")
    print(f"run {run_id} started (pid {process.pid})", file=sys.stderr)
    if not args.detach:
        _follow(args.db, run_id)


def _follow(db: Path, run_id: int) -> None:
    """A progress bar over the run's training until it ends; Ctrl-C cancels the run."""
    import time

    from tqdm import tqdm

    from annotations import AnnotationStore
    from annotations.training_runs import current_run, request_cancel

    with AnnotationStore(db) as store, tqdm(total=100, desc=f"run {run_id}", unit="%") as bar:
        try:
            while True:
                run = current_run(store)
                bar.update(round(100 * (run["progress"] or 0)) - bar.n)
                bar.set_postfix_str(", ".join(f"{k} {v:.3f}" for k, v in run["val_metrics"].items())
                                    or run["message"] or run["status"])  # fmt: skip
                if run["status"] not in ("queued", "running"):
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:
            request_cancel(store)
            run = current_run(store)
    print(f"run {run_id}: {run['status']}: {run['message']}")
    if run["status"] != "succeeded":
        raise SystemExit(1)


def _models(args) -> None:
    from annotations import AnnotationStore
    from annotations.ranking import set_queue_order
    from annotations.training_runs import activate, set_auto_activate

    with AnnotationStore(args.db) as store:
        if args.activate:
            activate(store, args.activate)
        if args.auto_activate:
            set_auto_activate(store, args.auto_activate == "on")
        if args.queue_order:
            set_queue_order(store, args.queue_order)
        for model in store.models():
            print(f"{'*' if model['active'] else ' '} {model['version']:<40} {model['created_at']}  "
                  f"{json.dumps(model['metrics'])}")  # fmt: skip


def _rank(args) -> None:
    from tqdm import tqdm

    from annotations import AnnotationStore
    from annotations.ranking import score_images
    from annotations.training_runs import active_model

    from .loading import load_model

    with AnnotationStore(args.db) as store:
        active = active_model(store)
        if active is None:
            raise ValueError(f"{args.db} has no active model version to rank with; open it in the app first")
        loaded = load_model(active["base_model"], adapter=Path(active["file"]), device=args.device,
                            cache=args.cache_dir, download=False)  # fmt: skip
        with tqdm(desc=f"ranking by {active['version']}", unit="image") as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            scored = score_images(store, loaded, active["version"], args.limit, advance)
    print(f"{scored} images scored by {active['version']}")


@contextmanager
def _cluster(scheduler: str, workers: Optional[int]):
    """A Dask client (``batch.jobs.open_client``), its workers and dashboard said on stderr."""
    from .batch.jobs import open_client

    with open_client(scheduler, workers) as client:
        print(f"dask: {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}",
              file=sys.stderr)  # fmt: skip
        yield client


def _prelabel(args) -> int:
    from annotations.labeling import Workspace
    from annotations.prelabeling import prelabel

    from .sam_checkpoints import cache_dir

    if args.overlap is not None:
        raise ValueError("the app has no --overlap, so masks made with one would never be reused; leave it out")
    options = _predictor_options(args)
    workspace = Workspace(args.db, args.db.parent / "images", None, "", focus_min_side=args.focus_side,
                          automatic_views=options.views, automatic_threshold=options.threshold,
                          automatic_precision=options.precision, automatic_scale=options.scale,
                          automatic_tile_size=options.tile_size)  # fmt: skip
    with _cluster(args.scheduler, args.workers) as client:
        report = prelabel(client, workspace, cache_dir(args.cache_dir) / "embeddings", args.limit, device=args.device,
                          cache_dir=args.cache_dir, sam_checkpoint=args.sam_checkpoint)  # fmt: skip
    print(f"{report.recorded} automatic masks by {report.version} recorded")
    for name, reason in report.failed.items():
        print(f"error: {name}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _add_user(args) -> None:
    import getpass

    from annotations.accounts import add_user

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ; nothing was written")
    else:
        password = sys.stdin.readline().rstrip("\n")
    add_user(args.file, args.name, args.role, password)
    print(f"{args.name} ({args.role}) is in {args.file}")


def _db_info(args) -> None:
    from annotations import AnnotationStore

    with AnnotationStore(args.db) as store:
        print(f"{args.db}: schema version {store.schema_version}, {store.db['images'].count} images")
        for status, count in store.counts_by_status().items():
            print(f"  {status:<11}{count}")
        for model in store.db["models"].rows:
            print(f"  model {model['version']}{' (active)' if model['active'] else ''}: {model['metrics']}")


def _info(args) -> None:
    from .default_model import choose_model

    image_size = args.image_size or default_image_size(args.sam)
    with torch.device("cpu" if args.sam == LITE else "meta"):  # TinyViT's constructor reads tensor values
        model = build_translandseg(args.sam, image_size, args.variant)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    print(f"TransLandSeg on {args.sam}, ATL {model.atl.variant.name}, input {image_size}px")
    print(f"  parameters: {total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f} %)")
    print(f"  ATL: {sum(p.numel() for p in model.atl.parameters()):,}, "
          f"mask decoder: {sum(p.numel() for p in model.mask_decoder.parameters()):,}")  # fmt: skip
    print("ATL variants:")
    for variant in ATL_VARIANTS.values():
        print(f"  {variant.name:<16}{variant.summary}")
    choice = choose_model(None, None, None)
    print(f"default model of the app and CLI here: {choice.model_type}"
          f"{f' with {choice.adapter}' if choice.adapter else ''} ({choice.reason})")  # fmt: skip
    if args.adapter:
        print(f"adapter {args.adapter}:")
        print(json.dumps(read_adapter_info(args.adapter).__dict__, indent=1))
