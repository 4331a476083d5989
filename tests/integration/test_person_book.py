"""The person records' KV against a real nats-server: listing a tenant's persons while
other records are being rewritten (assignment, erasure and recluster write them all the
time) returns every person, every time."""

from __future__ import annotations

import asyncio

import nats

from facepipe.persons.records import PersonBook, PersonRecord

PERSONS = 40
LISTINGS = 150


async def test_listing_sees_every_person_while_records_are_rewritten(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        book = await PersonBook.open(nc.jetstream())
        records = [PersonRecord(f"p{i:03d}", "busy", face_count=1) for i in range(PERSONS)]
        for record in records:
            await book.put(record)
        await book.put(PersonRecord("other", "another-tenant", face_count=1))
        gone = PersonRecord("gone", "busy", face_count=1)
        await book.put(gone)
        await book.remove("busy", "gone")
        stop = asyncio.Event()

        async def rewrite() -> None:
            while not stop.is_set():
                for record in records:
                    record.face_count += 1
                    await book.put(record)

        writers = [asyncio.create_task(rewrite()) for _ in range(2)]
        try:
            for _ in range(LISTINGS):
                listed = {r.person_id for r in await book.list("busy")}
                assert listed == {r.person_id for r in records}
        finally:
            stop.set()
            await asyncio.gather(*writers)
    finally:
        await nc.close()
