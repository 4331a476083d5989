"""Live recognition from the command line: ``recognize --video FILE`` / ``--camera N``
stream frames through the recognizer's RecognizeStream (which tracks the faces and
writes the access log), and ``access-log`` reads that log back.

A video file is sent at its own frame rate (``--fast``: as fast as it decodes); frames
carry their capture time (the start of the run plus the frame's position in the file),
so tracks follow the video's clock. The recognizer keeps only the latest frame it has
not processed yet, so a stream faster than it can follow loses frames, not time.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facepipe.cli import addresses
from facepipe.cli.errors import CliError, rpc_failure

JPEG_QUALITY = 90
DEFAULT_FPS = 25.0  # when a file does not say its frame rate


@dataclass
class TrackSeen:
    """What the command saw of one track in the results."""

    track_id: int
    first_ms: int
    last_ms: int
    frames: int = 0
    best_similarity: float = 0.0
    subjects: dict[str, str] = field(default_factory=dict)  # subject id ("" unknown) -> name
    votes: dict[str, int] = field(default_factory=dict)

    @property
    def subject_id(self) -> str:
        return max(self.votes, key=self.votes.__getitem__) if self.votes else ""

    def as_dict(self) -> dict[str, Any]:
        subject_id = self.subject_id
        return {
            "track_id": self.track_id,
            "subject": self.subjects.get(subject_id) if subject_id else None,
            "subject_id": subject_id or None,
            "first_seen": _when(self.first_ms),
            "last_seen": _when(self.last_ms),
            "frames": self.frames,
            "best_similarity": round(self.best_similarity, 6),
        }


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _recognizer_stub(args: argparse.Namespace):
    from facepipe.auth.client import channel as key_channel
    from facepipe.v1 import recognizer_pb2_grpc

    addr = addresses.service_addr(args, "recognizer")
    key = addresses.api_key(args, addr)
    channel = key_channel(addr, key, tls=addresses.tls_settings(args))
    return addr, channel, recognizer_pb2_grpc.RecognizerStub(channel)


def open_source(args: argparse.Namespace):
    """The OpenCV capture of --video or --camera, and its frame rate; one line when it cannot be opened."""
    import cv2

    if args.video is not None:
        path = Path(args.video)
        if not path.is_file():
            raise CliError(f"no video file {args.video}")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise CliError(f"cannot read {args.video} as a video (OpenCV could not open it)")
    else:
        # OpenCV would log each backend's failed attempt; the one line below says it all.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        capture = cv2.VideoCapture(args.camera)
        if not capture.isOpened():
            raise CliError(f"no camera {args.camera} on this machine (OpenCV could not open it)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if fps and 0 < fps < 1000 else DEFAULT_FPS


def frames(args: argparse.Namespace, capture, fps: float, stop: threading.Event) -> Iterator[Any]:
    """The stream's frames: JPEG-encoded, paced at ``fps`` unless --fast, until the source
    ends, --max-frames, --duration, or ``stop``."""
    import cv2

    from facepipe.v1 import detector_pb2, recognizer_pb2

    options = recognizer_pb2.RecognizeOptions(
        candidates=args.candidates,
        min_similarity=args.min_similarity,
        detect=detector_pb2.DetectOptions(include_rejected=args.include_rejected),
    )
    start_wall_ms = int(time.time() * 1000)
    start = time.monotonic()
    index = 0
    try:
        while not stop.is_set():
            if args.max_frames and index >= args.max_frames:
                return
            if args.duration and time.monotonic() - start >= args.duration:
                return
            ok, image = capture.read()
            if not ok:
                return
            if args.video is not None:
                offset_ms = int(round(index * 1000.0 / fps))
                if not args.fast:
                    delay = start + offset_ms / 1000.0 - time.monotonic()
                    if delay > 0:
                        stop.wait(delay)
                captured_ms = start_wall_ms + offset_ms
            else:
                captured_ms = int(time.time() * 1000)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                continue
            frame = recognizer_pb2.RecognizeFrame(
                camera_id=args.camera_id, image=data.tobytes(), captured_at_ms=captured_ms, frame_id=index
            )
            if index == 0:
                frame.tenant_id = args.tenant
                frame.options.CopyFrom(options)
            index += 1
            yield frame
    finally:
        args.frames_sent = index


def cmd_recognize_stream(args: argparse.Namespace) -> int:
    """``recognize --video FILE`` or ``--camera N``."""
    import grpc

    capture, fps = open_source(args)
    addr, channel, stub = _recognizer_stub(args)
    stop = threading.Event()
    tracks: dict[int, TrackSeen] = {}
    processed = dropped = 0
    args.frames_sent = 0
    try:
        # No deadline: a camera streams for as long as it runs.
        results = iter(stub.RecognizeStream(frames(args, capture, fps, stop)))
        while True:
            try:
                result = next(results)
            except StopIteration:
                break
            except KeyboardInterrupt:
                # Ctrl-C ends the stream, not the command: the recognizer still answers the
                # frames it has and writes the open tracks' records.
                stop.set()
                continue
            processed, dropped = result.frames_processed, result.frames_dropped
            seen_ms = result.captured_at_ms
            if args.json:
                print(json.dumps({"frame": _result_doc(result)}), flush=True)
            for face in result.faces:
                track = tracks.get(face.track_id)
                if track is None:
                    track = tracks[face.track_id] = TrackSeen(face.track_id, seen_ms, seen_ms)
                    if not args.json:
                        who = face.subject_name or "unknown"
                        print(f"track {face.track_id}: {who} (similarity {face.similarity:.3f})", flush=True)
                track.last_ms = seen_ms
                track.frames += 1
                track.best_similarity = max(track.best_similarity, face.similarity)
                track.votes[face.subject_id] = track.votes.get(face.subject_id, 0) + 1
                if face.subject_id:
                    track.subjects[face.subject_id] = face.subject_name
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "recognizer", addr) from None
    finally:
        stop.set()
        channel.close()
        capture.release()
    summary = {
        "frames_sent": args.frames_sent,
        "frames_processed": processed,
        "frames_dropped": dropped,
        "tracks": [t.as_dict() for t in sorted(tracks.values(), key=lambda t: t.track_id)],
    }
    if args.json:
        print(json.dumps({"summary": summary}))
        return 0
    print(
        f"{args.frames_sent} frame(s) sent, {processed} processed, {dropped} dropped; {len(tracks)} track(s)"
    )
    for track in summary["tracks"]:
        who = track["subject"] or "unknown"
        print(
            f"  track {track['track_id']}: {who}  {track['first_seen']} - {track['last_seen']}  "
            f"{track['frames']} frame(s)  best similarity {track['best_similarity']:.3f}"
        )
    return 0


def _result_doc(result) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "frame_id": result.frame_id,
        "captured_at_ms": result.captured_at_ms,
        "latency_ms": round(result.latency_ms, 3),
        "frames_dropped": result.frames_dropped,
        "faces": [
            {
                "track_id": face.track_id,
                "box": [
                    round(v, 2)
                    for v in (face.face.box.x1, face.face.box.y1, face.face.box.x2, face.face.box.y2)
                ],
                "subject": face.subject_name or None,
                "subject_id": face.subject_id or None,
                "similarity": round(face.similarity, 6),
                **({"liveness": face.liveness} if face.liveness else {}),
            }
            for face in result.faces
        ],
    }
    if result.HasField("error"):
        doc["error"] = result.error.message
    return doc


# -- access-log --------------------------------------------------------------------------


def resolve_subject(stub, args: argparse.Namespace, value: str) -> str:
    """A subject id from --subject: ``unknown``, a subject id, or a subject's exact name
    (case-insensitive). An id of a subject deleted since is taken as it is."""
    import grpc

    from facepipe.v1 import recognizer_pb2

    if value == "unknown":
        return value
    try:
        stub.GetSubject(
            recognizer_pb2.GetSubjectRequest(tenant_id=args.tenant, subject_id=value), timeout=args.timeout
        )
        return value
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise
    found = stub.ListSubjects(
        recognizer_pb2.ListSubjectsRequest(tenant_id=args.tenant, name_contains=value, page_size=1000),
        timeout=args.timeout,
    ).subjects
    named = [s for s in found if s.name.casefold() == value.casefold()]
    if len(named) > 1:
        ids = ", ".join(s.subject_id for s in named)
        raise CliError(
            f"{len(named)} subjects of tenant {args.tenant} are named {value!r} ({ids}); pass the id"
        )
    if named:
        return named[0].subject_id
    from facepipe.recognition.accesslog import TOKEN_RE

    if TOKEN_RE.match(value):
        return value  # perhaps a deleted subject's id: its records outlive it
    raise CliError(f"tenant {args.tenant} has no subject named {value!r}")


def _record_doc(record) -> dict[str, Any]:
    return {
        "record_id": record.record_id,
        "camera": record.camera_id,
        "track_id": record.track_id,
        "subject": record.subject_name or None,
        "subject_id": record.subject_id or None,
        "external_id": record.external_id or None,
        "first_seen": _when(record.first_seen_ms),
        "last_seen": _when(record.last_seen_ms),
        "first_seen_ms": record.first_seen_ms,
        "last_seen_ms": record.last_seen_ms,
        "best_similarity": round(record.best_similarity, 6),
        "frames": record.frames,
    }


def cmd_access_log(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.v1 import recognizer_pb2

    since_ms = int(args.since * 1000) if args.since is not None else 0
    until_ms = int(args.until * 1000) if args.until is not None else 0
    if since_ms and until_ms and until_ms < since_ms:
        raise CliError("--until is before --since")
    addr, channel, stub = _recognizer_stub(args)
    try:
        subject_id = resolve_subject(stub, args, args.subject) if args.subject else ""
        request = recognizer_pb2.ListAccessLogRequest(
            tenant_id=args.tenant,
            camera_id=args.camera or "",
            subject_id=subject_id,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=args.limit,
            without_snapshots=not args.snapshots,
        )
        records = stub.ListAccessLog(request, timeout=args.timeout).records
    except grpc.RpcError as exc:
        raise rpc_failure(exc, "recognizer", addr) from None
    finally:
        channel.close()
    docs = [_record_doc(r) for r in records]
    if args.snapshots:
        folder = Path(args.snapshots)
        folder.mkdir(parents=True, exist_ok=True)
        for doc, record in zip(docs, records, strict=True):
            if record.snapshot_jpeg:
                path = folder / f"{record.record_id}.jpg"
                path.write_bytes(record.snapshot_jpeg)
                doc["snapshot"] = str(path)
    if args.json:
        json.dump(docs, sys.stdout, indent=2)
        print()
        return 0
    if not docs:
        print("no records")
        return 0
    for doc in docs:
        who = doc["subject"] or "unknown"
        print(
            f"{doc['first_seen']} - {doc['last_seen']}  camera {doc['camera']}  {who}"
            f"  similarity {doc['best_similarity']:.3f}  {doc['frames']} frame(s)"
            + (f"  {doc['snapshot']}" if "snapshot" in doc else "")
        )
    return 0


# -- the recognize command's stream options ---------------------------------------------------


def default_camera_id(args: argparse.Namespace) -> str:
    """--camera-id, else one made from the video's file name or the camera's number."""
    import re

    if args.camera_id:
        return args.camera_id
    if args.video is not None:
        return re.sub(r"[^A-Za-z0-9_-]", "-", Path(args.video).stem)[:64].strip("-") or "video"
    return f"camera{args.camera}"


def add_stream_arguments(p: argparse.ArgumentParser, camera_type: Any, int_range: Any) -> None:
    """Adds --video/--camera and their options to the ``recognize`` command; with either,
    the command streams frames instead of recognizing IMAGE."""
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--video",
        metavar="FILE",
        help="stream this video file's frames through RecognizeStream (tracks faces, writes the access "
        "log) instead of recognizing IMAGE (default: none)",
    )
    source.add_argument(
        "--camera",
        type=int_range(0, 1000),
        metavar="N",
        help="stream local camera N (OpenCV's device number, 0 for the first) until Ctrl-C, "
        "--duration or --max-frames (default: none)",
    )
    p.add_argument(
        "--camera-id",
        type=camera_type,
        help="the camera's id in the access log: 1-64 letters, digits, '_' or '-' "
        "(default: the video's file name, or camera<N>)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="with --video: send frames as fast as they decode, not at the file's frame rate "
        "(the recognizer then drops the frames it cannot follow)",
    )
    p.add_argument(
        "--max-frames", type=int_range(0), default=0, help="stop after this many frames (0: no limit)"
    )
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    image_command = p.get_default("func")

    def run(args: argparse.Namespace) -> int:
        streaming = args.video is not None or args.camera is not None
        if not streaming:
            for option in ("camera_id", "fast", "max_frames", "duration"):
                if getattr(args, option):
                    raise CliError(f"--{option.replace('_', '-')} needs --video or --camera", 2)
            return image_command(args)
        if args.image:
            raise CliError("give IMAGE, or --video / --camera, not both", 2)
        if args.duration < 0:
            raise CliError("--duration must not be negative", 2)
        args.camera_id = default_camera_id(args)
        return cmd_recognize_stream(args)

    p.set_defaults(func=run)
