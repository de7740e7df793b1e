"""The app as users meet it: `python app.py` on 127.0.0.1, driven by gradio_client and by Chromium."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from annotations.accounts import add_user
from conftest import write_geotiff

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TRANSLANDSEG_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(root: Path, adapter: Path, checkpoint: Path, *extra: str):
    """`python app.py` in its own process, with its own store under ``root``; yields (url, database path)."""
    port = free_port()
    db = root / "labels.db"
    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
               "--data-dir", str(root / "data"), "--cache-dir", str(root / "cache"), "--adapter", str(adapter),
               "--sam-checkpoint", str(checkpoint), *extra]  # fmt: skip
    log = open(root / "server.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the app did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    try:
        yield url, db
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(adapter, tiny_sam_checkpoint, tmp_path_factory):
    """The app without accounts: anyone names themselves."""
    with running_app(tmp_path_factory.mktemp("server"), adapter, tiny_sam_checkpoint) as running:
        yield running


ACCOUNTS = {"ann": ("annotator", "annotator-password"), "rev": ("reviewer", "reviewer-password")}


@pytest.fixture(scope="module")
def team_server(adapter, tiny_sam_checkpoint, tmp_path_factory):
    """The app with accounts (``--users``): an annotator ``ann`` and a reviewer ``rev``."""
    root = tmp_path_factory.mktemp("team")
    for name, (role, password) in ACCOUNTS.items():
        add_user(root / "users.txt", name, role, password)
    with running_app(root, adapter, tiny_sam_checkpoint, "--users", str(root / "users.txt")) as running:
        yield running


@pytest.fixture
def sync_playwright():
    """Playwright's sync API driving Debian's Chromium (screenshots go to ``ARTIFACTS``), or a skip
    that says what is missing."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed with the test extras")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return playwright.sync_playwright


@pytest.fixture
def scene(tmp_path, request) -> Path:
    """A scene of its own for each test (the store knows images by their bytes)."""
    data = np.random.default_rng(len(request.node.name)).integers(0, 255, (3, 120, 160), dtype=np.uint8)
    return write_geotiff(tmp_path / "hillside.tif", data)


def small_scenes(folder: Path, seed: int, *names: str):
    """Random 120x90 GeoTIFFs, each of its own bytes (the store knows images by their bytes)."""
    rng = np.random.default_rng(seed)
    return [write_geotiff(folder / f"{name}.tif", rng.integers(0, 255, (3, 90, 120), dtype=np.uint8)) for name in names]


@contextmanager
def app_page(sync_playwright, url: str, name: str, screenshot: str):
    """The app in Chromium at 1400x900, ``name`` typed as the analyst's; the page is saved as
    ``screenshot`` when done, whatever happened."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(url)
            page.locator("#annotator textarea, #annotator input").first.fill(name)
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
            browser.close()


def rows(db: Path, query: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def test_api_upload_accept_and_export(server, scene):
    from gradio_client import Client, handle_file

    url, db = server
    client = Client(url, verbose=False)
    shown, info = client.predict([handle_file(str(scene))], "api-user", "", "2-98 %", api_name="/upload")
    assert (shown["width"], shown["height"]) == (160, 120) and shown["backdrop"].startswith("data:image/png")
    assert "**hillside.tif**" in info and "Automatic mask by adapter-" in info
    info, _ = client.predict("api-user", "", api_name="/accepted")
    assert "Saved hillside.tif" in info and "accepted" in info
    archive, info = client.predict(["accepted"], ["geotiff", "geojson"], api_name="/export")
    assert archive.endswith(".zip") and "Exported" in info
    ((source, annotator, status),) = rows(db, """select a.source, a.annotator, r.status from annotations a
                                               join reviews r on r.annotation_id = a.id""")  # fmt: skip
    assert (source, annotator, status) == ("automatic", "api-user", "accepted")


def test_browser_upload_click_save(sync_playwright, server, scene):
    url, db = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.locator("#annotator textarea, #annotator input").first.fill("browser-user")
            page.locator("#upload input[type=file]").set_input_files(str(scene))
            page.locator("#info").get_by_text("Automatic mask by").wait_for(timeout=60_000)
            box = page.locator("#canvas-surface").bounding_box()  # the picture is fitted and centred
            page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            page.locator("#info").get_by_text("mask updated in").wait_for(timeout=60_000)
            page.locator("#save").click()
            page.locator("#info").get_by_text("Saved hillside.tif").wait_for(timeout=60_000)
            page.reload()  # without accounts the browser keeps the typed name
            page.wait_for_function("document.querySelector('#annotator textarea, #annotator input')?.value "
                                   "=== 'browser-user'", timeout=30_000)  # fmt: skip
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser_upload_click_save.png"), full_page=True)
            browser.close()
    ((annotation_id, source, annotator),) = rows(db, "select id, source, annotator from annotations "
                                                     "where annotator = 'browser-user'")  # fmt: skip
    assert (source, annotator) == ("clicked", "browser-user")
    ((x, y, label, kind),) = rows(db, "select x, y, label, kind from prompts where annotation_id = ?", annotation_id)
    assert (label, kind) == (1, "point") and abs(x - 80) <= 3 and abs(y - 60) <= 3  # the picture's centre



def test_browser_queue_opens_images_reasons_clear_and_uploads_do_not_repeat(sync_playwright, server, tmp_path):
    url, db = server
    first, second = small_scenes(tmp_path, 7, "queue-first", "queue-second")
    with app_page(sync_playwright, url, "queue-user", "browser_queue_review.png") as page:
        info = page.locator("#info")
        page.locator("#upload input[type=file]").set_input_files([str(first), str(second)])
        info.get_by_text("2 new image(s) added to the queue").wait_for(timeout=60_000)
        page.locator("#upload").get_by_text("queue-second.tif").wait_for(state="detached", timeout=30_000)
        page.locator("#queue span.text", has_text="queue-second.tif").first.click()  # the queue opens it
        info.get_by_text("queue-second.tif: 120x90 px").wait_for(timeout=60_000)
        for button in ("#reject", "#accept"):  # the review buttons are in view beside the canvas
            box = page.locator(button).bounding_box()
            assert box["y"] + box["height"] <= 900, button
        page.locator("#sign-negative").click()
        page.locator("#reject").click()  # no reason: refused, in red
        refusal = info.locator(".tls-problem")
        refusal.get_by_text("a rejection needs a reason").wait_for(timeout=30_000)
        assert refusal.evaluate("e => getComputedStyle(e).color") == "rgb(185, 28, 28)"
        page.locator("#reason textarea").fill("Road cut, not a landslide")
        page.locator("#reject").click()
        info.get_by_text("rejected. Next:").wait_for(timeout=60_000)
        page.wait_for_function("document.querySelector('#reason textarea').value === ''", timeout=30_000)
        page.wait_for_function("document.querySelector('#sign-positive').classList.contains('tls-on')",
                               timeout=30_000)  # fmt: skip
        page.locator("#queue span.text", has_text="queue-first.tif").first.click()
        info.get_by_text("queue-first.tif: 120x90 px").wait_for(timeout=60_000)
        page.locator("#accept").click()
        info.get_by_text("Saved queue-first.tif").wait_for(timeout=60_000)
        other = page.context.browser.new_page(viewport={"width": 1400, "height": 900})  # a second analyst
        other.goto(url)
        other.locator("#queue span.text", has_text="queue-first.tif").first.wait_for(timeout=30_000)
        other.locator("#queue span.text", has_text="queue-second.tif").first.wait_for(timeout=30_000)
    reviews = rows(db, """select i.name, r.status, r.reason from reviews r join annotations a on a.id = r.annotation_id
                          join images i on i.id = a.image_id where i.name like 'queue-%' order by r.id""")  # fmt: skip
    assert reviews == [("queue-second.tif", "rejected", "Road cut, not a landslide"), ("queue-first.tif", "accepted", "")]


def test_browser_zoom_click_box_paint_erase_undo_save_on_a_real_image(sync_playwright, server, samples, adapter, tiny_sam_checkpoint):
    """Issue 13's walk: every tool on a real Bijie image at 2.25x zoom; the saved mask and its stored
    prompts then reproduce each other exactly."""
    from annotations import AnnotationStore, session_prompts
    from translandseg.download import sha256_of
    from translandseg.interactive.correction import CorrectionSession
    from translandseg.interactive.embedding_cache import EmbeddingCache
    from translandseg.interactive.painting import footprint
    from translandseg.interactive.prompting import PointPrompter
    from translandseg.loading import load_model
    from translandseg.raster import RasterImage

    url, db = server
    image_path = samples / "bijie" / "image" / "df002.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        info = page.locator("#info")

        def drag(start, end, steps=12):
            page.mouse.move(*start)
            page.mouse.down()
            page.mouse.move(*end, steps=steps)
            page.mouse.up()

        try:
            page.goto(url)
            page.locator("#annotator textarea, #annotator input").first.fill("canvas-user")
            page.locator("#upload input[type=file]").set_input_files(str(image_path))
            info.get_by_text("Automatic mask by").wait_for(timeout=60_000)
            fitted = float(page.locator("#zoom-level").inner_text().rstrip("%"))
            assert fitted > 150  # a 272x205 image fills the canvas instead of sitting at 1:1
            page.locator("#zoom-in").click()
            page.locator("#zoom-in").click()
            assert float(page.locator("#zoom-level").inner_text().rstrip("%")) == pytest.approx(fitted * 2.25, abs=1)
            box = page.locator("#canvas-surface").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.click(cx, cy)
            info.get_by_text("Positive click at pixel").wait_for(timeout=60_000)
            page.keyboard.press("b")
            drag((cx - 120, cy - 90), (cx + 90, cy + 60))
            info.get_by_text("Positive box: mask updated").wait_for(timeout=60_000)
            page.keyboard.press("d")
            drag((cx + 150, cy + 150), (cx + 230, cy + 200))
            info.get_by_text("Brush stroke (8 px wide): mask updated").wait_for(timeout=60_000)
            page.keyboard.press("e")
            drag((cx - 200, cy - 150), (cx - 120, cy - 150))
            info.get_by_text("Eraser stroke (8 px wide): mask updated").wait_for(timeout=60_000)
            page.keyboard.press("z")
            info.get_by_text("Undone; 3 edit(s) in effect.").wait_for(timeout=60_000)
            page.locator("#canvas").screenshot(path=str(ARTIFACTS / "canvas_zoomed_outline.png"))
            page.locator("#save").click()
            info.get_by_text("Saved df002.png").wait_for(timeout=60_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser_canvas_tools.png"), full_page=True)
            browser.close()

    image_id = sha256_of(image_path)
    with AnnotationStore(db) as store:
        saved = store.latest_annotation(image_id)
        prompts = session_prompts(store.prompts(saved.id))
        automatic = store.prediction_mask(saved.parent_prediction_id)
    assert saved.source == "clicked+painted" and [p.__class__.__name__ for p in prompts] == ["Click", "Box", "Stroke"]
    stroke = prompts[-1]
    assert stroke.positive and stroke.radius == 4 and len(stroke.points) >= 2
    cover = footprint(stroke, saved.mask.shape)  # the brush was the last edit: all it covers is landslide
    col, row, width, height = cover.window
    assert saved.mask[row : row + height, col : col + width][cover.covered].all()
    loaded = load_model("tiny", tiny_sam_checkpoint, adapter)
    prompter = PointPrompter.of(loaded, EmbeddingCache(64, db.parent / "cache" / "embeddings"))  # the server's
    with RasterImage(image_path) as image:
        replayed = CorrectionSession(image, image_id, automatic, prompter).replay(prompts)
    assert np.array_equal(replayed, saved.mask) and not np.array_equal(saved.mask, automatic)


def test_api_with_accounts_records_the_login_whatever_name_is_typed(team_server, scene):
    """Issue 31.1: the name sent with a request is ignored; the signed-in user is the annotator."""
    from gradio_client import Client, handle_file

    url, db = team_server
    annotator = Client(url, auth=("ann", ACCOUNTS["ann"][1]), verbose=False)
    annotator.predict([handle_file(str(scene))], "rev", "", "2-98 %", api_name="/upload")
    info, _ = annotator.predict("rev", "", api_name="/accepted")  # an annotator posing as the reviewer
    assert "Not saved: only reviewers can mark an image accepted; ann is an annotator" in info
    info, _ = annotator.predict("", "", api_name="/save")  # no name typed: the login is enough
    assert "Saved hillside.tif" in info
    reviewer = Client(url, auth=("rev", ACCOUNTS["rev"][1]), verbose=False)
    reviewer.predict([handle_file(str(scene))], "", "", "2-98 %", api_name="/upload")  # opens the stored image
    info, _ = reviewer.predict("ann", "", api_name="/accepted")
    assert "accepted" in info and "Not saved" not in info
    assert rows(db, "select added_by from images where name = 'hillside.tif'") == [("ann",)]
    assert rows(db, "select annotator from annotations") == [("ann",)]
    assert rows(db, "select status, reviewer from reviews") == [("accepted", "rev")]


def test_browser_login_roles_hold(sync_playwright, team_server, tmp_path):
    """Issue 31.1 in the browser: each analyst signs in; the name box shows the login and cannot be
    changed; an annotator's Accept is refused; the reviewer's is recorded as the reviewer's."""
    url, db = team_server
    data = np.random.default_rng(31).integers(0, 255, (3, 90, 120), dtype=np.uint8)
    image = write_geotiff(tmp_path / "team-scene.tif", data)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)

        def sign_in(user: str):
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(url)
            page.get_by_label("username").fill(user)
            page.get_by_label("password").fill(ACCOUNTS[user][1])
            page.get_by_role("button", name="Login").click()
            name = page.locator("#annotator textarea, #annotator input").first
            page.wait_for_function("u => document.querySelector('#annotator textarea, #annotator input')?.value === u",
                                   arg=user, timeout=60_000)  # fmt: skip
            assert not name.is_editable()
            return page

        pages = []
        try:
            page = sign_in("ann")
            pages.append(page)
            info = page.locator("#info")
            page.locator("#upload input[type=file]").set_input_files(str(image))
            info.get_by_text("Automatic mask by").wait_for(timeout=60_000)
            page.locator("#accept").click()
            info.locator(".tls-problem").get_by_text("ann is an annotator").wait_for(timeout=30_000)
            page.locator("#save").click()
            info.get_by_text("Saved team-scene.tif").wait_for(timeout=30_000)
            page = sign_in("rev")
            pages.append(page)
            info = page.locator("#info")
            page.locator("#queue span.text", has_text="team-scene.tif").first.click()
            info.get_by_text("team-scene.tif: 120x90 px").wait_for(timeout=60_000)
            page.locator("#accept").click()
            info.get_by_text("Saved team-scene.tif").wait_for(timeout=30_000)
        finally:
            for number, shown in enumerate(pages):
                shown.screenshot(path=str(ARTIFACTS / f"browser_login_{number}.png"), full_page=True)
            browser.close()
    query = """select i.added_by, a.annotator, r.status, r.reviewer from images i join annotations a on a.image_id = i.id
               join reviews r on r.annotation_id = a.id where i.name = 'team-scene.tif'"""
    assert rows(db, query) == [("ann", "ann", "accepted", "rev")]


def test_browser_ctrl_z_undoes_the_mask_not_the_name(sync_playwright, server, tmp_path):
    """Issue 31.4: after a click on the canvas, Ctrl+Z (and Cmd+Z) undo the mask edit and Ctrl+Y
    redoes it; the name typed before stays, so saving still works."""
    url, db = server
    data = np.random.default_rng(4).integers(0, 255, (3, 90, 120), dtype=np.uint8)
    image = write_geotiff(tmp_path / "undo-scene.tif", data)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        info = page.locator("#info")
        try:
            page.goto(url)
            name = page.locator("#annotator textarea, #annotator input").first
            name.fill("undo-user")
            page.locator("#upload input[type=file]").set_input_files(str(image))
            info.get_by_text("Automatic mask by").wait_for(timeout=60_000)
            box = page.locator("#canvas-surface").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)
            info.get_by_text("mask updated in").wait_for(timeout=60_000)
            page.keyboard.press("Control+z")
            info.get_by_text("Undone; 0 edit(s) in effect.").wait_for(timeout=30_000)
            page.keyboard.press("Control+y")
            info.get_by_text("Redone; 1 edit(s) in effect.").wait_for(timeout=30_000)
            page.keyboard.press("Meta+z")
            info.get_by_text("Undone; 0 edit(s) in effect.").wait_for(timeout=30_000)
            assert name.input_value() == "undo-user"
            page.locator("#save").click()
            info.get_by_text("Saved undo-scene.tif").wait_for(timeout=30_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser_ctrl_z.png"), full_page=True)
            browser.close()
    assert rows(db, "select annotator from annotations a join images i on i.id = a.image_id "
                    "where i.name = 'undo-scene.tif'") == [("undo-user",)]


def test_browser_asks_before_leaving_unsaved_edits(sync_playwright, server, tmp_path):
    """Issue 31.2: with unsaved edits, picking another queue row asks save / discard / stay; Stay
    keeps the image and its edits, Save stores them and opens the other image."""
    url, db = server
    first, second = small_scenes(tmp_path, 11, "leave-first", "leave-second")
    with app_page(sync_playwright, url, "leave-user", "browser_leave_unsaved.png") as page:
        info = page.locator("#info")
        page.locator("#upload input[type=file]").set_input_files([str(first), str(second)])
        info.get_by_text("leave-first.tif: 120x90 px").wait_for(timeout=60_000)
        box = page.locator("#canvas-surface").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
        info.get_by_text("mask updated in").wait_for(timeout=60_000)
        page.locator("#queue span.text", has_text="leave-second.tif").first.click()
        info.get_by_text("save them, discard them, or stay").wait_for(timeout=60_000)
        page.locator("#leave-stay").click()
        info.get_by_text("Still on leave-first.tif").wait_for(timeout=30_000)
        page.locator("#leave").wait_for(state="hidden", timeout=30_000)
        page.locator("#queue span.text", has_text="leave-second.tif").first.click()
        page.locator("#leave-save").click()
        info.get_by_text("leave-second.tif: 120x90 px").wait_for(timeout=60_000)
        assert "Saved leave-first.tif" in info.inner_text()
    assert rows(db, "select a.source, a.annotator from annotations a join images i on i.id = a.image_id "
                    "where i.name = 'leave-first.tif'") == [("clicked", "leave-user")]


def test_browser_canvas_and_review_stay_in_view_and_the_queue_fits(sync_playwright, server, tmp_path):
    """Issue 31.6 (and 31.9): at 1024x700, after opening a queue row, the canvas and the review
    buttons are in the viewport; at 1400x900 the queue starts above the fold and its shown columns
    fit its width, and the Model tab's retrain button is in view."""
    url, _ = server
    rng = np.random.default_rng(6)
    scenes = [write_geotiff(tmp_path / f"layout-{i}.tif", rng.integers(0, 255, (3, 150, 200), dtype=np.uint8))
              for i in range(7)]  # fmt: skip

    def in_view(page, selector: str, height: int) -> bool:
        box = page.locator(selector).bounding_box()
        return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        small = browser.new_page(viewport={"width": 1024, "height": 700})
        large = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            small.goto(url)
            small.locator("#annotator textarea, #annotator input").first.fill("layout-user")
            small.locator("#upload input[type=file]").set_input_files([str(s) for s in scenes])
            small.locator("#info").get_by_text("Automatic mask by").wait_for(timeout=60_000)
            small.locator("#queue span.text", has_text="layout-5.tif").first.click()
            small.locator("#info").get_by_text("layout-5.tif: 200x150 px").wait_for(timeout=60_000)
            small.wait_for_timeout(500)  # the scroll that brings the canvas back into view
            for selector in ("#canvas-surface", "#save", "#accept", "#needs-work", "#reject"):
                assert in_view(small, selector, 700), selector
            large.goto(url)
            large.locator("#queue span.text", has_text="layout-0.tif").first.wait_for(timeout=30_000)
            assert large.locator("#queue").bounding_box()["y"] < 900 * 0.75
            widths = large.evaluate("(() => { const t = document.querySelector('#queue table');"
                                    " return [t.scrollWidth, t.parentElement.clientWidth]; })()")  # fmt: skip
            assert widths[0] <= widths[1] + 1, widths
            large.get_by_role("tab", name="Model").click()
            large.locator("#retrain").wait_for(timeout=30_000)
            assert in_view(large, "#retrain", 900)
        finally:
            small.screenshot(path=str(ARTIFACTS / "browser_layout_1024x700.png"))
            large.screenshot(path=str(ARTIFACTS / "browser_layout_1400x900.png"))
            browser.close()
