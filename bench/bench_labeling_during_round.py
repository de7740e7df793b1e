"""Labeling while a retraining round runs (issue 32): does the app stay responsive?

A copy of a campaign's store (``bench_campaign.py``'s ``--out`` folder: its accepted labels, its
images and its active version) is opened in a ``Workspace`` as the app does. A simulated analyst
(``training.campaign.label_image``) labels the queue's next images in this process: opening each
(its automatic mask), encoding the click window, clicking, saving accepted. Each step is timed,
first with nothing else running, then while a retraining run of the Model tab's path trains in
its own process, once for each ``--niceness`` (the run's CPU priority). The run is cancelled once
the images are labelled: only the labeling is timed.

    python bench/bench_labeling_during_round.py SAMPLES runs/campaign-uncertainty [--images 6]
        [--trains adapter|decoder] [--niceness 0 10]
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from annotations.labeling import LabelingSession, Workspace
from annotations.training_runs import current_run, request_cancel
from translandseg.build import LITE
from translandseg.data import Pair, load_pair, read_split
from translandseg.default_model import DEFAULT_ADAPTER
from translandseg.loading import load_model
from translandseg.training.campaign import Campaign, label_image
from translandseg.training.retraining import RetrainSettings, start_retraining

REGION = "uav-orthophoto"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def label_timed(workspace: Workspace, image_id: str, truth_of: Dict[str, Path]) -> Dict[str, List[float]]:
    """Label one queued image as the campaign's analyst does (``label_image``), timing each step
    the analyst waits for: opening, the click window's encoding, each click, the save."""
    session, opening = timed(lambda: LabelingSession.open_stored(workspace, image_id))
    times: Dict[str, List[float]] = {"open": [opening], "encode": [], "click": [], "save": []}
    try:
        _, _, truth = load_pair(Pair(workspace.image_path(image_id), truth_of[session.name]))
        height, width = truth.shape
        times["encode"].append(timed(lambda: session.correction.encode_first_window(width / 2, height / 2))[1])
        session.correction.click = recorded(session.correction.click, times["click"])
        session.save = recorded(session.save, times["save"])
        label_image(session, truth, Campaign.target_iou, Campaign.max_clicks)
    finally:
        session.close()
    return times


def recorded(method, seconds: List[float]):
    """``method``, appending the seconds each call takes to ``seconds``."""

    def call(*args, **kwargs):
        result, took = timed(lambda: method(*args, **kwargs))
        seconds.append(took)
        return result

    return call


def label_images(workspace: Workspace, count: int, truth_of: Dict[str, Path]) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {"open": [], "encode": [], "click": [], "save": []}
    for _ in range(count):
        image_id = workspace.next_pending()
        for step, seconds in label_timed(workspace, image_id, truth_of).items():
            times[step] += seconds
    return times


def phase(workspace: Workspace, count: int, truth_of: Dict[str, Path], settings: Optional[RetrainSettings]) -> Dict:
    """Label ``count`` images, alone (``settings`` None) or while a run with ``settings`` trains."""
    process = None
    if settings is not None:
        _, process = start_retraining(workspace.db_path, settings, requested_by="bench")
        time.sleep(20)  # past loading and preparing: the run is training
    times = label_images(workspace, count, truth_of)
    report = {step: _summary(values) for step, values in times.items()}
    if process is not None:
        with workspace.store() as store:
            run = current_run(store)
            report["run_while_labeling"] = run["message"]
            report["run_still_going"] = process.poll() is None
            request_cancel(store)
        process.wait()
    return report


def _summary(seconds: List[float]) -> Dict[str, float]:
    if not seconds:  # e.g. no clicks: every automatic mask was already good enough
        return {"n": 0, "median_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "median_ms": statistics.median(ms), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("campaign", type=Path, help="a bench_campaign.py --out folder")
    parser.add_argument("--images", type=int, default=6, help="images labelled in each phase")
    parser.add_argument("--trains", choices=("adapter", "decoder"), default="adapter")
    parser.add_argument("--niceness", type=int, nargs="+", default=[0, 10])
    args = parser.parse_args()
    train, _ = read_split(args.samples, (REGION,))
    truth_of = {p.image.name: p.label for p in train}
    with tempfile.TemporaryDirectory(prefix="translandseg-bench-") as folder:
        copy = Path(folder) / "campaign"
        shutil.copytree(args.campaign, copy, ignore=shutil.ignore_patterns("*.log", "run-*"))
        workspace = Workspace(copy / "labels.db", copy / "images", load_model(LITE, adapter=DEFAULT_ADAPTER), "")
        print(f"active version: {workspace.model.version}")
        rows = [("nothing else running", phase(workspace, args.images, truth_of, None))]
        for niceness in args.niceness:
            settings = RetrainSettings(LITE, trains=args.trains, niceness=niceness, rank_images=0)
            rows.append((f"a round ({args.trains}), niceness {niceness}", phase(workspace, args.images, truth_of, settings)))
        print("\n| while | open (automatic mask), median / max s | encode, median s | click, median / p95 ms "
              "| save, median / max ms | clicks |\n| --- | --- | --- | --- | --- | --- |")  # fmt: skip
        for name, r in rows:
            print(f"| {name} | {r['open']['median_ms'] / 1000:.2f} / {r['open']['max_ms'] / 1000:.2f} "
                  f"| {r['encode']['median_ms'] / 1000:.2f} | {r['click']['median_ms']:.0f} / {r['click']['p95_ms']:.0f} "
                  f"| {r['save']['median_ms']:.0f} / {r['save']['max_ms']:.0f} | {r['click']['n']} |")  # fmt: skip
            if "run_while_labeling" in r:
                print(f"  run: {r['run_while_labeling']!r}, still going when labeled: {r['run_still_going']}")


if __name__ == "__main__":
    main()
