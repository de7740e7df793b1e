"""Brush, eraser and polygon edits: exact footprints at full resolution, one history with clicks,
bit-exact replay through the store, and an old store migrated to hold them."""

import sqlite3

import numpy as np
import pytest

from annotations import AnnotationStore, session_prompts, stored_prompts
from annotations.migrations import MIGRATIONS
from conftest import brute_force_stroke, write_geotiff
from translandseg.interactive.correction import Box, Click, CorrectionError, CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.painting import Polygon, Stroke, footprint
from translandseg.interactive.prompting import PointPrompter
from translandseg.loading import load_model
from translandseg.raster import RasterImage

WIDTH, HEIGHT = 60, 40


def whole(cover, shape):
    out = np.zeros(shape, bool)
    col, row, width, height = cover.window
    out[row : row + height, col : col + width] = cover.covered
    return out


@pytest.mark.parametrize("points, radius", [(((10.3, 12.7), (30.2, 20.1), (31, 35.5)), 3.2),
                                            (((5.5, 5.5),), 0.5), (((-4, 10), (20, -3)), 6)])  # fmt: skip
def test_a_stroke_covers_the_pixels_within_its_radius(points, radius):
    cover = footprint(Stroke(points, radius, True), (HEIGHT, WIDTH))
    assert np.array_equal(whole(cover, (HEIGHT, WIDTH)), brute_force_stroke(points, radius, (HEIGHT, WIDTH)))
    assert cover.clipped == any(x - radius < 0 or y - radius < 0 for x, y in points)


def test_a_polygon_covers_the_pixels_whose_centres_are_inside():
    cover = footprint(Polygon(((10, 10), (20, 10), (20, 30), (10, 30)), True), (HEIGHT, WIDTH))
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[10:30, 10:20] = True
    assert np.array_equal(whole(cover, (HEIGHT, WIDTH)), expected) and not cover.clipped
    triangle = whole(footprint(Polygon(((0, 0), (40, 0), (0, 40)), True), (HEIGHT, WIDTH)), (HEIGHT, WIDTH))
    assert triangle[5, 5] and not triangle[30, 30] and triangle.sum() == pytest.approx(800, abs=40)


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(3).integers(1, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
    data[:, :, 50:] = 0  # the right 10 columns hold no data
    return write_geotiff(tmp_path / "painted.tif", data, nodata=0)


@pytest.fixture
def automatic():
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:15, 5:25] = True
    return mask


@pytest.fixture
def image(scene):
    with RasterImage(scene) as image:
        yield image


def test_brush_and_eraser_work_without_a_model_and_leave_nodata_alone(image, automatic):
    session = CorrectionSession(image, "sha", automatic, prompter=None)
    painted = session.stroke([(30, 30), (56, 30)], 2).copy()  # ends over the nodata columns
    expected = automatic | (brute_force_stroke(((30, 30), (56, 30)), 2, (HEIGHT, WIDTH)) & (np.arange(WIDTH) < 50))
    assert np.array_equal(painted, expected) and "nodata" in session.note and not painted[:, 50:].any()
    erased = session.stroke([(10, 10)], 3, positive=False)
    assert not erased[10, 10] and erased[5, 24] and erased[30, 40]
    with pytest.raises(CorrectionError, match="nodata"):
        session.stroke([(55, 20)], 2)
    with pytest.raises(CorrectionError, match="off the image"):
        session.stroke([(100, 100), (120, 90)], 4)
    with pytest.raises(CorrectionError, match="no SAM model"):
        session.click(10, 10, True)
    assert len(session.prompts) == 2


def test_strokes_off_the_image_are_clipped_with_a_note(image, automatic):
    session = CorrectionSession(image, "sha", automatic, prompter=None)
    mask = session.stroke([(-10, 35), (8, 35)], 3)
    assert mask[35, 0] and mask[35, 10] and "clipped" in session.note
    mask = session.polygon([(-5, -5), (4, -5), (4, 4), (-5, 4)])
    assert mask[:4, :4].all() and "clipped" in session.note


@pytest.fixture(scope="module")
def prompter(tiny_sam_checkpoint, tmp_path_factory):
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    cache = EmbeddingCache(64, tmp_path_factory.mktemp("embeddings"))
    return PointPrompter.of(loaded, cache)


def test_clicks_and_strokes_share_one_history_and_replay_through_the_store(image, scene, automatic, prompter, tmp_path):
    session = CorrectionSession(image, "sha", automatic, prompter)
    states = [session.mask.copy()]
    for apply in (lambda: session.click(12, 10, True), lambda: session.stroke([(30, 25), (45, 35)], 2.5),
                  lambda: session.box(2, 2, 30, 20, False), lambda: session.polygon([(35, 2), (48, 2), (40, 12)]),
                  lambda: session.stroke([(40, 30)], 4, positive=False)):  # fmt: skip
        apply()
        states.append(session.mask.copy())
    for state in reversed(states[:-1]):  # undo walks back through clicks and strokes alike
        session.undo()
        assert np.array_equal(session.mask, state)
    for state in states[1:]:
        session.redo()
        assert np.array_equal(session.mask, state)
    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(scene)
        rows = stored_prompts(session.prompts)
        saved = store.save_annotation(image_id, session.mask, "clicked+painted", "ana", rows)
        restored = session_prompts(store.prompts(saved))
    assert restored == list(session.prompts)
    assert [type(p) for p in restored] == [Click, Stroke, Box, Polygon, Stroke]
    again = CorrectionSession(image, "sha", automatic, prompter)
    assert np.array_equal(again.replay(restored), states[-1])


def test_an_old_store_is_migrated_to_number_its_prompts(tmp_path, scene):
    path = tmp_path / "old.db"
    with AnnotationStore(path) as store:
        image_id = store.add_image(scene)
        mask = np.zeros((HEIGHT, WIDTH), bool)
        store.save_annotation(image_id, mask, "clicked", "ana", stored_prompts([Click(3, 4, True),
                              Box(1, 2, 9, 8, False), Click(5, 6, False)]))  # fmt: skip
    with sqlite3.connect(path) as conn:  # back to how the previous schema stored it
        conn.execute("update annotations set source = 'corrected'")
        conn.execute("alter table prompts drop column prompt_no")
        conn.execute("alter table prompts drop column radius")
        conn.execute("drop table drafts")  # and before the later migrations
        conn.execute("drop table uncertainty")
        conn.execute("drop index idx_predictions_image_id_model_version")
        conn.execute("alter table predictions drop column made_with")
        painting = [m.__name__ for m in MIGRATIONS].index("_painting")
        conn.execute(f"pragma user_version = {painting}")
    with AnnotationStore(path) as store:
        (annotation,) = store.latest_annotations()
        assert annotation.source == "clicked"
        assert session_prompts(store.prompts(annotation.id)) == [Click(3, 4, True), Box(1, 2, 9, 8, False),
                                                                 Click(5, 6, False)]  # fmt: skip
