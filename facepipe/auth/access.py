"""Who may call what: the authenticated caller (:class:`Principal`), the one
table of gRPC methods with the role each needs and how its tenants are found
(:data:`METHOD_RULES`), and the checks the server interceptor runs with them.

A method missing from the table is refused: a new method needs a rule first.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from facepipe.auth.keys import ANY_TENANT, ROLES, role_rank

# Methods every caller may use without a key.
OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
# Buckets whose keys start with the tenant: <tenant>/...
TENANT_BUCKETS = ("raw-images", "face-crops", "face-thumbs")
SHOWN_CHARS = 64


def shown(value: str) -> str:
    """A caller's value as an error message echoes it: bounded."""
    return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "...")


@dataclass
class Principal:
    """The caller of one RPC. ``tenant_checked`` records that a handler whose rule
    defers the tenant check (the tenant is in a stored record) did it."""

    key_id: str
    tenant: str
    role: str
    tenant_checked: bool = field(default=False, compare=False)

    def may_access(self, tenant: str) -> bool:
        return self.tenant == ANY_TENANT or self.tenant == tenant

    def describe(self) -> str:
        return f"key {self.key_id} (tenant {self.tenant}, role {self.role})"


class AccessDenied(Exception):
    """PERMISSION_DENIED, with the one line to tell the caller."""


# The caller of the RPC being served; None when auth is off. Handlers read it (and
# an audit record can name principal.key_id).
current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("facepipe_principal", default=None)


def object_tenant(bucket: str, key: str) -> str | None:
    """The tenant an object belongs to (the first segment of its key in a tenant
    bucket), or None when it belongs to none."""
    from facepipe.storage.objects import validate_key

    if bucket not in TENANT_BUCKETS:
        return None
    try:
        validate_key(key)
    except ValueError:
        return None
    tenant, _, rest = key.partition("/")
    return tenant if rest else None


def check_object(principal: Principal, bucket: str, key: str, verb: str = "read") -> None:
    if principal.tenant == ANY_TENANT:
        return
    tenant = object_tenant(bucket, key)
    if tenant is None or not principal.may_access(tenant):
        raise AccessDenied(f"the {principal.describe()} may not {verb} object {shown(f'{bucket}/{key}')}")


def check_tenant(principal: Principal, tenant: str, verb: str) -> None:
    if not principal.may_access(tenant):
        raise AccessDenied(f"the {principal.describe()} may not {verb} tenant {shown(tenant)}")


# -- how a method's tenants are found -----------------------------------------------------
# Each is called with the principal and the request; it raises AccessDenied, and may
# fill in what the request left to the key (GetStats without a tenant).
TenantCheck = Callable[[Principal, Any, str], None]


def tenant_field(name: str = "tenant_id", default_to_key: bool = False) -> TenantCheck:
    """The tenant is the request's field ``name``. An empty one is left to the handler
    (which refuses it), or with ``default_to_key`` becomes the key's tenant."""

    def check(principal: Principal, request: Any, verb: str) -> None:
        tenant = getattr(request, name)
        if not tenant:
            if default_to_key and principal.tenant != ANY_TENANT:
                setattr(request, name, principal.tenant)
            return
        check_tenant(principal, tenant, verb)

    return check


def ingest_tenants(principal: Principal, request: Any, verb: str) -> None:
    """An IngestRequest: its tenant, and the stored object it names must be that tenant's."""
    if request.tenant_id:
        check_tenant(principal, request.tenant_id, verb)
    if request.bucket or request.key:
        owner = object_tenant(request.bucket, request.key)
        if owner is None or owner != (request.tenant_id or principal.tenant):
            raise AccessDenied(
                f"object {shown(f'{request.bucket}/{request.key}')} is not tenant "
                f"{shown(request.tenant_id)}'s: an ingest may only name objects under raw-images/<tenant>/"
            )


def _image_refs(images: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for image in images:
        if image.WhichOneof("source") == "ref":
            yield image.ref.bucket, image.ref.key


def detect_refs(principal: Principal, request: Any, verb: str) -> None:
    """A DetectBatchRequest: every image given by reference must be an object of the key's tenant."""
    for bucket, key in _image_refs(request.images):
        check_object(principal, bucket, key)


def embed_refs(principal: Principal, request: Any, verb: str) -> None:
    for bucket, key in _image_refs(item.image for item in request.inputs if item.HasField("image")):
        check_object(principal, bucket, key)


def no_tenant(principal: Principal, request: Any, verb: str) -> None:
    """The request touches no tenant's data (inference on tensors)."""


def in_handler(principal: Principal, request: Any, verb: str) -> None:
    """The tenant is in a stored record the handler loads; it calls :func:`require_tenant`."""


@dataclass(frozen=True)
class MethodRule:
    role: str
    tenants: TenantCheck
    verb: str  # as the refusal says it: "the key may not <verb> tenant X"
    # The audit action of the method (facepipe.audit), recorded for every call that got
    # past authentication; empty: not audited.
    audit: str = ""

    def __post_init__(self) -> None:
        assert self.role in ROLES, self.role

    @property
    def deferred(self) -> bool:
        return self.tenants is in_handler


METHOD_RULES: dict[str, MethodRule] = {
    "/facepipe.v1.Indexer/Search": MethodRule("reader", tenant_field(), "search", audit="search"),
    "/facepipe.v1.Indexer/ListFaces": MethodRule("reader", tenant_field(), "list"),
    "/facepipe.v1.Indexer/GetStats": MethodRule("reader", tenant_field(default_to_key=True), "read stats of"),
    "/facepipe.v1.Indexer/DeleteFaces": MethodRule("admin", tenant_field(), "erase", audit="erase"),
    "/facepipe.v1.Indexer/OptOut": MethodRule(
        "admin", tenant_field(), "register opt-outs of", audit="optout.add"
    ),
    "/facepipe.v1.Indexer/ListOptOuts": MethodRule(
        "admin", tenant_field(), "list opt-outs of", audit="optout.list"
    ),
    "/facepipe.v1.Indexer/RemoveOptOut": MethodRule(
        "admin", tenant_field(), "remove opt-outs of", audit="optout.remove"
    ),
    "/facepipe.v1.Indexer/ListAuditRecords": MethodRule(
        "admin", tenant_field(default_to_key=True), "read the audit log of"
    ),
    "/facepipe.v1.Indexer/Reindex": MethodRule("admin", tenant_field(), "reindex", audit="reindex"),
    # The persons service reaches the faces through these (only the indexer opens them).
    "/facepipe.v1.Indexer/FaceNeighbors": MethodRule("service", tenant_field(), "read faces of"),
    "/facepipe.v1.Indexer/SetFacePersons": MethodRule("service", tenant_field(), "change faces of"),
    "/facepipe.v1.Indexer/FaceGraph": MethodRule("service", tenant_field(), "read faces of"),
    "/facepipe.v1.Persons/ListPersons": MethodRule("reader", tenant_field(), "list persons of"),
    "/facepipe.v1.Persons/GetPerson": MethodRule("reader", tenant_field(), "read persons of"),
    "/facepipe.v1.Persons/RenamePerson": MethodRule(
        "writer", tenant_field(), "change persons of", audit="persons.rename"
    ),
    "/facepipe.v1.Persons/MergePersons": MethodRule(
        "writer", tenant_field(), "change persons of", audit="persons.merge"
    ),
    "/facepipe.v1.Persons/SplitPerson": MethodRule(
        "writer", tenant_field(), "change persons of", audit="persons.split"
    ),
    "/facepipe.v1.Persons/HidePerson": MethodRule(
        "writer", tenant_field(), "change persons of", audit="persons.hide"
    ),
    "/facepipe.v1.Persons/UnassignFace": MethodRule(
        "writer", tenant_field(), "change persons of", audit="persons.unassign"
    ),
    "/facepipe.v1.Persons/Recluster": MethodRule(
        "writer", tenant_field(), "recluster persons of", audit="persons.recluster"
    ),
    "/facepipe.v1.Extractor/Ingest": MethodRule("writer", ingest_tenants, "ingest for"),
    "/facepipe.v1.Crawler/StartCrawl": MethodRule("writer", tenant_field(), "crawl for"),
    "/facepipe.v1.Crawler/GetCrawl": MethodRule("reader", in_handler, "read crawls of"),
    "/facepipe.v1.Crawler/CancelCrawl": MethodRule("writer", in_handler, "cancel crawls of"),
    "/facepipe.v1.Detector/DetectBatch": MethodRule("reader", detect_refs, "read"),
    "/facepipe.v1.Detector/DetectStream": MethodRule("reader", detect_refs, "read"),
    "/facepipe.v1.Embedder/EmbedBatch": MethodRule("reader", embed_refs, "read"),
    "/facepipe.v1.Recognizer/EnrolSubject": MethodRule(
        "writer", tenant_field(default_to_key=True), "enrol subjects in", audit="subject.enrol"
    ),
    "/facepipe.v1.Recognizer/ListSubjects": MethodRule(
        "reader", tenant_field(default_to_key=True), "list subjects of"
    ),
    "/facepipe.v1.Recognizer/GetSubject": MethodRule(
        "reader", tenant_field(default_to_key=True), "read subjects of"
    ),
    "/facepipe.v1.Recognizer/UpdateSubject": MethodRule(
        "writer", tenant_field(default_to_key=True), "change subjects of", audit="subject.update"
    ),
    "/facepipe.v1.Recognizer/RemoveSubjectFaces": MethodRule(
        "writer", tenant_field(default_to_key=True), "change subjects of", audit="subject.remove_faces"
    ),
    "/facepipe.v1.Recognizer/DeleteSubject": MethodRule(
        "writer", tenant_field(default_to_key=True), "delete subjects of", audit="subject.delete"
    ),
    "/facepipe.v1.Recognizer/Verify": MethodRule("reader", tenant_field(default_to_key=True), "verify for"),
    "/facepipe.v1.Recognizer/Recognize": MethodRule(
        "reader", tenant_field(default_to_key=True), "recognize in"
    ),
    "/facepipe.v1.Recognizer/RecognizeStream": MethodRule("reader", tenant_field(), "recognize in"),
    "/facepipe.v1.Recognizer/ListAccessLog": MethodRule(
        "reader", tenant_field(default_to_key=True), "read the access log of"
    ),
    "/facepipe.v1.InferenceNode/Infer": MethodRule("service", no_tenant, "use"),
    "/facepipe.v1.InferenceNode/ListModels": MethodRule("service", no_tenant, "use"),
}


def audited_services() -> set[str]:
    """The full names of the gRPC services that have an audited method."""
    return {path.split("/")[1] for path, rule in METHOD_RULES.items() if rule.audit}


def rule_for(method: str) -> MethodRule | None:
    return METHOD_RULES.get(method)


def check_role(principal: Principal, method: str, rule: MethodRule) -> None:
    if role_rank(principal.role) < role_rank(rule.role):
        name = method.rsplit("/", 1)[-1]
        raise AccessDenied(f"the {principal.describe()} may not call {name}: it needs role {rule.role}")


def require_tenant(tenant: str, verb: str) -> None:
    """For handlers whose rule is ``in_handler``: the current caller must be allowed
    ``tenant``. Raises AccessDenied; does nothing when auth is off."""
    principal = current.get()
    if principal is None:
        return
    principal.tenant_checked = True
    check_tenant(principal, tenant, verb)


def is_all_tenants() -> bool:
    """Whether the current caller may see every tenant (auth off, or a ``*`` key)."""
    principal = current.get()
    return principal is None or principal.tenant == ANY_TENANT
