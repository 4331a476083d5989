"""The tracker: one track per person in front of a camera, one record per track and decision."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facepipe.recognition.tracking import Observation, Tracker, TrackerSettings, iou

FRAME_MS = 100


def face(x: float, y: float = 100.0, subject: str = "", similarity: float = 0.2, size: float = 80.0):
    return Observation(
        box=(x, y, x + size, y + size),
        subject_id=subject,
        subject_name=subject.upper(),
        external_id=f"ext-{subject}" if subject else "",
        similarity=similarity,
        quality=0.8,
    )


def frame() -> np.ndarray:
    image = np.zeros((480, 640, 3), np.uint8)
    cv2.circle(image, (320, 240), 60, (200, 180, 160), -1)
    return image


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_a_person_standing_still_is_one_track_and_one_record() -> None:
    tracker = Tracker("door")
    image = frame()
    ids = set()
    events = []
    for n in range(50):  # five seconds, drifting a little
        track_ids, ended = tracker.update(
            [face(100 + n % 4, subject="alice", similarity=0.5 + n / 1000)], image, n * FRAME_MS
        )
        ids.update(track_ids)
        events += ended
    assert ids == {1} and events == []
    events = tracker.update([], image, 50 * FRAME_MS + 2000)[1]
    assert len(events) == 1
    event = events[0]
    assert (event.subject_id, event.subject_name, event.external_id) == ("alice", "ALICE", "ext-alice")
    assert (event.first_seen_ms, event.last_seen_ms, event.frames) == (0, 49 * FRAME_MS, 50)
    assert event.best_similarity == pytest.approx(0.549)
    assert event.camera_id == "door" and event.track_id == 1
    snapshot = cv2.imdecode(np.frombuffer(event.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert snapshot is not None and max(snapshot.shape[:2]) <= 160
    assert tracker.live_tracks == 0


def test_two_people_keep_their_tracks_and_a_missed_frame_does_not_end_one() -> None:
    tracker = Tracker("door", TrackerSettings(ttl_ms=500))
    first = tracker.update([face(50, subject="a"), face(400, subject="b")], None, 0)[0]
    assert first == [1, 2]
    assert tracker.update([face(402, subject="b"), face(52, subject="a")], None, 100)[0] == [2, 1]
    assert tracker.update([], None, 200)[1] == []  # nobody detected for one frame
    assert tracker.update([face(54, subject="a"), face(404, subject="b")], None, 500)[0] == [1, 2]
    # b leaves: its track ends once ttl_ms passed without it
    tracker.update([face(56, subject="a")], None, 600)
    ended = tracker.update([face(58, subject="a")], None, 1100)[1]
    assert [(e.track_id, e.subject_id) for e in ended] == [(2, "b")]
    assert [(e.track_id, e.subject_id, e.frames) for e in tracker.close()] == [(1, "a", 5)]


def test_a_new_face_where_none_overlaps_gets_a_new_track() -> None:
    tracker = Tracker("door")
    tracker.update([face(50)], None, 0)
    assert tracker.update([face(300)], None, 100)[0] == [2]


def test_the_subject_breaks_ties_between_overlapping_tracks() -> None:
    tracker = Tracker("door")
    tracker.update([face(100, subject="a"), face(140, subject="b")], None, 0)
    # a face between both, recognized as b, continues b's track
    assert tracker.update([face(120, subject="b")], None, 100)[0] == [2]


def test_a_same_subject_face_that_moved_far_continues_its_track() -> None:
    tracker = Tracker("door")
    for n in range(3):
        tracker.update([face(100, subject="a", similarity=0.6)], None, n * FRAME_MS)
    # IoU of 0.2: below min_iou, above same_subject_min_iou
    assert tracker.update([face(153, subject="a", similarity=0.6)], None, 300)[0] == [1]
    assert tracker.update([face(206)], None, 400)[0] == [2]  # unknown at that distance: another track


def test_a_flicker_below_confirm_frames_changes_nothing() -> None:
    tracker = Tracker("door", TrackerSettings(confirm_frames=3))
    labels = ["a", "a", "a", "", "", "a", "a", "", "a", "a"]
    events = []
    for n, label in enumerate(labels):
        events += tracker.update(
            [face(100, subject=label, similarity=0.6 if label else 0.3)], None, n * FRAME_MS
        )[1]
    events += tracker.close()
    assert [(e.subject_id, e.first_seen_ms, e.last_seen_ms) for e in events] == [("a", 0, 900)]


def test_unknown_then_recognized_is_a_new_decision() -> None:
    tracker = Tracker("door", TrackerSettings(confirm_frames=2))
    events = []
    for n in range(10):
        label = "" if n < 4 else "a"
        events += tracker.update(
            [face(100, subject=label, similarity=0.7 if label else 0.25)], frame(), n * FRAME_MS
        )[1]
    assert [(e.subject_id, e.frames, e.last_seen_ms) for e in events] == [("", 4, 300)]
    assert events[0].best_similarity == pytest.approx(0.25)
    (last,) = tracker.close()
    assert (last.subject_id, last.track_id, last.first_seen_ms, last.last_seen_ms, last.frames) == (
        "a",
        1,
        400,
        900,
        6,
    )
    assert last.best_similarity == pytest.approx(0.7) and last.subject_name == "A"


def test_a_track_too_short_to_confirm_takes_its_most_frequent_label() -> None:
    tracker = Tracker("door", TrackerSettings(confirm_frames=5))
    for n, label in enumerate(["a", "", "a"]):
        tracker.update([face(100, subject=label, similarity=0.6)], None, n * FRAME_MS)
    (event,) = tracker.close()
    assert (event.subject_id, event.subject_name, event.frames) == ("a", "A", 3)


def test_a_long_decision_is_written_every_flush_period() -> None:
    tracker = Tracker("door", TrackerSettings(flush_after_ms=1000))
    events = []
    for n in range(25):
        events += tracker.update([face(100, subject="a", similarity=0.6)], None, n * FRAME_MS)[1]
    events += tracker.close()
    assert [(e.first_seen_ms, e.last_seen_ms) for e in events] == [(0, 1000), (1100, 2100), (2200, 2400)]
    assert {e.track_id for e in events} == {1}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TrackerSettings(min_iou=0)
    with pytest.raises(ValueError):
        TrackerSettings(confirm_frames=0)
