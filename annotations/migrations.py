"""The store's schema, as numbered migrations. ``PRAGMA user_version`` records the last applied.

Append a function to ``MIGRATIONS`` to change the schema; never edit one that has shipped.
"""

from sqlite_utils import Database


def _initial_schema(db: Database) -> None:
    db["images"].create(
        {
            "id": str,  # SHA-256 of the file's bytes
            "name": str,  # original file name
            "width": int,
            "height": int,
            "band_count": int,
            "crs_wkt": str,  # NULL when not georeferenced
            "transform": str,  # JSON [a, b, c, d, e, f] of the affine pixel -> CRS transform
            "source_path": str,
            "data": bytes,  # the file itself, so exports never depend on the source path
            "added_by": str,
            "added_at": str,
        },
        pk="id",
    )
    db["models"].create(
        {
            "id": int,
            "version": str,
            "file": str,
            "sha256": str,
            "atl_variant": str,
            "base_model": str,
            "base_sha256": str,
            "training_snapshot": str,
            "metrics": str,  # JSON
            "active": int,
            "created_at": str,
        },
        pk="id",
        not_null={"version"},
    )
    db["models"].create_index(["version"], unique=True)
    db["training_runs"].create(
        {
            "id": int,
            "model_id": int,
            "status": str,  # queued / running / succeeded / failed / cancelled
            "progress": float,
            "snapshot": str,
            "message": str,
            "started_at": str,
            "finished_at": str,
        },
        pk="id",
        foreign_keys=[("model_id", "models", "id")],
    )
    db["predictions"].create(
        {"id": int, "image_id": str, "model_version": str, "mask": bytes, "scores": str, "created_at": str},
        pk="id",
        foreign_keys=[("image_id", "images", "id")],
    )
    db["annotations"].create(
        {
            "id": int,
            "image_id": str,
            "mask": bytes,  # PNG, 0/255, the image's size
            "source": str,  # automatic / corrected / imported / manual
            "parent_prediction_id": int,
            "annotator": str,
            "created_at": str,
        },
        pk="id",
        not_null={"image_id", "mask", "source"},
        foreign_keys=[("image_id", "images", "id"), ("parent_prediction_id", "predictions", "id")],
    )
    db["prompts"].create(
        {"id": int, "annotation_id": int, "seq": int, "x": float, "y": float, "label": int, "kind": str},
        pk="id",
        foreign_keys=[("annotation_id", "annotations", "id")],
    )
    db["reviews"].create(
        {"id": int, "annotation_id": int, "status": str, "reason": str, "reviewer": str, "created_at": str},
        pk="id",
        not_null={"annotation_id", "status"},
        foreign_keys=[("annotation_id", "annotations", "id")],
    )
    for table, column in [("predictions", "image_id"), ("annotations", "image_id"),
                          ("prompts", "annotation_id"), ("reviews", "annotation_id")]:  # fmt: skip
        db[table].create_index([column])


def _retraining(db: Database) -> None:
    """Retraining jobs: what each run trained on, how far it is, and settings."""
    runs = db["training_runs"]
    runs.add_column("requested_by", str)
    runs.add_column("settings", str)  # JSON: base model, statuses, epochs, ...
    runs.add_column("base_version", str)  # the active version the run started from (NULL: fresh)
    runs.add_column("pid", int)  # the training process
    runs.add_column("epoch", int)
    runs.add_column("epochs", int)
    runs.add_column("loss", float)
    runs.add_column("val_metrics", str)  # JSON, the latest epoch's
    runs.add_column("eta_seconds", float)
    runs.add_column("heartbeat_at", str)
    runs.add_column("cancel_requested", int, not_null_default=0)
    runs.add_column("baseline_metrics", str)  # JSON: the active version on the same validation split
    db["snapshot_annotations"].create(
        {"run_id": int, "annotation_id": int, "image_id": str, "split": str},  # split: train / val
        pk=("run_id", "annotation_id"),
        foreign_keys=[("run_id", "training_runs", "id"), ("annotation_id", "annotations", "id")],
    )
    db["models"].add_column("run_id", int)  # the training run that made it (NULL: registered from a file)
    db["settings"].create({"key": str, "value": str}, pk="key")


def _painting(db: Database) -> None:
    """Brush, eraser and polygon prompts, and sources that say how a mask was made.

    A prompt may now take many rows (a stroke's path, a polygon's corners), so each row says which
    prompt it belongs to (``prompt_no``); a stroke's rows carry the brush ``radius``. Rows stored
    before are numbered as they were read: a point alone, a box's two corners together. The source
    "corrected" becomes "clicked", beside the new "painted" and "clicked+painted".
    """
    db["prompts"].add_column("prompt_no", int)
    db["prompts"].add_column("radius", float)
    numbered, previous, number, pending_corner = [], None, -1, False
    for row in db.query("select id, annotation_id, kind from prompts order by annotation_id, seq"):
        if row["annotation_id"] != previous:
            previous, number, pending_corner = row["annotation_id"], -1, False
        if not pending_corner:
            number += 1
        pending_corner = row["kind"] == "box" and not pending_corner
        numbered.append((number, row["id"]))
    db.conn.executemany("update prompts set prompt_no = ? where id = ?", numbered)
    db.execute("update annotations set source = 'clicked' where source = 'corrected'")


def _drafts(db: Database) -> None:
    """Drafts: the prompts of an image left with unsaved edits, one per image and author, so that a
    reload or a crash loses nothing. ``annotation_id`` is the label the edits build on (NULL: the
    automatic mask); ``prompts`` is JSON, the rows ``prompts`` would store."""
    db["drafts"].create(
        {"image_id": str, "author": str, "annotation_id": int, "prompts": str, "updated_at": str},
        pk=("image_id", "author"),
        foreign_keys=[("image_id", "images", "id")],
    )


def _uncertainty(db: Database) -> None:
    """How unsure each model version is of each image's automatic mask (``ranking``), so the queue
    can put the images a version is least sure of first."""
    db["uncertainty"].create(
        {"image_id": str, "model_version": str, "score": float, "scored_at": str},
        pk=("image_id", "model_version"),
        foreign_keys=[("image_id", "images", "id")],
    )


def _prediction_settings(db: Database) -> None:
    """The predictor settings each automatic mask was made with (JSON of ``PredictorOptions``), so
    a mask computed beforehand (``translandseg prelabel``) is reused only by an app that would have
    made the same one; NULL for masks made before, which are never reused."""
    db["predictions"].add_column("made_with", str)
    db["predictions"].create_index(["image_id", "model_version"])


MIGRATIONS = [_initial_schema, _retraining, _painting, _drafts, _uncertainty, _prediction_settings]
SCHEMA_VERSION = len(MIGRATIONS)
