"""Retraining runs in the store: the snapshot each trained on, one run at a time, progress, versions.

A run's training set is a snapshot taken when it is triggered: the ids of the latest
annotations (accepted by default) in ``snapshot_annotations``, each with its split. The split
is fixed per image (a seeded hash of its id), so every version is validated on the same
images, and an image never moves between training and validation as labels accumulate.

At most one run is queued or running: ``create_run`` checks and inserts in one write
transaction. A run whose process died without reporting (killed, crashed) is marked failed by
``reap_dead_runs``, which every status read calls.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .store import AnnotationStore, StoreError, now

VALIDATION_PERCENT = 30
SPLIT_SEED = "translandseg-validation-1"
MIN_TRAIN, MIN_VAL = 4, 2
ACTIVE_STATUSES = ("queued", "running")
AUTO_ACTIVATE = "auto_activate"


class RetrainRefused(StoreError):
    """A run that cannot start: too few labels, or one already running."""


def validation_split(image_id: str) -> str:
    """"val" for a fixed ~30 % of images (by a seeded hash of the id), "train" for the rest."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{image_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") % 100 < VALIDATION_PERCENT else "train"


def create_run(store: AnnotationStore, statuses: Sequence[str], requested_by: str, settings: Dict) -> int:
    """Record a queued run and its snapshot; refuses when one is running or labels are too few."""
    reap_dead_runs(store)
    with store.writing() as db:
        running = db.execute("select id from training_runs where status in (?, ?)", ACTIVE_STATUSES).fetchone()
        if running:
            raise RetrainRefused(f"retraining is already running (run {running[0]}); wait for it or cancel it")
        items = [(a.id, a.image_id, validation_split(a.image_id)) for a in store.latest_annotations(statuses)]
        n_train = sum(split == "train" for *_, split in items)
        n_val = len(items) - n_train
        if n_train < MIN_TRAIN or n_val < MIN_VAL:
            raise RetrainRefused(
                f"retraining needs at least {MIN_TRAIN} training and {MIN_VAL} validation labels "
                f"({'/'.join(statuses)}; each image's split is fixed, about {VALIDATION_PERCENT} % go to "
                f"validation); the store has {n_train} and {n_val}: label more images"
            )
        active = active_model(store)
        run_id = db["training_runs"].insert({
            "status": "queued", "progress": 0.0, "requested_by": requested_by, "settings": json.dumps(settings),
            "message": "starting its process (loading PyTorch takes a few seconds)",
            "snapshot": f"{n_train} training + {n_val} validation labels ({'/'.join(statuses)})",
            "base_version": active["version"] if active else None, "started_at": now(), "cancel_requested": 0,
        }).last_pk  # fmt: skip
        db["snapshot_annotations"].insert_all(
            {"run_id": run_id, "annotation_id": a, "image_id": i, "split": s} for a, i, s in items
        )
    return run_id


def snapshot(store: AnnotationStore, run_id: int) -> List[Tuple[int, str, str]]:
    """(annotation id, image id, split) of every label the run trains or validates on."""
    rows = store.db["snapshot_annotations"].rows_where("run_id = ?", [run_id], order_by="annotation_id")
    return [(r["annotation_id"], r["image_id"], r["split"]) for r in rows]


def run(store: AnnotationStore, run_id: int) -> Dict:
    row = dict(store.db["training_runs"].get(run_id))
    for key in ("settings", "val_metrics", "baseline_metrics"):
        row[key] = json.loads(row[key] or "{}")
    return row


def runs(store: AnnotationStore) -> List[Dict]:
    reap_dead_runs(store)
    return [run(store, r["id"]) for r in store.db["training_runs"].rows_where(order_by="id desc")]


def current_run(store: AnnotationStore) -> Optional[Dict]:
    """The newest run (running or finished), or None."""
    reap_dead_runs(store)
    row = store.db.execute("select max(id) from training_runs").fetchone()
    return run(store, row[0]) if row[0] is not None else None


def update_run(store: AnnotationStore, run_id: int, **values) -> None:
    """Set columns of a run (dicts are stored as JSON) and its heartbeat."""
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()}
    with store.writing() as db:
        db["training_runs"].update(run_id, {**values, "heartbeat_at": now()})


def finish_run(store: AnnotationStore, run_id: int, status: str, message: str, model_id: Optional[int] = None) -> None:
    update_run(store, run_id, status=status, message=message, model_id=model_id, finished_at=now(),
               eta_seconds=None, progress=1.0 if status == "succeeded" else None)  # fmt: skip


def request_cancel(store: AnnotationStore) -> Optional[int]:
    """Ask the running run to stop (its process gets SIGTERM); returns its id, None if none runs."""
    reap_dead_runs(store)
    with store.writing() as db:
        row = db.execute("select id, pid from training_runs where status in (?, ?)", ACTIVE_STATUSES).fetchone()
        if row is None:
            return None
        db["training_runs"].update(row[0], {"cancel_requested": 1})
    if row[1] and process_alive(row[1]):
        os.kill(row[1], 15)
    return row[0]


def reap_dead_runs(store: AnnotationStore) -> None:
    """Mark failed every queued or running run whose process is gone without reporting."""
    rows = store.db.execute("select id, pid, cancel_requested from training_runs where status in (?, ?) "
                            "and pid is not null", ACTIVE_STATUSES).fetchall()  # fmt: skip
    for run_id, pid, cancelled in rows:
        if process_alive(pid):
            continue
        status, message = ("cancelled", "cancelled on request") if cancelled else (
            "failed", f"the training process (pid {pid}) ended without reporting: it was killed or crashed")
        with store.writing() as db:
            db.execute("update training_runs set status = ?, finished_at = ?, eta_seconds = null, message = ? "
                       "where id = ? and status in (?, ?)",
                       [status, now(), message + "; the active model is unchanged", run_id, *ACTIVE_STATUSES])


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# model versions ----------------------------------------------------------------------------


def lineage(store: AnnotationStore) -> List[Dict]:
    """Every model version, oldest first, with what made it: ``labels``, how many of the store's
    labels its run learnt from and was validated on (0 for a version registered from a file);
    ``base_version``, the version the run started from, and ``base_metrics``, that version's
    figures on the same validation images (empty for a fresh start or a file)."""
    rows = store.db.query("""
        select m.version, m.active, m.created_at, m.metrics, m.training_snapshot, r.base_version,
               r.baseline_metrics as base_metrics,
               (select count(*) from snapshot_annotations s where s.run_id = m.run_id) as labels
        from models m left join training_runs r on r.id = m.run_id order by m.id""")
    return [dict(row, metrics=json.loads(row["metrics"] or "{}"), base_metrics=json.loads(row["base_metrics"] or "{}"))
            for row in rows]  # fmt: skip


def active_model(store: AnnotationStore) -> Optional[Dict]:
    return next((m for m in store.models() if m["active"]), None)


def activate(store: AnnotationStore, version: str) -> Dict:
    """Make ``version`` the one automatic masks come from (also to roll back to an earlier one)."""
    with store.writing() as db:
        if db.execute("select 1 from models where version = ?", [version]).fetchone() is None:
            raise StoreError(f"there is no model version {version!r} in {store.path.name}")
        db.execute("update models set active = (version = ?)", [version])
    return active_model(store)


def auto_activate(store: AnnotationStore) -> bool:
    """The setting: activate a new version automatically when it beats the active one."""
    row = store.db.execute("select value from settings where key = ?", [AUTO_ACTIVATE]).fetchone()
    return bool(row and row[0] == "1")


def set_auto_activate(store: AnnotationStore, enabled: bool) -> None:
    with store.writing() as db:
        db["settings"].upsert({"key": AUTO_ACTIVATE, "value": "1" if enabled else "0"}, pk="key")
