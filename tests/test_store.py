import multiprocessing
import sqlite3
import threading

import numpy as np
import pytest
from PIL import Image

from annotations.store import AnnotationStore, Prompt, StoreError, decode_mask, encode_mask


@pytest.fixture
def image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    return tmp_path / "scene.png"


def _mask(seed=0):
    return np.random.default_rng(seed).random((30, 40)) > 0.6


def test_masks_round_trip_losslessly_and_compactly():
    mask = _mask()
    data = encode_mask(mask)
    assert np.array_equal(decode_mask(data), mask)
    assert len(data) < mask.size // 4


def test_full_provenance_of_a_saved_mask(tmp_path, image):
    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(image, added_by="ana")
        assert store.add_image(image) == image_id  # same bytes, same image
        prediction = store.add_prediction(image_id, _mask(1), "tls-v1", {"iou": 0.7})
        prompts = [Prompt(3.5, 4.0, 1), Prompt(20, 10, 0)]
        annotation = store.save_annotation(image_id, _mask(2), "clicked", "ana", prompts, prediction)
        store.review(annotation, "rejected", "rev", reason="misses the toe")
        store.review(annotation, "accepted", "rev")
    with AnnotationStore(tmp_path / "labels.db") as store:
        (latest,) = store.latest_annotations()
        assert (latest.source, latest.annotator, latest.status) == ("clicked", "ana", "accepted")
        assert np.array_equal(latest.mask, _mask(2))
        assert store.prompts(annotation) == prompts
        row = store.db["predictions"].get(latest.parent_prediction_id)
        assert row["model_version"] == "tls-v1" and np.array_equal(decode_mask(row["mask"]), _mask(1))
        reviews = list(store.db["reviews"].rows_where("annotation_id = ?", [annotation], order_by="id"))
        assert [(r["status"], r["reason"]) for r in reviews] == [("rejected", "misses the toe"), ("accepted", "")]
        assert store.image(image_id)["added_by"] == "ana"
        assert "data" not in store.image(image_id)  # records stay light; bytes come via image_file
        with store.image_file(image_id) as copy:
            assert copy.read_bytes() == image.read_bytes()


def test_a_failed_write_leaves_nothing_behind(tmp_path, image):
    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(image)
        with pytest.raises(StoreError, match="review status"):
            store.save_annotation(image_id, _mask(), "manual", prompts=[Prompt(1, 1, 1)], review="great")
        assert store.db["annotations"].count == 0 and store.db["prompts"].count == 0
        with pytest.raises(StoreError, match="mask is"):
            store.save_annotation(image_id, np.zeros((3, 3), bool), "manual")
        with pytest.raises(StoreError, match="needs a reason"):
            store.review(store.save_annotation(image_id, _mask(), "manual"), "rejected")


def test_newer_or_corrupt_databases_are_refused(tmp_path):
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer than this translandseg"):
        AnnotationStore(newer)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable translandseg database"):
        AnnotationStore(corrupt)


def _save_many(db_path, image_id, writer, count):
    with AnnotationStore(db_path) as store:
        for i in range(count):
            store.save_annotation(image_id, _mask(i), "manual", f"w{writer}", [Prompt(i, writer, 1)], review="accepted")


def test_concurrent_writers_lose_nothing(tmp_path, image):
    db_path = tmp_path / "labels.db"
    with AnnotationStore(db_path) as store:
        image_id = store.add_image(image)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_save_many, args=(db_path, image_id, w, 25)) for w in range(3)]
    threads = [threading.Thread(target=_save_many, args=(db_path, image_id, w, 25)) for w in (3, 4)]
    for worker in processes + threads:
        worker.start()
    for worker in processes + threads:
        worker.join()
    assert all(p.exitcode == 0 for p in processes)
    with AnnotationStore(db_path) as store:
        assert store.db["annotations"].count == 125
        assert store.db["prompts"].count == store.db["reviews"].count == 125
        per_writer = store.db.execute("select annotator, count(*) from annotations group by annotator").fetchall()
        assert sorted(per_writer) == [(f"w{w}", 25) for w in range(5)]
        for row in store.db.query("select a.annotator, p.y from annotations a join prompts p on p.annotation_id = a.id"):
            assert row["annotator"] == f"w{int(row['y'])}"  # every prompt stayed with its own annotation


def test_a_save_or_review_over_a_newer_label_is_refused_and_loses_nothing(tmp_path, image):
    """Two analysts open the same image; one accepts, the other's later save is refused."""
    from annotations.store import Revision, StaleWrite

    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(image)
        first = store.save_annotation(image_id, _mask(1), "manual", "ana")
        opened = store.revision(image_id)  # both sessions open this
        assert opened == Revision(first, None)
        accepted = store.review(first, "accepted", "rev", based_on=opened)
        with pytest.raises(StaleWrite, match="rev marked it accepted"):
            store.save_annotation(image_id, _mask(2), "clicked", "bob", based_on=opened)
        with pytest.raises(StaleWrite, match="rev marked it accepted"):
            store.review(first, "needs-work", "bob", based_on=opened)
        (latest,) = store.latest_annotations()
        assert (latest.id, latest.status) == (first, "accepted") and np.array_equal(latest.mask, _mask(1))
        assert store.db["annotations"].count == 1 and store.db["reviews"].count == 1
        current = store.revision(image_id)
        assert current == Revision(first, accepted)
        second = store.save_annotation(image_id, _mask(2), "clicked", "bob", based_on=current, review="needs-work",
                                       reviewer="bob")  # fmt: skip
        assert store.saved_revision(second) == store.revision(image_id)
        with pytest.raises(StaleWrite, match="bob saved a new mask"):
            store.save_annotation(image_id, _mask(3), "clicked", "ana", based_on=current)
