"""Local stack commands: serve, up, down and status."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from facepipe.cli import addresses
from facepipe.config import Settings

SERVICES = {
    "detector": "services.detector.main",
    "embedder": "services.embedder.main",
    "indexer": "services.indexer.main",
    "extractor": "services.extractor.main",
    "crawler": "services.crawler.main",
    "node": "services.node.main",
}


def cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICES[args.service])
    module.main(
        Settings.from_env(args.service, grpc_port=args.port, http_port=args.http_port, grpc_host=args.host)
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from facepipe import stack

    data_dir = addresses.data_dir(args)
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

    stopped = stack.stop(addresses.data_dir(args))
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

    running = addresses.stack_state(args)
    if running is None:
        # Never probe a stopped stack's ports: another stack may be serving on them now.
        where = addresses.data_dir(args)
        if args.json:
            print("[]")
        else:
            state = StackState.load(where)
            last = f" (last status: {state.status})" if state else ""
            print(f"no running stack in {where}{last}")
        return 1
    return _print_status(running, args.json)
