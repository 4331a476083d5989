"""Dead letters: list what the stages gave up on, and replay it.

A stage that gives up on a message publishes the original payload to
``facepipe.dlq.<stage>`` (stream FACEPIPE_DLQ) with headers naming the stage,
the error, the reason, the deliveries and the subject it came from. Replaying
publishes the payload to that subject again and removes the dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass

from facepipe import bus

# Dead-letter headers that must not travel with a replayed message.
_DLQ_HEADERS = {bus.HDR_STAGE, bus.HDR_ERROR, bus.HDR_REASON, bus.HDR_DELIVERIES, bus.HDR_SUBJECT}


@dataclass
class DeadLetter:
    seq: int
    stage: str
    subject: str
    reason: str
    error: str
    deliveries: int
    size: int
    time: str  # ISO 8601, when it was dead-lettered
    data: bytes
    headers: dict[str, str]

    def as_dict(self) -> dict:
        return {
            "seq": self.seq,
            "stage": self.stage,
            "subject": self.subject,
            "reason": self.reason,
            "error": self.error,
            "deliveries": self.deliveries,
            "size": self.size,
            "time": self.time,
        }


async def _read(js, stage: str | None, limit: int, idle_s: float) -> list[DeadLetter]:
    subject = f"{bus.SUBJECT_DLQ}.{stage}" if stage else f"{bus.SUBJECT_DLQ}.>"
    sub = await js.subscribe(subject, stream=bus.DLQ_STREAM, ordered_consumer=True)
    out: list[DeadLetter] = []
    try:
        while len(out) < limit:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except Exception as exc:  # nats-py raises its own TimeoutError subclass
                if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
                    break  # nothing more stored
                raise
            headers = dict(msg.headers or {})
            meta = msg.metadata
            out.append(
                DeadLetter(
                    seq=meta.sequence.stream,
                    stage=headers.get(bus.HDR_STAGE, msg.subject.rsplit(".", 1)[-1]),
                    subject=headers.get(bus.HDR_SUBJECT, ""),
                    reason=headers.get(bus.HDR_REASON, ""),
                    error=headers.get(bus.HDR_ERROR, ""),
                    deliveries=int(headers.get(bus.HDR_DELIVERIES) or 0),
                    size=len(msg.data),
                    time=meta.timestamp.isoformat() if meta.timestamp else "",
                    data=msg.data,
                    headers=headers,
                )
            )
    finally:
        await sub.unsubscribe()
    return out


async def list_dead(
    nats_url: str, stage: str | None = None, limit: int = 100, idle_s: float = 1.0
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, of one stage or all."""
    nc = await bus.connect(nats_url, "cli")
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js)
        return await _read(js, stage, limit, idle_s)
    finally:
        await nc.close()


async def replay(
    nats_url: str, seqs: set[int] | None = None, stage: str | None = None, limit: int = 100_000
) -> tuple[list[DeadLetter], list[int]]:
    """Republishes dead letters to the subject they came from and deletes them;
    ``seqs`` None replays every one (of ``stage``). Returns the replayed letters
    and the asked-for sequence numbers that were not found."""
    nc = await bus.connect(nats_url, "cli")
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js)
        letters = [d for d in await _read(js, stage, limit, 1.0) if seqs is None or d.seq in seqs]
        replayed: list[DeadLetter] = []
        for letter in letters:
            if not letter.subject:
                continue  # no origin recorded: cannot be replayed
            headers = {k: v for k, v in letter.headers.items() if k not in _DLQ_HEADERS}
            await js.publish(letter.subject, letter.data, headers=headers or None)
            await js.delete_msg(bus.DLQ_STREAM, letter.seq)
            replayed.append(letter)
        missing = sorted((seqs or set()) - {d.seq for d in letters})
        return replayed, missing
    finally:
        await nc.close()
