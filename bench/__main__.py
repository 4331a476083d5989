"""``make bench``: every benchmark, printed as side-by-side ratios.

``python -m bench --only PART`` runs one part (repeatable), ``--quick`` runs each part at
tiny sizes (a check that it still runs, not a measurement), and ``--gpu`` runs the GPU
benchmark alone; it exits with bench.gpu.EXIT_NO_GPU when no GPU provider is available.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facepipe.config import Settings
from facepipe.models.registry import PackError

ROOT = Path(__file__).resolve().parent.parent
QUICK_SEARCH_VECTORS = 5_000
PARTS = ["engine", "search", "pipeline", "crawl", "auth", "persons", "web", "recognize"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=ROOT.parent / "shared",
        help="the shared data folder (default: ../shared)",
    )
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only this part (repeatable; default: every part)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one or two rounds: checks that each part runs"
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the GPU benchmark alone: CUDA (and TensorRT) beside CPU, under 4 minutes",
    )
    parser.add_argument(
        "--pack",
        action="append",
        help="measure this installed pack in the engine part (repeatable; default: every installed pack)",
    )
    parser.add_argument(
        "--search-vectors",
        type=int,
        default=0,
        help=f"vectors in the search index (default: 1,000,000; {QUICK_SEARCH_VECTORS:,} with --quick)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env("bench")
    try:
        if args.gpu:
            return run_gpu(settings, args)
        run_parts(settings, args)
    except (PackError, FileNotFoundError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


def run_gpu(settings: Settings, args: argparse.Namespace) -> int:
    from bench import gpu

    result = gpu.run(settings, args.shared, gpu.Budget.quick() if args.quick else None)
    print(gpu.report(result), flush=True)
    return 0 if result.gpu else gpu.EXIT_NO_GPU


def run_parts(settings: Settings, args: argparse.Namespace) -> None:
    only = set(args.only or PARTS)
    if "engine" in only:
        from bench import engine

        sizes = engine.Sizes.quick() if args.quick else engine.Sizes()
        print(engine.report(engine.run(settings, args.shared, sizes, args.pack)), flush=True)
    if "search" in only:
        from bench import search

        vectors = args.search_vectors or (QUICK_SEARCH_VECTORS if args.quick else 1_000_000)
        queries = 50 if args.quick else 1000
        print(search.report(search.run(settings, vectors, queries)), flush=True)
    if "pipeline" in only:
        from bench import pipeline

        rounds = {"rounds": 1} if args.quick else {}
        print(pipeline.report(pipeline.run(settings, args.shared, **rounds)), flush=True)
    if "crawl" in only:
        from bench import crawl

        pages = {"pages": 20, "js_pages": 2} if args.quick else {}
        print(crawl.report(crawl.run(**pages)), flush=True)
    if "auth" in only:
        from bench import auth

        points = {"n": 1000, "queries": 50} if args.quick else {}
        print(auth.report(auth.run(settings, **points)), flush=True)
    if "persons" in only:
        from bench import persons

        print(
            persons.report(persons.run(settings, persons.Sizes.quick() if args.quick else None)), flush=True
        )
    if "web" in only:
        from bench import web

        sizes = {"queries": 20, "photos": 3} if args.quick else {}
        print(web.report(web.run(settings, args.shared, **sizes)), flush=True)
    if "recognize" in only:
        from bench import recognize

        sizes = {"seconds": 3.0, "max_cameras": 2} if args.quick else {}
        print(recognize.report(recognize.run(settings, args.shared, **sizes)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
