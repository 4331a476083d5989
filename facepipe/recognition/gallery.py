"""The gallery of enrolled subjects: one vector collection per recognizer
(``subjects_<sha16>_<dim>d``), apart from the collections of indexed faces, so a
watchlist never mixes with search data.

The collection holds two kinds of points, told apart by payload ``kind``:

- ``face``: one enrolled face, its embedding and where its crop and thumbnail are
  (``<tenant>/subjects/<subject_id>/<face_id>.jpg`` in the face-crops and face-thumbs
  buckets);
- ``subject``: the subject's record (name, external id, metadata, times), with a fixed
  placeholder vector; searches only ever look at ``face`` points.

Keeping the records in the gallery's payload makes the gallery the one store that
replicas share (a Qdrant server in a deployment): there is no second store to keep
consistent with the vectors, and deleting a subject is one delete by ``subject_id``.
Each face is its own point (a fresh id), so concurrent enrolments never overwrite
each other; a record is written whole, so concurrent renames resolve to the last.

A face is matched to a subject by the subject's best face (the largest cosine
similarity over its enrolled faces): that is the same statistic, a similarity of two
single faces, that the pack's ``same_person_min_score`` was calibrated on, and it lets
photos in different poses each match their own kind of query.

Everything here is synchronous and does IO: callers run it in a worker thread.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facepipe.storage.objects import FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET, ObjectStore
from facepipe.storage.vectors.base import FacePoint, VectorStore

KIND_FACE = "face"
KIND_SUBJECT = "subject"
RECORD_NAMESPACE = uuid.UUID("a3c1f0de-5b7e-4c2a-9d61-7f3e2b8c4a90")
# At most this many subjects per tenant are listed, and faces per subject read.
MAX_SUBJECTS = 100_000
MAX_FACES_PER_SUBJECT = 10_000
# Nearest faces read per face matched, per subject wanted: enough that a subject with
# many near-identical photos cannot push the runners-up out of the answer.
FACES_PER_MATCH = 32
MIN_MATCH_FACES = 64


def now_ms() -> int:
    return int(time.time() * 1000)


def new_subject_id() -> str:
    return uuid.uuid4().hex


def subject_prefix(tenant: str, subject_id: str) -> str:
    """The object key prefix of one subject's crops and thumbnails."""
    return f"{tenant}/subjects/{subject_id}/"


def tenant_subjects_prefix(tenant: str) -> str:
    return f"{tenant}/subjects/"


@dataclass
class SubjectRecord:
    subject_id: str
    tenant: str
    name: str
    external_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    created_at_ms: int = 0
    updated_at_ms: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant,
            "kind": KIND_SUBJECT,
            "subject_id": self.subject_id,
            "name": self.name,
            "external_id": self.external_id,
            "metadata": dict(self.metadata),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SubjectRecord:
        return cls(
            subject_id=str(payload.get("subject_id", "")),
            tenant=str(payload.get("tenant_id", "")),
            name=str(payload.get("name", "")),
            external_id=str(payload.get("external_id", "")),
            metadata={str(k): str(v) for k, v in (payload.get("metadata") or {}).items()},
            created_at_ms=int(payload.get("created_at_ms", 0)),
            updated_at_ms=int(payload.get("updated_at_ms", 0)),
        )


@dataclass(frozen=True)
class GalleryFace:
    face_id: str
    subject_id: str
    crop_key: str
    thumb_key: str
    quality: float
    source: str
    added_at_ms: int

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GalleryFace:
        return cls(
            face_id=str(payload.get("face_id", "")),
            subject_id=str(payload.get("subject_id", "")),
            crop_key=str(payload.get("crop_key", "")),
            thumb_key=str(payload.get("thumb_key", "")),
            quality=float(payload.get("quality", 0.0)),
            source=str(payload.get("source", "")),
            added_at_ms=int(payload.get("added_at_ms", 0)),
        )


@dataclass(frozen=True)
class NewFace:
    """A face to enrol: its embedding, aligned crop and thumbnail as JPEG."""

    vector: np.ndarray
    crop_jpeg: bytes
    thumb_jpeg: bytes
    quality: float
    source: str


@dataclass(frozen=True)
class SubjectMatch:
    subject_id: str
    similarity: float  # of the subject's best face
    face_id: str


@dataclass(frozen=True)
class Removed:
    faces: int = 0
    objects: int = 0
    subjects: int = 0


class SubjectGallery:
    """One recognizer's gallery: subject records and enrolled faces, with their objects."""

    def __init__(self, store: VectorStore, objects: ObjectStore, dim: int) -> None:
        self.store = store
        self.objects = objects
        self.dim = dim
        # The records' placeholder vector; records are never searched (see the module docstring).
        self._record_vector = np.eye(1, dim, dtype=np.float32)[0]

    @staticmethod
    def _record_point_id(tenant: str, subject_id: str) -> str:
        return str(uuid.uuid5(RECORD_NAMESPACE, f"{tenant}/{subject_id}"))

    # --- records ---

    def record(self, tenant: str, subject_id: str) -> SubjectRecord | None:
        found = self.store.scroll(tenant, {"kind": KIND_SUBJECT, "subject_id": subject_id}, limit=1)
        return SubjectRecord.from_payload(found[0].payload) if found else None

    def records(self, tenant: str) -> list[SubjectRecord]:
        """Every subject of the tenant, by name."""
        found = self.store.scroll(tenant, {"kind": KIND_SUBJECT}, limit=MAX_SUBJECTS)
        return sorted(
            (SubjectRecord.from_payload(p.payload) for p in found),
            key=lambda r: (r.name.lower(), r.subject_id),
        )

    def records_of(self, tenant: str, subject_ids: Sequence[str]) -> dict[str, SubjectRecord]:
        out: dict[str, SubjectRecord] = {}
        for subject_id in dict.fromkeys(subject_ids):
            record = self.record(tenant, subject_id)
            if record is not None:
                out[subject_id] = record
        return out

    def put_record(self, record: SubjectRecord) -> None:
        point = FacePoint(
            self._record_point_id(record.tenant, record.subject_id), self._record_vector, record.payload()
        )
        self.store.upsert([point])

    # --- faces ---

    def faces(self, tenant: str, subject_id: str) -> list[GalleryFace]:
        found = self.store.scroll(
            tenant, {"kind": KIND_FACE, "subject_id": subject_id}, limit=MAX_FACES_PER_SUBJECT
        )
        return sorted((GalleryFace.from_payload(p.payload) for p in found), key=lambda f: f.added_at_ms)

    def face_counts(self, tenant: str) -> Counter[str]:
        """The number of enrolled faces of each subject of the tenant."""
        found = self.store.scroll(tenant, {"kind": KIND_FACE}, limit=MAX_SUBJECTS * 10)
        return Counter(str(p.payload.get("subject_id", "")) for p in found)

    def add_faces(self, tenant: str, subject_id: str, faces: Sequence[NewFace]) -> list[GalleryFace]:
        """Stores the crops and thumbnails, then the points: a point never names a missing object."""
        added: list[GalleryFace] = []
        points: list[FacePoint] = []
        prefix = subject_prefix(tenant, subject_id)
        for new in faces:
            face_id = str(uuid.uuid4())
            key = f"{prefix}{face_id}.jpg"
            self.objects.put(FACE_CROPS_BUCKET, key, new.crop_jpeg, "image/jpeg")
            self.objects.put(FACE_THUMBS_BUCKET, key, new.thumb_jpeg, "image/jpeg")
            face = GalleryFace(face_id, subject_id, key, key, float(new.quality), new.source, now_ms())
            added.append(face)
            points.append(
                FacePoint(
                    face_id,
                    np.asarray(new.vector, dtype=np.float32),
                    {
                        "tenant_id": tenant,
                        "kind": KIND_FACE,
                        "subject_id": subject_id,
                        "face_id": face_id,
                        "crop_key": key,
                        "thumb_key": key,
                        "quality": face.quality,
                        "source": face.source,
                        "added_at_ms": face.added_at_ms,
                    },
                )
            )
        self.store.upsert(points)
        return added

    def remove_faces(self, tenant: str, subject_id: str, face_ids: Sequence[str]) -> Removed:
        """Deletes these faces of the subject (ids of other subjects are left alone)."""
        faces = objects = 0
        for face_id in dict.fromkeys(face_ids):
            for payload in self.store.delete(
                tenant, {"kind": KIND_FACE, "subject_id": subject_id, "face_id": face_id}
            ):
                faces += 1
                objects += self._delete_objects(tenant, payload)
        return Removed(faces=faces, objects=objects)

    def _delete_objects(self, tenant: str, payload: Mapping[str, Any]) -> int:
        deleted = 0
        for bucket, key in (
            (FACE_CROPS_BUCKET, payload.get("crop_key")),
            (FACE_THUMBS_BUCKET, payload.get("thumb_key")),
        ):
            # Only keys under the tenant's own subjects: a payload never reaches further.
            if key and str(key).startswith(tenant_subjects_prefix(tenant)):
                deleted += int(self.objects.delete(bucket, str(key)))
        return deleted

    # --- deletion ---

    def delete_subject(self, tenant: str, subject_id: str) -> Removed:
        """The subject's record, its faces' points and every object under its prefix."""
        payloads = self.store.delete(tenant, {"subject_id": subject_id})
        faces = sum(1 for p in payloads if p.get("kind") == KIND_FACE)
        prefix = subject_prefix(tenant, subject_id)
        objects = sum(self.objects.delete_prefix(b, prefix) for b in (FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET))
        return Removed(
            faces=faces, objects=objects, subjects=int(any(p.get("kind") == KIND_SUBJECT for p in payloads))
        )

    def delete_tenant(self, tenant: str) -> Removed:
        """Every subject of the tenant, with their faces and objects (tenant erasure)."""
        payloads = self.store.delete(tenant)
        prefix = tenant_subjects_prefix(tenant)
        objects = sum(self.objects.delete_prefix(b, prefix) for b in (FACE_CROPS_BUCKET, FACE_THUMBS_BUCKET))
        return Removed(
            faces=sum(1 for p in payloads if p.get("kind") == KIND_FACE),
            objects=objects,
            subjects=sum(1 for p in payloads if p.get("kind") == KIND_SUBJECT),
        )

    # --- matching ---

    def match(self, tenant: str, vector: np.ndarray, subjects: int) -> list[SubjectMatch]:
        """Up to ``subjects`` subjects nearest ``vector``, best first, each by its best face."""
        top_k = max(MIN_MATCH_FACES, subjects * FACES_PER_MATCH)
        hits = self.store.search(vector, tenant, top_k, None, {"kind": KIND_FACE})
        best: dict[str, SubjectMatch] = {}
        for hit in hits:  # best first: a subject's first hit is its best face
            subject_id = str(hit.payload.get("subject_id", ""))
            if subject_id and subject_id not in best:
                best[subject_id] = SubjectMatch(
                    subject_id, float(hit.score), str(hit.payload.get("face_id", ""))
                )
        return list(best.values())[:subjects]
