"""The pipeline commands as a user meets them: ingest outcomes and progress,
batch, search thresholds and query faces, alt text, erase by path/URL/host,
stats and dead letters. Unit tests first, then end to end against the real
local stack (each test ingests into its own tenant)."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED_FACES, insightface_sample, run_facepipe, stack_nats_url
from PIL import Image

from facepipe.client import IngestSummary, progress_bar
from facepipe.locators import site_forms, url_forms
from facepipe.v1 import pipeline_pb2

BRAD = SHARED_FACES / "brad_pitt" / "brad_1.jpg"


# -- unit ------------------------------------------------------------------------------
def test_url_forms_resolve_paths_and_symlinks(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a b.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(real)
    stored = (real / "a b.jpg").resolve().as_uri()
    via_link = str(tmp_path / "link" / "a b.jpg")
    assert url_forms(via_link)[0] == stored
    assert url_forms("file://" + via_link.replace(" ", "%20"))[0] == stored
    assert url_forms("https://example.org/a.jpg") == ["https://example.org/a.jpg"]


def test_site_forms_accept_host_host_port_and_url() -> None:
    assert site_forms("example.org") == (["example.org"], "example.org")
    assert site_forms("www.Example.org:8080") == (["example.org:8080", "www.Example.org:8080"], "")
    assert site_forms("https://www.example.org/gallery?x=1")[0][0] == "example.org"
    assert site_forms("http://127.0.0.1:8123/")[0] == ["127.0.0.1:8123", "http://127.0.0.1:8123/"]


def test_summary_counts_each_image_once() -> None:
    s = IngestSummary(images=5)
    status = pipeline_pb2
    s.add_done(
        pipeline_pb2.ImageDone(
            url="a", status=status.IMAGE_STATUS_INDEXED, faces_indexed=2, faces_dup_skipped=1
        )
    )
    s.add_done(pipeline_pb2.ImageDone(url="b", status=status.IMAGE_STATUS_INDEXED))
    s.add_done(
        pipeline_pb2.ImageDone(
            url="c",
            status=status.IMAGE_STATUS_INDEXED,
            faces_rejected=2,
            rejected_reasons={"TOO_SMALL": 2, "BLURRY": 1},
        )
    )
    s.add_done(pipeline_pb2.ImageDone(url="d", status=status.IMAGE_STATUS_DUPLICATE, faces_known=3))
    s.add_done(
        pipeline_pb2.ImageDone(url="e", status=status.IMAGE_STATUS_FAILED, error="HTTP 404", reason="x")
    )
    s.add_error({"source": "f", "error": "unreadable"})
    doc = s.as_dict()
    assert (doc["images_indexed"], doc["duplicates"], doc["failed"]) == (3, 1, 2)
    assert doc["failed"] == len(doc["errors"])
    assert (doc["faces_indexed"], doc["faces_dup_skipped"], doc["faces_rejected"]) == (2, 1, 2)
    assert doc["rejected_reasons"] == {"BLURRY": 1, "TOO_SMALL": 2}
    assert [x["source"] for x in doc["no_face"]] == ["b"]
    assert doc["rejected"] == [{"source": "c", "faces_rejected": 2, "reasons": {"BLURRY": 1, "TOO_SMALL": 2}}]


def test_progress_prints_plain_lines_with_rate_and_eta_off_a_terminal() -> None:
    out = io.StringIO()
    show = progress_bar(out, every_s=3600.0)
    show("done", 1, 4)  # the first line of a phase
    show("done", 2, 4)  # within every_s: quiet
    show("done", 4, 4)  # the end of a phase always prints
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("done: 1/4 ") and "img/s" in lines[0] and "ETA" in lines[0]
    assert lines[1].startswith("done: 4/4 ")


def test_ingest_path_does_not_import_the_vector_store_client() -> None:
    code = (
        "import sys\n"
        "from facepipe.cli import main\n"
        "from facepipe.cli import pipeline_cmds\n"
        "from facepipe.client import ingest\n"
        "from facepipe.storage import object_store_from_env\n"
        "assert 'qdrant_client' not in sys.modules, 'qdrant_client imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on a free loopback port serving a folder: (base URL, folder)."""
    root = tmp_path_factory.mktemp("web")
    shutil.copy(BRAD, root / "brad.jpg")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def cli_json(stack, *args: str) -> dict:
    return json.loads(cli(stack, *args, "--json").stdout)


def tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


def small_face(path: Path, width: int = 60) -> Path:
    """A face too small for the quality checks (TOO_SMALL), on a plain canvas."""
    img = Image.open(BRAD).convert("RGB")
    img = img.resize((width, int(img.height * width / img.width)))
    canvas = Image.new("RGB", (640, 480), (120, 130, 140))
    canvas.paste(img, (100, 100))
    canvas.save(path)
    return path


def blank(path: Path) -> Path:
    Image.new("RGB", (320, 240), (200, 180, 160)).save(path)
    return path


def test_ingest_lists_no_face_rejections_and_failures_once(stack, web, tmp_path) -> None:
    base, _ = web
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(BRAD, folder / "brad.jpg")
    small_face(folder / "small.png")
    blank(folder / "blank.png")
    missing = f"{base}/missing.jpg"
    t = tenant()
    out = cli(stack, "ingest", str(folder), missing, "--tenant", t, "--wait", "--json", check=False)
    assert out.returncode == 1  # one image failed
    doc = json.loads(out.stdout)
    assert doc["images"] == 4 and doc["pending"] == 0
    assert doc["images_indexed"] == 3 and doc["faces_indexed"] == 1
    assert [x["source"] for x in doc["no_face"]] == [(folder / "blank.png").resolve().as_uri()]
    assert doc["rejected"] == [
        {
            "source": (folder / "small.png").resolve().as_uri(),
            "faces_rejected": 1,
            "reasons": {"TOO_SMALL": 1},
        }
    ]
    assert doc["rejected_reasons"] == {"TOO_SMALL": 1}
    # The 404 is a failure, listed once, and counted as such.
    assert doc["failed"] == 1 == len(doc["errors"])
    assert doc["errors"][0]["source"] == missing and "404" in doc["errors"][0]["error"]

    # Again, read anew (--rescan): every image is known to the stack; its faces are not
    # counted as near-duplicates too.
    again = cli(stack, "ingest", str(folder), "--tenant", t, "--wait", "--rescan")
    assert again.returncode == 0
    assert "indexed 0 image(s): 0 face(s) indexed, 0 near-duplicate face(s) skipped" in again.stdout
    assert "already ingested 3" in again.stdout and "failed 0" in again.stdout
    # Not a terminal: plain progress lines with rate and ETA.
    assert "done: 3/3 " in again.stderr and "ETA" in again.stderr


def test_wait_timeout_points_to_batch(stack, tmp_path) -> None:
    t = tenant()
    photos = [SHARED_FACES / "nicole_kidman", SHARED_FACES / "joe_biden"]
    out = cli(stack, "ingest", *map(str, photos), "--tenant", t, "--wait", "--timeout", "0.001", check=False)
    assert out.returncode == 1
    assert "the work goes on in the background" in out.stderr
    hint = out.stderr.split("`")[1]
    assert hint.startswith("facepipe batch ") and f"--data-dir {stack['dir']}" in hint
    waited_batch = hint.split()[2]
    n_images = sum(1 for p in photos for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    deadline = time.monotonic() + 240
    while True:
        doc = json.loads(cli(stack, "batch", waited_batch, "--json", check=False).stdout or "{}")
        if doc.get("images") == n_images or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert doc["images"] == n_images and doc["failed"] == 0 and doc["faces_indexed"] >= n_images - 2
    assert "no image of batch" in cli(stack, "batch", "no-such-batch", check=False).stderr


def test_search_uses_the_calibrated_threshold_and_names_the_query_face(stack) -> None:
    from facepipe.config import Settings
    from facepipe.models.registry import pack_thresholds

    t = tenant()
    sample = insightface_sample("t1.jpg")
    cli(stack, "ingest", str(BRAD), str(sample), "--tenant", t, "--site", "photos.example:8080", "--wait")
    calibrated = pack_thresholds(Settings.from_env("cli", stack["env"]).resolved_models_dir)[
        "search_min_score"
    ]

    doc = cli_json(stack, "search", str(BRAD), "--tenant", t)
    assert doc["min_score"] == pytest.approx(calibrated) and doc["min_score_from"] == "model pack"
    assert doc["query_faces"] == 1 and doc["searched"][0]["query_face"] == 0
    assert doc["matches"] and all(m["score"] >= calibrated for m in doc["matches"])
    best = doc["matches"][0]
    assert best["url"] == BRAD.resolve().as_uri() and best["face_index"] == 0 and len(best["bbox"]) == 4

    text = cli(stack, "search", str(BRAD), "--tenant", t).stdout
    assert "query face 0 (largest) box=(" in text and f"min score {calibrated:.3f} (from model pack)" in text
    assert " face 0 box=(" in text

    # Every face of a group photo: each finds itself first.
    group = cli_json(stack, "search", str(sample), "--tenant", t, "--all-faces", "--top-k", "1")
    assert group["query_faces"] > 1 and len(group["searched"]) == group["query_faces"]
    assert {m["query_face"] for m in group["matches"]} == set(range(group["query_faces"]))
    assert all(m["url"] == sample.resolve().as_uri() for m in group["matches"])
    second = cli_json(stack, "search", str(sample), "--tenant", t, "--face", "1")
    assert second["searched"][0]["query_face"] == 1
    assert cli(stack, "search", str(sample), "--tenant", t, "--face", "99", check=False).returncode == 2

    # Sites: as host:port or URL; another site has none of these faces.
    for site in ("photos.example:8080", "http://www.photos.example:8080/gallery"):
        assert cli_json(stack, "search", str(BRAD), "--tenant", t, "--site", site)["matches"]
    assert cli_json(stack, "search", str(BRAD), "--tenant", t, "--site", "elsewhere.example")["matches"] == []


def test_search_tells_no_face_from_no_match(stack, tmp_path) -> None:
    t = tenant()
    cli(stack, "ingest", str(BRAD), "--tenant", t, "--wait")
    query = blank(tmp_path / "blank.png")
    out = cli(stack, "search", str(query), "--tenant", t, "--json", check=False)
    assert out.returncode == 3
    doc = json.loads(out.stdout)
    assert doc["query_faces"] == 0 and doc["matches"] == [] and doc["error"] == "no face in the query image"
    human = cli(stack, "search", str(query), "--tenant", t, check=False)
    assert human.returncode == 3 and "no face found" in human.stderr

    other = SHARED_FACES / "nicole_kidman"
    photo = next(p for p in sorted(other.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    none = cli(stack, "search", str(photo), "--tenant", t, "--json")
    doc = json.loads(none.stdout)
    assert none.returncode == 0 and doc["query_faces"] == 1 and doc["matches"] == [] and "error" not in doc


def test_alt_text_comes_back_in_search(stack, web) -> None:
    import nats

    base, _ = web
    t = tenant()
    batch_id = uuid.uuid4().hex
    request = pipeline_pb2.IngestRequest(
        url=f"{base}/brad.jpg",
        page_url=f"{base}/premiere.html",
        alt_text="Brad Pitt at the premiere",
        site=base.split("//")[1],
        tenant_id=t,
        batch_id=batch_id,
        message_id=uuid.uuid4().hex,
    )

    async def publish_and_wait() -> pipeline_pb2.ImageDone:
        nc = await nats.connect(stack_nats_url(stack))
        try:
            js = nc.jetstream()
            sub = await js.subscribe(f"facepipe.events.done.{batch_id}", stream="FACEPIPE_EVENTS")
            await js.publish("facepipe.ingest", request.SerializeToString())
            msg = await sub.next_msg(timeout=120)
            done = pipeline_pb2.ImageDone()
            done.ParseFromString(msg.data)
            return done
        finally:
            await nc.close()

    done = asyncio.run(publish_and_wait())
    assert done.status == pipeline_pb2.IMAGE_STATUS_INDEXED and done.faces_indexed == 1
    doc = cli_json(stack, "search", str(BRAD), "--tenant", t)
    assert doc["matches"][0]["alt_text"] == "Brad Pitt at the premiere"
    assert doc["matches"][0]["page_url"] == f"{base}/premiere.html"
    assert 'alt="Brad Pitt at the premiere"' in cli(stack, "search", str(BRAD), "--tenant", t).stdout


def test_erase_accepts_paths_urls_and_hosts(stack, web, tmp_path) -> None:
    base, _ = web
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(BRAD.with_name("brad_2.jpg"), real / "brad.jpg")  # not the bytes the web serves
    (tmp_path / "link").symlink_to(real)
    via_link = tmp_path / "link" / "brad.jpg"
    t = tenant()
    cli(stack, "ingest", str(via_link), "--tenant", t, "--wait")
    cli(stack, "ingest", f"{base}/brad.jpg", "--tenant", t, "--site", base.split("//")[1], "--wait")
    assert cli_json(stack, "stats", "--tenant", t)["faces"] == 2

    # Nothing matched: said, and a non-zero exit.
    out = cli(stack, "erase", "--tenant", t, "--url", str(tmp_path / "nope.jpg"), check=False)
    assert out.returncode == 1 and "nothing matched --url" in out.stderr
    out = cli(stack, "erase", "--tenant", t, "--site", "elsewhere.example", check=False)
    assert out.returncode == 1 and "nothing matched --site" in out.stderr

    # A plain path through a symlink erases the image stored under its resolved file:// URL.
    assert cli_json(stack, "erase", "--tenant", t, "--url", str(via_link))["points_deleted"] == 1
    # A bare host erases the site stored as host:port.
    assert cli_json(stack, "erase", "--tenant", t, "--site", "127.0.0.1")["points_deleted"] == 1
    assert cli_json(stack, "stats", "--tenant", t)["faces"] == 0


def test_stats_counts_and_lists_a_tenant_page_by_page(stack, tmp_path) -> None:
    t = tenant()
    sample = insightface_sample("t1.jpg")
    ingested = cli_json(stack, "ingest", str(BRAD), str(sample), "--tenant", t, "--wait")
    doc = cli_json(stack, "stats", "--tenant", t)
    assert doc["faces"] == ingested["faces_indexed"] and doc["images"] == 2
    seen: list[str] = []
    token = ""
    while True:
        page = cli_json(stack, "stats", "--tenant", t, "--list", "--page-size", "2", "--page-token", token)
        assert len(page["list"]) <= 2
        seen += [p["point_id"] for p in page["list"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == doc["faces"]
    text = cli(stack, "stats", "--tenant", t, "--list", "--page-size", "1").stdout
    assert f"tenant {t}: {doc['faces']} face(s) in 2 image(s)" in text and "--page-token 1" in text
    assert cli_json(stack, "stats", "--tenant", tenant())["faces"] == 0


def test_dead_letters_can_be_listed_and_replayed(stack, web) -> None:
    base, root = web
    t = tenant()
    name = f"late-{uuid.uuid4().hex[:8]}.jpg"
    out = cli(stack, "ingest", f"{base}/{name}", "--tenant", t, "--wait", "--json", check=False)
    assert out.returncode == 1 and json.loads(out.stdout)["failed"] == 1
    letters = cli_json(stack, "dlq", "list", "--stage", "extractor", "--limit", "10000")
    mine = [
        d for d in letters if d["subject"] == "facepipe.ingest" and "404" in d["error"] and name in d["error"]
    ]
    assert len(mine) == 1 and mine[0]["reason"] == "fetch_failed" and mine[0]["stage"] == "extractor"
    assert name in cli(stack, "dlq", "list", "--limit", "10000").stdout

    # The image appears; replaying the dead letter now indexes it.
    shutil.copy(BRAD, root / name)
    replayed = cli_json(stack, "dlq", "replay", str(mine[0]["seq"]))
    assert [d["seq"] for d in replayed["replayed"]] == [mine[0]["seq"]] and replayed["not_found"] == []
    deadline = time.monotonic() + 120
    while cli_json(stack, "stats", "--tenant", t)["faces"] == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cli_json(stack, "stats", "--tenant", t)["faces"] == 1
    after = cli_json(stack, "dlq", "list", "--limit", "10000")
    assert mine[0]["seq"] not in {d["seq"] for d in after}
    out = cli(stack, "dlq", "replay", str(mine[0]["seq"]), check=False)
    assert out.returncode == 1 and "no dead letter" in out.stderr


def test_ingest_of_local_files_never_imports_the_vector_store_client(stack) -> None:
    command = [sys.executable, "-X", "importtime", "-m", "facepipe", "ingest", str(BRAD), "--wait"]
    out = subprocess.run(
        [*command, "--tenant", tenant(), "--data-dir", str(stack["dir"])],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "facepipe.client" in out.stderr  # -X importtime did report the imports
    assert "qdrant_client" not in out.stderr


def test_a_pack_without_a_threshold_falls_back_to_zero_with_a_warning(stack, tmp_path) -> None:
    t = tenant()
    cli(stack, "ingest", str(BRAD), "--tenant", t, "--wait")
    uncalibrated = tmp_path / "pack"
    uncalibrated.mkdir()
    (uncalibrated / "pack.json").write_text(json.dumps({"name": "uncalibrated"}))
    env = {**stack["env"], "FACEPIPE_MODELS_DIR": str(uncalibrated)}
    command = ("search", str(BRAD), "--tenant", t, "--data-dir", str(stack["dir"]))
    out = run_facepipe(*command, "--json", env=env)
    doc = json.loads(out.stdout)
    assert (doc["min_score"], doc["min_score_from"]) == (0.0, "none") and doc["matches"]
    assert out.stderr.startswith("warning: the model pack has no calibrated search threshold")
    assert out.stderr.count("\n") == 1
    given = json.loads(run_facepipe(*command, "--json", "--min-score", "0.99", env=env).stdout)
    assert given["min_score_from"] == "--min-score" and given["min_score"] == 0.99
