import hashlib
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from translandseg import sam_checkpoints
from translandseg.download import DownloadError, download_file
from translandseg.sam_checkpoints import CheckpointUnavailable, OfficialCheckpoint, resolve_sam_checkpoint

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring 'Range: bytes=N-'."""

    ranges = []

    def do_GET(self):
        start = 0
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
        body = PAYLOAD[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.ranges = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/sam_vit_b_01ec64.pth"


def test_download_checks_sha256_and_renames_atomically(server, tmp_path, capsys):
    dest = download_file(f"{server}/sam.pth", tmp_path / "sam.pth", SHA, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sam.pth.part").exists()
    assert "sam.pth" in capsys.readouterr().err  # the progress bar names the file


def test_interrupted_download_resumes_from_the_part_file(server, tmp_path):
    (tmp_path / "sam.pth.part").write_bytes(PAYLOAD[:1000])
    download_file(f"{server}/sam.pth", tmp_path / "sam.pth", SHA, progress=False)
    assert _Handler.ranges == ["bytes=1000-"]
    assert (tmp_path / "sam.pth").read_bytes() == PAYLOAD


def test_bad_checksum_discards_the_file(server, tmp_path):
    with pytest.raises(DownloadError, match="expected 0000"):
        download_file(f"{server}/sam.pth", tmp_path / "sam.pth", "0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def official_at(monkeypatch):
    def point(url, sha256=SHA):
        monkeypatch.setitem(sam_checkpoints.OFFICIAL_CHECKPOINTS, "vit_b", OfficialCheckpoint("vit_b", url, sha256))

    return point


def test_first_run_downloads_into_the_cache_dir_from_the_environment(server, tmp_path, monkeypatch, official_at):
    official_at(f"{server}/segment_anything/sam_vit_b_01ec64.pth")
    monkeypatch.setenv("TRANSLANDSEG_CACHE_DIR", str(tmp_path / "cache"))
    path = resolve_sam_checkpoint("vit_b", progress=False)
    assert path == tmp_path / "cache" / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == PAYLOAD
    assert resolve_sam_checkpoint("vit_b", progress=False) == path  # cached: no second request
    assert len(_Handler.ranges) == 1


def test_no_network_says_how_to_place_the_file_by_hand(tmp_path, official_at):
    official_at(_closed_port_url())
    with pytest.raises(CheckpointUnavailable) as error:
        resolve_sam_checkpoint("vit_b", cache=tmp_path, progress=False)
    message = str(error.value)
    assert "could not download" in message
    assert f"place it at {tmp_path / 'sam_vit_b_01ec64.pth'}" in message
    assert SHA in message and "--sam-checkpoint" in message
    assert list(tmp_path.iterdir()) == []


def test_no_download_mode_and_missing_explicit_file(tmp_path):
    with pytest.raises(CheckpointUnavailable, match="not in the cache"):
        resolve_sam_checkpoint("vit_h", cache=tmp_path, download=False)
    with pytest.raises(CheckpointUnavailable, match="does not exist"):
        resolve_sam_checkpoint("vit_b", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(CheckpointUnavailable, match="no official SAM checkpoint"):
        resolve_sam_checkpoint("tiny", cache=tmp_path)


def test_official_registry_names_the_real_files():
    names = {t: c.filename for t, c in sam_checkpoints.OFFICIAL_CHECKPOINTS.items()}
    assert names == {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
    assert all(len(c.sha256) == 64 for c in sam_checkpoints.OFFICIAL_CHECKPOINTS.values())


def test_importing_the_package_opens_no_connection():
    probe = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import translandseg.cli, translandseg.loading, translandseg.training.trainer, translandseg.predict\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
