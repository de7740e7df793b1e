"""The click-correction engine on a tiny SAM: add, remove, refine, undo/redo/reset, replay, caching."""

import json
import threading
import time

import numpy as np
import pytest
import rasterio

from annotations import AnnotationStore, session_prompts, stored_prompts
from annotations.exporting import export_training_set
from annotations.importing import import_images
from conftest import write_geotiff
from translandseg.correction import Box, Click, CorrectionError, CorrectionSession
from translandseg.embedding_cache import EmbeddingCache, EmbeddingKey
from translandseg.loading import load_model
from translandseg.prompting import PointPrompter, SamPrompt
from translandseg.raster import RasterImage

WIDTH, HEIGHT = 80, 100


@pytest.fixture(scope="module")
def loaded(tiny_sam_checkpoint):
    return load_model("tiny", tiny_sam_checkpoint, image_size=64)


@pytest.fixture
def make_prompter(loaded, tmp_path):
    def make(folder=tmp_path / "embeddings"):
        return PointPrompter(loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, EmbeddingCache(64, folder))

    return make


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
    return write_geotiff(tmp_path / "scene.tif", data)


@pytest.fixture
def automatic():
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:30, 10:30] = True
    return mask


@pytest.fixture
def session(scene, automatic, make_prompter):
    with RasterImage(scene) as image:
        yield CorrectionSession(image, "scene-sha", automatic, make_prompter())


def expected_object_mask(session, window, prompt):
    """What SAM itself says for ``prompt`` in ``window``, computed outside the session."""
    rgb, valid = session.image.read(rasterio.windows.Window(*window))
    prompter = session.prompter
    return prompter.predict(prompter.encode(rgb), valid.shape, prompt)


def compose(automatic, objects):
    mask = automatic.copy()
    for obj in objects:
        col, row, width, height = obj.window
        if obj.adds:
            mask[row : row + height, col : col + width] |= obj.mask
        else:
            mask[row : row + height, col : col + width] &= ~obj.mask
    return mask


def background_pixel(session):
    """A pixel neither landslide nor under any corrected object."""
    free = ~session.mask
    for obj in session.objects:
        col, row, width, height = obj.window
        free[row : row + height, col : col + width] &= ~obj.mask
    rows, cols = np.nonzero(free)
    return int(cols[len(cols) // 2]), int(rows[len(rows) // 2])


def test_positive_click_on_background_adds_sams_object(session, automatic):
    x, y = background_pixel(session)
    mask = session.click(x, y, positive=True)
    (obj,) = session.objects
    assert obj.adds and obj.window == (0, 0, WIDTH, HEIGHT)  # the image fits one window
    sam = expected_object_mask(session, obj.window, SamPrompt(points=((x + 0.5, y + 0.5),), labels=(1,)))
    assert np.array_equal(obj.mask, sam.mask) and obj.mask.any() and not obj.mask.all()
    assert np.array_equal(mask, automatic | sam.mask)
    assert session.prompts == (Click(x, y, True),)


def test_negative_click_on_landslide_removes_that_object(session, automatic):
    mask = session.click(20, 20, positive=False)
    (obj,) = session.objects
    assert not obj.adds and obj.prompt.labels == (1,)  # SAM is asked for the false alarm itself
    assert np.array_equal(mask, automatic & ~obj.mask)
    assert not mask[20, 20] or not obj.mask[20, 20]


def test_click_on_a_corrected_object_refines_it_with_previous_logits(session, automatic):
    session.click(20, 20, positive=False)
    removed = session.objects[0]
    rows, cols = np.nonzero(removed.mask)
    x, y = int(cols[0]), int(rows[0])
    session.click(x, y, positive=True)  # "keep this part" of what was removed
    (refined,) = session.objects
    assert refined.prompt.labels == (1, 0) and len(refined.prompt.points) == 2
    prompt = SamPrompt(points=refined.prompt.points, labels=(1, 0), mask_input=removed.prompt.mask_input)
    sam = expected_object_mask(session, refined.window, prompt)
    assert np.array_equal(refined.mask, sam.mask)
    assert np.array_equal(refined.prompt.mask_input, sam.low_res_logits)
    assert np.array_equal(session.mask, automatic & ~sam.mask)


def test_correcting_one_object_leaves_the_others_alone(session, automatic):
    session.click(20, 20, positive=False)
    first = session.objects[0]
    x, y = background_pixel(session)
    session.click(x, y, positive=True)
    assert session.objects[0] is first and len(session.objects) == 2
    assert np.array_equal(session.mask, compose(automatic, session.objects))


def test_undo_redo_and_reset_are_exact(session, automatic):
    masks = [session.mask.copy()]
    session.click(20, 20, positive=False)
    masks.append(session.mask.copy())
    session.click(*background_pixel(session), positive=True)
    masks.append(session.mask.copy())
    assert np.array_equal(session.undo(), masks[1]) and np.array_equal(session.undo(), masks[0])
    assert session.prompts == () and not session.can_undo
    assert np.array_equal(session.redo(), masks[1]) and np.array_equal(session.redo(), masks[2])
    assert np.array_equal(session.reset(), automatic) and session.objects == ()
    assert np.array_equal(session.undo(), masks[2])  # a reset can be undone
    session.undo()
    session.click(5, 90, positive=True)  # a new click after undo drops the redo branch
    assert not session.can_redo
    with pytest.raises(CorrectionError, match="nothing to redo"):
        session.redo()


def test_replaying_stored_prompts_reproduces_the_mask_bit_for_bit(session, scene, automatic, make_prompter, tmp_path):
    session.click(20, 20, positive=False)
    session.click(*background_pixel(session), positive=True)
    rows, cols = np.nonzero(session.objects[1].mask)
    session.click(int(cols[-1]), int(rows[-1]), positive=False)
    session.box(40, 60, 70, 95)
    session.undo()
    session.redo()
    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(scene)
        annotation = store.save_annotation(image_id, session.mask, "corrected", "ana", stored_prompts(session.prompts))
        reloaded = session_prompts(store.prompts(annotation))
    assert reloaded == list(session.prompts)
    # A fresh prompter that finds the embedding on disk, as after a restart.
    with RasterImage(scene) as image:
        again = CorrectionSession(image, "scene-sha", automatic, make_prompter())
        assert np.array_equal(again.replay(reloaded), session.mask)
        assert again.prompter.cache.misses == 0


def test_the_image_is_encoded_once_per_window(session, scene, automatic, make_prompter):
    session.click(20, 20, positive=False)
    session.click(*background_pixel(session), positive=True)
    session.undo()
    session.click(70, 5, positive=True)
    assert session.prompter.cache.misses == 1
    with RasterImage(scene) as image:  # a second user opening the same image, same cache
        other = CorrectionSession(image, "scene-sha", automatic, session.prompter)
        other.click(20, 20, positive=False)
    assert session.prompter.cache.misses == 1


def test_large_images_are_encoded_window_by_window(scene, automatic, make_prompter):
    with RasterImage(scene) as image:
        session = CorrectionSession(image, "scene-sha", automatic, make_prompter(), window_size=48)
        assert session.window_for(0, 0) == (0, 0, 48, 48)
        assert session.window_for(79, 99) == (32, 52, 48, 48)
        session.click(20, 20, positive=False)
        session.click(75, 95, positive=True)
        near, far = session.objects
        assert near.window == (0, 0, 48, 48) and far.window == (32, 52, 48, 48)
        assert session.prompter.cache.misses == 2
        window_pixels = np.zeros_like(automatic)
        window_pixels[52:, 32:] = True
        changed = session.mask != compose(automatic, [near])
        assert not changed[~window_pixels].any()  # the far object only touches its window
        assert np.array_equal(session.mask, compose(automatic, session.objects))


def test_a_box_adds_the_object_inside_it(session, automatic):
    session.box(70, 95, 40, 60)  # corners in any order
    (obj,) = session.objects
    assert session.prompts == (Box(40, 60, 70, 95, True),) and obj.prompt.box == (40, 60, 70, 95)
    sam = expected_object_mask(session, obj.window, SamPrompt(box=(40, 60, 70, 95)))
    assert np.array_equal(session.mask, automatic | sam.mask)


def test_bad_clicks_get_clear_errors_and_change_nothing(session, scene, automatic, tmp_path):
    with pytest.raises(CorrectionError, match="off the image"):
        session.click(WIDTH, 5, positive=True)
    with pytest.raises(CorrectionError, match="off the image"):
        session.click(-1, 5, positive=True)
    with pytest.raises(CorrectionError, match="nothing to remove"):
        session.click(*background_pixel(session), positive=False)
    with pytest.raises(CorrectionError, match="nothing to undo"):
        session.undo()
    assert session.prompts == () and np.array_equal(session.mask, automatic)
    with RasterImage(scene) as image:
        with pytest.raises(CorrectionError, match="no SAM model is loaded"):
            CorrectionSession(image, "scene-sha", automatic, None).click(5, 5, positive=True)
        with pytest.raises(CorrectionError, match="mask is 10x10"):
            CorrectionSession(image, "scene-sha", np.zeros((10, 10), bool), None)
    empty = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 20, 20), np.uint8), nodata=0)
    with RasterImage(empty) as image:
        session = CorrectionSession(image, "empty-sha", np.zeros((20, 20), bool), session.prompter)
        with pytest.raises(CorrectionError, match="no valid pixels"):
            session.click(5, 5, positive=True)


def test_prefetch_encodes_in_the_background(session):
    session.prefetch()
    deadline = time.monotonic() + 30
    key = session.embedding_key(session.window_for(0, 0))
    while key not in session.prompter.cache and time.monotonic() < deadline:
        time.sleep(0.05)
    session.click(20, 20, positive=False)
    assert session.prompter.cache.misses == 1


def test_concurrent_requests_compute_an_embedding_once(tmp_path):
    cache = EmbeddingCache(memory_mb=1, folder=tmp_path)
    key = EmbeddingKey("sha", "model", (0, 0, 8, 8), "bands 1,2,3")
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.2)
        return np.ones((4, 2, 2), np.float32)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(key, compute))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 4 and all(np.array_equal(r, results[0]) for r in results)


def test_cache_bounds_memory_and_recovers_from_damaged_files(tmp_path):
    cache = EmbeddingCache(memory_mb=1, folder=tmp_path)
    keys = [EmbeddingKey("sha", "model", (i, 0, 8, 8), "bands 1,2,3") for i in range(3)]
    for i, key in enumerate(keys):
        cache.get(key, lambda i=i: np.full((256, 512), i, np.float32))  # 0.5 MB each
    assert cache.memory_used <= 2**20
    (tmp_path / keys[0].file_name).write_bytes(b"not an array")
    fresh = EmbeddingCache(memory_mb=1, folder=tmp_path)
    assert fresh.get(keys[1], lambda: pytest.fail("should come from disk"))[0, 0] == 1
    assert fresh.get(keys[0], lambda: np.full((256, 512), 7, np.float32))[0, 0] == 7
    assert np.load(tmp_path / keys[0].file_name)[0, 0] == 7


def test_georeferencing_survives_import_click_correction_export(tmp_path, make_prompter):
    data = np.random.default_rng(2).integers(0, 3000, (4, 60, 80), dtype=np.uint16)
    scene = write_geotiff(tmp_path / "scene.tif", data)
    with AnnotationStore(tmp_path / "labels.db") as store:
        import_images(store, [scene])
        (image_id,) = [r["id"] for r in store.db["images"].rows]
        with store.image_file(image_id) as path, RasterImage(path) as image:
            session = CorrectionSession(image, image_id, np.zeros((60, 80), bool), make_prompter())
            session.click(40, 30, positive=True)
        store.save_annotation(image_id, session.mask, "corrected", "ana", stored_prompts(session.prompts),
                              review="accepted")  # fmt: skip
        export_training_set(store, tmp_path / "export", formats=("geotiff", "geojson"))
    out = tmp_path / "export"
    (row,) = json.loads((out / "manifest.json").read_text())
    with rasterio.open(out / "geotiff" / "label" / f"{row['file']}.tif") as label, rasterio.open(scene) as source:
        assert label.crs == source.crs and label.transform == source.transform
        assert np.array_equal(label.read(1) > 0, session.mask)
    features = json.loads((out / "landslides.geojson").read_text())["features"]
    area = sum(f["properties"]["area_m2"] for f in features)
    assert area == pytest.approx(session.mask.sum() * 10 * 10, rel=0.01)  # 10 m pixels
