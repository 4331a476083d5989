"""The crawl command: crawl sites and ingest every image found."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepipe.cli import addresses
from facepipe.cli.errors import UsageError, rpc_failure
from facepipe.echo import echo


def cmd_crawl(args: argparse.Namespace) -> int:
    import grpc

    from facepipe.crawl import CrawlClient, check_seed, crawl_summary, parse_sites_file, progress_printer

    seeds: list[str] = []
    for url in args.urls:
        seed, problem = check_seed(url)
        if problem:
            raise UsageError(f"{echo(url)} {problem}")
        if seed not in seeds:
            seeds.append(seed)
    try:
        if args.sites_file:
            seeds += [u for u in parse_sites_file(Path(args.sites_file).read_text()) if u not in seeds]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not seeds:
        raise UsageError("give at least one URL or --sites-file")
    addr = addresses.crawler_addr(args)
    with CrawlClient(addr, key=addresses.api_key(args, addr), tls=addresses.tls_settings(args)) as client:
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
            raise rpc_failure(exc, "crawler", addr) from None
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
