"""``facepipe subjects``: enrolled people (subjects) of a tenant, through the running
stack's recognizer: enrol from photos, list, show, rename, remove faces, delete."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from facepipe.cli.errors import CliError
from facepipe.cli.recognize_cmds import read_image, recognizer_call


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else ""


def subject_doc(subject, with_faces: bool) -> dict:
    doc = {
        "subject_id": subject.subject_id,
        "tenant": subject.tenant_id,
        "name": subject.name,
        "external_id": subject.external_id or None,
        "metadata": dict(subject.metadata),
        "faces": subject.face_count,
        "created": _when(subject.created_at_ms),
        "updated": _when(subject.updated_at_ms),
    }
    if with_faces:
        doc["face_list"] = [
            {
                "face_id": f.face_id,
                "crop": f"{f.crop.bucket}/{f.crop.key}",
                "thumb": f"{f.thumb.bucket}/{f.thumb.key}",
                "quality": round(f.quality, 4),
                "source": f.source,
                "added": _when(f.added_at_ms),
            }
            for f in subject.faces
        ]
    return doc


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta {pair[:64]!r} is not KEY=VALUE", 2)
        out[key] = value
    return out


def _print(doc: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    external = f"  external id {doc['external_id']}" if doc.get("external_id") else ""
    print(f"{doc['subject_id']}  {doc['name']}  {doc['faces']} face(s){external}")
    for key, value in sorted(doc.get("metadata", {}).items()):
        print(f"  {key}={value}")
    for face in doc.get("face_list", []):
        print(f"  face {face['face_id']}  quality {face['quality']:.2f}  {face['source']}")


def cmd_subjects(args: argparse.Namespace) -> int:
    from facepipe.v1 import recognizer_pb2 as pb

    command = args.subjects_cmd
    if command == "enrol":
        images = [read_image(p) for p in args.photos]
        request = pb.EnrolSubjectRequest(
            tenant_id=args.tenant,
            subject_id=args.subject or "",
            name="" if args.subject else args.name or "",
            external_id=args.external_id or "",
            metadata=_metadata(args.meta),
            images=images,
            aligned=args.aligned,
        )
        if not args.subject and not args.name:
            raise CliError("give --name NAME for a new subject, or --subject ID to add faces to one", 2)
        response = recognizer_call(args, "EnrolSubject", request)
        doc = subject_doc(response.subject, with_faces=False)
        doc["faces_added"] = response.faces_added
        doc["problems"] = [
            {"photo": args.photos[p.image_index], "problem": p.message} for p in response.problems
        ]
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(
                f"enrolled {response.faces_added} face(s) as {doc['name']} ({doc['subject_id']}) "
                f"in tenant {args.tenant}; {doc['faces']} face(s) in all"
            )
            for problem in doc["problems"]:
                print(f"  skipped {problem['photo']}: {problem['problem']}")
        return 0
    if command == "list":
        subjects = []
        token = ""
        while True:
            response = recognizer_call(
                args,
                "ListSubjects",
                pb.ListSubjectsRequest(
                    tenant_id=args.tenant, page_token=token, name_contains=args.name or ""
                ),
            )
            subjects += [subject_doc(s, with_faces=False) for s in response.subjects]
            token = response.next_page_token
            if not token:
                break
        if args.json:
            print(json.dumps(subjects, indent=2))
        elif not subjects:
            print(f"no subjects in tenant {args.tenant}")
        for doc in [] if args.json else subjects:
            _print(doc, False)
        return 0
    if command == "show":
        response = recognizer_call(
            args, "GetSubject", pb.GetSubjectRequest(tenant_id=args.tenant, subject_id=args.subject_id)
        )
        _print(subject_doc(response.subject, with_faces=True), args.json)
        return 0
    if command == "rename":
        request = pb.UpdateSubjectRequest(
            tenant_id=args.tenant, subject_id=args.subject_id, name=args.name, metadata=_metadata(args.meta)
        )
        if args.external_id is not None:
            request.external_id = args.external_id
        response = recognizer_call(args, "UpdateSubject", request)
        _print(subject_doc(response.subject, with_faces=False), args.json)
        return 0
    if command == "remove-face":
        request = pb.RemoveSubjectFacesRequest(
            tenant_id=args.tenant, subject_id=args.subject_id, face_ids=args.face_ids
        )
        response = recognizer_call(args, "RemoveSubjectFaces", request)
        _print(subject_doc(response.subject, with_faces=True), args.json)
        return 0
    response = recognizer_call(
        args, "DeleteSubject", pb.DeleteSubjectRequest(tenant_id=args.tenant, subject_id=args.subject_id)
    )
    doc = {
        "subject_id": args.subject_id,
        "faces_deleted": response.faces_deleted,
        "objects_deleted": response.objects_deleted,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"deleted subject {args.subject_id}: {response.faces_deleted} face(s), "
            f"{response.objects_deleted} object(s)"
        )
    return 0
