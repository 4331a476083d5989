"""The persons service's view of the faces: the indexer's internal RPCs (role
"service"), since only the indexer opens the faces collection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from facepipe.auth import service_key
from facepipe.auth.client import aio_channel
from facepipe.config import Settings
from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

PAGE = 1000
SET_BATCH = 5000
CALL_TIMEOUT_S = 120.0


class IndexerFaces:
    """Faces of a tenant through the indexer: neighbours, persons, listing, the kNN graph."""

    def __init__(self, settings: Settings) -> None:
        self.addr = settings.persons.indexer_addr or settings.clients.address("indexer")
        self.channel = aio_channel(self.addr, service_key(settings), tls=settings.tls)
        self.stub = indexer_pb2_grpc.IndexerStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def neighbours(
        self, tenant: str, point_ids: Sequence[str], k: int
    ) -> list[indexer_pb2.FaceNeighbors]:
        out: list[indexer_pb2.FaceNeighbors] = []
        for start in range(0, len(point_ids), PAGE):
            request = indexer_pb2.FaceNeighborsRequest(
                tenant_id=tenant, point_ids=list(point_ids[start : start + PAGE]), k=k
            )
            response = await self.stub.FaceNeighbors(request, timeout=CALL_TIMEOUT_S, wait_for_ready=True)
            out.extend(response.faces)
        return out

    async def set_persons(self, tenant: str, faces: Iterable[tuple[str, str, bool]]) -> int:
        """Sets (point id, person id, pinned) on faces; returns the faces updated."""
        items = [indexer_pb2.FacePerson(point_id=p, person_id=q, pinned=pin) for p, q, pin in faces]
        updated = 0
        for start in range(0, len(items), SET_BATCH):
            request = indexer_pb2.SetFacePersonsRequest(
                tenant_id=tenant, faces=items[start : start + SET_BATCH]
            )
            response = await self.stub.SetFacePersons(request, timeout=CALL_TIMEOUT_S, wait_for_ready=True)
            updated += response.faces_updated
        return updated

    async def faces(
        self, tenant: str, person_id: str = "", image_sha256: str = ""
    ) -> list[indexer_pb2.SearchMatch]:
        """Every face of the tenant (of one person, or of one image, when given)."""
        return (await self.listing(tenant, person_id, image_sha256))[0]

    async def listing(
        self, tenant: str, person_id: str = "", image_sha256: str = ""
    ) -> tuple[list[indexer_pb2.SearchMatch], set[str]]:
        """Every face of the tenant (of one person, or of one image), and which of them
        are pinned to their person."""
        out: list[indexer_pb2.SearchMatch] = []
        pinned: set[str] = set()
        token = ""
        while True:
            request = indexer_pb2.ListFacesRequest(
                tenant_id=tenant,
                page_size=PAGE,
                page_token=token,
                person_id=person_id,
                image_sha256=image_sha256,
            )
            response = await self.stub.ListFaces(request, timeout=CALL_TIMEOUT_S, wait_for_ready=True)
            out.extend(response.faces)
            pinned.update(response.pinned_point_ids)
            token = response.next_page_token
            if not token:
                return out, pinned

    async def graph(self, tenant: str, k: int) -> AsyncIterator[indexer_pb2.FaceGraphRow]:
        call = self.stub.FaceGraph(indexer_pb2.FaceGraphRequest(tenant_id=tenant, k=k), wait_for_ready=True)
        async for row in call:
            yield row


def unavailable(exc: BaseException) -> bool:
    """Whether a failed indexer call may work when tried again (the indexer restarts)."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
