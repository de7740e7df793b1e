"""Labeling an image against the store: open → automatic mask → clicks → save and review → next.

A ``Workspace`` is what every analyst shares (the store file, the model, the embedding cache);
a ``LabelingSession`` is one analyst's open image. Each store access opens its own connection,
so sessions in several threads or processes can save at once.
"""

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from rasterio.windows import Window

from translandseg.download import sha256_of
from translandseg.interactive.correction import (
    DEFAULT_WINDOW_SIZE,
    CorrectionError,
    CorrectionSession,
    WindowBox,
)
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.painting import Painting
from translandseg.interactive.prompting import PointPrompter
from translandseg.loading import LoadedModel, load_model
from translandseg.predict import DEFAULT_THRESHOLD, WINDOW_SIDE, Predictor, PredictorOptions, tile_starts
from translandseg.raster import STRETCH_PERCENTILES, ImageReadError, RasterImage

from .accounts import Accounts
from .ranking import queue_order
from .store import AnnotationStore, Revision, StaleWrite, session_prompts, stored_prompts
from .training_runs import activate, active_model

QUICKLOOK_SIDE = 1536  # the longest side shown in the browser
WHOLE_IMAGE = "whole image"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1024 * 2**20
    max_pixels: int = 100_000_000


@dataclass
class Workspace:
    db_path: Path
    images_dir: Path  # uploaded files, kept under their SHA-256
    model: Optional[LoadedModel]
    model_message: str  # what the UI banner and the log say about the model
    embeddings: EmbeddingCache = field(default_factory=EmbeddingCache)
    limits: Limits = field(default_factory=Limits)
    window_size: int = DEFAULT_WINDOW_SIZE
    focus_min_side: Optional[int] = None  # the smallest window a click is answered in (default window_size)
    cache_dir: Optional[Path] = None  # where base checkpoints are cached
    accounts: Optional[Accounts] = None  # logins and roles; None: no login, anyone may review
    automatic_views: int = 1  # views each automatic mask averages (Predictor's ``views``)
    automatic_threshold: float = DEFAULT_THRESHOLD  # the probability above which the automatic mask marks landslide
    automatic_precision: str = "auto"  # the automatic mask's arithmetic (Predictor's ``precision``)
    automatic_scale: str = "whole"  # how the automatic mask sees a scene (Predictor's ``scale``)
    automatic_tile_size: Optional[int] = None  # its tiles' or windows' side (Predictor's ``tile_size``)

    @property
    def automatic_options(self) -> PredictorOptions:
        """The settings of every automatic mask this workspace makes."""
        return PredictorOptions(self.automatic_tile_size, None, self.automatic_scale, self.automatic_views,
                                self.automatic_threshold, self.automatic_precision)  # fmt: skip

    def __post_init__(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._switching = threading.Lock()
        self._use(self.model, self.model_message)
        with self.store() as store:  # creates or migrates the file now, not on the first click
            if self.model is not None and self.model.version is not None:
                _register(store, self.model)
                if active_model(store) is None:
                    activate(store, self.model.version)
        self.follow_active_model()

    def correction(self, image: RasterImage, image_id: str, mask: np.ndarray) -> CorrectionSession:
        """A correction session of ``mask`` on ``image`` with this workspace's model and windows."""
        return CorrectionSession(image, image_id, mask, self.prompter, self.window_size, self.focus_min_side)

    def _use(self, model: Optional[LoadedModel], message: str) -> None:
        self.model, self.model_message = model, message
        self.prompter = None
        if model is not None:
            self.prompter = PointPrompter.of(model, self.embeddings)

    def follow_active_model(self) -> None:
        """Load the store's active version if it is not the one in use (activated here, by a
        retraining run or another process); images opened from now on use it."""
        if self.model is None:
            return
        with self._switching:
            with self.store() as store:
                active = active_model(store)
            if active is None or active["version"] == self.model.version:
                return
            same_base = active["base_model"] == self.model.model_type
            try:
                loaded = load_model(active["base_model"], self.model.sam_checkpoint if same_base else None,
                                    Path(active["file"]), device=str(self.model.model.device), cache=self.cache_dir,
                                    download=False)  # fmt: skip
            except (OSError, ValueError, RuntimeError) as error:
                self.model_message = (f"The active version {active['version']} cannot be loaded ({error}); "
                                      f"automatic masks still come from {self.model.version}.")  # fmt: skip
                return
            self._use(loaded, f"Model: {loaded.describe()}, the store's active version {loaded.version}.")

    def store(self) -> AnnotationStore:
        return AnnotationStore(self.db_path)

    def queue(self) -> List[Dict]:
        """The store's queue, in the store's ``queue_order``."""
        with self.store() as store:
            return store.queue(queue_order(store))

    def next_pending(self, after: Optional[str] = None) -> Optional[str]:
        """The first pending image after ``after`` in queue order (wrapping round), or None."""
        queue = self.queue()
        ids = [row["id"] for row in queue if row["status"] == "pending"]
        if not ids:
            return None
        order = [row["id"] for row in queue]
        start = order.index(after) + 1 if after in order else 0
        return min(ids, key=lambda i: (order.index(i) - start) % len(order))

    def keep_upload(self, path: Path) -> Tuple[Path, str, bool]:
        """Check an uploaded file's size and copy it to the images folder; returns (path, SHA-256,
        whether the copy is new)."""
        path = Path(path)
        size = path.stat().st_size if path.is_file() else 0
        if size > self.limits.max_bytes:
            raise ImageReadError(f"{path.name} is {size / 2**20:.0f} MB, more than this app accepts "
                                 f"({self.limits.max_bytes / 2**20:.0f} MB)")  # fmt: skip
        digest = sha256_of(path) if size else ""
        kept = self.images_dir / f"{digest}{path.suffix.lower()}"
        new = bool(size) and not kept.is_file()
        if new:
            partial = kept.with_suffix(kept.suffix + ".part")
            shutil.copyfile(path, partial)
            partial.replace(kept)
        return (kept if size else path), digest, new

    def add_upload(self, path: Path, name: str, added_by: str = "") -> Tuple[str, bool]:
        """Check an uploaded image and register it in the store; returns its id and whether the
        store knew it already. Refusals name the file as the analyst named it, never the server's
        copy, and leave no copy behind."""
        kept, digest, new_copy = self.keep_upload(Path(path))
        try:
            with self.store() as store:
                known = store.db.execute("select 1 from images where id = ?", [digest]).fetchone() is not None
                return store.add_image(kept, added_by=added_by, name=name, max_pixels=self.limits.max_pixels), known
        except ImageReadError as error:
            if new_copy:
                kept.unlink(missing_ok=True)
            raise ImageReadError(str(error).replace(str(kept), name).replace(kept.name, name)) from error

    def image_name(self, image_id: str) -> str:
        """The name an image was uploaded or imported under ("this image" when not in the store)."""
        with self.store() as store:
            row = store.db.execute("select name from images where id = ?", [image_id]).fetchone()
        return row[0] if row else "this image"

    def image_path(self, image_id: str) -> Path:
        """A lasting local path to a stored image's file."""
        with self.store() as store:
            record = store.image(image_id)
            kept = self.images_dir / f"{image_id}{Path(record['name']).suffix.lower()}"
            if not kept.is_file():
                source = Path(record["source_path"] or "")
                if source.is_file() and sha256_of(source) == image_id:
                    return source
                with store.image_file(image_id) as path:
                    shutil.copyfile(path, kept)
        return kept


def _register(store: AnnotationStore, loaded: LoadedModel) -> None:
    info = loaded.adapter
    store.register_model(loaded.version, str(loaded.adapter_path), loaded.adapter_sha256, info.atl_variant,
                         info.base_model, info.base_sha256, info.training_snapshot, info.metrics)  # fmt: skip


class LabelingSession:
    """One image open for labeling: its pixels, its automatic mask and the clicks on it."""

    def __init__(self, workspace: Workspace, image_id: str, name: str, image: RasterImage,
                 correction: CorrectionSession, prediction_id: Optional[int], model_version: Optional[str],
                 saved: Optional[Tuple[int, bytes]], message: str, revision: Revision) -> None:  # fmt: skip
        self.workspace = workspace
        self.image_id = image_id
        self.name = name
        self.image = image
        self.correction = correction
        self.prediction_id = prediction_id
        self.model_version = model_version
        self._saved = saved  # (annotation id, what was saved) of the latest saved state
        self.message = message
        self.revision = revision  # the store's label of this image that the session builds on
        self.reviewed: Optional[str] = None  # the review status the last successful save gave
        self.stale = False  # the last save was refused: someone else changed the image's label since
        self.opened_prompts = correction.prompts  # the edits the image was opened with
        self.quicklook, _ = image.quicklook(QUICKLOOK_SIDE)
        self.view: WindowBox = (0, 0, image.width, image.height)  # the part shown
        self._backdrop = self.quicklook
        self.sent_view: Optional[str] = None  # the view whose picture the browser has (app.canvas)
        self.author = ""  # who works on it: their unsaved edits are kept as their draft
        self.leaving_for: Optional[str] = None  # an image asked to open while edits here are unsaved

    @classmethod
    def open_stored(cls, workspace: Workspace, image_id: str, bands: Optional[Sequence[int]] = None,
                    percentiles: Tuple[float, float] = STRETCH_PERCENTILES) -> "LabelingSession":  # fmt: skip
        """Open an image already in the store, restoring its latest mask and prompts."""
        with workspace.store() as store:
            name = store.image(image_id)["name"]
        image = _open_checked(workspace.image_path(image_id), bands, percentiles, workspace.limits)
        try:
            return cls._open(workspace, image_id, name, image)
        except Exception:
            image.close()
            raise

    @classmethod
    def _open(cls, workspace: Workspace, image_id: str, name: str, image: RasterImage) -> "LabelingSession":
        with workspace.store() as store:
            revision = store.revision(image_id)
            latest = store.latest_annotation(image_id)
            prompts = session_prompts(store.prompts(latest.id)) if latest else []
            base = None
            if prompts:  # the clicks were made on the automatic mask, or on nothing
                parent = latest.parent_prediction_id
                base = store.prediction_mask(parent) if parent else np.zeros((image.height, image.width), bool)
        if latest is not None:
            return cls._restored(workspace, image_id, name, image, latest, prompts, base, revision)
        workspace.follow_active_model()
        prediction_id, version, automatic, message = _automatic_mask(workspace, image_id, image)
        correction = workspace.correction(image, image_id, automatic)
        session = cls(workspace, image_id, name, image, correction, prediction_id, version, None, message, revision)
        session.prefetch()
        return session

    @classmethod
    def _restored(cls, workspace, image_id, name, image, latest, prompts, base, revision) -> "LabelingSession":
        """Replay the saved prompts on the mask they started from; fall back to the saved mask."""
        correction = workspace.correction(image, image_id, base if base is not None else latest.mask)
        message = f"Restored the {latest.status} {latest.source} mask saved by {latest.annotator or 'someone'}"
        if latest.model_version:
            message += f", made on the automatic mask by {latest.model_version}"
        try:
            if prompts and not np.array_equal(correction.replay(prompts), latest.mask):
                raise CorrectionError("they no longer reproduce it (another model or correction engine made them)")
        except CorrectionError as error:
            correction = workspace.correction(image, image_id, latest.mask)
            message += f" (its clicks cannot be replayed: {error}; new clicks start from the saved mask)"
        session = cls(workspace, image_id, name, image, correction, latest.parent_prediction_id,
                      latest.model_version, (latest.id, _fingerprint(correction)), message + ".", revision)  # fmt: skip
        session.prefetch()
        return session

    @property
    def mask(self) -> np.ndarray:
        return self.correction.mask

    @property
    def unsaved(self) -> bool:
        return self._saved is None or self._saved[1] != _fingerprint(self.correction)

    def prefetch(self) -> None:
        """Start the SAM encoding of the image centre in the background, so clicks are quick."""
        if self.workspace.prompter is not None:
            self.correction.prefetch(self.image.width / 2, self.image.height / 2)

    def views(self) -> List[str]:
        """What can be shown: the whole image, and for large images each window of a grid."""
        names = [WHOLE_IMAGE]
        size = self.workspace.window_size
        if max(self.image.width, self.image.height) > QUICKLOOK_SIDE:
            rows = tile_starts(self.image.height, min(size, self.image.height), size)
            cols = tile_starts(self.image.width, min(size, self.image.width), size)
            names += [f"window at x {c}, y {r}" for r in rows for c in cols]
        return names

    def show(self, view: str) -> None:
        """Show ``view`` (one of ``views()``): full resolution for a window, a quicklook for all."""
        if view == WHOLE_IMAGE or view not in self.views():
            self.view, self._backdrop = (0, 0, self.image.width, self.image.height), self.quicklook
            return
        col, row = (int(v.split()[-1]) for v in view.removeprefix("window at ").split(","))
        size = self.workspace.window_size
        self.view = (col, row, min(size, self.image.width - col), min(size, self.image.height - row))
        self._backdrop = self.image.read(Window(*self.view))[0]

    @property
    def backdrop(self) -> np.ndarray:
        """The shown picture (RGB): the quicklook, or a full-resolution window."""
        return self._backdrop

    def shown(self, mask: np.ndarray) -> np.ndarray:
        """The part of an image-sized ``mask`` in view, at the shown picture's resolution."""
        col, row, width, height = self.view
        part = mask[row : row + height, col : col + width]
        shape = self._backdrop.shape[:2]
        if part.shape == shape:
            return part
        rows = (np.arange(shape[0]) * height / shape[0]).astype(int)
        cols = (np.arange(shape[1]) * width / shape[1]).astype(int)
        return part[rows[:, None], cols[None, :]]

    def map_coordinates(self, x: float, y: float) -> Optional[Tuple[float, float, str]]:
        """(easting, northing, CRS) of a pixel's centre, or None when not georeferenced."""
        if not self.image.is_georeferenced:
            return None
        easting, northing = self.image.transform @ (x + 0.5, y + 0.5)
        return easting, northing, self.image.crs.to_string()

    def save(self, annotator: str, review: Optional[str] = None, reason: str = "") -> int:
        """Save the current mask with its prompts (and review it) in one transaction; an unchanged
        mask is not saved twice, only reviewed. Returns the annotation id. Refused (``StaleWrite``)
        when another session saved or reviewed this image after this one opened it (``stale``;
        ``reapplied_to_latest`` then offers a way forward)."""
        try:
            annotation_id = self._save(annotator, review, reason)
        except StaleWrite:
            self.stale = True
            raise
        self.stale = False
        return annotation_id

    def _save(self, annotator: str, review: Optional[str], reason: str) -> int:
        self.reviewed = None
        with self.workspace.store() as store:
            if not self.unsaved:
                if review is not None:
                    review_id = store.review(self._saved[0], review, annotator, reason, based_on=self.revision)
                    self.revision = Revision(self._saved[0], review_id)
                self.reviewed = review
                return self._saved[0]
            source = _source(self.correction.prompts) or ("automatic" if self.prediction_id else "manual")
            annotation_id = store.save_annotation(
                self.image_id, self.mask, source, annotator, stored_prompts(self.correction.prompts),
                self.prediction_id, review=review, reviewer=annotator if review else "", reason=reason,
                based_on=self.revision,
            )  # fmt: skip
            self.revision = store.saved_revision(annotation_id)
        self._saved = (annotation_id, _fingerprint(self.correction))
        self.reviewed = review
        return annotation_id

    def edits_since_open(self) -> Tuple:
        """The edits in effect made in this session (after a reset: every edit in effect)."""
        prompts, opened = self.correction.prompts, self.opened_prompts
        return prompts[len(opened) :] if prompts[: len(opened)] == opened else prompts

    def reapplied_to_latest(self) -> Tuple["LabelingSession", int]:
        """This image reopened at its latest stored label, with this session's edits applied on top
        (nothing is saved); returns it and how many edits no longer apply (e.g. a negative click
        where the newer mask has no landslide)."""
        image = self.image
        latest = LabelingSession.open_stored(self.workspace, self.image_id, image.bands, image.percentiles)
        skipped = 0
        for prompt in self.edits_since_open():
            try:
                latest.correction.apply(prompt)
            except (CorrectionError, ValueError):
                skipped += 1
        return latest, skipped

    @property
    def edited_unsaved(self) -> bool:
        """Whether edits made here (or restored from a draft) are not saved yet."""
        return self.unsaved and self.correction.prompts != self.opened_prompts

    def keep_draft(self) -> None:
        """Keep the edits not yet saved as the author's draft of this image (drop it when none are)."""
        if not self.author:
            return
        with self.workspace.store() as store:
            if self.edited_unsaved:
                store.keep_draft(self.image_id, self.author, stored_prompts(self.correction.prompts),
                                 self.revision.annotation_id)  # fmt: skip
            else:
                store.drop_draft(self.image_id, self.author)

    def discard_edits(self) -> None:
        """Forget the unsaved edits: the author's draft of this image is dropped."""
        if self.author:
            with self.workspace.store() as store:
                store.drop_draft(self.image_id, self.author)

    def restore_draft(self, author: str) -> str:
        """Become ``author``'s session and replay their draft of this image when it builds on the
        label opened; says what happened ("" when there was no draft)."""
        self.author = author
        with self.workspace.store() as store:
            draft = store.draft(self.image_id, author) if author else None
            if draft is None:
                return ""
            when = draft.updated_at[:16].replace("T", " ") + " UTC"
            if draft.annotation_id != self.revision.annotation_id:
                store.drop_draft(self.image_id, author)
                return f"Your unsaved edits of {when} were made on an earlier label than the latest, so they were dropped."
        try:
            self.correction.replay(session_prompts(draft.prompts))
        except (CorrectionError, ValueError) as error:
            self.correction.replay(self.opened_prompts)
            return f"Your unsaved edits of {when} could not be replayed ({error}); they stay in the draft."
        restored = len(self.edits_since_open())
        return f"Restored {restored} unsaved edit(s) from your draft of {when}; Undo or Reset takes them back."

    def latest_review(self) -> Optional[Dict]:
        """The image's newest review in the store (``AnnotationStore.latest_review``), or None."""
        with self.workspace.store() as store:
            return store.latest_review(self.image_id)

    def close(self) -> None:
        self.image.close()


def _source(prompts) -> str:
    """How prompts made a mask: "clicked" (clicks, boxes), "painted" (brush, eraser, polygons), both, or ""."""
    painted = any(isinstance(p, Painting) for p in prompts)
    clicked = any(not isinstance(p, Painting) for p in prompts)
    return "+".join(word for word, used in (("clicked", clicked), ("painted", painted)) if used)


def _fingerprint(correction: CorrectionSession) -> bytes:
    return np.packbits(correction.mask).tobytes() + repr(correction.prompts).encode()


def _open_checked(path: Path, bands, percentiles, limits: Limits) -> RasterImage:
    return RasterImage(path, bands, percentiles, limits.max_pixels)


def _automatic_mask(workspace: Workspace, image_id: str, image: RasterImage):
    """(prediction id, model version, mask, message) for a newly opened image: the mask computed
    beforehand with the same settings (``translandseg prelabel``), else a new one."""
    model = workspace.model
    if model is None or model.version is None:
        return None, None, np.zeros((image.height, image.width), bool), "No automatic mask: " + workspace.model_message
    options = workspace.automatic_options
    predictor = options.predictor(model.model)
    with workspace.store() as store:
        prepared = store.made_prediction(image_id, model.version, options.to_json())
        if prepared is not None:
            return prepared, model.version, store.prediction_mask(prepared), _made_by(model.version, predictor, True)
    mask = predictor.predict_mask(image, progress=True)  # the app shows tqdm as a progress bar
    with workspace.store() as store:
        prediction_id = store.add_prediction(image_id, mask, model.version, made_with=options.to_json())
    return prediction_id, model.version, mask, _made_by(model.version, predictor, False)


def _made_by(version: str, predictor: Predictor, prepared: bool) -> str:
    """What the Label tab says of an automatic mask."""
    made_with = [f"{predictor.views} views"] if predictor.views > 1 else []
    if predictor.scale != "whole" or predictor.tile_size != max(WINDOW_SIDE, predictor.model.image_size):
        made_with.append(f"{predictor.scale} {predictor.tile_size} px windows")
    if predictor.threshold != DEFAULT_THRESHOLD:
        made_with.append(f"threshold {predictor.threshold:g}")
    if prepared:
        made_with.append("computed beforehand")
    note = f" ({', '.join(made_with)})" if made_with else ""
    return f"Automatic mask by {version}{note}."
