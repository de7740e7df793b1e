"""Click convergence on the held-out real samples: before and after, side by side in one run.

    python bench/bench_clicks.py SAMPLES [--before REF] [--before-adapter FILE] [--adapter FILE ...]

Each side is measured in its own process, on its own source tree: "before" on a checkout of REF
(default: the last commit before the region-refinement engine) with the adapter that commit
shipped, "after" on this tree with ``--adapter`` (default: the shipped one) and the engine's
defaults (the decoder sees the whole image, up to 1024 px a side), every further
``--adapter`` likewise, and, unless ``--no-focus-crops``, each adapter again on this tree
zooming in on the region (windows of at least 256 px around it). The images are the test
side of ``split.csv`` (``full_data_split`` of this tree), which nothing trains or selects on.

An analyst is simulated on the app's own ``CorrectionSession``: each click at the deepest pixel
of the larger error (RITM's protocol), from the automatic mask and from an empty one, up to
``--max-clicks``. Reported per sample set and start: NoC@85/90 (``max-clicks`` when never
reached), mean IoU after k clicks, the share of clicks that lower IoU by more than 0.02, the share
answered by the engine's consistency fallback, and click latency (p50/p95) when the window's
embedding is cached and when it must be encoded.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BEFORE_REF = "888abb6"  # the engine of objects added/removed per click, and its adapter
FOCUS_CROP_SIDE = 256  # the smallest window when zooming in on a region: the default base's input
HERE = Path(__file__).resolve()
REPORTED = (0, 1, 2, 3, 5, 10)  # clicks after which the per-image IoU is printed


def _engine():
    """(CorrectionSession, CorrectionError, PointPrompter, EmbeddingCache, next_click) of whichever tree is imported."""
    try:
        from translandseg.interactive.correction import CorrectionError, CorrectionSession
        from translandseg.interactive.embedding_cache import EmbeddingCache
        from translandseg.interactive.prompting import PointPrompter
        from translandseg.interactive.simulation import next_click
    except ImportError:  # the tree before the interactive/ subpackage
        from translandseg.click_simulation import next_click
        from translandseg.correction import CorrectionError, CorrectionSession
        from translandseg.embedding_cache import EmbeddingCache
        from translandseg.prompting import PointPrompter
    return CorrectionSession, CorrectionError, PointPrompter, EmbeddingCache, next_click


def measure(pairs, adapter: Path, max_clicks: int, focus_min_side) -> list:
    """One record per held-out image and start: its IoU curve, fallbacks, refusals, latencies."""
    import torch

    from translandseg.data import Pair, load_pair
    from translandseg.loading import load_model
    from translandseg.predict import Predictor
    from translandseg.raster import RasterImage

    torch.set_num_threads(os.cpu_count() or 1)
    CorrectionSession, CorrectionError, PointPrompter, EmbeddingCache, next_click = _engine()
    loaded = load_model("lite", adapter=adapter)
    cache = EmbeddingCache(1024)
    prompter = PointPrompter.of(loaded, cache) if hasattr(PointPrompter, "of") else PointPrompter(
        loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, cache)  # a tree from before primed clicks
    predictor = Predictor(loaded.model)
    options = {} if focus_min_side is None else {"focus_min_side": focus_min_side}
    records = []
    for name, image_path, label_path in pairs:
        _, valid, truth = load_pair(Pair(Path(image_path), Path(label_path)))
        with RasterImage(image_path) as image:
            automatic = predictor.predict_mask(image)
            for start, initial in (("automatic", automatic), ("empty", np.zeros_like(truth))):
                session = CorrectionSession(image, name, initial, prompter, **options)
                record = {"image": name, "start": start, "curve": [_iou(session.mask & valid, truth)],
                          "fallbacks": 0, "refused": 0, "cached_ms": [], "encoded_ms": []}  # fmt: skip
                while len(record["curve"]) <= max_clicks:
                    click = next_click(session.mask, truth, valid)
                    if click is None:
                        break
                    misses, began = cache.misses, time.perf_counter()
                    try:
                        session.click(click.x + 0.5, click.y + 0.5, click.positive)
                        record["fallbacks"] += bool(getattr(session, "note", ""))
                    except CorrectionError:
                        record["refused"] += 1  # the click is spent, as an analyst's would be
                    elapsed = (time.perf_counter() - began) * 1000
                    record["encoded_ms" if cache.misses > misses else "cached_ms"].append(elapsed)
                    record["curve"].append(_iou(session.mask & valid, truth))
                records.append(record)
    return records


def _iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(prediction | truth)
    return np.count_nonzero(prediction & truth) / union if union else 1.0


def summary(records: list, max_clicks: int) -> dict:
    """``evaluation.summarise`` over ``records`` (NoC, IoU after k clicks, harmful and fallback
    shares), plus the largest fall of the mean IoU curve and the share of refused clicks."""
    from translandseg.interactive.evaluation import ClickRun, summarise

    runs = [ClickRun(r["curve"] + [r["curve"][-1]] * (max_clicks + 1 - len(r["curve"])), len(r["curve"]) - 1,
                     r["fallbacks"], r["refused"]) for r in records]  # fmt: skip
    out = summarise(runs)
    mean = np.array([run.curve for run in runs]).mean(axis=0)
    out["largest_fall_of_the_mean_curve"] = float(max(0.0, -np.diff(mean).min()))
    out["refused_clicks"] = float(sum(run.refused for run in runs) / max(1, sum(run.clicks for run in runs)))
    return out


def latency(records: list) -> dict:
    out = {}
    for kind in ("cached_ms", "encoded_ms"):
        values = [v for r in records for v in r[kind]]
        out[kind] = (float(np.percentile(values, 50)), float(np.percentile(values, 95)), len(values)) if values else None
    return out


def run_side(tree: Path, pairs_file: Path, adapter: Path, max_clicks: int, focus_min_side, out: Path) -> list:
    """``measure`` in a fresh process that imports ``translandseg`` from ``tree``."""
    command = [sys.executable, str(HERE), "measure", str(pairs_file), str(adapter), str(out), "--max-clicks",
               str(max_clicks)] + ([] if focus_min_side is None else ["--focus-min-side", str(focus_min_side)])  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(out.read_text())


def compare(samples: Path, before_ref: str, before_adapter, adapters: list, max_clicks: int,
            focus_crops: bool = True) -> None:  # fmt: skip
    sys.path.insert(0, str(HERE.parents[1]))
    from translandseg.default_model import DEFAULT_ADAPTER
    from translandseg.training.recipe import full_data_split

    _, held_out = full_data_split(samples)
    pairs = [(p.name, str(p.image), str(p.label)) for p in held_out]
    print(f"{len(pairs)} held-out images: {', '.join(p[0] for p in pairs)}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        pairs_file = folder / "pairs.json"
        pairs_file.write_text(json.dumps(pairs))
        before_tree = folder / "before"
        before_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(HERE.parents[1]), "archive", before_ref], check=True,
                                 capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive, check=True)
        before_adapter = before_adapter or before_tree / "assets" / DEFAULT_ADAPTER.name
        sides = {f"before ({before_ref})": run_side(before_tree, pairs_file, before_adapter, max_clicks, None,
                                                    folder / "before.json")}  # fmt: skip
        sides["after"] = run_side(HERE.parents[1], pairs_file, adapters[0], max_clicks, None, folder / "after.json")
        for number, adapter in enumerate(adapters[1:], 1):  # other decoders, at the engine's defaults
            sides[Path(adapter).name] = run_side(HERE.parents[1], pairs_file, adapter, max_clicks, None,
                                                 folder / f"adapter{number}.json")  # fmt: skip
        for number, adapter in enumerate(adapters if focus_crops else []):  # zoomed in, other decoders with it
            name = "focus crops" if number == 0 else f"{Path(adapter).name}, focus crops"
            sides[name] = run_side(HERE.parents[1], pairs_file, adapter, max_clicks, FOCUS_CROP_SIDE,
                                   folder / f"{number}.json")  # fmt: skip
    report(sides, max_clicks)


def report(sides: dict, max_clicks: int) -> None:
    sets = sorted({r["image"].split("/")[0] for records in sides.values() for r in records})
    for start in ("automatic", "empty"):
        for subset in (*sets, "all"):
            chosen = {side: [r for r in records if r["start"] == start and subset in ("all", r["image"].split("/")[0])]
                      for side, records in sides.items()}  # fmt: skip
            if not all(chosen.values()):
                continue
            print(f"\n### from the {start} mask, {subset}\n")
            rows = {side: summary(records, max_clicks) for side, records in chosen.items()}
            keys = list(next(iter(rows.values())))
            print("| | " + " | ".join(rows) + " |")
            print("| --- " * (len(rows) + 1) + "|")
            for key in keys:
                print(f"| {key} | " + " | ".join(f"{rows[side][key]:.3f}" for side in rows) + " |")
    print("\n### click latency (ms): p50 / p95 (clicks)\n")
    for side, records in sides.items():
        lat = latency(records)
        cells = [f"{v[0]:.0f} / {v[1]:.0f} ({v[2]})" if v else "none" for v in (lat["cached_ms"], lat["encoded_ms"])]
        print(f"| {side} | cached embedding {cells[0]} | window encoded {cells[1]} |")
    print("\nper image, IoU after 0/1/2/3/5/10 clicks from the automatic mask:")
    for side, records in sides.items():
        for r in (r for r in records if r["start"] == "automatic"):
            curve = r["curve"] + [r["curve"][-1]] * (max_clicks + 1 - len(r["curve"]))
            print(f"  {side:>20} {r['image']:>28}: " + " ".join(f"{curve[k]:.2f}" for k in REPORTED if k <= max_clicks))


def main() -> None:
    if sys.argv[1:2] == ["measure"]:  # one side, in this process (run by the comparison)
        # Only the tree on PYTHONPATH: an editable install's finder would serve this checkout's
        # modules for whatever the other tree lacks.
        sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", type(f).__name__)]
        parser = argparse.ArgumentParser(prog="bench_clicks.py measure")
        parser.add_argument("pairs", type=Path)
        parser.add_argument("adapter", type=Path)
        parser.add_argument("out", type=Path)
        parser.add_argument("--max-clicks", type=int, default=20)
        parser.add_argument("--focus-min-side", type=int)
        args = parser.parse_args(sys.argv[2:])
        records = measure(json.loads(args.pairs.read_text()), args.adapter, args.max_clicks, args.focus_min_side)
        args.out.write_text(json.dumps(records))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path)
    parser.add_argument("--before", default=BEFORE_REF, help="git commit of the 'before' engine")
    parser.add_argument("--before-adapter", type=Path, help="default: the adapter that commit shipped")
    parser.add_argument("--adapter", type=Path, action="append",
                        help="default: the adapter this tree ships; again to measure more adapters on this tree")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--no-focus-crops", action="store_true", help="measure no adapter zoomed in")
    args = parser.parse_args()
    adapters = args.adapter or [HERE.parents[1] / "assets" / "translandseg-lite.safetensors"]
    compare(args.samples, args.before, args.before_adapter, adapters, args.max_clicks, not args.no_focus_crops)


if __name__ == "__main__":
    main()
