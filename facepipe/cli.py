"""The ``facepipe`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from facepipe.config import DEFAULT_PORTS, Settings

# Services register their ``main(settings)`` here (pyproject.toml), so facepipe never imports them.
SERVICE_ENTRY_POINTS = "facepipe.services"


def installed_services() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=SERVICE_ENTRY_POINTS)}


def _settings(service: str = "facepipe", **overrides) -> Settings:
    return Settings.from_env(service, **overrides)


# -- serve ---------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    main = installed_services()[args.service].load()
    main(_settings(args.service, grpc_port=args.port, http_port=args.http_port))
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
    from facepipe.detection import detect_batch
    from facepipe.faces import FaceEngine

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


# -- local stack -----------------------------------------------------------------
def _data_dir(args: argparse.Namespace) -> Path:
    from facepipe.stack import default_data_dir

    return Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()


def _stack_state(args: argparse.Namespace):
    from facepipe.stack import StackState, pid_alive

    state = StackState.load(_data_dir(args))
    if state is None or state.status != "running" or not pid_alive(state.supervisor_pid):
        return None
    return state


def cmd_up(args: argparse.Namespace) -> int:
    from facepipe import stack

    data_dir = _data_dir(args)
    if args.detach:
        try:
            state = stack.start_detached(data_dir, auto_ports=args.auto_ports, timeout=args.timeout)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print_status(state, as_json=False)
        return 0
    from facepipe.runtime.logs import setup_logging

    setup_logging("supervisor")
    return stack.Supervisor(data_dir, auto_ports=args.auto_ports).run()


def cmd_down(args: argparse.Namespace) -> int:
    from facepipe import stack

    stopped = stack.stop(_data_dir(args))
    print("stopped" if stopped else "no running stack")
    return 0


def _print_status(state, as_json: bool) -> int:
    from facepipe.stack import health

    rows = health(state)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"stack in {state.data_dir}")
        for r in rows:
            extra = f" restarts={r['restarts']}" if r.get("restarts") else ""
            print(f"  {r['name']:11} {r.get('address', ''):24} {r.get('status', '')}{extra}")
    return 0 if all(r["healthy"] for r in rows) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from facepipe.stack import StackState

    state = StackState.load(_data_dir(args))
    if state is None:
        if args.json:
            print("[]")
        else:
            print(f"no stack in {_data_dir(args)}")
        return 1
    return _print_status(state, args.json)


def _pipeline_env(args: argparse.Namespace) -> tuple[str, object]:
    """NATS URL and object store: from the running local stack, else from FACEPIPE_* env."""
    import os

    from facepipe.storage import object_store_from_env

    state = _stack_state(args)
    if state is not None:
        return state.nats_url, object_store_from_env({**os.environ, **state.env})
    url = os.environ.get("FACEPIPE_NATS_URL")
    if not url:
        raise SystemExit("error: no running local stack (facepipe up --detach) and no FACEPIPE_NATS_URL")
    return url, object_store_from_env()


def _indexer_addr(args: argparse.Namespace) -> str:
    import os

    if args.addr:
        return args.addr
    state = _stack_state(args)
    if state is not None:
        return state.address("indexer")
    return os.environ.get("FACEPIPE_INDEXER_ADDR", f"127.0.0.1:{DEFAULT_PORTS['indexer']}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from facepipe.client import ingest, progress_bar
    from facepipe.pipeline import TENANT_RE

    if not TENANT_RE.match(args.tenant):
        print(f"error: invalid tenant {args.tenant!r}", file=sys.stderr)
        return 2
    nats_url, objects = _pipeline_env(args)
    summary = asyncio.run(
        ingest(
            nats_url,
            objects,
            args.sources,
            args.tenant,
            args.site,
            wait=args.wait,
            wait_s=args.timeout,
            progress=None if args.json else progress_bar(),
        )
    )
    doc = summary.as_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        verb = "processed" if args.wait else "published"
        print(f"{verb} {doc['images']} image(s) for tenant {args.tenant} (batch {doc['batch_id']})")
        if args.wait:
            print(
                f"  faces indexed {doc['faces_indexed']}, duplicates skipped {doc['faces_dup_skipped']}, "
                f"rejected {doc['faces_rejected']}; images already known {doc['duplicates']}, "
                f"failed {doc['failed']}, pending {doc['pending']}  ({doc['seconds']} s)"
            )
        for err in doc["errors"]:
            print(f"  error: {err.get('source', '')}: {err['error']}")
    return 1 if doc["errors"] or doc["pending"] else 0


def _thumb_location(args: argparse.Namespace, bucket: str, key: str) -> str:
    import os

    state = _stack_state(args)
    env = {**os.environ, **(state.env if state else {})}
    if env.get("FACEPIPE_OBJECT_STORE", "local") == "local" and env.get("FACEPIPE_OBJECT_DIR"):
        return str(Path(env["FACEPIPE_OBJECT_DIR"]) / bucket / key)
    return f"s3://{bucket}/{key}"


def cmd_search(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

    path = Path(args.image)
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    request = indexer_pb2.SearchRequest(
        tenant_id=args.tenant, image=path.read_bytes(), top_k=args.top_k, min_score=args.min_score
    )
    try:
        with grpc.insecure_channel(_indexer_addr(args)) as channel:
            resp = indexer_pb2_grpc.IndexerStub(channel).Search(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    matches = [
        {
            "score": round(m.score, 4),
            "url": m.url,
            "tenant_id": m.tenant_id,
            "site": m.site,
            "page_url": m.page_url,
            "image_sha256": m.image_sha256,
            "face_index": m.face_index,
            "bbox": [m.bbox.x1, m.bbox.y1, m.bbox.x2, m.bbox.y2],
            "thumb": _thumb_location(args, m.thumb.bucket, m.thumb.key) if m.thumb.key else "",
            "point_id": m.point_id,
        }
        for m in resp.matches
    ]
    if args.json:
        print(json.dumps(matches, indent=2))
    elif resp.query_faces_found == 0:
        print(f"{path}: no face found")
    else:
        print(f"{len(matches)} match(es) for {path} in tenant {args.tenant}:")
        for i, m in enumerate(matches, 1):
            print(f"  {i:2}. {m['score']:.3f}  {m['url']}  thumb={m['thumb']}")
    return 0


def _crawler_addr(args: argparse.Namespace) -> str:
    import os

    if args.addr:
        return args.addr
    state = _stack_state(args)
    if state is not None and "crawler" in state.components:
        return state.address("crawler")
    return os.environ.get("FACEPIPE_CRAWLER_ADDR", f"127.0.0.1:{DEFAULT_PORTS['crawler']}")


def cmd_crawl(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.crawl import CrawlClient, check_seed, crawl_summary, parse_sites_file, progress_printer
    from facepipe.pipeline import TENANT_RE

    if not TENANT_RE.match(args.tenant):
        print(f"error: invalid tenant {args.tenant!r}: 1-64 letters, digits, '_' or '-'", file=sys.stderr)
        return 2
    seeds: list[str] = []
    for url in args.urls:
        seed, problem = check_seed(url)
        if problem:
            print(f"error: {url!r} {problem}", file=sys.stderr)
            return 2
        if seed not in seeds:
            seeds.append(seed)
    try:
        if args.sites_file:
            seeds += [u for u in parse_sites_file(Path(args.sites_file).read_text()) if u not in seeds]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not seeds:
        print("error: give at least one URL or --sites-file", file=sys.stderr)
        return 2
    addr = _crawler_addr(args)
    with CrawlClient(addr) as client:
        try:
            job_id = client.start(seeds, args.tenant, args.max_pages, args.max_depth, args.render)
            if not args.wait:
                print(json.dumps({"job_id": job_id, "status": "queued"}) if args.json else job_id)
                return 0
            try:
                job = client.wait(job_id, args.timeout, progress_printer())
            except KeyboardInterrupt:
                client.cancel(job_id)
                print(f"\ncancelled crawl {job_id}", file=sys.stderr)
                return 130
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                print(
                    f"error: cannot reach the crawler at {addr} ({exc.details()}); "
                    "start the local stack with `facepipe up --detach` or pass --addr",
                    file=sys.stderr,
                )
                return 1
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    doc = crawl_summary(job)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"crawl {job_id} {doc['status']} in {doc['seconds']} s: {doc['pages_crawled']} page(s), "
            f"{doc['candidates_count']} image(s) queued for ingest (tenant {args.tenant}, batch {job_id})"
        )
        if doc["skipped_robots"]:
            print(f"  skipped for robots.txt: {doc['skipped_robots']}")
        for err in doc["errors"]:
            print(f"  error: {err['url']}: {err['kind']}: {err['message']}")
    if doc["status"] == "failed":
        print(f"error: crawl failed: {doc['error']}", file=sys.stderr)
    elif doc["status"] not in ("done", "cancelled"):
        print(f"error: crawl {job_id} still {doc['status']} after {args.timeout:g} s", file=sys.stderr)
    return 0 if doc["status"] == "done" else 1


def cmd_erase(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.v1 import indexer_pb2, indexer_pb2_grpc

    selector = {"url": args.url, "site": args.site, "image_sha256": args.sha256}
    chosen = {k: v for k, v in selector.items() if v}
    if len(chosen) + int(args.all) != 1:
        print("error: give exactly one of --url, --site, --sha256 or --all", file=sys.stderr)
        return 2
    request = indexer_pb2.DeleteFacesRequest(tenant_id=args.tenant, all=args.all, **chosen)
    try:
        with grpc.insecure_channel(_indexer_addr(args)) as channel:
            resp = indexer_pb2_grpc.IndexerStub(channel).DeleteFaces(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    doc = {"points_deleted": resp.points_deleted, "objects_deleted": resp.objects_deleted}
    print(
        json.dumps(doc)
        if args.json
        else f"erased {doc['points_deleted']} face(s), {doc['objects_deleted']} object(s)"
    )
    return 0


# -- parser --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facepipe", description="Find, index and search faces.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=sorted(installed_services()))
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

    def stack_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="local stack directory (default: $FACEPIPE_HOME/stack)")

    p = sub.add_parser("up", help="start NATS and every service as supervised local processes")
    stack_args(p)
    p.add_argument("--detach", action="store_true", help="run in the background and return once healthy")
    p.add_argument("--auto-ports", action="store_true", help="pick free ports instead of the defaults")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health with --detach")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the local stack")
    stack_args(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="health of each local stack component")
    stack_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ingest", help="store and publish images (files, folders or URLs)")
    stack_args(p)
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL")
    p.add_argument("--tenant", default="default")
    p.add_argument("--site", default="")
    p.add_argument("--wait", action="store_true", help="block until every image is fully processed")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search indexed faces with the largest face of an image")
    stack_args(p)
    p.add_argument("image")
    p.add_argument("--tenant", default="default")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--min-score", type=float, default=0.0)
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("crawl", help="crawl sites and ingest every image found")
    stack_args(p)
    p.add_argument("urls", nargs="*", metavar="URL", help="seed URLs, one site each")
    p.add_argument("--sites-file", help="file with one seed URL per line ('#' comments)")
    p.add_argument("--tenant", default="default")
    p.add_argument("--max-pages", type=int, default=0, help="pages per site (default: the crawler's)")
    p.add_argument("--max-depth", type=int, default=None, help="link depth from the seed")
    p.add_argument(
        "--render", choices=["auto", "never", "always"], default="auto", help="JavaScript rendering"
    )
    p.add_argument("--wait", action="store_true", help="block until the crawl ends (Ctrl-C cancels it)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--addr", help="crawler HOST:PORT (default: the local stack's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait")
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("erase", help="delete faces (vectors and stored objects)")
    stack_args(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--url")
    p.add_argument("--site")
    p.add_argument("--sha256")
    p.add_argument("--all", action="store_true", help="everything of the tenant")
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_erase)
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
