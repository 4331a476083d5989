"""Finding the running local stack and the services' addresses from its stack.json."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from facepipe.config import DEFAULT_PORTS


def data_dir(args: argparse.Namespace) -> Path:
    from facepipe.stack import default_data_dir

    return Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()


def stack_state(args: argparse.Namespace):
    from facepipe.stack import StackState, pid_alive

    state = StackState.load(data_dir(args))
    if state is None or state.status != "running" or not pid_alive(state.supervisor_pid):
        return None
    return state


def pipeline_env(args: argparse.Namespace) -> tuple[str, object]:
    """NATS URL and object store: from the running local stack, else from FACEPIPE_* env."""
    from facepipe.storage import object_store_from_env

    state = stack_state(args)
    if state is not None:
        return state.nats_url, object_store_from_env({**os.environ, **state.env})
    url = os.environ.get("FACEPIPE_NATS_URL")
    if not url:
        raise SystemExit("error: no running local stack (facepipe up --detach) and no FACEPIPE_NATS_URL")
    return url, object_store_from_env()


def indexer_addr(args: argparse.Namespace) -> str:
    if args.addr:
        return args.addr
    state = stack_state(args)
    if state is not None:
        return state.address("indexer")
    return os.environ.get("FACEPIPE_INDEXER_ADDR", f"127.0.0.1:{DEFAULT_PORTS['indexer']}")


def crawler_addr(args: argparse.Namespace) -> str:
    if args.addr:
        return args.addr
    state = stack_state(args)
    if state is not None and "crawler" in state.components:
        return state.address("crawler")
    return os.environ.get("FACEPIPE_CRAWLER_ADDR", f"127.0.0.1:{DEFAULT_PORTS['crawler']}")


def thumb_location(args: argparse.Namespace, bucket: str, key: str) -> str:
    state = stack_state(args)
    env = {**os.environ, **(state.env if state else {})}
    if env.get("FACEPIPE_OBJECT_STORE", "local") == "local" and env.get("FACEPIPE_OBJECT_DIR"):
        return str(Path(env["FACEPIPE_OBJECT_DIR"]) / bucket / key)
    return f"s3://{bucket}/{key}"
