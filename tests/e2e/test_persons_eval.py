"""Quality of the persons through the running stack, on the eval set: the LFW photos and
../shared/faces ingested as photos, the Glint crops ingested with --aligned, each in three
random orders into tenants of their own. Scored with BCubed against the identities (the
folder names), the largest face of each photo standing for its identity: as assigned one
face at a time (provisional), once the service has settled the tenant on its own
(settled), and after a recluster asked for by hand of the first tenant."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from conftest import EVAL_FACES, EVAL_LFW, SHARED_FACES, run_facepipe

from facepipe.persons.clustering import bcubed

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
CHUNK = 40
SEEDS = (11, 23, 37)
# Three ingests of the eval set, each waiting for its tenant to settle, in one fixture.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


def cli(stack: dict, *args: str) -> str:
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], timeout=1200).stdout


def files(folder: Path, names: list[str] | None = None) -> list[Path]:
    return sorted(
        p
        for p in folder.glob("*/*")
        if p.suffix.lower() in PHOTO_SUFFIXES and (names is None or p.parent.name in names)
    )


def ingest_in_order(stack: dict, tenant: str, photos: list[Path], crops: list[Path], seed: int) -> int:
    """Ingests everything in a random order, in chunks; returns the faces indexed."""
    rng = random.Random(seed)
    photos, crops = rng.sample(photos, len(photos)), rng.sample(crops, len(crops))
    chunks = [("photos", photos[i : i + CHUNK]) for i in range(0, len(photos), CHUNK)]
    chunks += [("crops", crops[i : i + CHUNK]) for i in range(0, len(crops), CHUNK)]
    rng.shuffle(chunks)
    faces = 0
    for kind, chunk in chunks:
        aligned = ["--aligned"] if kind == "crops" else []
        summary = json.loads(
            cli(stack, "ingest", *map(str, chunk), "--tenant", tenant, "--wait", "--json", *aligned)
        )
        faces += summary["faces_indexed"]
    return faces


def persons(stack: dict, tenant: str, faces: int, timeout: float = 300.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = json.loads(
            cli(stack, "persons", "list", "--tenant", tenant, "--json", "--with-faces", "--include-hidden")
        )
        if sum(p["face_count"] for p in found) >= faces or time.monotonic() > deadline:
            assert sum(p["face_count"] for p in found) == faces
            return found
        time.sleep(1)


def settled(stack: dict, tenant: str, faces: int, since_ms: int, timeout: float = 300.0) -> dict:
    """Waits for the service's own recluster of all ``faces``, started after ``since_ms``."""
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(cli(stack, "persons", "recluster", "--tenant", tenant, "--status", "--json"))
        if (
            status["automatic"]
            and status["state"] == "done"
            and status["faces"] == faces
            and status["started_at_ms"] >= since_ms
        ):
            return status
        assert time.monotonic() < deadline, f"tenant {tenant} did not settle: {status}"
        time.sleep(1)


def scores(found: list[dict], glint: set[str]) -> dict[str, float]:
    """BCubed of the largest face of each image, on the whole set and on the Glint part."""
    largest: dict[str, tuple[float, str, str]] = {}
    for person in found:
        for face in person["faces"]:
            x1, y1, x2, y2 = face["bbox"]
            area = (x2 - x1) * (y2 - y1)
            identity = face["url"].rstrip("/").split("/")[-2]
            if area > largest.get(face["image_sha256"], (-1.0, "", ""))[0]:
                largest[face["image_sha256"]] = (area, identity, person["person_id"])
    truth = [identity for _, identity, _ in largest.values()]
    predicted = [person for _, _, person in largest.values()]
    precision, recall, f1 = bcubed(truth, predicted)
    part = [(t, p) for t, p in zip(truth, predicted, strict=True) if t in glint]
    _, _, glint_f1 = bcubed([t for t, _ in part], [p for _, p in part])
    return {"precision": precision, "recall": recall, "f1": f1, "glint_f1": glint_f1, "faces": len(truth)}


@pytest.fixture(scope="module")
def measured(stack: dict) -> dict:
    """The scores of three tenants ingested in three random orders, each as assigned and
    once settled, and of the first one again after a recluster asked for by hand."""
    if not EVAL_FACES.is_dir() or not SHARED_FACES.is_dir():
        pytest.skip("../shared/eval/faces or ../shared/faces is not present")
    identities = sorted(p.name for p in EVAL_FACES.iterdir() if p.is_dir())
    glint = set(identities) - set(EVAL_LFW)
    photos = files(EVAL_FACES, list(EVAL_LFW)) + files(SHARED_FACES)
    crops = files(EVAL_FACES, sorted(glint))
    provisional, settled_scores, tenants = [], [], []
    for seed in SEEDS:
        tenant = f"eval{seed}x{int(time.time())}"
        faces = ingest_in_order(stack, tenant, photos, crops, seed)
        ingested_ms = int(time.time() * 1000)
        provisional.append(scores(persons(stack, tenant, faces), glint))
        settled(stack, tenant, faces, ingested_ms)
        settled_scores.append(scores(persons(stack, tenant, faces), glint))
        tenants.append((tenant, faces))
    tenant, faces = tenants[0]
    cli(stack, "persons", "recluster", "--tenant", tenant, "--wait")
    reclustered = scores(persons(stack, tenant, faces), glint)
    result = {"provisional": provisional, "settled": settled_scores, "reclustered": reclustered}
    print(json.dumps(result, indent=2))
    return result


def test_persons_quality_through_the_stack(measured: dict) -> None:
    for m in [*measured["settled"], measured["reclustered"]]:
        assert m["f1"] >= 0.95 and m["precision"] >= 0.98 and m["glint_f1"] >= 0.93, m
    # One face at a time, an order now and then joins two look-alikes (1 in 12 orders put
    # two people together, precision 0.975): settling repairs it. The F1 floor holds anyway.
    for m in measured["provisional"]:
        assert m["f1"] >= 0.95, m


def test_persons_do_not_depend_on_the_order_or_on_a_recluster(measured: dict) -> None:
    f1s = [m["f1"] for m in measured["settled"]]
    assert max(f1s) - min(f1s) <= 0.01, f1s
    assert abs(measured["reclustered"]["f1"] - f1s[0]) <= 0.01, (measured["reclustered"], f1s[0])
