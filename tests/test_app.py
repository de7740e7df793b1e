"""The web app's event handlers, called directly on a tiny SAM, a trained adapter and a temp store."""

import base64
import io
import zipfile

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from annotations import AnnotationStore
from conftest import brute_force_stroke, write_geotiff
from translandseg.app import webapp
from translandseg.app.canvas import Gesture, edges, to_prompt
from translandseg.download import sha256_of
from translandseg.interactive.correction import Click
from translandseg.interactive.painting import Stroke
from translandseg.predict import Predictor

STRETCH = "2-98 %"


def app_args(tmp_path, adapter, checkpoint, *extra):
    return webapp.parse_args(["--adapter", str(adapter), "--sam-checkpoint", str(checkpoint), "--data-dir",
                              str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), *extra])  # fmt: skip


@pytest.fixture
def workspace(tmp_path, adapter, tiny_sam_checkpoint):
    return webapp.open_workspace(app_args(tmp_path, adapter, tiny_sam_checkpoint))


@pytest.fixture
def scenes(tmp_path):
    rng = np.random.default_rng(0)
    return [write_geotiff(tmp_path / f"scene{i}.tif", rng.integers(0, 255, (4, 80, 90), dtype=np.uint8))
            for i in range(2)]  # fmt: skip


def decode(data_url: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def gesture(kind, points, positive=True, zoom=1.0, pan=(0.0, 0.0), radius=0.0):
    """What the canvas sends for a finished gesture (points in canvas pixels)."""
    data = {"kind": kind, "positive": positive, "points": points, "zoom": zoom, "pan": list(pan), "radius": radius}
    return gr.EventData(None, data)


def click(session, x, y, positive=True):
    """A click at the centre of picture pixel (x, y), at zoom 1."""
    return webapp.gesture(gesture("point", [[x + 0.5, y + 0.5]], positive), session)


def test_upload_shows_the_automatic_mask_and_queues_every_image(workspace, scenes):
    session, shown, info = webapp.upload(workspace, [str(s) for s in scenes], "ana", "", STRETCH, None)
    assert (shown["width"], shown["height"]) == (90, 80) and shown["backdrop"].startswith("data:image/png;base64,")
    assert decode(shown["mask_fill"])[..., 3].astype(bool).tolist() == session.mask.tolist()
    assert "Automatic mask by adapter-" in info and "2 new image(s) added to the queue." in info
    queue = webapp.queue_rows(workspace)
    assert [row[:2] for row in queue] == [["scene0.tif", "unlabelled"], ["scene1.tif", "unlabelled"]]
    with AnnotationStore(workspace.db_path) as store:
        (prediction,) = store.db["predictions"].rows
        assert prediction["model_version"] == workspace.model.version
        (model,) = store.models()
        assert model["version"] == workspace.model.version and model["metrics"]["miou"] >= 0
    again, info = webapp.edit("undo", session)
    assert again == gr.skip() and "nothing to undo" in info.lower()  # the canvas is left as it is


def test_the_app_can_average_eight_views_for_its_automatic_masks(tmp_path, adapter, tiny_sam_checkpoint, scenes):
    assert webapp.open_workspace(app_args(tmp_path / "one", adapter, tiny_sam_checkpoint)).automatic_views == 1
    workspace = webapp.open_workspace(app_args(tmp_path / "eight", adapter, tiny_sam_checkpoint, "--views", "8"))
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    model = workspace.model.model
    eight = Predictor(model, views=8).predict_mask(session.image)
    assert np.array_equal(session.correction.automatic, eight)
    assert not np.array_equal(eight, Predictor(model).predict_mask(session.image))
    with pytest.raises(SystemExit):
        app_args(tmp_path, adapter, tiny_sam_checkpoint, "--views", "3")


def test_the_app_takes_the_arithmetic_of_its_automatic_masks(tmp_path, adapter, tiny_sam_checkpoint, scenes):
    assert webapp.open_workspace(app_args(tmp_path / "auto", adapter, tiny_sam_checkpoint)).automatic_precision == "auto"
    args = app_args(tmp_path / "exact", adapter, tiny_sam_checkpoint, "--precision", "float32")
    workspace = webapp.open_workspace(args)
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    model = workspace.model.model
    exact = Predictor(model, precision="float32").predict_mask(session.image)
    assert np.array_equal(session.correction.automatic, exact)
    assert not np.array_equal(exact, Predictor(model, precision="bfloat16").predict_mask(session.image))
    with pytest.raises(SystemExit):
        app_args(tmp_path, adapter, tiny_sam_checkpoint, "--precision", "float16")


def test_the_app_can_see_busy_scenes_in_native_windows(tmp_path, adapter, tiny_sam_checkpoint, scenes):
    args = app_args(tmp_path, adapter, tiny_sam_checkpoint, "--scale", "native", "--tile-size", "32",
                    "--focus-side", "32")  # fmt: skip
    workspace = webapp.open_workspace(args)
    session, _, info = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert "(native 32 px windows)." in info  # the analyst is told how the mask was made
    assert session.correction.focus_min_side == 32
    click(session, 40, 30)
    clicked = session.correction.mask.copy()
    assert session.correction.prompts and np.array_equal(session.correction.replay(session.correction.prompts), clicked)
    model = workspace.model.model
    expected = Predictor(model, 32, scale="native").predict_mask(session.image)
    assert np.array_equal(session.correction.automatic, expected)
    assert not np.array_equal(expected, Predictor(model).predict_mask(session.image))
    for option in ("--tile-size", "--focus-side"):
        for wrong in ("8", "0", "wide"):
            with pytest.raises(SystemExit):
                app_args(tmp_path, adapter, tiny_sam_checkpoint, option, wrong)


def test_the_app_takes_a_threshold_for_its_automatic_masks(tmp_path, adapter, tiny_sam_checkpoint, scenes):
    workspace = webapp.open_workspace(app_args(tmp_path, adapter, tiny_sam_checkpoint, "--threshold", "0.3"))
    session, _, info = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert "(threshold 0.3)." in info  # the analyst is told how the mask was made
    expected = Predictor(workspace.model.model, threshold=0.3).predict_mask(session.image)
    assert workspace.automatic_threshold == 0.3 and np.array_equal(session.correction.automatic, expected)
    assert not np.array_equal(expected, Predictor(workspace.model.model).predict_mask(session.image))
    for wrong in ("1.5", "0", "half"):
        with pytest.raises(SystemExit):
            app_args(tmp_path, adapter, tiny_sam_checkpoint, "--threshold", wrong)


def test_clicks_correct_the_mask_and_report_map_coordinates(workspace, scenes):
    session, before, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    target = session.mask.copy()
    after, info = click(session, 45, 40)
    assert after["prompts"] == [{"kind": "point", "positive": True, "x": 45.5, "y": 40.5}]
    assert "Positive click at pixel (45, 40) = (500455.00, 2999595.00) EPSG:32648" in info and " ms" in info
    assert after["mask_fill"] != before["mask_fill"] and "automatic_fill" not in after  # the browser keeps that
    _, info = webapp.edit("undo", session)
    assert "0 edit(s)" in info and np.array_equal(session.mask, target)
    _, info = webapp.edit("redo", session)
    assert "1 edit(s)" in info
    _, info = webapp.edit("reset", session)
    assert np.array_equal(session.mask, target) and "automatic mask" in info
    _, info = click(session, 500, 40)  # off the picture
    assert "not applied" in info and "off the image" in info


def test_save_review_and_next_then_reopen_restores_mask_and_prompts(workspace, scenes):
    session, *_ = webapp.upload(workspace, [str(s) for s in scenes], "", "", STRETCH, None)
    click(session, 45, 40)
    clicked_mask = session.mask.copy()
    first_id = session.image_id
    info, _ = webapp.save(workspace, "accepted", "", "", session)
    assert "Enter your name" in info
    info, _ = webapp.save(workspace, "rejected", "ana", "", session)
    assert "Not saved" in info and "reason" in info
    info, reason = webapp.save(workspace, "accepted", "ana", "", session)
    assert info.endswith("accepted.") and reason == ""
    session, _, info = webapp.open_next(workspace, info, "", STRETCH, session)
    assert "accepted. Next: **scene1.tif**" in info and session.image_id != first_id
    queue = webapp.queue_rows(workspace)
    assert queue[-1][:3] == ["scene0.tif", "accepted", "ana"] and queue[0][1] == "unlabelled"  # waiting work first
    with AnnotationStore(workspace.db_path) as store:
        annotation = store.latest_annotation(first_id)
        assert (annotation.source, annotation.status, annotation.reviewer) == ("clicked", "accepted", "ana")
        assert [(p.x, p.y, p.label) for p in store.prompts(annotation.id)] == [(45, 40, 1)]
        assert annotation.model_version == workspace.model.version
    reopened, picture, info = webapp.open_from_queue(workspace, gr.SelectData(None, {"index": [0, 0], "value": "",
                                                     "row_value": queue[-1]}), "ana", "", STRETCH, session)  # fmt: skip
    assert "Restored the accepted clicked mask saved by ana" in info
    assert np.array_equal(reopened.mask, clicked_mask) and len(reopened.correction.prompts) == 1
    assert reopened.correction.can_undo  # the restored clicks can be undone one by one


def test_unsaved_edits_are_kept_as_a_draft_and_restored_on_reopening(workspace, scenes):
    """Issue 31.2: leaving an image (another image, a reload, a crash) keeps its unsaved edits as the
    author's draft; opening it again replays them; a save drops the draft."""
    select = gr.SelectData(None, {"index": [0, 0], "value": "", "row_value": ["", "", "", None]})
    session, *_ = webapp.upload(workspace, [str(s) for s in scenes], "ana", "", STRETCH, None)
    click(session, 45, 40)
    webapp.gesture(gesture("stroke", [[5, 5], [20, 5]], radius=3), session)
    edited, first_id = session.mask.copy(), session.image_id
    select.row_value[-1] = next(row[-1] for row in webapp.queue_rows(workspace) if row[-1] != first_id)
    asked, _, info = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, session)
    assert asked is session and session.leaving_for == select.row_value[-1] and "unsaved edits" in info
    select.row_value[-1] = first_id  # as after a reload: a new browser session, nothing in memory
    again, _, info = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, None)
    assert "Restored 2 unsaved edit(s)" in info and np.array_equal(again.mask, edited) and again.unsaved
    bea, _, info = webapp.open_from_queue(workspace, select, "bea", "", STRETCH, None)
    assert "Restored" not in info and not np.array_equal(bea.mask, edited)  # a draft is its author's
    webapp.save(workspace, None, "ana", "", again)
    with AnnotationStore(workspace.db_path) as store:
        assert store.draft(first_id, "ana") is None
    webapp.gesture(gesture("stroke", [[30, 30], [40, 30]], radius=3), bea)  # a draft on the label before ana's
    _, _, info = webapp.open_from_queue(workspace, select, "bea", "", STRETCH, None)
    assert "earlier label" in info and "dropped" in info


def test_leaving_an_image_with_unsaved_edits_asks_save_discard_or_stay(workspace, scenes):
    """Issue 31.2: opening another image over unsaved edits asks first; each answer does what it says."""
    session, *_ = webapp.upload(workspace, [str(s) for s in scenes], "ana", "", STRETCH, None)
    first, second = session.image_id, next(row[-1] for row in webapp.queue_rows(workspace) if row[-1] != session.image_id)
    select = gr.SelectData(None, {"index": [0, 0], "value": "", "row_value": ["", "", "", "", second]})

    def edit_then_leave():
        click(session, 45, 40)
        asked, picture, info = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, session)
        assert asked is session and session.image_id == first and "save them, discard them, or stay" in info
        assert webapp.leave_offer(session).visible

    edit_then_leave()
    stayed, _, info = webapp.leave(workspace, "stay", "ana", "", "", STRETCH, session)
    assert stayed is session and "Still on" in info and session.edited_unsaved and not session.leaving_for
    assert not webapp.leave_offer(session).visible
    asked, *_ = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, session)
    opened, _, info = webapp.leave(workspace, "discard", "ana", "", "", STRETCH, session)
    assert opened.image_id == second and "Discarded" in info
    with AnnotationStore(workspace.db_path) as store:
        assert store.draft(first, "ana") is None and store.latest_annotation(first) is None
    select.row_value[-1] = first
    session, *_ = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, opened)  # nothing unsaved: opens
    select.row_value[-1] = second
    edit_then_leave()
    mask = session.mask.copy()
    refused, _, info = webapp.leave(workspace, "save", "", "", "", STRETCH, session)  # no name: not saved, stays
    assert refused is session and "Enter your name" in info
    asked, *_ = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, session)
    opened, _, info = webapp.leave(workspace, "save", "ana", "", "", STRETCH, session)
    assert opened.image_id == second and info.startswith("Saved")
    with AnnotationStore(workspace.db_path) as store:
        assert np.array_equal(store.latest_annotation(first).mask, mask)


def test_export_tab_offers_a_zip(workspace, scenes):
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert webapp.export(workspace, ["accepted"], ["png"])[0] is None  # nothing accepted yet
    webapp.save(workspace, "accepted", "ana", "", session)
    archive, info = webapp.export(workspace, ["accepted"], ["png", "geojson"])
    names = zipfile.ZipFile(archive).namelist()
    assert "Exported" in info and any(n.endswith("manifest.csv") for n in names)
    assert any(n.endswith("landslides.geojson") for n in names) and any("/label/" in n for n in names)


def huge_png(path):
    """A PNG whose header claims 20000x20000 pixels (more than Pillow decodes): a few bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_bad_uploads_get_clear_messages_and_lose_nothing(workspace, scenes, tmp_path, adapter, tiny_sam_checkpoint):
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    webapp.save(workspace, "accepted", "ana", "", session)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    two_bands = write_geotiff(tmp_path / "two.tif", np.zeros((2, 20, 20), np.uint16))
    bad = [tmp_path / "empty.png", tmp_path / "notes.txt", tmp_path / "cut.png"]
    kept, _, info = webapp.upload(workspace, [str(p) for p in bad], "ana", "", STRETCH, session)
    assert kept is session and "empty (0 bytes)" in info and "not a readable image" in info and "corrupt" in info
    _, _, info = webapp.upload(workspace, [str(two_bands)], "ana", "", STRETCH, session)
    assert "2-band raster has no default RGB rendering" in info
    _, _, info = webapp.upload(workspace, [str(two_bands)], "ana", "1,2,2", STRETCH, session)
    assert "**two.tif**" in info  # opens once bands are chosen
    _, _, info = webapp.upload(workspace, [str(huge_png(tmp_path / "huge.png"))], "ana", "", STRETCH, session)
    assert "huge.png has 20000x20000 pixels, more than 100,000,000; cut it into smaller GeoTIFFs" in info
    assert "decompression bomb" not in info  # the app's own limit, before any decoding
    assert len(list(workspace.images_dir.iterdir())) == 2  # the scene and the 2-band raster: no refused file kept
    _, _, info = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, session)
    assert "It was in the queue already." in info
    small = webapp.open_workspace(app_args(tmp_path, adapter, tiny_sam_checkpoint, "--max-pixels", "1000"))
    _, _, info = webapp.upload(small, [str(scenes[1])], "ana", "", STRETCH, None)
    assert "more than 1,000; cut it into smaller GeoTIFFs" in info
    with AnnotationStore(workspace.db_path) as store:
        assert store.counts_by_status()["accepted"] == 1


def test_many_bands_default_to_true_colour(workspace, tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (14, 32, 32), dtype=np.uint16)  # Landslide4Sense-like
    session, _, info = webapp.upload(workspace, [str(write_geotiff(tmp_path / "s2.tif", data))], "a", "", STRETCH, None)  # fmt: skip
    assert "14 band(s) shown as bands 4,3,2, 2-98%" in info
    grey = write_geotiff(tmp_path / "grey.tif", data[:1])
    _, _, info = webapp.upload(workspace, [str(grey)], "a", "", "min-max", session)
    assert "1 band(s) shown as bands 1,1,1, 0-100%" in info


def test_without_a_model_the_app_explains_and_still_labels(tmp_path, scenes):
    args = webapp.parse_args(["--sam", "vit_b", "--sam-checkpoint", str(tmp_path / "missing.pth"),
                              "--data-dir", str(tmp_path / "data")])  # fmt: skip
    workspace = webapp.open_workspace(args)
    assert workspace.model is None and webapp.banner(workspace).startswith("**No model is loaded")
    session, picture, info = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert "No automatic mask" in info and not session.mask.any()
    _, info = click(session, 10, 10)
    assert "no SAM model is loaded" in info
    assert "No model is loaded" in webapp.model_report(workspace)


def test_sam_without_adapter_gives_clicks_but_no_automatic_mask(tmp_path, scenes, tiny_sam_checkpoint):
    args = webapp.parse_args(["--sam", "tiny", "--sam-checkpoint", str(tiny_sam_checkpoint),
                              "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    workspace = webapp.open_workspace(args)
    assert "No trained adapter" in webapp.banner(workspace)
    session, _, info = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert "No automatic mask" in info
    _, info = click(session, 10, 10)
    assert "mask updated" in info
    info, _ = webapp.save(workspace, None, "ana", "", session)
    with AnnotationStore(workspace.db_path) as store:
        assert store.latest_annotation(session.image_id).source == "clicked"


def test_the_example_scene_opens_georeferenced(workspace):
    session, picture, info = webapp.open_example(workspace, "ana", "", STRETCH, None)
    assert "**example_hillside.tif**: 384x384 px, 3 band(s)" in info and "EPSG:32648" in info
    assert session.map_coordinates(0, 0) == (435005.0, 2909995.0, "EPSG:32648")


def test_failed_first_run_download_explains_how_to_place_the_checkpoint(tmp_path, monkeypatch):
    from dataclasses import replace

    from translandseg import sam_checkpoints

    official = sam_checkpoints.OFFICIAL_CHECKPOINTS["vit_b"]
    unreachable = replace(official, url="http://127.0.0.1:9/sam_vit_b_01ec64.pth")  # discard port: refused
    monkeypatch.setitem(sam_checkpoints.OFFICIAL_CHECKPOINTS, "vit_b", unreachable)
    args = webapp.parse_args(["--sam", "vit_b", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                              str(tmp_path / "cache")])  # fmt: skip
    workspace = webapp.open_workspace(args)
    message = webapp.banner(workspace)
    assert workspace.model is None and "checkpoint unavailable" in message
    assert str(tmp_path / "cache" / "sam_vit_b_01ec64.pth") in message and "--sam-checkpoint" in message


def test_a_real_bijie_image_through_the_app(workspace, samples):
    from translandseg.data import find_pairs
    from translandseg.raster import read_label

    pair = find_pairs(samples / "bijie")[0]
    label = read_label(pair.label)
    session, shown, info = webapp.upload(workspace, [str(pair.image)], "ana", "", STRETCH, None)
    assert (shown["height"], shown["width"]) == session.quicklook.shape[:2] and "not georeferenced" in info
    rows, cols = np.nonzero(label)
    x, y = int(np.median(cols)), int(np.median(rows))
    scale = session.quicklook.shape[1] / session.image.width
    _, info = click(session, int(x * scale), int(y * scale))
    assert "mask updated" in info and session.mask.shape == label.shape
    webapp.save(workspace, "accepted", "ana", "", session)
    archive, _ = webapp.export(workspace, ["accepted"], ["png"])
    with zipfile.ZipFile(archive) as z:
        (name,) = [n for n in z.namelist() if "/label/" in n and n.endswith(".png")]
        exported = np.array(Image.open(z.open(name))) > 0
    assert np.array_equal(exported, session.mask)


def test_large_rasters_show_a_quicklook_and_full_resolution_windows(workspace, tmp_path):
    data = np.random.default_rng(5).integers(0, 255, (3, 1200, 3000), dtype=np.uint8)
    large = write_geotiff(tmp_path / "large.tif", data)
    session, shown, _ = webapp.upload(workspace, [str(large)], "ana", "", STRETCH, None)
    assert (shown["width"], shown["height"]) == (1536, 614)  # the quicklook
    assert to_prompt(session, Gesture("point", True, ((768.5, 307.5),), 1.0, (0, 0))) == Click(1500, 600, True)
    views = webapp.view_choices(session).choices
    assert [v[0] for v in views][:3] == ["whole image", "window at x 0, y 0", "window at x 1024, y 0"]
    shown = webapp.show_view("window at x 1976, y 176", session)
    assert np.array_equal(decode(shown["backdrop"]), data[:, 176:1200, 1976:3000].transpose(1, 2, 0))
    shown, info = click(session, 10, 20)
    assert "pixel (1986, 196)" in info and shown["prompts"][0]["x"] == 10.5 and shown["backdrop"] is None
    rows, cols = np.nonzero(session.correction.mask != session.correction.automatic)  # a window around the click
    assert cols.min() <= 1986 <= cols.max() and rows.min() <= 196 <= rows.max()
    assert cols.max() - cols.min() < 1024 and rows.max() - rows.min() < 1024


def test_two_analysts_on_one_image_a_stale_save_is_refused_and_nothing_is_lost(workspace, scenes):
    first, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    row = webapp.queue_rows(workspace)[0]
    second, *_ = webapp.open_from_queue(workspace, gr.SelectData(None, {"index": [0, 0], "value": "", "row_value": row}),
                                        "ana", "", STRETCH, None)  # fmt: skip
    assert second.image_id == first.image_id
    webapp.save(workspace, "accepted", "ana", "", first)
    click(second, 45, 40)
    info, _ = webapp.save(workspace, None, "bob", "", second)
    assert webapp.open_next(workspace, info, "", STRETCH, second)[0] is second  # refused: it stays open
    assert "tls-problem" in info and "Not saved: ana saved a new mask marked accepted at" in info
    with AnnotationStore(workspace.db_path) as store:
        latest = store.latest_annotation(first.image_id)
        assert (latest.status, latest.annotator) == ("accepted", "ana") and store.db["annotations"].count == 1
    reopened, *_ = webapp.open_from_queue(workspace, gr.SelectData(None, {"index": [0, 0], "value": "",
                                          "row_value": row}), "ana", "", STRETCH, second)  # fmt: skip
    click(reopened, 45, 40)
    info, _ = webapp.save(workspace, "needs-work", "bob", "", reopened)
    assert info.startswith("Saved scene0.tif")  # built on the accepted version: allowed


def test_a_rejection_reason_is_cleared_once_stored(workspace, scenes):
    session, *_ = webapp.upload(workspace, [str(s) for s in scenes], "ana", "", STRETCH, None)
    info, reason = webapp.save(workspace, "rejected", "ana", "   ", session)
    assert "Not saved" in info and reason == "   "  # refused: what was typed stays
    info, reason = webapp.save(workspace, "rejected", "ana", "Road cut, not a landslide", session)
    assert "rejected" in info and reason == ""
    webapp.save(workspace, "accepted", "ana", reason, session)
    with AnnotationStore(workspace.db_path) as store:
        reasons = [r["reason"] for r in store.db["reviews"].rows_where(order_by="id")]
    assert reasons == ["Road cut, not a landslide", ""]


def test_uploading_again_opens_the_first_new_image_and_the_queue_filters(workspace, scenes):
    webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    session, _, info = webapp.upload(workspace, [str(scenes[0]), str(scenes[1])], "ana", "", STRETCH, None)
    assert session.name == "scene1.tif" and "**scene1.tif**" in info
    webapp.save(workspace, "accepted", "ana", "", session)
    assert [r[0] for r in webapp.queue_rows(workspace, "accepted")] == ["scene1.tif"]
    assert [r[0] for r in webapp.queue_rows(workspace, "unlabelled")] == ["scene0.tif"]
    assert [r[0] for r in webapp.queue_rows(workspace)] == ["scene0.tif", "scene1.tif"]


def test_uploads_are_kept_beside_the_database_and_refusals_name_the_users_file(tmp_path, adapter, tiny_sam_checkpoint):
    db = tmp_path / "elsewhere" / "labels.db"
    args = webapp.parse_args(["--adapter", str(adapter), "--sam-checkpoint", str(tiny_sam_checkpoint), "--db", str(db),
                              "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    workspace = webapp.open_workspace(args)
    assert workspace.db_path == db and workspace.images_dir == db.parent / "images"
    (tmp_path / "notes.png").write_text("not an image")
    two_bands = write_geotiff(tmp_path / "two.tif", np.zeros((2, 20, 20), np.uint16))
    _, _, info = webapp.upload(workspace, [str(tmp_path / "notes.png"), str(two_bands)], "ana", "", STRETCH, None)
    assert "notes.png is not a readable image" in info and "Cannot open two.tif: a 2-band raster" in info
    digest = sha256_of(tmp_path / "notes.png")
    assert digest[:8] not in info and str(workspace.images_dir) not in info and "--bands" not in info
    assert "R,G,B" in info


def test_the_model_tab_reads_as_words_and_export_counts_each_format(workspace, tmp_path):
    report = webapp.model_report(workspace)  # issue 31.9: a few lines in words; the table behind a toggle
    assert "On images it was not trained on: automatic mask IoU **" in report and "|" not in report
    details = webapp.model_details(workspace)
    assert "| landslide IoU |" in details and "| mean IoU (landslide, background) |" in details
    assert webapp.headline({"iou": 0.584, "noc85_from_automatic": 12.28}) == (
        "On images it was not trained on: automatic mask IoU **0.58**; clicks to reach IoU 0.85 from it: "
        "**12.3** on average.")
    assert webapp.metric_label("noc85_from_automatic") == "clicks to reach IoU 0.85 (NoC@85), from the automatic mask"
    assert webapp.metric_label("iou@3_from_empty") == "IoU after 3 click(s), from the empty mask"
    assert webapp.metric_label("bijie-full/noc85_from_automatic").endswith("from the automatic mask on bijie-full")
    assert webapp.metric_label("landslide4sense-rgb/iou") == "landslide IoU on landslide4sense-rgb"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    session, *_ = webapp.upload(workspace, [str(tmp_path / "p.png")], "ana", "", STRETCH, None)
    click(session, 25, 20)
    webapp.save(workspace, "accepted", "ana", "", session)
    archive, info = webapp.export(workspace, ["accepted"], ["png", "geojson", "coco"])
    assert zipfile.is_zipfile(archive) and "1 image(s)" in info and "PNG: 1 image/label pairs" in info
    assert "GeoJSON: 0 landslide polygons from 0 georeferenced image(s) (empty: no exported image has a CRS" in info
    assert "COCO: " in info


def test_with_accounts_only_reviewers_accept_or_reject(tmp_path, adapter, tiny_sam_checkpoint, scenes, monkeypatch):
    from annotations.accounts import AccountError, Accounts, add_user
    from translandseg.cli import main

    users = tmp_path / "users.txt"
    add_user(users, "ana", "annotator", "ana-password")
    add_user(users, "rev", "reviewer", "rev-password")
    with pytest.raises(AccountError, match="at least 8"):
        add_user(users, "eve", "reviewer", "short")
    accounts = Accounts(users)
    assert accounts.login("rev", "rev-password") and not accounts.login("rev", "ana-password")
    assert not accounts.login("nobody", "rev-password") and "rev-password" not in users.read_text()
    workspace = webapp.open_workspace(app_args(tmp_path, adapter, tiny_sam_checkpoint, "--users", str(users)))
    ana, rev = gr.Request(username="ana"), gr.Request(username="rev")
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "", "", STRETCH, None, ana)
    info, _ = webapp.save(workspace, "accepted", "typed-name", "", session, ana)
    assert "only reviewers can mark an image accepted; ana is an annotator" in info
    info, _ = webapp.save(workspace, "needs-work", "", "", session, ana)
    assert "needs-work" in info
    info, _ = webapp.save(workspace, "accepted", "", "", session, rev)
    assert "accepted" in info and "Not saved" not in info
    with AnnotationStore(workspace.db_path) as store:
        statuses = [(r["status"], r["reviewer"]) for r in store.db["reviews"].rows_where(order_by="id")]
        assert statuses == [("needs-work", "ana"), ("accepted", "rev")]
        assert store.latest_annotation(session.image_id).annotator == "ana"  # the login, not the typed name
    monkeypatch.setattr("sys.stdin", io.StringIO("bob-password\n"))  # not a terminal: the password is read once
    assert main(["add-user", str(users), "bob", "--role", "reviewer"]) == 0
    assert Accounts(users).login("bob", "bob-password") and Accounts(users).users["bob"].role == "reviewer"


@pytest.mark.parametrize("zoom, pan", [(0.5, (10.0, 5.0)), (1.0, (0.0, 0.0)), (4.0, (-120.0, -60.0))])
def test_a_stroke_covers_the_right_full_resolution_pixels_at_any_zoom(workspace, scenes, zoom, pan):
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    before = session.mask.copy()
    path = [(20.25, 30.75), (50.125, 35.5), (52.0, 60.5)]  # full-resolution image coordinates, exact in binary
    canvas_points = [[x * zoom + pan[0], y * zoom + pan[1]] for x, y in path]
    _, info = webapp.gesture(gesture("stroke", canvas_points, True, zoom, pan, radius=2.5), session)
    assert "Brush stroke (5 px wide): mask updated" in info
    valid = session.image.read()[1]  # the random scene has a few pixels read as nodata; they stay as they were
    assert np.array_equal(session.mask, before | (brute_force_stroke(path, 2.5, before.shape) & valid))
    webapp.gesture(gesture("stroke", canvas_points[:1], False, zoom, pan, radius=2.5), session)
    assert not session.mask[30, 20] and session.mask[35, 50]  # the eraser at the first point only


def test_on_a_quicklook_gestures_map_through_zoom_pan_and_scale(workspace, tmp_path):
    large = write_geotiff(tmp_path / "large.tif", np.random.default_rng(2).integers(0, 255, (3, 1200, 3000), np.uint8))
    session, *_ = webapp.upload(workspace, [str(large)], "ana", "", STRETCH, None)
    sx, sy = 3000 / 1536, 1200 / 614  # full-resolution pixels per quicklook pixel
    point = Gesture("point", True, ((100.0 * 4 + 7, 50.0 * 4 - 3),), 4.0, (7.0, -3.0))
    assert to_prompt(session, point) == Click(int(100 * sx), int(50 * sy), True)
    stroke = Gesture("stroke", False, ((7.0, -3.0), (407.0, 197.0)), 4.0, (7.0, -3.0), radius=6)
    assert to_prompt(session, stroke) == Stroke(((0.0, 0.0), (100 * sx, 50 * sy)), 6.0, False)


def test_strokes_off_the_image_are_clipped_and_nodata_is_left_alone(workspace, tmp_path):
    data = np.random.default_rng(6).integers(1, 255, (3, 60, 70), dtype=np.uint8)
    data[:, :, 60:] = 0
    scene = write_geotiff(tmp_path / "edge.tif", data, nodata=0)
    session, *_ = webapp.upload(workspace, [str(scene)], "ana", "", STRETCH, None)
    shown, info = webapp.gesture(gesture("stroke", [[-20, 10], [15, 10]], radius=3), session)
    assert "mask updated" in info and "tls-note" in info and "clipped" in info and session.mask[10, 0]
    before = session.mask.copy()
    shown, info = webapp.gesture(gesture("stroke", [[63, 30], [68, 40]], radius=2), session)
    assert shown == gr.skip() and "tls-problem" in info and "nodata" in info
    assert np.array_equal(session.mask, before) and len(session.correction.prompts) == 1
    _, info = webapp.gesture(gesture("stroke", [[200, 300]], radius=2), session)
    assert "off the image" in info and np.array_equal(session.mask, before)
    _, info = webapp.gesture(gesture("polygon", [[1, 1], [2, 2]]), session)
    assert "Edit not applied: a polygon needs 3" in info


def test_the_saved_source_says_whether_the_mask_was_clicked_painted_or_both(workspace, scenes):
    session, *_ = webapp.upload(workspace, [str(s) for s in scenes], "ana", "", STRETCH, None)
    webapp.gesture(gesture("polygon", [[5, 5], [30, 5], [30, 30]]), session)
    webapp.save(workspace, None, "ana", "", session)
    click(session, 60, 50)
    webapp.save(workspace, None, "ana", "", session)
    with AnnotationStore(workspace.db_path) as store:
        sources = [row["source"] for row in store.db["annotations"].rows_where(order_by="id")]
    assert sources == ["painted", "clicked+painted"]


def test_the_outline_runs_along_the_pixel_edges_between_landslide_and_background():
    mask = np.random.default_rng(9).random((30, 40)) > 0.6
    expected = set()  # unit edges ((x0, y0), (x1, y1)) of landslide pixels whose neighbour is background
    for y, x in zip(*np.nonzero(mask), strict=True):
        neighbours = {(0, -1): ((x, y), (x + 1, y)), (0, 1): ((x, y + 1), (x + 1, y + 1)),
                      (-1, 0): ((x, y), (x, y + 1)), (1, 0): ((x + 1, y), (x + 1, y + 1))}  # fmt: skip
        for (dx, dy), edge in neighbours.items():
            inside = 0 <= y + dy < 30 and 0 <= x + dx < 40 and mask[y + dy, x + dx]
            if not inside:
                expected.add(edge)
    drawn = set()
    for x0, y0, x1, y1 in np.array(edges(mask)).reshape(-1, 4):
        assert x0 == x1 or y0 == y1
        for t in range(max(x1 - x0, y1 - y0)):
            step = (int(x0 + t * (x1 > x0)), int(y0 + t * (y1 > y0)))
            drawn.add((step, (step[0] + (x1 > x0), step[1] + (y1 > y0))))
    assert drawn == expected


def test_saves_and_edits_never_share_a_queue_slot_with_model_work(workspace):
    demo = webapp.build_ui(workspace)
    groups = {}
    for fn in demo.fns.values():
        event = fn.targets[0][1] if fn.targets else ""
        name = fn.api_name if fn.api_name and not fn.api_name.startswith("false") else event
        groups[name] = (fn.concurrency_id, fn.concurrency_limit)
    assert groups["upload"] == groups["open"] == groups["example"] == ("model", 1)  # both cores each
    for name in ("save", "accepted", "needs-work", "rejected"):
        assert groups[name] == ("store", 8)
    assert groups["gesture"] == groups["undo"] == ("edits", 4)


def test_the_latest_review_is_shown_beside_the_canvas_and_in_the_queue(workspace, scenes):
    """Issue 31.5: whoever reopens a rejected image reads who rejected it, when and why."""
    session, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    assert webapp.review_note(session) == "Not reviewed yet."
    info, _ = webapp.save(workspace, "rejected", "rev", "Road cut, not a landslide", session)
    assert "rejected" in info
    row = webapp.queue_rows(workspace)[0]
    assert row[1:3] == ["rejected", "rev; rev: Road cut, not a landslide"]
    select = gr.SelectData(None, {"index": [0, 0], "value": "", "row_value": row})
    reopened, *_ = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, None)
    note = webapp.review_note(reopened)
    assert note.startswith("Latest review: **rejected** by rev, 20") and note.endswith("“Road cut, not a landslide”")


def test_a_stale_save_offers_the_latest_with_my_edits_re_applied(workspace, scenes):
    """Issue 31.10: after a refused stale save the analyst reopens the newer label with their own
    edits replayed on top, sees it before anything is stored, and saves it."""
    first, *_ = webapp.upload(workspace, [str(scenes[0])], "ana", "", STRETCH, None)
    row = webapp.queue_rows(workspace)[0]
    select = gr.SelectData(None, {"index": [0, 0], "value": "", "row_value": row})
    second, *_ = webapp.open_from_queue(workspace, select, "ana", "", STRETCH, None)
    assert webapp.stale_offer(second).visible is False
    webapp.gesture(gesture("stroke", [[5.5, 5.5], [30.5, 5.5]], radius=3.0), first)  # ana paints a band on top
    webapp.save(workspace, "needs-work", "ana", "", first)
    webapp.gesture(gesture("stroke", [[5.5, 60.5], [30.5, 60.5]], radius=3.0, positive=False), second)  # bob erases
    info, _ = webapp.save(workspace, None, "bob", "", second)
    assert "Not saved" in info and webapp.stale_offer(second).visible is True
    merged, picture, info = webapp.reapply(second)
    assert "Re-applied 1 of your edit(s) on top. Check the mask, then save." in info
    assert [type(p).__name__ for p in merged.correction.prompts] == ["Stroke", "Stroke"]  # ana's, then bob's
    assert merged.mask[5, 5:31].all() and not merged.mask[60, 5:31].any() and picture["prompts"]
    with AnnotationStore(workspace.db_path) as store:
        assert store.db["annotations"].count == 1  # shown, not stored
    info, _ = webapp.save(workspace, None, "bob", "", merged)
    assert info.startswith("Saved scene0.tif") and webapp.stale_offer(merged).visible is False
