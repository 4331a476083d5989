"""Tracing across processes: the local stack exports spans to FACEPIPE_TRACE_FILE;
one ingested image is one trace from the CLI's publish through every stage, and a
gRPC call joins the caller's trace."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_FACES, run_facepipe, stack_channel

from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

pytestmark = pytest.mark.slow

STAGES = ["extractor", "detector", "embedder", "indexer"]


def facepipe(*args: str, env: dict, timeout: float = 300) -> str:
    return run_facepipe(*args, env=env, timeout=timeout).stdout


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_spans(path: Path, found, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Spans once ``found(spans)`` holds; exporters flush in batches, every 200 ms."""
    deadline = time.monotonic() + timeout
    while True:
        spans = read_spans(path)
        if found(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(start_stack, tmp_path_factory) -> dict[str, Any]:
    trace_file = tmp_path_factory.mktemp("trace") / "spans.jsonl"
    return {**start_stack("trace-stack", FACEPIPE_TRACE_FILE=str(trace_file)), "spans": trace_file}


def test_one_image_is_one_trace_through_every_stage(stack) -> None:
    photo = sorted((SHARED_FACES / "barack_obama").glob("*.jpg"))[0]
    out = facepipe(
        "ingest",
        str(photo),
        "--tenant",
        "traced",
        "--wait",
        "--json",
        "--data-dir",
        str(stack["dir"]),
        env=stack["env"],
    )
    assert json.loads(out)["faces_indexed"] >= 1

    def complete(spans: list[dict[str, Any]]) -> bool:
        services = {s["service"] for s in spans}
        return {"facepipe-cli", *(f"facepipe-{s}" for s in STAGES)} <= services

    spans = wait_for_spans(stack["spans"], complete)
    [root] = [s for s in spans if s["service"] == "facepipe-cli"]
    assert root["name"] == "publish facepipe.ingest" and root["parent_id"] is None
    assert root["attributes"]["facepipe.source"] == str(photo)
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}
    assert len(by_id) == len(trace), "span ids repeat"

    # Every stage handled the image once, inside this trace, as a child of the stage before it.
    parent = root
    for stage in STAGES:
        [span] = [
            s for s in trace if s["service"] == f"facepipe-{stage}" and s["name"].startswith(stage + " ")
        ]
        assert span["parent_id"] == parent["span_id"], (stage, span, parent)
        assert span["start"] >= parent["start"]
        parent = span
    stage_spans = [s for s in spans if s["name"].split(" ")[0] in STAGES]
    assert {s["trace_id"] for s in stage_spans} == {root["trace_id"]}, "a stage started another trace"

    # Links are consistent: one root, and every other span's parent is in the trace.
    assert [s for s in trace if s["parent_id"] is None] == [root]
    assert all(s["parent_id"] in by_id for s in trace if s is not root)
    assert all(s["end"] >= s["start"] for s in trace)


def test_grpc_call_joins_the_callers_trace(stack) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with stack_channel(stack, "indexer") as ch:
        indexer_pb2_grpc.IndexerStub(ch).GetStats(
            indexer_pb2.GetStatsRequest(tenant_id="traced"),
            metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            timeout=10,
        )
    spans = wait_for_spans(stack["spans"], lambda spans: any(s["trace_id"] == trace_id for s in spans))
    [span] = [s for s in spans if s["trace_id"] == trace_id]
    assert span["service"] == "facepipe-indexer"
    assert span["name"] == "/facepipe.v1.Indexer/GetStats"
    assert span["parent_id"] == parent_id
