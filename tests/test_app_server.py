"""The app as users meet it: `python app.py` on 127.0.0.1, driven by gradio_client and by Chromium."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import write_geotiff

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TRANSLANDSEG_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(adapter, tiny_sam_checkpoint, tmp_path_factory):
    """`python app.py` in its own process, with its own store; yields (url, database path)."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    db = root / "labels.db"
    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
               "--data-dir", str(root / "data"), "--cache-dir", str(root / "cache"), "--adapter", str(adapter),
               "--sam-checkpoint", str(tiny_sam_checkpoint)]  # fmt: skip
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
    yield url, db
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def scene(tmp_path, request) -> Path:
    """A scene of its own for each test (the store knows images by their bytes)."""
    data = np.random.default_rng(len(request.node.name)).integers(0, 255, (3, 120, 160), dtype=np.uint8)
    return write_geotiff(tmp_path / "hillside.tif", data)


def rows(db: Path, query: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def test_api_upload_accept_and_export(server, scene):
    from gradio_client import Client, handle_file

    url, db = server
    client = Client(url, verbose=False)
    picture, info = client.predict([handle_file(str(scene))], "api-user", "", "2-98 %", 0.5, api_name="/upload")
    assert Path(picture).is_file() and "**hillside.tif**" in info and "Automatic mask by adapter-" in info
    _, info, _ = client.predict("api-user", "", 0.5, api_name="/accepted")
    assert "Saved hillside.tif" in info and "accepted" in info
    archive, info = client.predict(["accepted"], ["geotiff", "geojson"], api_name="/export")
    assert archive.endswith(".zip") and "Exported" in info
    ((source, annotator, status),) = rows(db, """select a.source, a.annotator, r.status from annotations a
                                               join reviews r on r.annotation_id = a.id""")  # fmt: skip
    assert (source, annotator, status) == ("automatic", "api-user", "accepted")


def test_browser_upload_click_save(server, scene):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed with the test extras")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    url, db = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.locator("#annotator textarea, #annotator input").first.fill("browser-user")
            page.locator("#upload input[type=file]").set_input_files(str(scene))
            page.locator("#info").get_by_text("Automatic mask by").wait_for(timeout=60_000)
            picture = page.locator("#picture img").first
            picture.wait_for(timeout=30_000)
            box = picture.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            page.locator("#info").get_by_text("mask updated in").wait_for(timeout=60_000)
            page.locator("#save").click()
            page.locator("#info").get_by_text("Saved hillside.tif").wait_for(timeout=60_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser_upload_click_save.png"), full_page=True)
            browser.close()
    ((annotation_id, source, annotator),) = rows(db, "select id, source, annotator from annotations "
                                                     "where annotator = 'browser-user'")  # fmt: skip
    assert (source, annotator) == ("clicked", "browser-user")
    ((x, y, label, kind),) = rows(db, "select x, y, label, kind from prompts where annotation_id = ?", annotation_id)
    assert (label, kind) == (1, "point") and abs(x - 80) <= 3 and abs(y - 60) <= 3  # the picture's centre



def test_browser_queue_opens_images_reasons_clear_and_uploads_do_not_repeat(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed with the test extras")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    url, db = server
    rng = np.random.default_rng(7)
    first, second = (write_geotiff(tmp_path / f"{name}.tif", rng.integers(0, 255, (3, 90, 120), dtype=np.uint8))
                     for name in ("queue-first", "queue-second"))  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        info = page.locator("#info")
        try:
            page.goto(url)
            page.locator("#annotator textarea, #annotator input").first.fill("queue-user")
            page.locator("#upload input[type=file]").set_input_files([str(first), str(second)])
            info.get_by_text("1 more image(s) added to the queue").wait_for(timeout=60_000)
            page.locator("#upload").get_by_text("queue-second.tif").wait_for(state="detached", timeout=30_000)
            page.locator("#queue span.text", has_text="queue-second.tif").first.click()  # the queue opens it
            info.get_by_text("queue-second.tif: 120x90 px").wait_for(timeout=60_000)
            for button in ("#reject", "#accept"):  # the review buttons are in view beside the canvas
                box = page.locator(button).bounding_box()
                assert box["y"] + box["height"] <= 900, button
            page.locator('#click-mode input[value="negative"]').check()
            page.locator("#reject").click()  # no reason: refused, in red
            refusal = info.locator(".tls-problem")
            refusal.get_by_text("a rejection needs a reason").wait_for(timeout=30_000)
            assert refusal.evaluate("e => getComputedStyle(e).color") == "rgb(185, 28, 28)"
            page.locator("#reason textarea").fill("Road cut, not a landslide")
            page.locator("#reject").click()
            info.get_by_text("rejected. Next:").wait_for(timeout=60_000)
            page.wait_for_function("document.querySelector('#reason textarea').value === ''", timeout=30_000)
            page.wait_for_function("document.querySelector('#click-mode input[value=\"positive\"]').checked",
                                   timeout=30_000)  # fmt: skip
            page.locator("#queue span.text", has_text="queue-first.tif").first.click()
            info.get_by_text("queue-first.tif: 120x90 px").wait_for(timeout=60_000)
            page.locator("#accept").click()
            info.get_by_text("Saved queue-first.tif").wait_for(timeout=60_000)
            other = browser.new_page(viewport={"width": 1400, "height": 900})  # a second analyst, fresh page
            other.goto(url)
            other.locator("#queue span.text", has_text="queue-first.tif").first.wait_for(timeout=30_000)
            other.locator("#queue span.text", has_text="queue-second.tif").first.wait_for(timeout=30_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser_queue_review.png"), full_page=True)
            browser.close()
    reviews = rows(db, """select i.name, r.status, r.reason from reviews r join annotations a on a.id = r.annotation_id
                          join images i on i.id = a.image_id where i.name like 'queue-%' order by r.id""")  # fmt: skip
    assert reviews == [("queue-second.tif", "rejected", "Road cut, not a landslide"), ("queue-first.tif", "accepted", "")]
