"""Retraining from the store: snapshot lineage, one run at a time, SIGKILL, cancel, activation."""

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlite_utils import Database

from annotations import AnnotationStore
from annotations.importing import import_pairs
from annotations.labeling import LabelingSession, Workspace
from annotations.migrations import MIGRATIONS
from annotations.training_runs import (
    RetrainRefused,
    activate,
    active_model,
    current_run,
    request_cancel,
    set_auto_activate,
    snapshot,
    validation_split,
)
from conftest import write_pairs
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.loading import load_model
from translandseg.training.retraining import RetrainSettings, start_retraining, train_config


def tiny_settings(checkpoint, **changes):
    """A quick run; at full priority, so that a loaded machine does not starve it past ``wait_for``."""
    values = {"model_type": "tiny", "sam_checkpoint": str(checkpoint), "image_size": 64, "epochs": 1, "niceness": 0}
    return RetrainSettings(**{**values, **changes})


def wait_for(db, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with AnnotationStore(db) as store:
            run = current_run(store)
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"timed out; last run state: {run}")


def finished(run):
    return run["status"] not in ("queued", "running")


@pytest.fixture
def store_with_labels(tmp_path):
    db = tmp_path / "labels.db"
    with AnnotationStore(db) as store:
        import_pairs(store, write_pairs(tmp_path / "pairs", 12), "import")
    return db


def test_the_validation_split_is_fixed_per_image():
    ids = [f"{i:064x}" for i in range(1000)]
    splits = [validation_split(i) for i in ids]
    assert splits == [validation_split(i) for i in ids]
    assert 250 < splits.count("val") < 350


def test_retrain_on_real_samples_registers_activates_and_drives_new_masks(tmp_path, samples, tiny_sam_checkpoint):
    db = tmp_path / "labels.db"
    with AnnotationStore(db) as store:
        for name in ("bijie", "landslide4sense"):
            import_pairs(store, samples / name, "import")
    run_id, _ = start_retraining(db, tiny_settings(tiny_sam_checkpoint), requested_by="ana")
    run = wait_for(db, finished)
    assert run["status"] == "succeeded", run["message"]
    assert run["epoch"] == 1 and set(run["val_metrics"]) == {"iou", "f1", "miou"} and run["requested_by"] == "ana"
    with AnnotationStore(db) as store:
        (model,) = store.models()
        lineage = snapshot(store, run_id)
        assert model["run_id"] == run_id and model["metrics"]["miou"] >= 0 and not model["active"]
        assert len(lineage) == 28 and {split for *_, split in lineage} == {"train", "val"}
        assert os.path.isfile(model["file"]) and not list((db.parent / "models").glob(".*partial"))
        activate(store, model["version"])
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    workspace = Workspace(db, tmp_path / "images", loaded, "SAM only", EmbeddingCache(64))
    assert workspace.model.version == model["version"]  # the active version replaced the startup model
    unlabelled = tmp_path / "df002-flipped.png"
    Image.open(samples / "bijie/image/df002.png").transpose(Image.FLIP_LEFT_RIGHT).save(unlabelled)
    with AnnotationStore(db) as store:
        new_image = store.add_image(unlabelled)
    session = LabelingSession.open_stored(workspace, new_image)
    assert session.model_version == model["version"]
    with AnnotationStore(db) as store:
        assert store.db["predictions"].get(session.prediction_id)["model_version"] == model["version"]


def test_the_snapshot_names_exactly_the_labels_at_trigger_time(tmp_path, store_with_labels, tiny_sam_checkpoint):
    db = store_with_labels
    with AnnotationStore(db) as store:
        accepted = {a.id for a in store.latest_annotations(["accepted"])}
        image = store.latest_annotations()[0]
        store.review(image.id, "rejected", "rev", "wrong outline")
    run_id, _ = start_retraining(db, tiny_settings(tiny_sam_checkpoint))
    with AnnotationStore(db) as store:
        later = store.save_annotation(image.image_id, image.mask, "manual", "ana", review="accepted")
    run = wait_for(db, finished)
    assert run["status"] == "succeeded", run["message"]
    with AnnotationStore(db) as store:
        trained_on = {annotation for annotation, *_ in snapshot(store, run_id)}
    assert trained_on == accepted - {image.id} and later not in trained_on


def test_too_few_labels_and_a_second_run_are_refused(tmp_path, store_with_labels, tiny_sam_checkpoint):
    empty = tmp_path / "empty.db"
    AnnotationStore(empty).close()
    with pytest.raises(RetrainRefused, match="needs at least 4 training and 2 validation labels"):
        start_retraining(empty, tiny_settings(tiny_sam_checkpoint))
    start_retraining(store_with_labels, tiny_settings(tiny_sam_checkpoint, epochs=50))
    with pytest.raises(RetrainRefused, match="already running"):
        start_retraining(store_with_labels, tiny_settings(tiny_sam_checkpoint))
    with AnnotationStore(store_with_labels) as store:
        assert request_cancel(store) is not None
    run = wait_for(store_with_labels, finished)
    assert run["status"] == "cancelled" and "unchanged" in run["message"]


def test_sigkill_leaves_the_store_consistent_and_the_run_failed(tmp_path, store_with_labels, tiny_sam_checkpoint,
                                                                 adapter):  # fmt: skip
    db = store_with_labels
    loaded = load_model("tiny", tiny_sam_checkpoint, adapter)
    Workspace(db, tmp_path / "images", loaded, "", EmbeddingCache(64))  # registers and activates the adapter
    _, process = start_retraining(db, tiny_settings(tiny_sam_checkpoint, epochs=50, niceness=5))
    wait_for(db, lambda run: (run["epoch"] or 0) >= 1)  # mid-training, after a progress write
    lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    assert os.getpriority(os.PRIO_PROCESS, process.pid) == lowered  # the cores go to labeling first
    if os.access("/proc/self/autogroup", os.W_OK):  # and its session's share of them, where sessions share
        assert Path(f"/proc/{process.pid}/autogroup").read_text().split()[-1] == "5"
    os.kill(process.pid, signal.SIGKILL)
    run = wait_for(db, finished)
    assert run["status"] == "failed" and "killed or crashed" in run["message"]
    with AnnotationStore(db) as store:
        assert store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert active_model(store)["version"] == loaded.version and len(store.models()) == 1
        assert run["baseline_metrics"]["miou"] >= 0  # measured the active version first


def test_a_run_keeps_its_last_epoch_and_measures_it_on_the_validation_images(store_with_labels, tiny_sam_checkpoint):
    settings = tiny_settings(tiny_sam_checkpoint, epochs=2)
    assert train_config(settings).keep_last_epoch  # the validation images choose nothing: a fair comparison
    assert not train_config(RetrainSettings("tiny", keep_last_epoch=False)).keep_last_epoch
    start_retraining(store_with_labels, settings)
    run = wait_for(store_with_labels, finished)
    assert run["status"] == "succeeded" and "(epoch 2 of 2)" in run["message"], run["message"]
    with AnnotationStore(store_with_labels) as store:
        (model,) = store.models()
    assert model["metrics"]["epoch"] == 2 and {k: model["metrics"][k] for k in run["val_metrics"]} == run["val_metrics"]


def test_a_decoder_round_keeps_the_active_versions_atl_and_retrains_its_decoder(store_with_labels, tiny_sam_checkpoint):
    start_retraining(store_with_labels, tiny_settings(tiny_sam_checkpoint, click_epochs=0))  # the clicks' decoder: not tested here
    assert wait_for(store_with_labels, finished)["status"] == "succeeded"
    with AnnotationStore(store_with_labels) as store:
        (first,) = store.models()
        activate(store, first["version"])
    start_retraining(store_with_labels, tiny_settings(tiny_sam_checkpoint, trains="decoder", decoder_steps=30, click_epochs=0))
    run = wait_for(store_with_labels, finished)
    assert run["status"] == "succeeded" and "(the decoder, 30 steps)" in run["message"], run["message"]
    assert set(run["val_metrics"]) == {"iou", "f1", "miou"} and "active" in run["message"]  # compared with the first
    with AnnotationStore(store_with_labels) as store:
        second = next(m for m in store.models() if m["run_id"] == run["id"])
    weights = [load_model("tiny", tiny_sam_checkpoint, m["file"], image_size=64).model.state_dict() for m in (first, second)]
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0] if k.startswith("atl."))
    assert not all(weights[0][k].equal(weights[1][k]) for k in weights[0] if k.startswith("mask_decoder."))


def test_auto_activation_needs_a_better_version(tmp_path, store_with_labels, tiny_sam_checkpoint):
    with AnnotationStore(store_with_labels) as store:
        set_auto_activate(store, True)
    start_retraining(store_with_labels, tiny_settings(tiny_sam_checkpoint))
    run = wait_for(store_with_labels, finished)
    assert run["status"] == "succeeded" and "activated automatically" in run["message"]  # nothing was active
    with AnnotationStore(store_with_labels) as store:
        assert active_model(store)["run_id"] == run["id"]


def test_a_store_from_before_retraining_migrates(tmp_path, store_with_labels):
    connection = sqlite3.connect(tmp_path / "old.db")
    MIGRATIONS[0](Database(connection))
    connection.execute("pragma user_version = 1")
    connection.commit()
    connection.close()
    with AnnotationStore(tmp_path / "old.db") as store:
        assert store.schema_version == len(MIGRATIONS) and "snapshot_annotations" in store.db.table_names()
        assert store.db["training_runs"].columns_dict["cancel_requested"] is int


def test_cli_retrains_with_a_progress_bar_and_activates(tmp_path, store_with_labels, tiny_sam_checkpoint, capsys):
    from translandseg.cli import main

    db = str(store_with_labels)
    assert main(["retrain", "--db", db, "--sam", "tiny", "--sam-checkpoint", str(tiny_sam_checkpoint),
                 "--epochs", "1"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "run 1: succeeded: version retrain-0001-" in out and "run 1" in err and "100/100" in err  # the bar finished
    with AnnotationStore(store_with_labels) as store:
        (model,) = store.models()
    assert main(["models", "--db", db, "--activate", model["version"]]) == 0
    assert f"* {model['version']}" in capsys.readouterr().out


def test_the_model_tab_starts_follows_and_activates_a_run(tmp_path, store_with_labels, tiny_sam_checkpoint, adapter):
    from translandseg.app import webapp

    loaded = load_model("tiny", tiny_sam_checkpoint, adapter)
    workspace = Workspace(store_with_labels, tmp_path / "images", loaded, "", EmbeddingCache(64))
    assert webapp.retrain(workspace, "ana", ["accepted"], 1, 5) == "Retraining run 1 started."
    phases = ("starting its process", "loading the model", "preparing the training set", "training epoch 1/1")
    assert any(phase in webapp.training_status(workspace) for phase in phases)  # said from the first second
    assert "already running" in webapp.retrain(workspace, "ana", ["accepted"], 1, 5)
    run = wait_for(store_with_labels, finished)
    assert run["status"] == "succeeded", run["message"]
    status = webapp.training_status(workspace)
    assert "**succeeded**" in status and "val miou" in status and "on the same images" in status
    rows = webapp.version_rows(workspace)
    assert [r[1] for r in rows] == ["", "yes"]  # newest first; the startup adapter is still active
    assert rows[0][-1].startswith(f"from {loaded.version}: validation mIoU") and rows[1][-1] == "registered from its file"
    plot = webapp.version_plot(workspace)  # each version by the labels it learnt from, the active one marked
    assert list(plot["labels"]) == [0, 12] and list(plot["state"]) == ["active", "other"]
    assert "is active" in webapp.activate_version(workspace, rows[0][0])
    assert workspace.model.version == rows[0][0]
    assert "is active" in webapp.activate_version(workspace, rows[1][0])  # roll back
    assert workspace.model.version == loaded.version
