"""Drives every call of the CompreFace Python SDK against a server and prints what each
answered as one JSON document. Run by test_compreface_sdk.py in a subprocess whose
PYTHONPATH is the SDK's own folder (the SDK needs urllib3 1.x):

    python compreface_client.py PLAN.json

PLAN: {"domain", "port", "key", "enrol": {name: [photo, ...]}, "probes": [[name, photo]],
"spare": photo, "rename": [old, new]}."""

from __future__ import annotations

import json
import sys

from compreface import CompreFace


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    options = {
        "limit": 0,
        "det_prob_threshold": 0.5,
        "prediction_count": 2,
        "face_plugins": "landmarks",
        "status": "true",
    }
    server = CompreFace(plan["domain"], str(plan["port"]), options)
    recognition = server.init_face_recognition(plan["key"])
    verification = server.init_face_verification(plan["key"])
    detection = server.init_face_detection(plan["key"])
    subjects = recognition.get_subjects()
    faces = recognition.get_face_collection()
    out: dict = {"start_delete_all": subjects.delete_all()}

    out["subjects_added"] = [subjects.add(name) for name in plan["enrol"]]
    out["add_existing"] = subjects.add(next(iter(plan["enrol"])))
    out["faces_added"] = {
        name: [faces.add(photo, name) for photo in photos] for name, photos in plan["enrol"].items()
    }
    out["subjects_listed"] = subjects.list()
    out["faces_listed"] = faces.list()

    out["recognized"] = [[name, photo, recognition.recognize(photo)] for name, photo in plan["probes"]]
    out["detected"] = [[photo, detection.detect(photo)] for _, photo in plan["probes"]]
    same = plan["probes"][0]
    other = next(p for p in plan["probes"] if p[0] != same[0])
    first_image_id = out["faces_added"][same[0]][0]["image_id"]
    out["verified_same"] = verification.verify(same[1], plan["enrol"][same[0]][0])
    out["verified_other"] = verification.verify(same[1], other[1])
    out["face_verified_same"] = faces.verify(same[1], first_image_id)
    out["face_verified_other"] = faces.verify(other[1], first_image_id)

    old, new = plan["rename"]
    out["renamed"] = subjects.update(old, new)
    out["after_rename"] = subjects.list()
    out["spare_added"] = faces.add(plan["spare"], new)
    out["spare_deleted"] = faces.delete(out["spare_added"]["image_id"])
    out["deleted_examples"] = faces.delete_all(new)
    out["faces_of_renamed"] = [f for f in faces.list()["faces"] if f["subject"] == new]
    out["deleted_subject"] = subjects.delete(new)
    out["after_delete"] = subjects.list()
    out["no_face"] = detection.detect(plan["no_face"])
    out["end_delete_all"] = subjects.delete_all()
    out["after_delete_all"] = subjects.list()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
