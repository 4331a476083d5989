"""Persons on the local stack, through the CLI: faces grouped into one person per
identity, search by person, the user's corrections (merge, split, rename, hide,
unassign) surviving a recluster, erasure keeping persons consistent, the best face
upgraded by a better one, and two persons replicas racing on one tenant."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import pytest
from conftest import SHARED_FACES, VENV_BIN, free_port, run_facepipe, wait_serving

# Identities of ../shared/faces whose faces the bundled model groups into one person each.
WHOLE = ("alex_lacamoire", "barack_obama", "brad_pitt", "kit_harington", "nicole_kidman", "sarah_paulson")


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def cli(stack: dict, *args: str, check: bool = True):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def new_tenant(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def ingest(stack: dict, tenant: str, *paths: Path) -> dict:
    return json.loads(cli(stack, "ingest", *map(str, paths), "--tenant", tenant, "--wait", "--json").stdout)


def persons(stack: dict, tenant: str, *extra: str) -> list[dict]:
    return json.loads(cli(stack, "persons", "list", "--tenant", tenant, "--json", *extra).stdout)


def settled(stack: dict, tenant: str, faces: int, timeout: float = 60.0) -> list[dict]:
    """The persons once all ``faces`` are assigned (assignment follows indexing) and every
    count agrees with the faces listed (a listing may fall between a merge's writes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = persons(stack, tenant, "--with-faces", "--include-hidden")
        counted = sum(p["face_count"] for p in found) == faces
        consistent = all(p["face_count"] == len(p["faces"]) for p in found)
        if (counted and consistent) or time.monotonic() > deadline:
            assert counted and consistent, found
            return found
        time.sleep(0.3)


def identity(face: dict) -> str:
    return face["url"].rstrip("/").split("/")[-2]


def by_identity(found: list[dict]) -> dict[str, set[str]]:
    """Identity -> the persons its faces are in."""
    out: dict[str, set[str]] = {}
    for person in found:
        for face in person["faces"]:
            out.setdefault(identity(face), set()).add(person["person_id"])
    return out


def person_with(found: list[dict], name: str) -> dict:
    """The person holding the faces of identity ``name`` (they are in one person)."""
    [person] = [p for p in found if name in {identity(f) for f in p["faces"]}]
    return person


def bcubed_of(found: list[dict]) -> tuple[float, float, float]:
    from facepipe.persons.clustering import bcubed

    faces = [(identity(f), p["person_id"]) for p in found for f in p["faces"]]
    return bcubed([t for t, _ in faces], [q for _, q in faces])


def test_faces_group_into_persons_and_search_finds_a_persons_photos(stack: dict) -> None:
    assert "persons" in stack["state"]["components"]  # facepipe up starts it
    tenant = new_tenant("persons")
    summary = ingest(stack, tenant, SHARED_FACES)
    found = settled(stack, tenant, summary["faces_indexed"])
    assert [p["face_count"] for p in found] == sorted((p["face_count"] for p in found), reverse=True)
    for person in found:
        assert set(person) >= {"person_id", "name", "face_count", "thumb", "faces"}
        assert person["name"] == ""
        assert Path(person["thumb"]).is_file()
        assert all(set(f) >= {"image_sha256", "face_index", "url"} for f in person["faces"])
    groups = by_identity(found)
    for name in WHOLE:
        assert len(groups[name]) == 1, (name, groups[name])
    precision, _, f1 = bcubed_of(found)
    assert precision >= 0.8 and f1 >= 0.8, (precision, f1)

    obama = person_with(found, "barack_obama")
    cli(stack, "persons", "rename", "--tenant", tenant, obama["person_id"], "Barack")
    listed = json.loads(
        cli(stack, "search", "--tenant", tenant, "--person", obama["person_id"], "--json").stdout
    )
    assert {m["url"] for m in listed["matches"]} == {f["url"] for f in obama["faces"]}
    hits = json.loads(
        cli(
            stack, "search", str(SHARED_FACES / "barack_obama" / "obama.jpg"), "--tenant", tenant, "--json"
        ).stdout
    )["matches"]
    assert hits and all(set(m) >= {"person_id", "person_name"} for m in hits)
    assert {(m["person_id"], m["person_name"]) for m in hits if identity(m) == "barack_obama"} == {
        (obama["person_id"], "Barack")
    }
    assert all(m["person_name"] == "" for m in hits if m["person_id"] != obama["person_id"])
    only = json.loads(
        cli(
            stack,
            "search",
            str(SHARED_FACES / "barack_obama" / "obama.jpg"),
            "--tenant",
            tenant,
            "--person",
            obama["person_id"],
            "--top-k",
            "50",
            "--min-score",
            "-1",
            "--json",
        ).stdout
    )["matches"]
    assert {m["person_id"] for m in only} == {obama["person_id"]}


def test_corrections_round_trip_and_survive_a_recluster(stack: dict) -> None:
    tenant = new_tenant("corrections")
    summary = ingest(stack, tenant, SHARED_FACES / "brad_pitt", SHARED_FACES / "nicole_kidman")
    found = settled(stack, tenant, summary["faces_indexed"])
    # Merge by hand into one person (named after the one named): it stays one.
    brad = person_with(found, "brad_pitt")
    others = [p for p in found if p["person_id"] != brad["person_id"]]
    assert others, "brad_pitt and nicole_kidman were grouped into one person"
    cli(stack, "persons", "rename", "--tenant", tenant, others[0]["person_id"], "Nicole")
    merged = json.loads(
        cli(
            stack,
            "persons",
            "merge",
            "--tenant",
            tenant,
            "--into",
            brad["person_id"],
            *[p["person_id"] for p in others],
            "--json",
        ).stdout
    )
    assert merged["name"] == "Nicole"
    assert merged["face_count"] == summary["faces_indexed"]
    cli(stack, "persons", "recluster", "--tenant", tenant, "--wait")
    after = persons(stack, tenant, "--with-faces")
    assert [(p["person_id"], p["name"], p["face_count"]) for p in after] == [
        (brad["person_id"], "Nicole", merged["face_count"])
    ]
    brad = after[0]
    nicole = {"faces": [f for f in brad["faces"] if identity(f) == "nicole_kidman"]}
    brad["face_count"] -= len(nicole["faces"])
    brad["faces"] = [f for f in brad["faces"] if identity(f) != "nicole_kidman"]

    # Split Nicole's faces out again, under a new name; rename the rest; hide one.
    moved = [f["point_id"] for f in nicole["faces"]]
    split = json.loads(
        cli(
            stack,
            "persons",
            "split",
            "--tenant",
            tenant,
            brad["person_id"],
            *moved,
            "--name",
            "Kidman",
            "--json",
        ).stdout
    )
    new_id = split["to_person"]["person_id"]
    assert split["to_person"]["face_count"] == len(moved)
    assert split["from_person"]["face_count"] == brad["face_count"]
    cli(stack, "persons", "rename", "--tenant", tenant, brad["person_id"], "Brad")
    cli(stack, "persons", "hide", "--tenant", tenant, new_id)
    assert [p["person_id"] for p in persons(stack, tenant)] == [brad["person_id"]]
    cli(stack, "persons", "recluster", "--tenant", tenant, "--wait")
    after = {p["person_id"]: p for p in persons(stack, tenant, "--with-faces", "--include-hidden")}
    assert set(after) == {brad["person_id"], new_id}
    assert (after[brad["person_id"]]["name"], after[brad["person_id"]]["hidden"]) == ("Brad", False)
    assert (after[new_id]["name"], after[new_id]["hidden"]) == ("Kidman", True)
    assert {f["point_id"] for f in after[new_id]["faces"]} == set(moved)
    cli(stack, "persons", "hide", "--tenant", tenant, new_id, "--show")
    assert len(persons(stack, tenant)) == 2

    # A face taken out of a person stays out of it through a recluster.
    face = brad["faces"][0]["point_id"]
    out = json.loads(cli(stack, "persons", "unassign", "--tenant", tenant, face, "--json").stdout)
    assert out == {"point_id": face, "person_id": brad["person_id"], "person_removed": False}
    shown = json.loads(cli(stack, "persons", "show", "--tenant", tenant, brad["person_id"], "--json").stdout)
    assert face not in {f["point_id"] for f in shown["faces"]}
    assert shown["face_count"] == brad["face_count"] - 1
    cli(stack, "persons", "recluster", "--tenant", tenant, "--wait")
    shown = json.loads(cli(stack, "persons", "show", "--tenant", tenant, brad["person_id"], "--json").stdout)
    assert face not in {f["point_id"] for f in shown["faces"]}

    # Mistakes are one line, not a traceback.
    missing = cli(stack, "persons", "rename", "--tenant", tenant, "0" * 32, "X", check=False)
    assert missing.returncode != 0 and "no person" in missing.stderr and "Traceback" not in missing.stderr
    bad = cli(stack, "persons", "show", "--tenant", tenant, "not-an-id", check=False)
    assert bad.returncode != 0 and "person id" in bad.stderr and "Traceback" not in bad.stderr


def test_erasure_updates_persons_and_an_empty_person_disappears(stack: dict) -> None:
    tenant = new_tenant("erasure")
    summary = ingest(stack, tenant, SHARED_FACES / "barack_obama", SHARED_FACES / "rose_leslie")
    found = settled(stack, tenant, summary["faces_indexed"])
    obama, rose = person_with(found, "barack_obama"), person_with(found, "rose_leslie")
    assert obama["person_id"] != rose["person_id"]
    cli(stack, "persons", "rename", "--tenant", tenant, rose["person_id"], "Rose")
    best = obama["best_face"]["image_sha256"]
    cli(stack, "erase", "--tenant", tenant, "--sha256", best)
    deadline = time.monotonic() + 30
    while True:
        now = {p["person_id"]: p for p in persons(stack, tenant)}
        if now[obama["person_id"]]["face_count"] == obama["face_count"] - 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert now[obama["person_id"]]["face_count"] == obama["face_count"] - 1
    assert now[obama["person_id"]]["best_face"]["image_sha256"] != best
    for face in rose["faces"]:
        cli(stack, "erase", "--tenant", tenant, "--sha256", face["image_sha256"])
    deadline = time.monotonic() + 30
    while (
        rose["person_id"] in {p["person_id"] for p in persons(stack, tenant)} and time.monotonic() < deadline
    ):
        time.sleep(0.3)
    assert [p["person_id"] for p in persons(stack, tenant)] == [obama["person_id"]]
    cli(stack, "persons", "recluster", "--tenant", tenant, "--wait")
    assert [(p["person_id"], p["face_count"]) for p in persons(stack, tenant)] == [
        (obama["person_id"], obama["face_count"] - 1)
    ]
    cli(stack, "erase", "--tenant", tenant, "--all")
    deadline = time.monotonic() + 30
    while persons(stack, tenant) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert persons(stack, tenant) == []


def test_the_best_face_is_upgraded_by_a_sharper_larger_one(stack: dict, tmp_path: Path) -> None:
    tenant = new_tenant("bestface")
    image = cv2.imread(str(SHARED_FACES / "nicole_kidman" / "nicole_1.jpg"))
    small = cv2.GaussianBlur(cv2.resize(image, (160, 240), interpolation=cv2.INTER_AREA), (3, 3), 0)
    cv2.imwrite(str(tmp_path / "small.jpg"), small)
    ingest(stack, tenant, tmp_path / "small.jpg")
    [before] = settled(stack, tenant, 1)
    ingest(stack, tenant, SHARED_FACES / "nicole_kidman" / "nicole_2.jpg")
    [after] = settled(stack, tenant, 2)
    assert after["person_id"] == before["person_id"]
    assert after["best_face"]["quality"] > before["best_face"]["quality"]
    assert after["best_face"]["url"].endswith("nicole_2.jpg")
    assert after["thumb"] != before["thumb"] and Path(after["thumb"]).is_file()


def test_two_replicas_racing_on_one_tenant_make_one_person_per_person(stack: dict, tmp_path: Path) -> None:
    """A second persons replica shares the stack's consumer: the faces of one ingest are
    assigned by both at once, and the tenant lock keeps them from starting a person twice."""
    data_dir = Path(stack["dir"])
    env = {
        **stack["env"],
        **stack["state"]["env"],
        "FACEPIPE_NATS_USER": "persons",
        "FACEPIPE_NATS_PASSWORD_FILE": str(data_dir / "nats-auth" / "persons.password"),
        "PYTHONUNBUFFERED": "1",
    }
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path / "persons-2.log"
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "facepipe"),
            "serve",
            "persons",
            "--port",
            str(grpc_port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        wait_serving(f"127.0.0.1:{grpc_port}", timeout=120, proc=proc)
        tenant = new_tenant("race")
        photos = [SHARED_FACES / name for name in WHOLE]
        summary = ingest(stack, tenant, *photos)
        found = settled(stack, tenant, summary["faces_indexed"])
        groups = by_identity(found)
        assert {name: len(groups[name]) for name in WHOLE} == {name: 1 for name in WHOLE}
        assert len(found) == len(WHOLE)
        # The second replica took part.
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/stats", timeout=10) as resp:
            assert json.loads(resp.read())["faces_assigned"] > 0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -15):
            print(log.read_text(errors="replace"))


def test_a_recluster_while_ingest_goes_on_leaves_every_face_in_one_person(stack: dict) -> None:
    tenant = new_tenant("busy")
    first = ingest(stack, tenant, SHARED_FACES / "barack_obama", SHARED_FACES / "brad_pitt")
    settled(stack, tenant, first["faces_indexed"])
    command = [
        str(VENV_BIN / "facepipe"),
        "ingest",
        str(SHARED_FACES),
        "--tenant",
        tenant,
        "--wait",
        "--json",
    ]
    busy = subprocess.Popen(
        [*command, "--data-dir", str(stack["dir"])],
        env=stack["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reclusters = [
            json.loads(cli(stack, "persons", "recluster", "--tenant", tenant, "--wait", "--json").stdout)
            for _ in range(3)
        ]
        out, err = busy.communicate(timeout=600)
    finally:
        if busy.poll() is None:
            busy.kill()
            busy.wait()
    assert busy.returncode == 0, err
    assert all(r["state"] == "done" for r in reclusters), reclusters
    total = first["faces_indexed"] + json.loads(out)["faces_indexed"]
    found = settled(stack, tenant, total)
    faces = [f["point_id"] for p in found for f in p["faces"]]
    assert len(faces) == len(set(faces)) == total
    assert all(p["face_count"] == len(p["faces"]) > 0 for p in found)


def test_a_quiet_tenant_settles_on_its_own_and_keeps_its_corrections(stack: dict) -> None:
    """Once a tenant has had no new faces for a while the service reclusters it itself
    (`--status` shows it without starting one); what the user decided stays."""
    tenant = new_tenant("settle")
    never = cli(stack, "persons", "recluster", "--tenant", tenant, "--status")
    assert never.stdout.strip() == f"tenant {tenant} was never reclustered"
    status = json.loads(cli(stack, "persons", "recluster", "--tenant", tenant, "--status", "--json").stdout)
    assert status["state"] == "" and not status["automatic"]

    photos = [SHARED_FACES / name for name in WHOLE]
    summary = ingest(stack, tenant, *photos)
    found = settled(stack, tenant, summary["faces_indexed"])
    named = person_with(found, "brad_pitt")
    cli(stack, "persons", "rename", "--tenant", tenant, named["person_id"], "Brad")
    deadline = time.monotonic() + 120
    while True:
        status = json.loads(
            cli(stack, "persons", "recluster", "--tenant", tenant, "--status", "--wait", "--json").stdout
        )
        if status["state"] == "done" and status["faces"] == summary["faces_indexed"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["automatic"], status
    text = cli(stack, "persons", "recluster", "--tenant", tenant, "--status").stdout
    assert text.startswith(
        f"automatic recluster of tenant {tenant}: done: {summary['faces_indexed']} face(s)"
    )
    after = settled(stack, tenant, summary["faces_indexed"])
    assert {name: len(groups) for name, groups in by_identity(after).items() if name in WHOLE} == {
        name: 1 for name in WHOLE
    }
    assert person_with(after, "brad_pitt")["person_id"] == named["person_id"]
    assert person_with(after, "brad_pitt")["name"] == "Brad"
