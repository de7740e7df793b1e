"""The click-correction engine on a tiny SAM: region refinement, undo/redo/reset, replay, caching."""

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
from translandseg.interactive.correction import Box, Click, CorrectionError, CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache, EmbeddingKey
from translandseg.interactive.prompting import PointPrompter, SamPrompt
from translandseg.interactive.refinement import PointClick, click_region, cut_at_click, disk_edit, merged, plan
from translandseg.loading import load_model
from translandseg.raster import RasterImage

WIDTH, HEIGHT = 80, 100


@pytest.fixture(scope="module")
def loaded(tiny_sam_checkpoint):
    return load_model("tiny", tiny_sam_checkpoint, image_size=64)


@pytest.fixture
def make_prompter(loaded, tmp_path):
    def make(folder=tmp_path / "embeddings"):
        return PointPrompter.of(loaded, EmbeddingCache(64, folder))

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


@pytest.fixture
def whole(scene, automatic, make_prompter):
    """A session whose smallest window is larger than the image: the decoder sees it whole."""
    with RasterImage(scene) as image:
        yield CorrectionSession(image, "scene-sha", automatic, make_prompter(), focus_min_side=128)


def decoder_answer(session, refinement, mask_before):
    """What the point decoder says for ``refinement``, computed outside the session."""
    rgb, valid = session.image.read(rasterio.windows.Window(*refinement.window))
    col, row, width, height = refinement.window
    prompter = session.prompter
    current = mask_before[row : row + height, col : col + width]
    prompt = SamPrompt(refinement.points, refinement.labels, mask_input=prompter.mask_input(current))
    return prompter.predict(prompter.encode(rgb), valid.shape, prompt).mask & valid


def expected_after(session, mask_before, clicks_before, click):
    """The whole mask after ``click``, from the plan, the decoder and the merge called directly."""
    pixel = PointClick(int(click[0]), int(click[1]), click[2])
    refinement = plan(mask_before, clicks_before, pixel, session.focus_min_side, session.window_size)
    answer = decoder_answer(session, refinement, mask_before)
    col, row, width, height = refinement.window
    window_after, _ = merged(mask_before[row : row + height, col : col + width], refinement, answer, pixel,
                             output_side=session.prompter.output_side)  # fmt: skip
    expected = mask_before.copy()
    expected[row : row + height, col : col + width] = window_after
    return expected


def test_a_click_is_planned_prompted_and_merged_as_refinement_says(session, automatic):
    before = session.mask.copy()
    mask = session.click(60.5, 80.5, positive=True)  # far from the landslide: a new region
    assert np.array_equal(mask, expected_after(session, before, [], (60, 80, True)))
    assert mask[80, 60] and session.prompts == (Click(60.5, 80.5, True),)
    assert np.array_equal(mask[:31, :31], automatic[:31, :31])  # the other landslide is untouched
    second = mask.copy()
    mask = session.click(21, 21, positive=False)  # refines the automatic region, both clicks in view
    assert np.array_equal(mask, expected_after(session, second, [PointClick(60, 80, True)], (21, 21, False)))
    assert not mask[21, 21]


def test_a_negative_click_cuts_only_the_piece_it_lands_in_not_a_shave_along_the_outline():
    """The answer drops a false-alarm lobe and also shaves a 2-pixel strip off the whole outline and a
    distant tail: the click takes out the lobe (with its edges) and nothing far from it."""
    removed = np.zeros((128, 128), bool)
    removed[20:22, 10:120] = True  # a thin strip shaved along the outline, linked to the lobe
    removed[22:50, 90:120] = True  # the lobe the click lands in
    removed[100:120, 10:30] = True  # a distant tail the answer dropped
    cut = cut_at_click(removed, 105, 35, output_side=64)
    assert cut[22:50, 90:120].all() and not cut[100:120, 10:30].any() and not cut[20:22, 10:80].any()
    assert not (cut & ~removed).any()


def test_a_negative_click_only_removes_pixels_of_the_region_under_it(session, automatic):
    before = session.mask.copy()
    before_other = session.click(60, 80, positive=True).copy()  # a second landslide
    mask = session.click(20, 20, positive=False)
    region, _ = click_region(before_other, PointClick(20, 20, False), max(WIDTH, HEIGHT))  # the connected part under it
    assert not (mask & ~before_other).any()  # nothing added
    assert np.array_equal((before_other ^ mask) & ~region, np.zeros_like(mask))  # only the region shrinks
    assert not mask[20, 20] and before[20, 20]


def test_the_clicked_pixel_always_ends_with_the_clicked_label(session):
    for x, y, positive in ((60, 80, True), (15, 15, False), (5, 95, True), (25, 12, False), (70, 10, True)):
        try:
            mask = session.click(x + 0.5, y + 0.5, positive)
        except CorrectionError as error:
            assert "nothing to remove" in str(error)
            continue
        assert mask[y, x] == positive, (x, y, positive, session.note)


def test_region_refinement_on_arrays():
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True  # region A
    mask[25:35, 25:35] = True  # region B
    near = PointClick(16, 10, True)  # 2 pixels right of A: refines A
    region, area = click_region(mask, near, 40)
    assert area == (0, 0, 40, 40) and region.sum() == 100 and region[10, 10] and not region[30, 30]
    assert not click_region(mask, PointClick(22, 3, True), 40)[0].any()  # far from both: a new region
    refinement = plan(mask, [PointClick(30, 30, True), PointClick(8, 8, False)], near, 16, 40)
    col, row, width, height = refinement.window  # 1.4 times the 12 columns from A's edge to the click
    assert width == height == 17 and col <= 5 and row <= 5 and col + width >= 17 and row + height >= 15
    assert refinement.labels[-1] == 1 and len(refinement.points) == 2  # (30, 30) lies outside the window
    answer = np.zeros((height, width), bool)  # the decoder grows A rightwards and adds a far blob
    answer[5 - row : 15 - row, 5 - col : 17 - col] = True
    answer[-2:, :2] = True
    current = mask[row : row + height, col : col + width]
    after, fallback = merged(current, refinement, answer, near)
    assert not fallback and after[10 - row, 16 - col] and not after[-1, 0]  # the far blob is not taken
    negative = PointClick(10, 10, False)
    refinement = plan(mask, [], negative, 40, 40)
    after, fallback = merged(mask, refinement, np.ones_like(mask), negative)  # the decoder keeps it all
    assert fallback and not after[10, 10] and after[5, 5] and after[30, 30].all()  # a disk is cut instead


def test_the_fallback_disk_reaches_the_nearest_pixel_with_the_clicked_label():
    mask = np.zeros((300, 300), bool)
    mask[50:150, 50:100] = True  # the region; the analyst's landslide also covers columns 100-109
    click = PointClick(105, 100, True)  # in the middle of the missed strip, 6 pixels from the edge
    refinement = plan(mask, [], click, 300, 300)
    refused = np.zeros_like(mask)  # the decoder leaves the clicked pixel unmarked
    after, fallback = merged(mask, refinement, refused, click, output_side=256)
    added = after & ~mask
    assert fallback and added[100, 100:112].all() and not added[100, 112:].any()  # a disk of radius 6
    assert after[mask].all()  # nothing taken away
    far = PointClick(180, 20, True)  # far from every landslide: the disk stops at four times the smallest
    after, _ = merged(mask, plan(mask, [], far, 300, 300), refused, far, output_side=256)
    assert np.count_nonzero(after & ~mask) == np.count_nonzero(_disk_of(300, 180, 20, 4 * 3))
    inside = PointClick(60, 100, False)  # a negative click 11 pixels from the nearest unmarked pixel
    refinement = plan(mask, [], inside, 300, 300)
    after, fallback = merged(mask, refinement, np.ones_like(mask), inside, output_side=256)
    cut = mask & ~after
    assert fallback and cut[100, 50:72].all() and not cut[100, 72:].any() and not cut[:, :50].any()


def test_on_a_small_window_the_fallback_disk_stays_within_a_twentieth_of_its_side():
    mask = np.zeros((128, 128), bool)  # a Landslide4Sense-sized patch
    mask[10:30, 10:30] = True
    far = PointClick(100, 100, True)  # a missed landslide far from the marked one
    after, fallback = merged(mask, plan(mask, [], far, 128, 128), np.zeros_like(mask), far, output_side=256)
    assert fallback and np.count_nonzero(after & ~mask) == np.count_nonzero(_disk_of(128, 100, 100, 128 / 20))
    assert after[mask].all()


def test_an_answer_that_undoes_an_earlier_click_is_dropped():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 20:80] = True
    earlier = PointClick(40, 50, True)  # the analyst marked this part as landslide
    click = PointClick(30, 50, False)  # and now removes the part just west of it
    refinement = plan(mask, [earlier], click, 100, 100)
    answer = np.zeros_like(mask)  # the decoder's answer agrees at the click but drops the earlier click too
    after, fallback = merged(mask, refinement, answer, click, output_side=256)
    assert fallback == "undid an earlier click" and after[50, 40] and not after[50, 30]  # a disk is cut instead
    assert np.count_nonzero(mask & ~after) < np.count_nonzero(mask) / 5
    painted_over = mask.copy()
    painted_over[45:55, 38:43] = False  # since the click the analyst erased its pixel: no constraint left
    after, fallback = merged(painted_over, plan(painted_over, [earlier], click, 100, 100), answer, click)
    assert fallback == "" and not after[50, 30] and not after[35, 40]
    assert after[50, 75] and after[75, 75]  # the far side stays: a negative click cuts near itself


def _disk_of(side, x, y, radius):
    rows, cols = np.ogrid[:side, :side]
    return (rows - y) ** 2 + (cols - x) ** 2 <= radius**2


def test_undo_redo_and_reset_are_exact(session, automatic):
    masks = [session.mask.copy()]
    session.click(20, 20, positive=False)
    masks.append(session.mask.copy())
    session.click(60, 80, positive=True)
    masks.append(session.mask.copy())
    assert np.array_equal(session.undo(), masks[1]) and np.array_equal(session.undo(), masks[0])
    assert session.prompts == () and not session.can_undo
    assert np.array_equal(session.redo(), masks[1]) and np.array_equal(session.redo(), masks[2])
    assert np.array_equal(session.reset(), automatic) and session.prompts == ()
    assert np.array_equal(session.undo(), masks[2])  # a reset can be undone
    session.undo()
    session.click(5, 90, positive=True)  # a new click after undo drops the redo branch
    assert not session.can_redo
    with pytest.raises(CorrectionError, match="nothing to redo"):
        session.redo()


def test_replaying_stored_prompts_reproduces_the_mask_bit_for_bit(session, scene, automatic, make_prompter, tmp_path):
    session.click(20, 20, positive=False)
    session.click(60, 80, positive=True)
    session.click(62, 82, positive=False) if session.mask[82, 62] else session.click(62, 82, positive=True)
    session.box(40, 60, 70, 95)
    session.undo()
    session.redo()
    with AnnotationStore(tmp_path / "labels.db") as store:
        image_id = store.add_image(scene)
        annotation = store.save_annotation(image_id, session.mask, "clicked", "ana", stored_prompts(session.prompts))
        reloaded = session_prompts(store.prompts(annotation))
    assert reloaded == list(session.prompts)
    # A fresh prompter that finds the embedding on disk, as after a restart.
    with RasterImage(scene) as image:
        again = CorrectionSession(image, "scene-sha", automatic, make_prompter())
        assert np.array_equal(again.replay(reloaded), session.mask)
        assert again.prompter.cache.misses == 0


def test_a_primed_decoder_is_shown_the_click_s_disk_edit_and_replays_bit_for_bit(loaded, scene, automatic, tmp_path):
    primed = PointPrompter(loaded.model, loaded.prompt_decoder, loaded.prompt_model_id, EmbeddingCache(64),
                           primed=True)  # fmt: skip
    click = PointClick(60, 80, True)  # far from the automatic landslide
    refinement = plan(automatic, [], click, 128, 128)  # the whole image
    shown = disk_edit(automatic, refinement, click, output_side=primed.output_side)
    assert shown[80, 60] and not automatic[80, 60] and np.array_equal(shown & ~automatic, shown ^ automatic)
    prompt = primed.refinement_prompt(automatic, refinement, click)
    np.testing.assert_array_equal(prompt.mask_input, primed.mask_input(shown))
    plain = PointPrompter.of(loaded, EmbeddingCache(0)).refinement_prompt(automatic, refinement, click)
    np.testing.assert_array_equal(plain.mask_input, primed.mask_input(automatic))
    assert prompt.points == plain.points and prompt.labels == plain.labels
    with RasterImage(scene) as image:
        session = CorrectionSession(image, "scene-sha", automatic, primed, focus_min_side=128)
        for x, y, positive in ((60, 80, True), (15, 15, False), (5, 95, True)):
            assert session.click(x + 0.5, y + 0.5, positive)[y, x] == positive
        mask = session.mask.copy()
        assert np.array_equal(session.replay(session.prompts), mask)


def test_the_image_is_encoded_once_per_window(whole, scene, automatic):
    session = whole
    session.click(20, 20, positive=False)
    session.click(60, 80, positive=True)
    session.undo()
    session.click(70, 5, positive=True)
    assert session.prompter.cache.misses == 1  # the image fits the smallest window: one embedding
    with RasterImage(scene) as image:  # a second user opening the same image, same cache
        other = CorrectionSession(image, "scene-sha", automatic, session.prompter, focus_min_side=128)
        other.click(20, 20, positive=False)
    assert session.prompter.cache.misses == 1


def test_large_images_are_refined_in_windows_around_the_region(scene, automatic, make_prompter):
    with RasterImage(scene) as image:
        session = CorrectionSession(image, "scene-sha", automatic, make_prompter(), window_size=64,
                                    focus_min_side=32)  # fmt: skip
        before = session.mask.copy()
        session.click(20, 20, positive=False)  # the region (10-29) enlarged to a 32-pixel window
        rows, cols = np.nonzero(session.mask != before)
        assert rows.max() - rows.min() < 32 and cols.max() - cols.min() < 32
        session.click(75, 95, positive=True)  # far: its own window in the corner
        assert session.prompter.cache.misses == 2
        assert session.mask[95, 75] and np.array_equal(session.mask[:40, :40], session.undo()[:40, :40])


def test_a_box_adds_what_the_decoder_finds_inside_it(whole, automatic):
    session = whole
    mask = session.box(70, 95, 40, 60)  # corners in any order
    assert session.prompts == (Box(40, 60, 70, 95, True),)
    rgb, valid = session.image.read(rasterio.windows.Window(0, 0, WIDTH, HEIGHT))
    answer = session.prompter.predict(session.prompter.encode(rgb), valid.shape, SamPrompt(box=(40, 60, 70, 95))).mask
    inside = np.zeros_like(answer)
    inside[60:95, 40:70] = True
    assert np.array_equal(mask, automatic | (answer & inside))


def test_bad_clicks_get_clear_errors_and_change_nothing(session, scene, automatic, tmp_path):
    with pytest.raises(CorrectionError, match="off the image"):
        session.click(WIDTH, 5, positive=True)
    with pytest.raises(CorrectionError, match="off the image"):
        session.click(-1, 5, positive=True)
    with pytest.raises(CorrectionError, match="nothing to remove"):
        session.click(60, 80, positive=False)
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
    data = np.random.default_rng(3).integers(1, 255, (3, 30, 30), dtype=np.uint8)
    data[:, :, :10] = 0  # a nodata strip on the left
    partly = write_geotiff(tmp_path / "partly.tif", data, nodata=0)
    with RasterImage(partly) as image:
        session = CorrectionSession(image, "partly-sha", np.zeros((30, 30), bool), session.prompter)
        with pytest.raises(CorrectionError, match="nodata"):
            session.click(3, 15, positive=True)
        assert session.prompts == () and not session.mask.any()
        session.click(20, 15, positive=True)
        assert not session.mask[:, :10].any()  # nothing is marked on nodata


def test_prefetch_encodes_in_the_background(whole):
    session = whole
    session.prefetch()
    deadline = time.monotonic() + 30
    key = session.embedding_key((0, 0, WIDTH, HEIGHT))
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
        store.save_annotation(image_id, session.mask, "clicked", "ana", stored_prompts(session.prompts),
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
