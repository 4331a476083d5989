"""Recognition commands through the running stack's recognizer: ``facepipe recognize
IMAGE`` (every face of a photo against the tenant's subjects) and the call every
recognizer command shares."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facepipe.cli import addresses
from facepipe.cli.errors import CliError, image_file, rpc_failure


def recognizer_call(
    args: argparse.Namespace, method: str, request: Any, addr: str = "", raw_errors: bool = False
) -> Any:
    """Calls one Recognizer method on the recognizer the command is aimed at; a failure
    becomes a one-line CliError, or with ``raw_errors`` stays the grpc.RpcError."""
    import grpc

    from facepipe.auth.client import channel as key_channel
    from facepipe.v1 import recognizer_pb2_grpc

    addr = addr or addresses.service_addr(args, "recognizer")
    key = addresses.api_key(args, addr)
    try:
        with key_channel(addr, key, tls=addresses.tls_settings(args)) as channel:
            return getattr(recognizer_pb2_grpc.RecognizerStub(channel), method)(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        if raw_errors:
            raise
        raise rpc_failure(exc, "recognizer", addr) from None


def read_image(path: str) -> bytes:
    """The bytes of an image file ('-': standard input); a usage error when there is none."""
    image_file(path)
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def face_doc(face) -> dict:
    """One recognized face as the JSON output has it."""
    box = face.face.box
    doc = {
        "box": [round(box.x1, 1), round(box.y1, 1), round(box.x2, 1), round(box.y2, 1)],
        "subject": face.subject_name or None,
        "subject_id": face.subject_id or None,
        "external_id": face.external_id or None,
        "similarity": round(face.similarity, 6),
        "score": round(face.face.score, 4),
        "quality": round(face.face.quality.score, 4),
        "landmarks": [[round(p.x, 1), round(p.y, 1)] for p in face.face.landmarks],
    }
    if face.candidates:
        doc["candidates"] = [
            {"subject": c.name, "subject_id": c.subject_id, "similarity": round(c.similarity, 6)}
            for c in face.candidates
        ]
    return doc


def cmd_recognize(args: argparse.Namespace) -> int:
    from facepipe.v1 import detector_pb2, recognizer_pb2

    if not args.image:
        raise CliError("give an IMAGE to recognize", 2)
    options = recognizer_pb2.RecognizeOptions(
        candidates=args.candidates,
        min_similarity=args.min_similarity,
        detect=detector_pb2.DetectOptions(include_rejected=args.include_rejected),
    )
    request = recognizer_pb2.RecognizeRequest(
        tenant_id=args.tenant, image=read_image(args.image), options=options
    )
    response = recognizer_call(args, "Recognize", request)
    docs = [face_doc(f) for f in response.faces]
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    if not docs:
        print(f"no face found in {args.image}")
    for doc in docs:
        x1, y1, x2, y2 = doc["box"]
        who = doc["subject"] if doc["subject"] else "unknown"
        print(f"{who}\tsimilarity {doc['similarity']:.3f}\tbox {x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}")
        for c in doc.get("candidates", []):
            print(f"  runner-up {c['subject']}\t{c['similarity']:.3f}")
    print(f"threshold {response.threshold:.3f} ({response.model})")
    return 0
