"""Enrolment, recognition and verification through the running stack's recognizer.

Accuracy on ``../shared/eval/faces``: 5 photos of every LFW identity are enrolled (through
``facepipe subjects enrol``), the other 5 recognized (the labelled face is the one nearest
the image centre): rank-1 at least 0.99. Photos of people not enrolled (``../shared/faces``
and the Glint identities, whose tight 112x112 crops are padded as eval/faces/SOURCES.md
says) come back unknown at least 99% of the time. Verify on every pair of the LFW part
reaches 0.99 accuracy at the pack's calibrated threshold, with the numbers of the
in-process ``facepipe verify --local``. Subjects round-trip (enrol, rename, remove a face,
delete, tenant erasure), and a deleted subject's faces leave storage: its points leave the
gallery and its crops and thumbnails leave the object store."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from conftest import EVAL_FACES, EVAL_LFW, SHARED_FACES, run_facepipe, stack_channel

from facepipe.v1 import recognizer_pb2, recognizer_pb2_grpc

ENROLLED_PER_IDENTITY = 5
RECOGNIZED_PER_IDENTITY = 5
GLINT_PAD = 56  # Glint crops are tight: padded as eval/faces/SOURCES.md says before detection
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@pytest.fixture(scope="module")
def stack(shared_stack) -> dict:
    return shared_stack


@pytest.fixture(scope="module")
def recognizer(stack) -> recognizer_pb2_grpc.RecognizerStub:
    return recognizer_pb2_grpc.RecognizerStub(stack_channel(stack, "recognizer"))


def cli(stack, *args: str, check: bool = True):
    return run_facepipe(*args, "--data-dir", str(stack["dir"]), env=stack["env"], check=check)


def new_tenant(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def photos(identity: str) -> list[Path]:
    return sorted(p for p in (EVAL_FACES / identity).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def centre_face(response: recognizer_pb2.RecognizeResponse) -> recognizer_pb2.RecognizedFace | None:
    """The face whose box centre is nearest the image centre (the labelled one)."""
    if not response.faces:
        return None

    def distance(f: recognizer_pb2.RecognizedFace) -> float:
        b = f.face.box
        return ((b.x1 + b.x2) / 2 - response.width / 2) ** 2 + ((b.y1 + b.y2) / 2 - response.height / 2) ** 2

    return min(response.faces, key=distance)


def recognize(recognizer, tenant: str, data: bytes, **options) -> recognizer_pb2.RecognizeResponse:
    request = recognizer_pb2.RecognizeRequest(
        tenant_id=tenant, image=data, options=recognizer_pb2.RecognizeOptions(**options)
    )
    return recognizer.Recognize(request, timeout=60)


def gallery_points(stack) -> int:
    port = stack["state"]["components"]["recognizer"]["http_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return json.loads(resp.read())["gallery_points"]


def subject_objects(stack, tenant: str, subject_id: str = "") -> list[Path]:
    """The subject crops and thumbnails the stack's object store holds for a tenant."""
    root = Path(stack["env"].get("FACEPIPE_OBJECT_DIR") or Path(stack["dir"]) / "objects")
    return [
        p
        for bucket in ("face-crops", "face-thumbs")
        for p in (root / bucket / tenant / "subjects" / subject_id).rglob("*")
        if p.is_file()
    ]


@pytest.fixture(scope="module")
def enrolled(stack) -> tuple[str, dict[str, str]]:
    """A tenant with 5 photos of every LFW identity enrolled through the CLI: the tenant
    and subject id -> identity."""
    tenant = new_tenant("recog")
    subjects = {}
    for identity in EVAL_LFW:
        chosen = photos(identity)[:ENROLLED_PER_IDENTITY]
        doc = json.loads(
            cli(
                stack,
                "subjects",
                "enrol",
                "--tenant",
                tenant,
                "--name",
                identity,
                *map(str, chosen),
                "--json",
            ).stdout
        )
        assert doc["faces_added"] == ENROLLED_PER_IDENTITY and not doc["problems"], doc
        subjects[doc["subject_id"]] = identity
    return tenant, subjects


def test_enrolled_identities_are_recognized(stack, recognizer, enrolled) -> None:
    tenant, subjects = enrolled
    listed = json.loads(cli(stack, "subjects", "list", "--tenant", tenant, "--json").stdout)
    assert sorted(d["name"] for d in listed) == sorted(EVAL_LFW)
    assert {d["faces"] for d in listed} == {ENROLLED_PER_IDENTITY}
    right = total = 0
    misses = []
    for identity in EVAL_LFW:
        for photo in photos(identity)[
            ENROLLED_PER_IDENTITY : ENROLLED_PER_IDENTITY + RECOGNIZED_PER_IDENTITY
        ]:
            face = centre_face(recognize(recognizer, tenant, photo.read_bytes()))
            total += 1
            if face is not None and face.subject_name == identity:
                assert subjects[face.subject_id] == identity
                right += 1
            else:
                misses.append((photo.name, face.subject_name if face else None))
    print(f"rank-1 {right}/{total} = {right / total:.4f}; misses {misses}")
    assert total == len(EVAL_LFW) * RECOGNIZED_PER_IDENTITY
    assert right / total >= 0.99, misses


def test_recognize_command_lists_every_face(stack, recognizer, enrolled) -> None:
    tenant, subjects = enrolled
    photo = photos("Tony_Blair")[ENROLLED_PER_IDENTITY]
    out = json.loads(
        cli(stack, "recognize", str(photo), "--tenant", tenant, "--json", "--candidates", "2").stdout
    )
    answer = recognize(recognizer, tenant, photo.read_bytes(), candidates=2)
    assert len(out) == len(answer.faces) >= 1
    for doc, face in zip(out, answer.faces, strict=True):
        assert {"box", "subject", "subject_id", "similarity"} <= set(doc)
        assert doc["box"] == pytest.approx(
            [face.face.box.x1, face.face.box.y1, face.face.box.x2, face.face.box.y2], abs=0.06
        )
        assert doc["similarity"] == pytest.approx(face.similarity, abs=1e-6)
        assert doc["subject_id"] == (face.subject_id or None)
        assert [c["subject_id"] for c in doc["candidates"]] == [c.subject_id for c in face.candidates]
        assert len(doc["candidates"]) == 2 and doc["candidates"][0]["similarity"] <= doc["similarity"]
    assert any(d["subject"] == "Tony_Blair" and subjects[d["subject_id"]] == "Tony_Blair" for d in out)
    # Someone not enrolled: the face is listed, as unknown, with its best similarity.
    stranger = json.loads(
        cli(
            stack, "recognize", str(SHARED_FACES / "brad_pitt" / "brad_1.jpg"), "--tenant", tenant, "--json"
        ).stdout
    )
    assert stranger and all(d["subject"] is None and d["subject_id"] is None for d in stranger)
    assert all(d["similarity"] < answer.threshold for d in stranger)


def test_people_not_enrolled_are_unknown(recognizer, enrolled) -> None:
    tenant, _ = enrolled
    images = [(p, 0) for p in sorted(SHARED_FACES.glob("*/*")) if p.suffix.lower() in PHOTO_SUFFIXES]
    glint = sorted(d.name for d in EVAL_FACES.iterdir() if d.is_dir() and d.name not in EVAL_LFW)
    assert len(glint) >= 20
    images += [(p, GLINT_PAD) for identity in glint for p in photos(identity)]
    unknown = compared = 0
    known = []
    for path, pad in images:
        data = path.read_bytes()
        if pad:
            padded = cv2.copyMakeBorder(
                cv2.imread(str(path)), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0
            )
            data = cv2.imencode(".png", padded)[1].tobytes()
        face = centre_face(recognize(recognizer, tenant, data))
        if face is None:
            continue  # no face to recognize: neither a hit nor a miss
        compared += 1
        if face.subject_id:
            known.append((path.name, face.subject_name, round(face.similarity, 3)))
        else:
            unknown += 1
    print(f"unknown {unknown}/{compared} = {unknown / compared:.4f}; taken for someone {known}")
    assert compared >= 0.95 * len(images)
    assert unknown / compared >= 0.99, known


def test_verify_every_lfw_pair_through_the_stack(stack, recognizer) -> None:
    images = [(identity, p.read_bytes()) for identity in EVAL_LFW for p in photos(identity)]
    right = total = 0
    threshold = None
    for (who_a, a), (who_b, b) in itertools.combinations(images, 2):
        response = recognizer.Verify(recognizer_pb2.VerifyRequest(image_a=a, image_b=b), timeout=60)
        threshold = response.threshold
        total += 1
        right += response.verified == (who_a == who_b)
    print(f"verify accuracy {right}/{total} = {right / total:.4f} at threshold {threshold:.3f}")
    assert total == len(images) * (len(images) - 1) // 2
    assert right / total >= 0.99


def test_verify_command_keeps_its_output_and_exit_codes(stack, tmp_path) -> None:
    tony = photos("Tony_Blair")
    same = cli(stack, "verify", str(tony[0]), str(tony[1]), "--json")
    doc = json.loads(same.stdout)
    assert set(doc) == {"verified", "similarity", "threshold"} and doc["verified"] is True
    # The same numbers as the pack in-process.
    local = json.loads(cli(stack, "verify", "--local", str(tony[0]), str(tony[1]), "--json").stdout)
    assert doc["threshold"] == local["threshold"]
    assert doc["similarity"] == pytest.approx(local["similarity"], abs=1e-5)
    other = json.loads(cli(stack, "verify", str(tony[0]), str(photos("Vladimir_Putin")[0]), "--json").stdout)
    assert other["verified"] is False and other["similarity"] < other["threshold"]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for argv, code, message in [
        ([str(tony[0]), str(blank)], 3, f"no face found in {blank}"),
        ([str(tony[0]), str(text)], 1, f"{text} is not a readable image"),
        ([str(tony[0])], 2, "give two images to compare (got 1)"),
    ]:
        result = cli(stack, "verify", *argv, check=False)
        assert result.returncode == code, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_subject_round_trip_and_deletion_leaves_no_trace(stack, recognizer) -> None:
    tenant = new_tenant("subj")
    chirac = photos("Jacques_Chirac")
    before = gallery_points(stack)
    doc = json.loads(
        cli(
            stack,
            "subjects",
            "enrol",
            "--tenant",
            tenant,
            "--name",
            "Jacques",
            "--external-id",
            "E-17",
            "--meta",
            "team=blue",
            str(chirac[0]),
            str(chirac[1]),
            str(chirac[2]),
            "--json",
        ).stdout
    )
    subject_id = doc["subject_id"]
    assert doc["faces_added"] == 3 and doc["external_id"] == "E-17" and doc["metadata"] == {"team": "blue"}
    assert gallery_points(stack) == before + 3 + 1  # three faces and the record
    assert len(subject_objects(stack, tenant, subject_id)) == 6  # a crop and a thumbnail each
    # Adding faces to the subject, one photo without a face reported and skipped.
    blank = Path(stack["dir"]) / "blank-subject.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    added = json.loads(
        cli(
            stack,
            "subjects",
            "enrol",
            "--tenant",
            tenant,
            "--subject",
            subject_id,
            str(chirac[3]),
            str(blank),
            "--json",
        ).stdout
    )
    assert added["faces_added"] == 1 and added["faces"] == 4
    assert added["problems"] == [{"photo": str(blank), "problem": "no face found"}]
    renamed = json.loads(
        cli(stack, "subjects", "rename", "--tenant", tenant, subject_id, "Jacques Chirac", "--json").stdout
    )
    assert renamed["name"] == "Jacques Chirac" and renamed["external_id"] == "E-17"
    shown = json.loads(cli(stack, "subjects", "show", "--tenant", tenant, subject_id, "--json").stdout)
    assert shown["name"] == "Jacques Chirac" and len(shown["face_list"]) == 4
    face = centre_face(recognize(recognizer, tenant, chirac[5].read_bytes()))
    assert face is not None and face.subject_name == "Jacques Chirac" and face.external_id == "E-17"
    # Removing one face deletes its point and its two objects.
    gone = shown["face_list"][0]["face_id"]
    left = json.loads(
        cli(stack, "subjects", "remove-face", "--tenant", tenant, subject_id, gone, "--json").stdout
    )
    assert [f["face_id"] for f in left["face_list"]] == [f["face_id"] for f in shown["face_list"][1:]]
    assert gallery_points(stack) == before + 3 + 1
    assert not [p for p in subject_objects(stack, tenant, subject_id) if gone in p.name]
    # Another tenant sees none of it.
    other = new_tenant("subj")
    assert json.loads(cli(stack, "subjects", "list", "--tenant", other, "--json").stdout) == []
    missing = cli(stack, "subjects", "show", "--tenant", other, subject_id, check=False)
    assert missing.returncode == 1 and f"no subject {subject_id} in tenant {other}" in missing.stderr
    assert not centre_face(recognize(recognizer, other, chirac[5].read_bytes())).subject_id
    # Delete: the record, every face's point and every object go.
    deleted = json.loads(cli(stack, "subjects", "delete", "--tenant", tenant, subject_id, "--json").stdout)
    assert deleted["faces_deleted"] == 3 and deleted["objects_deleted"] == 6
    assert gallery_points(stack) == before
    assert subject_objects(stack, tenant) == []
    assert json.loads(cli(stack, "subjects", "list", "--tenant", tenant, "--json").stdout) == []
    assert not centre_face(recognize(recognizer, tenant, chirac[5].read_bytes())).subject_id
    with pytest.raises(grpc.RpcError) as err:
        recognizer.GetSubject(recognizer_pb2.GetSubjectRequest(tenant_id=tenant, subject_id=subject_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Every change was audited, with what it affected.
    wanted = {"subject.enrol", "subject.update", "subject.remove_faces", "subject.delete"}
    deadline = time.monotonic() + 30
    while True:
        records = json.loads(cli(stack, "audit", "--tenant", tenant, "--since", "1h", "--json").stdout)
        if wanted <= {r["action"] for r in records} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_action = {r["action"]: r for r in records}
    assert wanted <= set(by_action), records
    assert by_action["subject.delete"]["affected"] == {
        "subjects_deleted": 1,
        "faces_deleted": 3,
        "objects_deleted": 6,
    }
    assert by_action["subject.delete"]["detail"] == {"subject_id": subject_id}
    assert all(
        r["outcome"] == "OK" and r["service"] == "recognizer" for r in records if r["action"] in wanted
    )


def test_tenant_erasure_removes_its_subjects(stack, recognizer) -> None:
    tenant, bystander = new_tenant("erase"), new_tenant("keep")
    putin = photos("Vladimir_Putin")
    before = gallery_points(stack)
    for t in (tenant, bystander):
        cli(stack, "subjects", "enrol", "--tenant", t, "--name", "Vladimir", str(putin[0]), str(putin[1]))
    assert gallery_points(stack) == before + 2 * 3
    erased = json.loads(cli(stack, "erase", "--all", "--tenant", tenant, "--json").stdout)
    assert erased["subjects_deleted"] == 1 and erased["subject_faces_deleted"] == 2
    assert gallery_points(stack) == before + 3
    assert subject_objects(stack, tenant) == [] and len(subject_objects(stack, bystander)) == 4
    assert json.loads(cli(stack, "subjects", "list", "--tenant", tenant, "--json").stdout) == []
    face = centre_face(recognize(recognizer, bystander, putin[3].read_bytes()))
    assert face.subject_name == "Vladimir"
    cli(stack, "erase", "--all", "--tenant", bystander)
    assert gallery_points(stack) == before


def test_a_subject_enrolled_from_a_person_recognizes_them(stack, recognizer) -> None:
    """Enrolment from a person: the recognizer reads the person's best faces from the
    persons service (with the service key) and recognizes a photo not ingested."""
    tenant = new_tenant("fromperson")
    identity = EVAL_LFW[0]
    ingested, held_out = photos(identity)[:4], photos(identity)[6]
    cli(stack, "ingest", *map(str, ingested), "--tenant", tenant, "--wait")
    deadline = time.monotonic() + 120
    persons: list[dict] = []
    while time.monotonic() < deadline:
        persons = json.loads(cli(stack, "persons", "list", "--tenant", tenant, "--json").stdout)
        if persons and sum(p["face_count"] for p in persons) >= len(ingested):
            break
        time.sleep(0.5)
    biggest = persons[0]
    assert biggest["face_count"] == len(ingested), persons

    enrolled = recognizer.EnrolSubject(
        recognizer_pb2.EnrolSubjectRequest(
            tenant_id=tenant, name=identity, from_person_id=biggest["person_id"]
        ),
        timeout=60,
    )
    assert enrolled.faces_added == len(ingested) and not enrolled.problems
    assert all(f.source.startswith(f"person:{biggest['person_id']}/") for f in enrolled.subject.faces)

    face = centre_face(recognize(recognizer, tenant, held_out.read_bytes()))
    assert face is not None and face.subject_name == identity, face

    with pytest.raises(grpc.RpcError) as missing:
        recognizer.EnrolSubject(
            recognizer_pb2.EnrolSubjectRequest(tenant_id=tenant, name="nobody", from_person_id="0" * 32),
            timeout=60,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND, missing.value.details()
