"""Face tracks of one camera: which face of this frame is which face of the last ones.

A :class:`Tracker` gets each processed frame's recognized faces and answers them with
stable track ids. Association is greedy on the overlap (IoU) of a face's box with each
live track's last box; the recognized subject breaks ties (a same-subject pair scores a
little higher, and may overlap less, since a person who moved quickly is still the same
person). A track that no face continues for ``ttl_ms`` (by the frames' capture times, so
dropped frames do not end tracks early) has ended.

Each track carries a *decision*: the subject, or unknown. Per-frame recognition can
flicker near the threshold, so a new decision is taken only when the same label was
seen on ``confirm_frames`` consecutive frames of the track; until the first decision is
confirmed the track's frames count for whichever label is confirmed first (or the most
frequent one, should the track end before). A confirmed change (unknown, then
recognized) closes the old decision and starts a new one.

The tracker emits one :class:`AccessEvent` per track and decision: when the decision
changes, when the track ends, and, for a decision that lasts longer than
``flush_after_ms``, at that point (the decision then goes on as a new record, so the log
is never further behind a camera than that). Each event has the first and last time
seen, the best similarity, the number of frames and a JPEG of the best face.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

UNKNOWN = ""  # the label of a face no subject matched
SNAPSHOT_MAX_SIDE = 160  # pixels; a thumbnail, enough to see who it was
SNAPSHOT_MARGIN = 0.25  # of the box's size on each side, so the whole head shows
SNAPSHOT_JPEG_QUALITY = 85


@dataclass(frozen=True)
class TrackerSettings:
    """How faces become tracks and tracks become records."""

    min_iou: float = 0.3  # least box overlap that continues a track
    same_subject_bonus: float = 0.2  # added to a pair's score when both name the same subject
    same_subject_min_iou: float = 0.1  # least overlap for a same-subject pair
    ttl_ms: int = 1000  # a track no face continued for this long has ended
    confirm_frames: int = 3  # consecutive frames a label needs to become the decision
    flush_after_ms: int = 300_000  # a decision lasting longer is written and goes on as a new one

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0 or not 0.0 < self.same_subject_min_iou <= 1.0:
            raise ValueError("IoU thresholds must be in (0, 1]")
        if self.ttl_ms <= 0 or self.confirm_frames < 1 or self.flush_after_ms <= 0:
            raise ValueError("ttl_ms, confirm_frames and flush_after_ms must be positive")


@dataclass(frozen=True)
class Observation:
    """One recognized face of one frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    subject_id: str = UNKNOWN
    subject_name: str = ""
    external_id: str = ""
    similarity: float = 0.0  # to the best subject, also when below the threshold
    quality: float = 0.0


@dataclass(frozen=True)
class AccessEvent:
    """One track's one decision: who (or unknown), when, and how sure."""

    camera_id: str
    track_id: int
    subject_id: str  # UNKNOWN ("") for an unknown face
    subject_name: str
    external_id: str
    first_seen_ms: int
    last_seen_ms: int
    best_similarity: float
    frames: int
    snapshot_jpeg: bytes


@dataclass
class _Decision:
    """The running record of one decision of a track."""

    label: str | None  # None: not confirmed yet
    first_seen_ms: int
    last_seen_ms: int = 0
    frames: int = 0
    best_score: float = -1.0  # what picks the snapshot: similarity, or quality when unknown
    best_crop: np.ndarray | None = None
    labels: Counter[str] = field(default_factory=Counter)  # per-frame labels
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (name, external id)
    best_similarity: dict[str, float] = field(default_factory=dict)  # label -> best similarity


@dataclass
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    last_seen_ms: int
    decision: _Decision
    run_label: str = UNKNOWN  # the label of the latest frames ...
    run_length: int = 0  # ... and how many consecutive frames had it
    pending: _Decision | None = None  # a label on its way to becoming the decision


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 for empty ones."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_face(image: np.ndarray, box: Sequence[float], margin: float = SNAPSHOT_MARGIN) -> np.ndarray:
    """The face of ``box`` with a margin, clipped to the image, at most SNAPSHOT_MAX_SIDE."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
    if right <= left or bottom <= top:
        return np.zeros((1, 1, 3), np.uint8)
    crop = image[top:bottom, left:right]
    scale = SNAPSHOT_MAX_SIDE / max(crop.shape[:2])
    if scale < 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop.copy()


def encode_snapshot(crop: np.ndarray | None) -> bytes:
    if crop is None:
        return b""
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
    return data.tobytes() if ok else b""


class Tracker:
    """Tracks of one camera. Not thread-safe: one stream drives one tracker."""

    def __init__(self, camera_id: str, settings: TrackerSettings | None = None) -> None:
        self.camera_id = camera_id
        self.settings = settings or TrackerSettings()
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    @property
    def live_tracks(self) -> int:
        return len(self._tracks)

    def update(
        self, observations: Sequence[Observation], image: np.ndarray | None, seen_ms: int
    ) -> tuple[list[int], list[AccessEvent]]:
        """Adds one frame's faces (``image``: the decoded frame, for snapshots; None for
        none). Returns each observation's track id, in order, and the records of
        decisions that ended (tracks not seen for ``ttl_ms`` included)."""
        events = self._expire(seen_ms)
        track_ids = [0] * len(observations)
        for index, track in self._associate(observations):
            track_ids[index] = track.track_id
            events += self._observe(track, observations[index], image, seen_ms)
        for index, observation in enumerate(observations):
            if track_ids[index]:
                continue
            track = _Track(
                track_id=next(self._ids),
                box=observation.box,
                last_seen_ms=seen_ms,
                decision=_Decision(label=None, first_seen_ms=seen_ms),
            )
            self._tracks.append(track)
            track_ids[index] = track.track_id
            events += self._observe(track, observation, image, seen_ms)
        return track_ids, events

    def close(self) -> list[AccessEvent]:
        """Ends every track (the stream ended) and returns their records."""
        events = [self._event(track, track.decision) for track in self._tracks]
        self._tracks = []
        return [event for event in events if event is not None]

    # -- association ---------------------------------------------------------------------

    def _associate(self, observations: Sequence[Observation]) -> list[tuple[int, _Track]]:
        settings = self.settings
        pairs: list[tuple[float, int, int]] = []
        for t, track in enumerate(self._tracks):
            for o, observation in enumerate(observations):
                overlap = iou(track.box, observation.box)
                same = bool(observation.subject_id) and observation.subject_id == self._label_of(track)
                if overlap >= settings.min_iou or (same and overlap >= settings.same_subject_min_iou):
                    pairs.append((overlap + (settings.same_subject_bonus if same else 0.0), t, o))
        pairs.sort(key=lambda pair: -pair[0])
        used_tracks: set[int] = set()
        used_observations: set[int] = set()
        matched: list[tuple[int, _Track]] = []
        for _, t, o in pairs:
            if t in used_tracks or o in used_observations:
                continue
            used_tracks.add(t)
            used_observations.add(o)
            matched.append((o, self._tracks[t]))
        return matched

    @staticmethod
    def _label_of(track: _Track) -> str:
        """What the track is taken to be now: its decision, else its latest label."""
        label = track.decision.label
        return track.run_label if label is None else label

    # -- decisions -----------------------------------------------------------------------

    def _observe(
        self, track: _Track, observation: Observation, image: np.ndarray | None, seen_ms: int
    ) -> list[AccessEvent]:
        settings = self.settings
        track.box = observation.box
        track.last_seen_ms = seen_ms
        label = observation.subject_id
        track.run_length = track.run_length + 1 if label == track.run_label else 1
        track.run_label = label
        decision = track.decision
        events: list[AccessEvent] = []
        if decision.label is None:
            self._add(decision, observation, image, seen_ms)
            if track.run_length >= settings.confirm_frames:
                decision.label = label
        elif label == decision.label:
            track.pending = None
            self._add(decision, observation, image, seen_ms)
        else:
            # A different label: held apart until it is confirmed or the old one returns.
            if track.pending is None or track.pending.label != label:
                track.pending = _Decision(label=label, first_seen_ms=seen_ms)
            self._add(track.pending, observation, image, seen_ms)
            if track.run_length >= settings.confirm_frames:
                event = self._event(track, decision)
                events += [event] if event is not None else []
                track.decision, track.pending = track.pending, None
        decision = track.decision
        if decision.label is not None and seen_ms - decision.first_seen_ms >= settings.flush_after_ms:
            event = self._event(track, decision)
            events += [event] if event is not None else []
            track.decision = _Decision(label=decision.label, first_seen_ms=seen_ms)
        return events

    @staticmethod
    def _add(decision: _Decision, observation: Observation, image: np.ndarray | None, seen_ms: int) -> None:
        label = observation.subject_id
        if decision.frames == 0:
            decision.first_seen_ms = seen_ms
        decision.frames += 1
        decision.last_seen_ms = seen_ms
        decision.labels[label] += 1
        if label:
            decision.names[label] = (observation.subject_name, observation.external_id)
        decision.best_similarity[label] = max(
            decision.best_similarity.get(label, 0.0), observation.similarity
        )
        score = observation.similarity if label else observation.quality
        if (decision.label is None or label == decision.label) and score > decision.best_score:
            decision.best_score = score
            decision.best_crop = None if image is None else crop_face(image, observation.box)

    def _expire(self, now_ms: int) -> list[AccessEvent]:
        ended = [t for t in self._tracks if now_ms - t.last_seen_ms > self.settings.ttl_ms]
        if not ended:
            return []
        self._tracks = [t for t in self._tracks if now_ms - t.last_seen_ms <= self.settings.ttl_ms]
        events = [self._event(track, track.decision) for track in ended]
        return [event for event in events if event is not None]

    def _event(self, track: _Track, decision: _Decision) -> AccessEvent | None:
        if decision.frames == 0:
            return None
        label = decision.label
        if label is None:  # ended before any label was confirmed: the most frequent one
            label = decision.labels.most_common(1)[0][0]
        name, external_id = decision.names.get(label, ("", ""))
        return AccessEvent(
            camera_id=self.camera_id,
            track_id=track.track_id,
            subject_id=label,
            subject_name=name,
            external_id=external_id,
            first_seen_ms=decision.first_seen_ms,
            last_seen_ms=decision.last_seen_ms,
            best_similarity=float(decision.best_similarity.get(label, 0.0)),
            frames=decision.frames,
            snapshot_jpeg=encode_snapshot(decision.best_crop),
        )
