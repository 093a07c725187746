"""Downloading LFW for demo subjects, against a loopback HTTP server serving a small archive.

The archive is built in the test from the fixture photos (3 people x 5), laid out like the official
``lfw-deepfunneled.tgz``. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest

from workbench.errors import OfflineError, UserError
from workbench.subjects.demo import demo_photos, demo_subjects, download_lfw

FIXTURE = Path(__file__).parents[1].parent / "shared/data/lfw/fixture"

pytestmark = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"no LFW fixture at {FIXTURE}")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_tgz(path: Path, extra: list[tarfile.TarInfo] | None = None) -> str:
    """The fixture photos as ``lfw-deepfunneled/<Name>/<file>.jpg``; returns the archive's MD5."""
    with tarfile.open(path, "w:gz") as tar:
        for photo in sorted(FIXTURE.glob("*/*.jpg")):
            tar.add(photo, arcname=f"lfw-deepfunneled/{photo.parent.name}/{photo.name}")
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over ``tmp_path / "www"``; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def test_download_builds_demo_folder(server, tmp_path, monkeypatch, capsys):
    url, www = server
    md5 = make_tgz(www / "lfw.tgz")
    dest = download_lfw(tmp_path / "lfw", f"{url}/lfw.tgz", progress=True, md5=md5)
    assert "LFW" in capsys.readouterr().err  # the tqdm bar
    with open(dest / "demo" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and set(rows[0]) == {"path", "identity", "split", "sha256", "source"}
    for row in rows:
        assert hashlib.sha256((dest / "demo" / row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert row["source"].startswith(f"{url}/lfw.tgz:lfw-deepfunneled/")
    assert not list(dest.glob(".lfw-*"))  # no partial download or staging left behind
    monkeypatch.setenv("WORKBENCH_LFW_DIR", str(dest))
    assert demo_subjects() == ["Colin_Powell", "Junichiro_Koizumi", "Serena_Williams"]
    splits = [split for _, split in demo_photos("Serena_Williams")]
    assert splits == ["train"] * 4 + ["holdout"]  # the last quarter is held out
    with pytest.raises(UserError, match="no demo subject 'Nobody'"):
        demo_photos("Nobody")
    assert download_lfw(dest, f"{url}/gone.tgz") == dest  # already there: no network needed


def test_corrupted_download_is_refused(server, tmp_path):
    url, www = server
    make_tgz(www / "lfw.tgz")
    with pytest.raises(UserError, match="corrupted"):
        download_lfw(tmp_path / "lfw", f"{url}/lfw.tgz", progress=False, md5="0" * 32)
    (www / "junk.tgz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="could not be unpacked"):
        download_lfw(tmp_path / "lfw", f"{url}/junk.tgz", progress=False)
    assert not (tmp_path / "lfw" / "demo").exists()


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/absolute.txt", "link"])
def test_unsafe_archive_is_not_unpacked(server, tmp_path, evil):
    url, www = server
    info = tarfile.TarInfo(evil)
    if evil == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        info.size = 1
    make_tgz(www / "evil.tgz", [info])
    with pytest.raises(UserError, match="unsafe entry"):
        download_lfw(tmp_path / "lfw", f"{url}/evil.tgz", progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not list((tmp_path / "lfw").rglob("*.jpg"))


def test_offline_is_a_clear_error(server, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    with pytest.raises(OfflineError) as err:
        download_lfw(tmp_path / "lfw", f"http://127.0.0.1:{port}/lfw.tgz", progress=False)
    message = str(err.value)
    assert "could not download LFW" in message and "WORKBENCH_LFW_DIR" in message and "retry" in message
    url, _ = server
    with pytest.raises(OfflineError, match="HTTP 404"):
        download_lfw(tmp_path / "lfw", f"{url}/missing.tgz", progress=False)
    assert not list((tmp_path / "lfw").iterdir())
