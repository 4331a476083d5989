"""The detect command: faces in images, in-process or against a detector."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from facepipe.cli.errors import CliError, image_file, rpc_failure
from facepipe.config import Settings


def _detect_request(paths: list[str], args: argparse.Namespace):
    from facepipe.v1 import common_pb2, detector_pb2

    images = []
    for p in paths:
        data = sys.stdin.buffer.read() if p == "-" else Path(p).read_bytes()
        images.append(common_pb2.ImageInput(id=p, data=data))
    options = detector_pb2.DetectOptions(
        score_threshold=args.threshold,
        max_faces=args.max_faces,
        input_size=args.input_size,
        include_rejected=args.include_rejected,
    )
    return detector_pb2.DetectBatchRequest(images=images, options=options)


async def _detect(args: argparse.Namespace):
    from facepipe.detection import request_problem

    request = _detect_request(args.images, args)
    problem = request_problem(request)
    if problem:
        raise CliError(problem)
    if args.addr:
        import grpc

        from facepipe.auth.client import aio_channel
        from facepipe.cli.addresses import api_key, tls_settings
        from facepipe.v1 import detector_pb2_grpc

        try:
            async with aio_channel(args.addr, api_key(args, args.addr), tls=tls_settings(args)) as channel:
                stub = detector_pb2_grpc.DetectorStub(channel)
                return await stub.DetectBatch(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            raise rpc_failure(exc, "detector", args.addr) from None
    from facepipe.detection import detect_batch
    from facepipe.faces import FaceEngine
    from facepipe.models.registry import PackError

    try:
        engine = FaceEngine.load(Settings.from_env("detector"), "cli", embedder=False)
    except PackError as exc:
        raise CliError(str(exc)) from None
    try:
        return await detect_batch(engine.detector, request)
    finally:
        await engine.close()


def cmd_detect(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    for p in args.images:
        image_file(p)
    response = asyncio.run(_detect(args))
    failed = 0
    if args.json:
        doc = MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        print(json.dumps(doc["results"], indent=2))
        failed = sum(1 for r in response.results if r.HasField("error"))
    else:
        for r in response.results:
            if r.HasField("error"):
                failed += 1
                print(f"{r.id}: error {r.error.message}")
                continue
            print(f"{r.id}: {len(r.faces)} face(s) in {r.width}x{r.height}")
            for i, f in enumerate(r.faces):
                b = f.box
                verdict = (
                    "ok"
                    if f.quality.accepted
                    else "rejected " + ",".join(_reason_name(x) for x in f.quality.reasons)
                )
                print(
                    f"  [{i}] box=({b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}) score={f.score:.3f} "
                    f"quality={f.quality.score:.2f} {verdict}"
                )
    return 1 if failed else 0


def _reason_name(value: int) -> str:
    from facepipe.v1 import common_pb2

    return common_pb2.QualityReason.Name(value).removeprefix("QUALITY_REASON_")
