"""The argument parser of the ``facepipe`` command line."""

from __future__ import annotations

import argparse

from facepipe.cli.crawl_cmds import cmd_crawl
from facepipe.cli.detect_cmds import cmd_detect
from facepipe.cli.models_cmds import cmd_models
from facepipe.cli.pipeline_cmds import cmd_erase, cmd_ingest, cmd_search
from facepipe.cli.stack_cmds import SERVICES, cmd_down, cmd_serve, cmd_status, cmd_up
from facepipe.config import DEFAULT_PORTS


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
