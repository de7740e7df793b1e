"""A labeling campaign on a new region, simulated through the app's own paths (issue 32's benchmark).

A simulated analyst opens the queue's next pending image in a ``Workspace`` as the app does (its
automatic mask from the active version), clicks where the error is largest until the mask reaches
``target_iou`` or ``max_clicks`` are spent, and when it falls short redraws the landslides with the
polygon tool (clear all, then each landslide's outline, as a careful analyst would); the label is
saved and accepted with its prompts, as the app stores them. After every ``rounds`` count of labels,
a retraining run starts through ``start_retraining`` with the given settings (the Model tab's path:
its own process, the store's ``auto_activate``), and the active version is measured on the region's
test side: automatic-mask figures, and clicks from the automatic mask with the version's own point
decoder and with the one it started from (what the clicks learnt).
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from rasterio.features import shapes

from annotations.labeling import LabelingSession, Workspace
from annotations.training_runs import current_run, set_auto_activate

from ..data import Pair, load_pair
from ..interactive.evaluation import mask_iou
from ..interactive.simulation import next_click
from ..loading import LoadedModel
from .retraining import RetrainSettings, start_retraining

ANALYST = "simulated-analyst"


@dataclass
class LabelRecord:
    """What labeling one image took and gave."""

    name: str
    automatic_iou: float
    clicks: int
    clicked_iou: float
    redrawn: bool  # finished with polygons
    saved_iou: float


@dataclass
class RoundRecord:
    labels: int
    minutes: float  # the retraining run, start to end (0 for the starting point)
    run_status: str
    run_message: str
    version: str  # active after the round
    figures: Dict[str, float] = field(default_factory=dict)


def outlines(mask: np.ndarray) -> List[List[tuple]]:
    """Polygons (corner lists, pixel-edge coordinates) whose fills, in order, redraw ``mask``: each
    landslide's outline, then its holes (to clear), the larger parts first so islands come after."""
    parts = [geometry["coordinates"] for geometry, value in shapes(mask.astype(np.uint8)) if value == 1]
    parts.sort(key=lambda rings: -_area(rings[0]))
    return [[(rings[0], True)] + [(hole, False) for hole in rings[1:]] for rings in parts]


def _area(ring: Sequence[Sequence[float]]) -> float:
    x, y = np.asarray(ring, float).T
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def label_image(session: LabelingSession, truth: np.ndarray, target_iou: float, max_clicks: int) -> LabelRecord:
    """Correct the open image towards ``truth`` as the simulated analyst does; save it accepted."""
    valid = np.ones_like(truth, bool)
    automatic_iou = mask_iou(session.mask, truth)
    clicks = 0
    while clicks < max_clicks and mask_iou(session.mask, truth) < target_iou:
        click = next_click(session.mask, truth, valid)
        if click is None:
            break
        session.correction.click(click.x + 0.5, click.y + 0.5, click.positive)
        clicks += 1
    clicked_iou = mask_iou(session.mask, truth)
    redrawn = clicked_iou < target_iou
    if redrawn:
        height, width = truth.shape
        session.correction.polygon([(0, 0), (width, 0), (width, height), (0, height)], positive=False)
        for part in outlines(truth):
            for ring, positive in part:
                session.correction.polygon(ring[:-1], positive)
    session.save(ANALYST, review="accepted")
    return LabelRecord(session.name, automatic_iou, clicks, clicked_iou, redrawn, mask_iou(session.mask, truth))


@dataclass
class Campaign:
    """A simulated campaign: the workspace (its store holds the region's pool), each pool image's
    label by name, the rounds' label counts and the retraining settings."""

    workspace: Workspace
    truths: Dict[str, Path]  # image name in the store -> its label file
    rounds: Sequence[int]
    settings: RetrainSettings
    target_iou: float = 0.90
    max_clicks: int = 10
    labels: List[LabelRecord] = field(default_factory=list)

    def label_until(self, count: int) -> None:
        """Label the queue's next pending images until ``count`` are labelled."""
        while len(self.labels) < count:
            image_id = self.workspace.next_pending()
            if image_id is None:
                raise ValueError(f"the pool ran out after {len(self.labels)} labels")
            session = LabelingSession.open_stored(self.workspace, image_id)
            try:
                _, _, truth = load_pair(Pair(self.workspace.image_path(image_id), self.truths[session.name]))
                self.labels.append(label_image(session, truth, self.target_iou, self.max_clicks))
            finally:
                session.close()

    def retrain(self) -> RoundRecord:
        """One retraining run through the app's path, waited for; the version active after it."""
        started = time.monotonic()
        _, process = start_retraining(self.workspace.db_path, self.settings, requested_by=ANALYST)
        process.wait()
        with self.workspace.store() as store:
            run = current_run(store)
        self.workspace.follow_active_model()
        return RoundRecord(len(self.labels), (time.monotonic() - started) / 60, run["status"], run["message"],
                           self.workspace.model.version)  # fmt: skip


def run_campaign(campaign: Campaign, measure: Callable[[LoadedModel, Optional[LoadedModel]], Dict[str, float]],
                 on_round: Optional[Callable[[RoundRecord], None]] = None) -> List[RoundRecord]:  # fmt: skip
    """The starting point and each round: label, retrain, ``measure(active, previous)``. New versions
    activate as the store's ``auto_activate`` says (switched on here, as a team would)."""
    with campaign.workspace.store() as store:
        set_auto_activate(store, True)
    model = campaign.workspace.model
    records = [RoundRecord(0, 0.0, "", "the starting version", model.version, measure(model, None))]
    if on_round:
        on_round(records[-1])
    for count in campaign.rounds:
        campaign.label_until(count)
        previous = campaign.workspace.model
        record = campaign.retrain()
        record.figures = measure(campaign.workspace.model, previous)
        records.append(record)
        if on_round:
            on_round(record)
    return records


def label_summary(labels: Sequence[LabelRecord]) -> Dict[str, float]:
    """Means over the labelled images: IoU of the automatic mask, clicks, IoU after them, share redrawn."""
    if not labels:
        return {}
    rows = [asdict(label) for label in labels]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("automatic_iou", "clicks", "clicked_iou",
                                                                      "redrawn", "saved_iou")}  # fmt: skip
