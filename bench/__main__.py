"""``make bench``: every benchmark, printed as side-by-side ratios."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from facepipe.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--only", choices=["engine", "pipeline", "crawl", "auth"], action="append")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env("bench")
    only = set(args.only or ["engine", "pipeline", "crawl", "auth"])
    if "engine" in only:
        from bench import engine

        print(engine.report(engine.run(settings, args.shared)), flush=True)
    if "pipeline" in only:
        from bench import pipeline

        print(pipeline.report(pipeline.run(settings, args.shared)), flush=True)
    if "crawl" in only:
        from bench import crawl

        print(crawl.report(crawl.run()), flush=True)
    if "auth" in only:
        from bench import auth

        print(auth.report(auth.run(settings)), flush=True)


if __name__ == "__main__":
    main()
