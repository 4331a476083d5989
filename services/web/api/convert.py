"""Protobuf messages as the API's JSON: proto field names, every field present,
and a URL beside each stored object (served through this service with the tenant
check)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

OBJECT_ROUTE = "/api/v1/objects"


def object_url(ref: Any) -> str:
    """The URL of a stored object (an ObjectRef), or "" when there is none."""
    if not ref.bucket or not ref.key:
        return ""
    return f"{OBJECT_ROUTE}/{quote(ref.bucket)}/{quote(ref.key)}"


def as_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def match_dict(match: Any) -> dict[str, Any]:
    """A SearchMatch (or PersonFace), with the URLs of its thumbnails."""
    out = as_dict(match)
    for name in ("thumb", "crop", "image_thumb"):
        if name in out:
            out[f"{name}_url"] = object_url(getattr(match, name))
    return out


def person_dict(person: Any) -> dict[str, Any]:
    out = as_dict(person)
    if person.HasField("best_face"):
        out["best_face"] = match_dict(person.best_face)
        out["thumb_url"] = out["best_face"].get("thumb_url", "")
    else:
        out["thumb_url"] = ""
    out["faces"] = [match_dict(face) for face in person.faces]
    return out
