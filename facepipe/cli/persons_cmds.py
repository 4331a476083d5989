"""``facepipe persons``: list, show and correct the persons of a tenant, and rebuild them.

Every command calls the persons service of the running stack (facepipe.v1.Persons)
with an API key, so the key decides what a caller may read or change."""

from __future__ import annotations

import argparse
import json
from typing import Any

from facepipe.cli import addresses
from facepipe.cli.errors import FAILURE, CliError, rpc_failure


def _persons(args: argparse.Namespace, method: str, request: Any) -> Any:
    """Calls one Persons method on the persons service the command is aimed at."""
    import grpc

    from facepipe.auth.client import channel as key_channel
    from facepipe.v1 import persons_pb2_grpc

    addr = addresses.service_addr(args, "persons")
    key = addresses.api_key(args, addr)
    try:
        with key_channel(addr, key, tls=addresses.tls_settings(args)) as channel:
            return getattr(persons_pb2_grpc.PersonsStub(channel), method)(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "persons", addr) from None


def _thumb(args: argparse.Namespace, ref: Any) -> str:
    return addresses.thumb_location(args, ref.bucket, ref.key) if ref.key else ""


def face_doc(args: argparse.Namespace, face: Any) -> dict:
    return {
        "point_id": face.point_id,
        "image_sha256": face.image_sha256,
        "face_index": face.face_index,
        "url": face.url,
        "bbox": [round(v, 1) for v in (face.bbox.x1, face.bbox.y1, face.bbox.x2, face.bbox.y2)],
        "thumb": _thumb(args, face.thumb),
        "quality": round(face.quality, 4),
        "taken_at_ms": face.taken_at_ms,
        "pinned": face.pinned,
    }


def person_doc(args: argparse.Namespace, person: Any, with_faces: bool = False) -> dict:
    doc = {
        "person_id": person.person_id,
        "name": person.name,
        "face_count": person.face_count,
        "thumb": _thumb(args, person.best_face.thumb),
        "hidden": person.hidden,
        "best_face": face_doc(args, person.best_face) if person.best_face.point_id else None,
    }
    if with_faces:
        doc["faces"] = [face_doc(args, f) for f in person.faces]
    return doc


def _label(doc: dict) -> str:
    name = f" {doc['name']!r}" if doc["name"] else ""
    hidden = " (hidden)" if doc["hidden"] else ""
    return f"{doc['person_id']}{name}{hidden}: {doc['face_count']} face(s)"


def cmd_persons(args: argparse.Namespace) -> int:
    return {
        "list": _list,
        "show": _show,
        "rename": _rename,
        "merge": _merge,
        "split": _split,
        "hide": _hide,
        "unassign": _unassign,
        "recluster": _recluster,
    }[args.persons_cmd](args)


def _list(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    docs: list[dict] = []
    token = ""
    while True:
        response = _persons(
            args,
            "ListPersons",
            persons_pb2.ListPersonsRequest(
                tenant_id=args.tenant,
                include_hidden=args.include_hidden,
                with_faces=args.with_faces,
                page_size=1000,
                page_token=token,
                min_faces=args.min_faces,
            ),
        )
        docs += [person_doc(args, p, args.with_faces) for p in response.persons]
        token = response.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    print(f"tenant {args.tenant}: {len(docs)} person(s), biggest first")
    for doc in docs:
        print(f"  {_label(doc)}")
        if doc["thumb"]:
            print(f"      thumb={doc['thumb']}")
        for face in doc.get("faces", []):
            print(f"      {face['point_id']}  {face['url']}  face {face['face_index']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    person = None
    faces: list[Any] = []
    token = ""
    while True:
        response = _persons(
            args,
            "GetPerson",
            persons_pb2.GetPersonRequest(
                tenant_id=args.tenant, person_id=args.person_id, page_size=1000, page_token=token
            ),
        )
        person = person or response.person
        faces += list(response.person.faces)
        token = response.next_page_token
        if not token:
            break
    assert person is not None
    doc = person_doc(args, person)
    doc["faces"] = [face_doc(args, f) for f in faces]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(_label(doc))
    if doc["thumb"]:
        print(f"  thumb={doc['thumb']}")
    for face in doc["faces"]:
        pinned = "  (by hand)" if face["pinned"] else ""
        print(f"  {face['point_id']}  {face['url']}  face {face['face_index']}{pinned}")
    return 0


def _changed(args: argparse.Namespace, person: Any, verb: str) -> int:
    doc = person_doc(args, person)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{verb}: {_label(doc)}")
    return 0


def _rename(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.RenamePersonRequest(tenant_id=args.tenant, person_id=args.person_id, name=args.name)
    return _changed(args, _persons(args, "RenamePerson", request).person, "renamed")


def _merge(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.MergePersonsRequest(
        tenant_id=args.tenant, into_person_id=args.into, person_ids=args.person_ids
    )
    return _changed(args, _persons(args, "MergePersons", request).person, "merged")


def _split(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.SplitPersonRequest(
        tenant_id=args.tenant,
        person_id=args.person_id,
        point_ids=args.point_ids,
        to_person_id=args.to or "",
        name=args.name,
    )
    response = _persons(args, "SplitPerson", request)
    source = person_doc(args, response.from_person) if response.from_person.person_id else None
    target = person_doc(args, response.to_person)
    if args.json:
        print(json.dumps({"from_person": source, "to_person": target}, indent=2))
        return 0
    print(f"moved {len(set(args.point_ids))} face(s) to {_label(target)}")
    print(f"  left: {_label(source)}" if source else f"  person {args.person_id} has no faces left")
    return 0


def _hide(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.HidePersonRequest(
        tenant_id=args.tenant, person_id=args.person_id, hidden=not args.show
    )
    return _changed(args, _persons(args, "HidePerson", request).person, "shown" if args.show else "hidden")


def _unassign(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.UnassignFaceRequest(tenant_id=args.tenant, point_id=args.point_id)
    response = _persons(args, "UnassignFace", request)
    doc = {
        "point_id": args.point_id,
        "person_id": response.person_id,
        "person_removed": response.person_removed,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not response.person_id:
        print(f"face {args.point_id} was not assigned to a person")
    else:
        gone = "; it has no faces left and is gone" if response.person_removed else ""
        print(f"face {args.point_id} taken out of person {response.person_id}{gone}")
    return 0


def _recluster(args: argparse.Namespace) -> int:
    from facepipe.v1 import persons_pb2

    request = persons_pb2.ReclusterRequest(tenant_id=args.tenant, wait=args.wait, status_only=args.status)
    response = _persons(args, "Recluster", request)
    doc = {
        "tenant_id": args.tenant,
        "state": response.state,
        "faces": response.faces,
        "persons_before": response.persons_before,
        "persons_after": response.persons_after,
        "faces_moved": response.faces_moved,
        "seconds": round(response.seconds, 3),
        "error": response.error,
        "started_at_ms": response.started_at_ms,
        "automatic": response.automatic,
    }
    started = "automatic recluster" if response.automatic else "recluster"
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not response.state:
        print(f"tenant {args.tenant} was never reclustered")
    elif response.state == "running":
        print(
            f"{started} of tenant {args.tenant} is running; "
            f"`facepipe persons recluster --tenant {args.tenant} --status --wait` waits for it"
        )
    else:
        print(
            f"{started} of tenant {args.tenant}: {response.state}: {response.faces} face(s), "
            f"{response.persons_before} -> {response.persons_after} person(s), "
            f"{response.faces_moved} face(s) moved in {response.seconds:.1f}s"
        )
    if response.state == "failed":
        raise CliError(f"recluster of tenant {args.tenant} failed: {response.error}")
    return FAILURE if args.wait and response.state not in ("done", "") else 0
