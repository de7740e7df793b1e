"""The annotation store: one SQLite file holding images, model proposals, labels and reviews.

Every write is one ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy timeout,
so several threads or processes can save at once without losing or interleaving anything.
A mask is a 1-bit PNG of its image's size: lossless and compact.
"""

import hashlib
import io
import json
import sqlite3
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image
from sqlite_utils import Database

from translandseg.download import sha256_of
from translandseg.interactive.correction import Box, Click
from translandseg.interactive.correction import Prompt as SessionPrompt
from translandseg.interactive.painting import Polygon, Stroke
from translandseg.raster import RasterImage

from .migrations import MIGRATIONS, SCHEMA_VERSION

SOURCES = ("automatic", "clicked", "painted", "clicked+painted", "imported", "manual")
STATUSES = ("pending", "accepted", "rejected", "needs-work")
QUEUE_ORDERS = ("added", "uncertainty")
BUSY_TIMEOUT_MS = 30_000
MAX_STORED_BYTES = 256 * 1024 * 1024  # larger images are referenced by path only


class StoreError(RuntimeError):
    """A database that cannot be used, or a write that makes no sense; the message says why."""


class StaleWrite(StoreError):
    """A save or review based on an image's label that another session has since changed."""


@dataclass(frozen=True)
class Revision:
    """Where an image's label stands: its latest annotation and that annotation's latest review
    (None where there is none yet). A session saves ``based_on`` the revision it opened."""

    annotation_id: Optional[int] = None
    review_id: Optional[int] = None


@dataclass(frozen=True)
class Prompt:
    """One stored prompt row. A click is one "point" row; a box two "box" rows (its corners); a
    brush or eraser stroke one "stroke" row per point of its path, each with the brush radius; a
    polygon one "polygon" row per corner. Rows of one prompt share ``prompt_no``."""

    x: float  # image pixel column
    y: float  # image pixel row
    label: int  # 1 positive (adds landslide), 0 negative (removes it)
    kind: str = "point"
    prompt_no: int = 0  # which prompt of the annotation the row belongs to, in order
    radius: Optional[float] = None  # strokes: the brush radius in image pixels


def stored_prompts(prompts: Sequence[SessionPrompt]) -> List[Prompt]:
    """The rows that record a correction session's prompts."""
    rows = []
    for n, p in enumerate(prompts):
        label = int(p.positive)
        if isinstance(p, Click):
            rows.append(Prompt(p.x, p.y, label, "point", n))
        elif isinstance(p, Box):
            rows += [Prompt(p.x0, p.y0, label, "box", n), Prompt(p.x1, p.y1, label, "box", n)]
        elif isinstance(p, Stroke):
            rows += [Prompt(x, y, label, "stroke", n, p.radius) for x, y in p.points]
        else:
            rows += [Prompt(x, y, label, "polygon", n) for x, y in p.points]
    return rows


def session_prompts(rows: Sequence[Prompt]) -> List[SessionPrompt]:
    """The prompts that ``stored_prompts`` recorded, ready to replay."""
    prompts = []
    for _, group in groupby(rows, key=lambda row: row.prompt_no):
        group = list(group)
        first, kind, positive = group[0], group[0].kind, bool(group[0].label)
        points = tuple((row.x, row.y) for row in group)
        if kind == "point" and len(group) == 1:
            prompts.append(Click(first.x, first.y, positive))
        elif kind == "box" and len(group) == 2:
            prompts.append(Box(*points[0], *points[1], positive))
        elif kind == "stroke" and first.radius:
            prompts.append(Stroke(points, first.radius, positive))
        elif kind == "polygon":
            prompts.append(Polygon(points, positive))
        else:
            raise StoreError(f"unreadable stored prompt {group}")
    return prompts


@dataclass(frozen=True)
class Draft:
    """Unsaved prompts kept for an image and author (``AnnotationStore.keep_draft``)."""

    prompts: List[Prompt]
    annotation_id: Optional[int]  # the label they build on (None: the automatic mask)
    updated_at: str


@dataclass
class Annotation:
    id: int
    image_id: str
    mask: np.ndarray
    source: str
    annotator: Optional[str]
    created_at: str
    parent_prediction_id: Optional[int]
    status: str
    reviewer: Optional[str]
    model_version: Optional[str]  # of the prediction it started from


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def encode_mask(mask: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("1"), dtype=bool)


class AnnotationStore:
    def __init__(self, path: Path) -> None:
        """Open (creating or migrating) the store at ``path``."""
        self.path = Path(path)
        try:
            self.db = Database(sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                               check_same_thread=False))  # fmt: skip
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            if self.db.journal_mode != "wal":
                self.db.enable_wal()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a usable translandseg database: {error}") from error

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def writing(self) -> Iterator[Database]:
        """One write transaction, taken at once so concurrent writers queue instead of failing."""
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.conn.commit()

    def _migrate(self) -> None:
        with self.writing():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}, newer than this translandseg "
                                 f"understands ({SCHEMA_VERSION}); upgrade translandseg to open it")  # fmt: skip
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    # images ------------------------------------------------------------------------------

    def add_image(self, path: Path, added_by: str = "", name: Optional[str] = None,
                  max_pixels: Optional[int] = None) -> str:  # fmt: skip
        """Register an image file (idempotent: the id is its SHA-256); returns the id.
        Images of more than ``max_pixels`` pixels are refused."""
        path = Path(path)
        with RasterImage(path, bands=(1, 1, 1), max_pixels=max_pixels) as image:
            data = path.read_bytes() if path.stat().st_size <= MAX_STORED_BYTES else None
            image_id = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(path)
            record = {
                "id": image_id,
                "name": name or path.name,
                "width": image.width,
                "height": image.height,
                "band_count": image.count,
                "crs_wkt": image.crs.to_wkt() if image.crs else None,
                "transform": json.dumps(list(image.transform)[:6]) if image.is_georeferenced else None,
                "source_path": str(path.resolve()),
                "data": data,
                "added_by": added_by,
                "added_at": now(),
            }
        with self.writing() as db:
            db["images"].insert(record, ignore=True)
        return image_id

    @contextmanager
    def image_file(self, image_id: str) -> Iterator[Path]:
        """A path holding the image's bytes: a temporary copy of the stored file, else its source."""
        record = self.image(image_id)
        (data,) = self.db.execute("select data from images where id = ?", [image_id]).fetchone()
        if data is None:
            yield Path(record["source_path"])
            return
        with tempfile.TemporaryDirectory(prefix="translandseg-") as folder:
            path = Path(folder) / f"image{Path(record['name']).suffix.lower()}"
            path.write_bytes(data)
            yield path

    def image(self, image_id: str) -> Dict:
        """An image's record, without its bytes (see ``image_file``)."""
        columns = ", ".join(c for c in self.db["images"].columns_dict if c != "data")
        row = next(self.db.query(f"select {columns} from images where id = ?", [image_id]), None)
        if row is None:
            raise StoreError(f"no image {image_id[:12]} in {self.path.name}")
        return row

    # predictions, annotations, reviews ---------------------------------------------------------

    def add_prediction(self, image_id: str, mask: np.ndarray, model_version: str,
                       scores: Optional[Dict[str, float]] = None, made_with: Optional[str] = None) -> int:  # fmt: skip
        """Record an automatic mask of ``model_version``, made with the predictor settings ``made_with``."""
        self._check_mask(image_id, mask)
        row = {"image_id": image_id, "model_version": model_version, "mask": encode_mask(mask),
               "scores": json.dumps(scores or {}), "made_with": made_with, "created_at": now()}  # fmt: skip
        with self.writing() as db:
            return db["predictions"].insert(row).last_pk

    def made_prediction(self, image_id: str, model_version: str, made_with: str) -> Optional[int]:
        """The newest automatic mask of the image by ``model_version`` with settings ``made_with``."""
        row = self.db.execute("""select id from predictions where image_id = ? and model_version = ? and made_with = ?
            order by id desc limit 1""", [image_id, model_version, made_with]).fetchone()  # fmt: skip
        return row[0] if row else None

    def unpredicted_images(self, model_version: str, made_with: str) -> List[str]:
        """Ids of the images without a label or an automatic mask by ``model_version`` with
        settings ``made_with``, in the order they were added."""
        rows = self.db.execute("""select i.id from images i
            where not exists (select 1 from annotations a where a.image_id = i.id)
              and not exists (select 1 from predictions p
                              where p.image_id = i.id and p.model_version = ? and p.made_with = ?)
            order by i.added_at, i.id""", [model_version, made_with])  # fmt: skip
        return [row[0] for row in rows]

    def prediction_mask(self, prediction_id: int) -> np.ndarray:
        row = next(self.db.query("select mask from predictions where id = ?", [prediction_id]), None)
        if row is None:
            raise StoreError(f"no prediction {prediction_id} in {self.path.name}")
        return decode_mask(row["mask"])

    def save_annotation(
        self,
        image_id: str,
        mask: np.ndarray,
        source: str,
        annotator: str = "",
        prompts: Sequence[Prompt] = (),
        parent_prediction_id: Optional[int] = None,
        review: Optional[str] = None,
        reviewer: str = "",
        reason: str = "",
        based_on: Optional[Revision] = None,
    ) -> int:
        """Save a mask with the prompts that made it (and optionally its review) in one transaction.
        With ``based_on``, refuse (``StaleWrite``) when the image's label has changed since then."""
        if source not in SOURCES:
            raise StoreError(f"annotation source must be one of {SOURCES}, not {source!r}")
        self._check_mask(image_id, mask)
        row = {"image_id": image_id, "mask": encode_mask(mask), "source": source, "annotator": annotator,
               "parent_prediction_id": parent_prediction_id, "created_at": now()}  # fmt: skip
        with self.writing() as db:
            self._check_current(image_id, based_on)
            annotation_id = db["annotations"].insert(row).last_pk
            db["prompts"].insert_all(
                {"annotation_id": annotation_id, "seq": i, "x": p.x, "y": p.y, "label": p.label, "kind": p.kind,
                 "prompt_no": p.prompt_no, "radius": p.radius}
                for i, p in enumerate(prompts)
            )
            if review is not None:
                self._insert_review(db, annotation_id, review, reviewer, reason)
            db.execute("delete from drafts where image_id = ? and author = ?", [image_id, annotator])
        return annotation_id

    # drafts ------------------------------------------------------------------------------

    def keep_draft(self, image_id: str, author: str, prompts: Sequence[Prompt], based_on: Optional[int]) -> None:
        """Keep ``author``'s unsaved ``prompts`` on an image, made on the label ``based_on`` (an
        annotation id; None: the automatic mask), in place of their earlier draft."""
        row = {"image_id": image_id, "author": author, "annotation_id": based_on,
               "prompts": json.dumps([asdict(p) for p in prompts]), "updated_at": now()}  # fmt: skip
        with self.writing() as db:
            db["drafts"].upsert(row, pk=("image_id", "author"))

    def draft(self, image_id: str, author: str) -> Optional[Draft]:
        """``author``'s draft of an image, if any (a save of theirs on it drops it)."""
        row = next(self.db.query("select * from drafts where image_id = ? and author = ?", [image_id, author]), None)
        if row is None:
            return None
        return Draft([Prompt(**p) for p in json.loads(row["prompts"])], row["annotation_id"], row["updated_at"])

    def drop_draft(self, image_id: str, author: str) -> None:
        with self.writing() as db:
            db.execute("delete from drafts where image_id = ? and author = ?", [image_id, author])

    def review(self, annotation_id: int, status: str, reviewer: str = "", reason: str = "",
               based_on: Optional[Revision] = None) -> int:  # fmt: skip
        """Review an annotation; with ``based_on``, refuse (``StaleWrite``) when its image's label
        has changed since then."""
        with self.writing() as db:
            if based_on is not None:
                row = db.execute("select image_id from annotations where id = ?", [annotation_id]).fetchone()
                self._check_current(row[0] if row else "", based_on)
            return self._insert_review(db, annotation_id, status, reviewer, reason)

    def revision(self, image_id: str) -> Revision:
        """Where the image's label stands now."""
        row = self.db.execute(
            "select a.id, (select max(id) from reviews where annotation_id = a.id) from annotations a "
            "where a.image_id = ? order by a.id desc limit 1", [image_id]).fetchone()  # fmt: skip
        return Revision(*row) if row else Revision()

    def saved_revision(self, annotation_id: int) -> Revision:
        """The revision an annotation made when it was saved: itself and the review saved with it
        (its first), whatever was added since."""
        row = self.db.execute("select min(id) from reviews where annotation_id = ?", [annotation_id]).fetchone()
        return Revision(annotation_id, row[0])

    def _check_current(self, image_id: str, based_on: Optional[Revision]) -> None:
        if based_on is None:
            return
        current = self.revision(image_id)
        if current == based_on:
            return
        if current.review_id is not None and current.annotation_id == based_on.annotation_id:
            row = self.db["reviews"].get(current.review_id)
            change = f"{row['reviewer'] or 'someone'} marked it {row['status']} at {row['created_at'][:19]} UTC"
        else:
            row = self.db["annotations"].get(current.annotation_id)
            review = self.db["reviews"].get(current.review_id)["status"] if current.review_id else None
            change = (f"{row['annotator'] or 'someone'} saved a new mask" + (f" marked {review}" if review else "")
                      + f" at {row['created_at'][:19]} UTC")  # fmt: skip
        raise StaleWrite(f"{change}, after you opened this image. Reopen it from the queue to see "
                         "that version; your mask is still on screen and nothing stored was changed")  # fmt: skip

    def _insert_review(self, db: Database, annotation_id: int, status: str, reviewer: str, reason: str) -> int:
        if status not in STATUSES:
            raise StoreError(f"review status must be one of {STATUSES}, not {status!r}")
        if status == "rejected" and not reason:
            raise StoreError("a rejection needs a reason")
        row = {"annotation_id": annotation_id, "status": status, "reason": reason, "reviewer": reviewer,
               "created_at": now()}  # fmt: skip
        return db["reviews"].insert(row).last_pk

    def _check_mask(self, image_id: str, mask: np.ndarray) -> None:
        image = self.image(image_id)
        if np.shape(mask) != (image["height"], image["width"]):
            raise StoreError(f"mask is {np.shape(mask)}, image {image['name']} is {image['height']}x{image['width']}")

    def prompts(self, annotation_id: int) -> List[Prompt]:
        rows = self.db["prompts"].rows_where("annotation_id = ?", [annotation_id], order_by="seq")
        return [Prompt(r["x"], r["y"], r["label"], r["kind"], r["prompt_no"], r["radius"]) for r in rows]

    def latest_annotation(self, image_id: str) -> Optional[Annotation]:
        return next((a for a in self.latest_annotations(image_id=image_id)), None)

    def latest_annotations(self, statuses: Optional[Sequence[str]] = None,
                           image_id: Optional[str] = None) -> List[Annotation]:  # fmt: skip
        """The newest annotation of each image (or of one), with its latest review, optionally filtered."""
        where = "" if image_id is None else "and a.image_id = :image_id"
        rows = self.db.query(_LATEST_SQL.format(where=where), {"image_id": image_id})
        annotations = [
            Annotation(r["id"], r["image_id"], decode_mask(r["mask"]), r["source"], r["annotator"], r["created_at"],
                       r["parent_prediction_id"], r["status"] or "pending", r["reviewer"], r["model_version"])
            for r in rows
        ]
        return [a for a in annotations if statuses is None or a.status in statuses]

    def queue(self, order: str = "added") -> List[Dict]:
        """Every image with the review status of its latest annotation ("pending" when unreviewed
        or not yet labelled), who labelled it, who reviewed it (``reviewer``), why (``reason``) and
        when (``reviewed_at``), and the active version's ``uncertainty`` of it (None: not scored).
        ``order``: "added" (the order images came in) or "uncertainty" (the scored images, the
        least certain first, then the rest as added)."""
        if order not in QUEUE_ORDERS:
            raise StoreError(f"queue order must be one of {QUEUE_ORDERS}, not {order!r}")
        by_uncertainty = "u.score is null, u.score desc," if order == "uncertainty" else ""
        query = f"""
            select i.id, i.name, i.width, i.height, coalesce(l.status, 'pending') as status, l.annotator,
                   l.id is not null as labelled, l.reviewer, l.reason, l.reviewed_at, u.score as uncertainty
            from images i left join ({_LATEST_SQL.format(where='')}) l on l.image_id = i.id
            left join uncertainty u on u.image_id = i.id
                and u.model_version = (select version from models where active = 1)
            order by {by_uncertainty} i.added_at, i.id"""
        return list(self.db.query(query))

    def record_uncertainty(self, image_id: str, model_version: str, score: float) -> None:
        """Keep how unsure ``model_version`` is of an image (``ranking.score_images``)."""
        row = {"image_id": image_id, "model_version": model_version, "score": score, "scored_at": now()}
        with self.writing() as db:
            db["uncertainty"].upsert(row, pk=("image_id", "model_version"))

    def latest_review(self, image_id: str) -> Optional[Dict]:
        """The image's newest review, of whichever of its labels: status, reviewer, reason,
        created_at and annotation_id; None when it was never reviewed."""
        rows = self.db.query("""select r.* from reviews r join annotations a on a.id = r.annotation_id
                                where a.image_id = ? order by r.id desc limit 1""", [image_id])  # fmt: skip
        return next(iter(rows), None)

    # models --------------------------------------------------------------------------------

    def register_model(self, version: str, file: str, sha256: str, atl_variant: str, base_model: str,
                       base_sha256: str, training_snapshot: str = "", metrics: Optional[Dict] = None,
                       run_id: Optional[int] = None) -> int:  # fmt: skip
        """Record a model version (once; registering it again returns the same id)."""
        row = {"version": version, "file": file, "sha256": sha256, "atl_variant": atl_variant,
               "base_model": base_model, "base_sha256": base_sha256, "training_snapshot": training_snapshot,
               "metrics": json.dumps(metrics or {}), "active": 0, "created_at": now(), "run_id": run_id}  # fmt: skip
        with self.writing() as db:
            db["models"].insert(row, ignore=True)
            return db.execute("select id from models where version = ?", [version]).fetchone()[0]

    def models(self) -> List[Dict]:
        return [dict(r, metrics=json.loads(r["metrics"] or "{}")) for r in self.db["models"].rows_where(order_by="id")]

    def counts_by_status(self) -> Dict[str, int]:
        """How many images' latest annotations stand at each review status (no mask decoded)."""
        counts = dict.fromkeys(STATUSES, 0)
        query = f"select coalesce(status, 'pending') as status, count(*) as n from ({_LATEST_SQL.format(where='')})"
        for row in self.db.query(query + " group by 1"):
            counts[row["status"]] = row["n"]
        return counts


_LATEST_SQL = """
select a.*, r.status, r.reviewer, r.reason, r.created_at as reviewed_at, p.model_version
from annotations a
left join reviews r on r.id = (select max(id) from reviews where annotation_id = a.id)
left join predictions p on p.id = a.parent_prediction_id
where a.id = (select max(id) from annotations b where b.image_id = a.image_id) {where}
order by a.image_id
"""
