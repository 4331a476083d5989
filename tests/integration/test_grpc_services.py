"""Real grpcurl, real gRPC clients and real service processes: detector,
embedder, streaming, and detection through a separate inference node."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import grpc
import pytest
from conftest import insightface_sample

from facepipe.v1 import (
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    embedder_pb2,
    embedder_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
)

CORRUPT = b"\xff\xd8\xff\xe0 this is not really a jpeg"


def grpcurl(binary: str, *args: str, data: str | None = None) -> dict | str:
    result = subprocess.run([binary, *args], input=data, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return result.stdout


@pytest.fixture
def detector(start_service):
    return start_service("detector")


def test_grpcurl_detector(detector, grpcurl_bin) -> None:
    listing = grpcurl(grpcurl_bin, "-plaintext", detector.addr, "list")
    assert "facepipe.v1.Detector" in listing and "grpc.health.v1.Health" in listing
    health = grpcurl(grpcurl_bin, "-plaintext", detector.addr, "grpc.health.v1.Health/Check")
    assert health == {"status": "SERVING"}
    described = grpcurl(grpcurl_bin, "-plaintext", detector.addr, "describe", "facepipe.v1.Detector")
    assert "DetectBatch" in described and "DetectStream" in described

    group = insightface_sample("t1.jpg").read_bytes()
    body = json.dumps(
        {
            "images": [
                {"id": "group", "data": base64.b64encode(group).decode()},
                {"id": "corrupt", "data": base64.b64encode(CORRUPT).decode()},
            ]
        }
    )
    out = grpcurl(
        grpcurl_bin, "-plaintext", "-d", "@", detector.addr, "facepipe.v1.Detector/DetectBatch", data=body
    )
    first, second = out["results"]
    assert first["id"] == "group" and "error" not in first
    assert len(first["faces"]) >= 5
    assert (first["width"], first["height"]) == (1280, 886)
    face = first["faces"][0]
    assert set(face["box"]) == {"x1", "y1", "x2", "y2"} and len(face["landmarks"]) == 5
    assert face["quality"]["accepted"] is True
    assert second["id"] == "corrupt" and not second.get("faces")
    assert second["error"]["code"] == "ERROR_CODE_UNDECODABLE" and second["error"]["message"]


def test_grpcurl_embedder(start_service, grpcurl_bin, face_files) -> None:
    embedder = start_service("embedder")
    assert "facepipe.v1.Embedder" in grpcurl(grpcurl_bin, "-plaintext", embedder.addr, "list")
    assert grpcurl(grpcurl_bin, "-plaintext", embedder.addr, "grpc.health.v1.Health/Check") == {
        "status": "SERVING"
    }
    # Landmarks from the in-process detector, then embed through grpcurl.
    out = subprocess.run(
        [str(Path(grpcurl_bin).parent / "facepipe"), "detect", "--json", str(face_files[0])],
        capture_output=True,
        text=True,
        env=embedder.env,
        check=True,
    )
    faces = json.loads(out.stdout)[0]["faces"]
    body = json.dumps(
        {
            "inputs": [
                {
                    "id": "a",
                    "image": {"data": base64.b64encode(face_files[0].read_bytes()).decode()},
                    "faces": faces,
                },
                {"id": "b", "aligned_crops": [base64.b64encode(CORRUPT).decode()]},
            ]
        }
    )
    resp = grpcurl(
        grpcurl_bin, "-plaintext", "-d", "@", embedder.addr, "facepipe.v1.Embedder/EmbedBatch", data=body
    )
    assert resp["dim"] > 0
    good, bad = resp["results"]
    assert len(good["embeddings"]) == len(faces)
    vec = good["embeddings"][0]["vector"]
    assert len(vec) == resp["dim"] == good["embeddings"][0]["dim"]
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-3
    assert bad["error"]["code"] == "ERROR_CODE_UNDECODABLE"


def _request(files: list[Path]) -> detector_pb2.DetectBatchRequest:
    return detector_pb2.DetectBatchRequest(
        images=[common_pb2.ImageInput(id=p.name, data=p.read_bytes()) for p in files]
    )


def _summary(resp: detector_pb2.DetectBatchResponse) -> list:
    return [
        (r.id, r.error.code, [(round(f.box.x1, 2), round(f.box.y2, 2), round(f.score, 4)) for f in r.faces])
        for r in resp.results
    ]


def test_stream_and_inference_node_match_in_process(start_service, face_files) -> None:
    files = [*face_files[:6], insightface_sample("t1.jpg")]
    batches = [_request(files[i : i + 3]) for i in range(0, len(files), 3)]

    local = start_service("detector")
    node = start_service("node")
    remote = start_service("detector", env={"FACEPIPE_INFERENCE_NODES": node.addr})

    with grpc.insecure_channel(local.addr) as ch:
        stub = detector_pb2_grpc.DetectorStub(ch)
        expected = [_summary(stub.DetectBatch(b)) for b in batches]
        streamed = [_summary(r) for r in stub.DetectStream(iter(batches))]
    assert streamed == expected

    with grpc.insecure_channel(node.addr) as ch:
        models = inference_pb2_grpc.InferenceNodeStub(ch).ListModels(inference_pb2.ListModelsRequest())
        assert {m.name for m in models.models} >= {node.pack.detector.name}
        # Installed with a dynamic batch axis: a batch is one tensor on the node.
        assert all(m.dynamic_batch for m in models.models if m.name == node.pack.detector.name)

    with grpc.insecure_channel(remote.addr) as ch:
        stub = detector_pb2_grpc.DetectorStub(ch)
        via_node = [_summary(stub.DetectBatch(b)) for b in batches]
        via_node_stream = [_summary(r) for r in stub.DetectStream(iter(batches))]
    assert via_node == expected
    assert via_node_stream == expected
    node_metrics = _http_get(node.http_port, "/metrics")
    assert f'facepipe_batch_size_count{{model="{node.pack.detector.name}",service="node"}}' in node_metrics

    # With the node gone, the detector falls back to in-process inference.
    node.stop()
    with grpc.insecure_channel(remote.addr) as ch:
        after = _summary(detector_pb2_grpc.DetectorStub(ch).DetectBatch(batches[0]))
    assert after == expected[0]


def test_embed_batch_crops_equal_faces(start_service, face_files) -> None:
    """Pre-aligned crops give the same vectors as image + landmarks."""
    import cv2
    import numpy as np

    from facepipe.imaging import decode_image
    from facepipe.models.align import align_face

    detector = start_service("detector")
    embedder = start_service("embedder")
    data = face_files[1].read_bytes()
    with grpc.insecure_channel(detector.addr) as ch:
        faces = detector_pb2_grpc.DetectorStub(ch).DetectBatch(_request([face_files[1]])).results[0].faces
    assert faces
    bgr = decode_image(data).bgr
    lmk = np.array([[p.x, p.y] for p in faces[0].landmarks], np.float32)
    crop = cv2.imencode(".png", align_face(bgr, lmk))[1].tobytes()
    req = embedder_pb2.EmbedBatchRequest(
        inputs=[
            embedder_pb2.EmbedInput(id="faces", image=common_pb2.ImageInput(data=data), faces=faces[:1]),
            embedder_pb2.EmbedInput(id="crop", aligned_crops=[crop]),
            embedder_pb2.EmbedInput(id="empty"),
        ]
    )
    with grpc.insecure_channel(embedder.addr) as ch:
        resp = embedder_pb2_grpc.EmbedderStub(ch).EmbedBatch(req)
    a = np.array(resp.results[0].embeddings[0].vector)
    b = np.array(resp.results[1].embeddings[0].vector)
    assert float(a @ b) > 0.999
    assert resp.results[2].error.code == common_pb2.ERROR_CODE_INVALID_ARGUMENT


def _http_get(port: int, path: str) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
