"""When the persons service reclusters a tenant on its own once its new faces settle
(services/persons/recluster.py, "Settling")."""

from __future__ import annotations

from facepipe_services.persons.recluster import DONE, FAILED, RUNNING, ReclusterJob, Unsettled, settle_due


def job(state: str, faces: int) -> ReclusterJob:
    return ReclusterJob("acme", state=state, faces=faces)


def test_a_tenant_never_reclustered_settles_with_any_new_face() -> None:
    assert settle_due(Unsettled(faces=1), None, growth=0.1)


def test_a_running_recluster_is_left_to_end_first() -> None:
    assert not settle_due(Unsettled(faces=10_000), job(RUNNING, 10), growth=0.1)


def test_after_a_recluster_the_new_faces_must_reach_the_growth() -> None:
    last = job(DONE, 100_000)
    assert not settle_due(Unsettled(faces=9_999), last, growth=0.1)
    assert settle_due(Unsettled(faces=10_000), last, growth=0.1)
    assert settle_due(Unsettled(faces=1), last, growth=0.0)


def test_a_failed_recluster_is_tried_again() -> None:
    assert settle_due(Unsettled(faces=1), job(FAILED, 100_000), growth=0.1)


def test_a_job_state_written_by_a_newer_replica_still_reads() -> None:
    doc = {**job(DONE, 5).doc(), "a_field_added_later": 1}
    assert ReclusterJob.from_doc(doc).faces == 5
    old = {k: v for k, v in job(DONE, 5).doc().items() if k != "automatic"}
    assert ReclusterJob.from_doc(old).automatic is False
