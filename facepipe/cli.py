"""The ``facepipe`` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path

from facepipe.config import DEFAULT_PORTS, Settings

SERVICES = {
    "detector": "services.detector.main",
    "embedder": "services.embedder.main",
    "indexer": "services.indexer.main",
    "extractor": "services.extractor.main",
    "crawler": "services.crawler.main",
    "node": "services.node.main",
}


def _settings(service: str = "facepipe", **overrides) -> Settings:
    return Settings.from_env(service, **overrides)


# -- serve ---------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICES[args.service])
    module.main(_settings(args.service, grpc_port=args.port, http_port=args.http_port))
    return 0


# -- detect --------------------------------------------------------------------
def _detect_request(paths: list[str], args: argparse.Namespace):
    from facepipe.v1 import common_pb2, detector_pb2

    images = []
    for p in paths:
        data = sys.stdin.buffer.read() if p == "-" else Path(p).read_bytes()
        images.append(common_pb2.ImageInput(id=p, data=data))
    options = detector_pb2.DetectOptions(
        score_threshold=args.threshold, max_faces=args.max_faces, include_rejected=args.include_rejected
    )
    return detector_pb2.DetectBatchRequest(images=images, options=options)


async def _detect(args: argparse.Namespace):
    request = _detect_request(args.images, args)
    if args.addr:
        import grpc

        from facepipe.v1 import detector_pb2_grpc

        async with grpc.aio.insecure_channel(args.addr) as channel:
            return await detector_pb2_grpc.DetectorStub(channel).DetectBatch(request, timeout=args.timeout)
    from facepipe.faces import FaceEngine
    from services.detector.servicer import detect_batch

    engine = FaceEngine.load(_settings("detector"), "cli", embedder=False)
    try:
        return await detect_batch(engine.detector, request)
    finally:
        await engine.close()


def cmd_detect(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    for p in args.images:
        if p != "-" and not Path(p).is_file():
            print(f"error: no such file: {p}", file=sys.stderr)
            return 2
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


# -- models --------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from facepipe.models import registry

    home = _settings().home
    if args.models_cmd == "list":
        root = registry.models_root(home)
        installed = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for name, spec in registry.PACKS.items():
            mark = "installed" if name in installed else "-"
            print(f"{name:12} {mark:10} {spec.description} [{spec.license}]")
        for name in installed:
            if name not in registry.PACKS:
                print(f"{name:12} {'installed':10}")
        return 0
    try:
        if args.models_cmd == "pull":

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty():
                    pct = f"{100 * done / total:5.1f}%" if total else f"{done >> 20} MiB"
                    print(f"\rdownloading {args.name}: {pct}", end="", file=sys.stderr)

            path = registry.pull(
                args.name, home, url=args.url, sha256=args.sha256, force=args.force, progress=progress
            )
        else:
            path = registry.install_local(args.name, Path(args.source), home)
        pack = registry.load_pack(path)
    except registry.PackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: detector {pack.detector.name}, recognizer {pack.recognizer.name} in {path}")
    return 0


# -- parser --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facepipe", description="Find, index and search faces.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=sorted(SERVICES))
    p.add_argument("--port", type=int, default=None, help=f"gRPC port (defaults: {DEFAULT_PORTS})")
    p.add_argument(
        "--http-port", type=int, default=None, help="metrics/health port (default: gRPC port + 1000)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("detect", help="detect faces in images, in-process or against a detector")
    p.add_argument("images", nargs="+", help="image files ('-' for stdin)")
    p.add_argument("--addr", help="detector address HOST:PORT (default: run in-process)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--threshold", type=float, default=0.0, help="minimum detector score")
    p.add_argument("--max-faces", type=int, default=0)
    p.add_argument("--include-rejected", action="store_true", help="also list faces that fail quality checks")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("models", help="manage model packs")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="known and installed packs")
    mp = msub.add_parser("pull", help="download, verify and unpack a pack")
    mp.add_argument("name")
    mp.add_argument("--from", dest="url", help="zip URL (default: the pack's release URL)")
    mp.add_argument("--sha256", help="expected sha256 of the zip")
    mp.add_argument("--force", action="store_true", help="replace an installed pack")
    mi = msub.add_parser("install", help="install a local directory of ONNX files as a pack")
    mi.add_argument("name")
    mi.add_argument("--from", dest="source", required=True, help="directory with the .onnx files")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
