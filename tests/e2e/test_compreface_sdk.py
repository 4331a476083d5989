"""The official CompreFace Python SDK (compreface-sdk 0.6.0) against facepipe's web
service: every call it offers, with a key bound to one tenant, on the LFW identities of
the eval set: subjects and example faces are added from five photos each, and
recognize, detect and verify run on held-out photos, which must come back with the
right names and facepipe's own boxes. The SDK needs urllib3 1.x, so it runs in a
subprocess with PYTHONPATH set to its own folder (``make compreface-sdk``)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import EVAL_FACES, EVAL_LFW, ROOT, VENV_BIN, create_key, stack_web
from PIL import Image

SDK_DIR = ROOT / ".venv" / "compreface-sdk"
CLIENT = Path(__file__).with_name("compreface_client.py")
ENROLLED_PHOTOS = 5
PROBES_PER_IDENTITY = 2


def photos_of(name: str) -> list[Path]:
    return sorted(p for p in (EVAL_FACES / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def centre_face(faces: list[dict], width: int, height: int) -> dict:
    """The face whose box centre is nearest the image centre (the labelled one)."""

    def distance(face: dict) -> float:
        box = face["box"]
        cx, cy = (box["x_min"] + box["x_max"]) / 2, (box["y_min"] + box["y_max"]) / 2
        return (cx - width / 2) ** 2 + (cy - height / 2) ** 2

    return min(faces, key=distance)


@pytest.fixture(scope="module")
def sdk_run(shared_stack, tmp_path_factory) -> dict:
    if not (SDK_DIR / "compreface").is_dir():
        pytest.fail(f"the CompreFace SDK is not installed in {SDK_DIR}: run `make compreface-sdk`")
    web = stack_web(shared_stack)
    tenant = f"cf-{uuid.uuid4().hex[:8]}"
    key = create_key(shared_stack, tenant, "writer")
    enrol, probes = {}, []
    for name in EVAL_LFW:
        photos = photos_of(name)
        enrol[name] = [str(p) for p in photos[:ENROLLED_PHOTOS]]
        probes += [[name, str(p)] for p in photos[ENROLLED_PHOTOS : ENROLLED_PHOTOS + PROBES_PER_IDENTITY]]
    work = tmp_path_factory.mktemp("compreface")
    blank = work / "blank.jpg"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank)
    spare = photos_of(EVAL_LFW[0])[-1]
    plan = {
        "domain": "http://127.0.0.1",
        "port": web.url.rsplit(":", 1)[1],
        "key": key,
        "enrol": enrol,
        "probes": probes,
        "spare": str(spare),
        "no_face": str(blank),
        "rename": [EVAL_LFW[0], f"{EVAL_LFW[0]} (renamed)"],
    }
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(SDK_DIR)
    result = subprocess.run(
        [str(VENV_BIN / "python"), str(CLIENT), str(plan_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    # The same photos through facepipe's own REST API, for the boxes.
    native = {}
    with web.client(key) as http:
        for _, photo in probes:
            with open(photo, "rb") as f:
                response = http.post(f"/api/v1/recognize?tenant={tenant}", files={"image": f})
            assert response.status_code == 200, response.text
            native[photo] = response.json()
    return {"out": out, "plan": plan, "native": native, "tenant": tenant, "web": web, "key": key}


def test_the_sdk_runs_with_urllib3_1_in_its_own_folder() -> None:
    env = {**os.environ, "PYTHONPATH": str(SDK_DIR)}
    code = "import urllib3, requests_toolbelt, compreface; print(urllib3.__version__)"
    version = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version.startswith("1.")
    main = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import urllib3; print(urllib3.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not main.startswith("1."), "the SDK's urllib3 leaked into the main environment"


def test_subjects_and_example_faces(sdk_run) -> None:
    out, plan = sdk_run["out"], sdk_run["plan"]
    assert out["start_delete_all"] == {"deleted": 0}
    assert out["subjects_added"] == [{"subject": name} for name in plan["enrol"]]
    assert out["add_existing"]["code"] == 400 and "already exists" in out["add_existing"]["message"]
    assert sorted(out["subjects_listed"]["subjects"]) == sorted(plan["enrol"])
    image_ids = set()
    for name, added in out["faces_added"].items():
        assert len(added) == ENROLLED_PHOTOS and all(a["subject"] == name for a in added), added
        image_ids |= {a["image_id"] for a in added}
    listed = out["faces_listed"]
    assert listed["total_elements"] == len(image_ids) == ENROLLED_PHOTOS * len(plan["enrol"])
    assert listed["page_size"] == 20 and listed["total_pages"] == -(-len(image_ids) // 20)
    assert {f["image_id"] for f in listed["faces"]} <= image_ids and len(listed["faces"]) == 20


def test_recognize_names_held_out_photos(sdk_run) -> None:
    out = sdk_run["out"]
    right = 0
    for name, photo, answer in out["recognized"]:
        assert "result" in answer, answer
        with Image.open(photo) as img:
            face = centre_face(answer["result"], *img.size)
        assert set(face["box"]) == {"probability", "x_min", "y_min", "x_max", "y_max"}
        assert len(face["landmarks"]) == 5 and "execution_time" in face
        assert 1 <= len(face["subjects"]) <= 2
        assert face["subjects"] == sorted(face["subjects"], key=lambda s: -s["similarity"])
        right += face["subjects"][0]["subject"] == name
        assert "calculator" in answer["plugins_versions"]
    assert right / len(out["recognized"]) >= 0.95, f"{right} of {len(out['recognized'])} named right"


def test_boxes_are_facepipes_own(sdk_run) -> None:
    out, native = sdk_run["out"], sdk_run["native"]
    recognized = {photo: answer for _, photo, answer in out["recognized"]}
    for photo, detected in out["detected"]:
        ours = native[photo]["faces"]
        for answer in (recognized[photo]["result"], detected["result"]):
            assert len(answer) == len(ours)
            for theirs, mine in zip(answer, ours, strict=True):
                box = mine["face"]["box"]
                expected = [box.get(k, 0.0) for k in ("x1", "y1", "x2", "y2")]
                got = [theirs["box"][k] for k in ("x_min", "y_min", "x_max", "y_max")]
                assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True)), (got, expected)
                assert abs(theirs["box"]["probability"] - mine["face"]["score"]) < 1e-4


def test_verify_two_photos_and_against_an_example(sdk_run) -> None:
    out = sdk_run["out"]
    same = out["verified_same"]["result"][0]
    other = out["verified_other"]["result"][0]
    assert set(same) >= {"source_image_face", "face_matches"}
    assert same["face_matches"][0]["similarity"] > other["face_matches"][0]["similarity"]
    assert {"x_min", "y_min", "x_max", "y_max", "probability"} == set(same["source_image_face"]["box"])
    by_id_same = max(f["similarity"] for f in out["face_verified_same"]["result"])
    by_id_other = max(f["similarity"] for f in out["face_verified_other"]["result"])
    assert by_id_same > by_id_other


def test_rename_delete_and_no_face(sdk_run) -> None:
    out, plan = sdk_run["out"], sdk_run["plan"]
    old, new = plan["rename"]
    assert out["renamed"] == {"updated": True}
    assert new in out["after_rename"]["subjects"] and old not in out["after_rename"]["subjects"]
    assert out["spare_added"]["subject"] == new
    assert out["spare_deleted"] == {"image_id": out["spare_added"]["image_id"], "subject": new}
    assert out["deleted_examples"] == {"deleted": ENROLLED_PHOTOS}
    assert out["faces_of_renamed"] == []
    assert out["deleted_subject"] == {"subject": new}
    assert new not in out["after_delete"]["subjects"]
    assert out["no_face"] == {"message": "No face is found in the given image", "code": 28}
    assert out["end_delete_all"] == {"deleted": len(plan["enrol"]) - 1}
    assert out["after_delete_all"] == {"subjects": []}
