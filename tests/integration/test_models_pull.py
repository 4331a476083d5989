"""``facepipe models pull|install|list`` against zips served by a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_MODELS, VENV_BIN

from facepipe.models import registry

DETECTOR, RECOGNIZER = "scrfd_2.5g.onnx", "MobileFaceNet.onnx"


@dataclass
class ZipServer:
    root: Path
    base_url: str
    requests: list[str]

    def add(self, name: str, members: dict[str, Path | bytes]) -> tuple[str, str]:
        """Writes a zip of ``members`` (archive name -> file or bytes); returns (url, sha256)."""
        path = self.root / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for arcname, src in members.items():
                if isinstance(src, Path):
                    zf.write(src, arcname)
                else:
                    zf.writestr(arcname, src)
        return f"{self.base_url}/{name}", hashlib.sha256(path.read_bytes()).hexdigest()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - signature from the base class
        pass


@pytest.fixture(scope="module")
def zip_server(tmp_path_factory) -> Iterator[ZipServer]:
    if not SHARED_MODELS.is_dir():
        pytest.skip("../shared/models is not present")
    root = tmp_path_factory.mktemp("zips")
    requests: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ZipServer(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def facepipe(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")}
    env["FACEPIPE_HOME"] = str(home)
    return subprocess.run(
        [str(VENV_BIN / "facepipe"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pack_members(prefix: str = "", recognizer: bool = True) -> dict[str, Path | bytes]:
    members: dict[str, Path | bytes] = {
        f"{prefix}{DETECTOR}": SHARED_MODELS / DETECTOR,
        f"{prefix}README.md": b"test pack\n",
    }
    if recognizer:
        members[f"{prefix}{RECOGNIZER}"] = SHARED_MODELS / RECOGNIZER
    return members


def assert_nothing_installed(home: Path, name: str) -> None:
    root = registry.models_root(home)
    assert not (root / name).exists()
    leftovers = [p.name for p in root.iterdir()] if root.is_dir() else []
    assert leftovers == [], f"left behind: {leftovers}"


@pytest.mark.parametrize("prefix", ["", "mypack/"], ids=["flat", "in-folder"])
def test_pull_installs_a_verified_pack(zip_server, home, prefix) -> None:
    url, sha = zip_server.add(f"pack-{prefix.strip('/') or 'flat'}.zip", pack_members(prefix))
    done = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha)
    assert done.returncode == 0, done.stderr
    assert f"detector {DETECTOR}, recognizer {RECOGNIZER}" in done.stdout

    listed = facepipe(home, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^mypack\s+installed", listed.stdout, re.M), listed.stdout
    assert re.search(r"^buffalo_l\s+-", listed.stdout, re.M), listed.stdout

    directory = registry.models_root(home) / "mypack"
    pack = registry.load_pack(directory)
    assert (pack.detector.name, pack.recognizer.name) == (DETECTOR, RECOGNIZER)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [DETECTOR, RECOGNIZER, "README.md", registry.MANIFEST]
    )
    manifest = json.loads((directory / registry.MANIFEST).read_text())
    assert manifest["source"] == url
    # Installed as install does it: the SCRFD detector with a dynamic batch axis.
    assert manifest["files"][DETECTOR] == {
        "sha256": hashlib.sha256(registry.installed_bytes(SHARED_MODELS / DETECTOR)).hexdigest(),
        "role": "detector",
        "family": "scrfd",
        "license": "",
        "input_shape": ["batch", 3, "?", "?"],
    }
    assert manifest["files"][DETECTOR]["sha256"] != registry.sha256_file(SHARED_MODELS / DETECTOR)
    assert manifest["files"][RECOGNIZER]["role"] == "recognizer"
    assert (manifest["detector_family"], manifest["recognizer_family"]) == ("scrfd", "arcface")
    assert [p.name for p in registry.models_root(home).iterdir()] == ["mypack"]  # no staging left

    # Pulling again is a no-op: nothing downloaded; --force downloads and replaces.
    seen = len(zip_server.requests)
    again = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha)
    assert again.returncode == 0, again.stderr
    assert len(zip_server.requests) == seen
    forced = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha, "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(zip_server.requests) == seen + 1
    assert registry.load_pack(directory).detector.name == DETECTOR


def test_wrong_sha256_installs_nothing(zip_server, home) -> None:
    url, sha = zip_server.add("pack-badsum.zip", pack_members())
    wrong = hashlib.sha256(b"something else").hexdigest()
    done = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", wrong)
    assert done.returncode == 1
    assert f"error: sha256 mismatch for {url}: got {sha}, expected {wrong}" in done.stderr
    assert_nothing_installed(home, "mypack")

    # Replacing an installed pack with a bad download keeps the installed one.
    assert facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha).returncode == 0
    before = registry.sha256_file(registry.models_root(home) / "mypack" / registry.MANIFEST)
    done = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", wrong, "--force")
    assert done.returncode == 1
    assert "sha256 mismatch" in done.stderr
    assert registry.sha256_file(registry.models_root(home) / "mypack" / registry.MANIFEST) == before
    assert registry.load_pack(registry.models_root(home) / "mypack").recognizer.name == RECOGNIZER
    assert [p.name for p in registry.models_root(home).iterdir()] == ["mypack"]


def test_path_traversal_is_refused(zip_server, home, tmp_path) -> None:
    members = pack_members()
    members["../evil.onnx"] = b"not a model"
    url, sha = zip_server.add("pack-evil.zip", members)
    assert "../evil.onnx" in zipfile.ZipFile(zip_server.root / "pack-evil.zip").namelist()
    done = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha)
    assert done.returncode == 1
    assert "unsafe path in archive: ../evil.onnx" in done.stderr
    assert_nothing_installed(home, "mypack")
    assert not list(tmp_path.rglob("evil.onnx"))


def test_pack_without_recognizer_is_refused(zip_server, home) -> None:
    url, sha = zip_server.add("pack-norec.zip", pack_members(recognizer=False))
    done = facepipe(home, "models", "pull", "mypack", "--from", url, "--sha256", sha)
    assert done.returncode == 1
    assert "needs a detector and a recognizer" in done.stderr
    assert_nothing_installed(home, "mypack")


def test_missing_url_and_non_zip(zip_server, home) -> None:
    done = facepipe(home, "models", "pull", "mypack", "--from", f"{zip_server.base_url}/nope.zip")
    assert done.returncode == 1
    assert "download of" in done.stderr and "404" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_installed(home, "mypack")

    (zip_server.root / "notazip.zip").write_bytes(b"<html>login page</html>")
    done = facepipe(home, "models", "pull", "mypack", "--from", f"{zip_server.base_url}/notazip.zip")
    assert done.returncode == 1
    assert "not a zip archive" in done.stderr, done.stderr
    assert_nothing_installed(home, "mypack")

    done = facepipe(home, "models", "pull", "no_such_pack")
    assert done.returncode == 1
    assert "unknown pack 'no_such_pack'" in done.stderr and "buffalo_l" in done.stderr


def test_install_is_idempotent(home) -> None:
    if not SHARED_MODELS.is_dir():
        pytest.skip("../shared/models is not present")
    first = facepipe(home, "models", "install", "local", "--from", str(SHARED_MODELS))
    assert first.returncode == 0, first.stderr
    directory = registry.models_root(home) / "local"
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.glob("*.onnx")}
    manifest = (directory / registry.MANIFEST).read_text()

    second = facepipe(home, "models", "install", "local", "--from", str(SHARED_MODELS))
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.glob("*.onnx")} == stamps
    assert (directory / registry.MANIFEST).read_text() == manifest
    assert registry.load_pack(directory).recognizer.name == RECOGNIZER

    missing = facepipe(home, "models", "install", "other", "--from", str(home / "nowhere"))
    assert missing.returncode == 1
    assert "is not a directory" in missing.stderr


def test_buffalo_l_is_registered() -> None:
    spec = registry.PACKS["buffalo_l"]
    assert spec.url == "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256 or "")
    assert "non-commercial" in spec.license


def test_same_named_files_in_two_folders_are_refused(zip_server, home) -> None:
    members = pack_members()
    members["extra/scrfd_2.5g.onnx"] = b"another detector"
    url, sha = zip_server.add("pack-clash.zip", members)
    done = facepipe(home, "models", "pull", "clash", "--from", url, "--sha256", sha)
    assert done.returncode == 1
    assert "two files named scrfd_2.5g.onnx" in done.stderr
    assert_nothing_installed(home, "clash")
