"""Local stack commands: serve, up, down and status."""

from __future__ import annotations

import argparse
import json
import socket
from importlib.metadata import EntryPoint, entry_points

from facepipe.cli import addresses
from facepipe.cli.errors import CliError
from facepipe.config import Settings

# Services register their ``main(settings)`` here (pyproject.toml), so facepipe never imports them.
SERVICE_ENTRY_POINTS = "facepipe.services"


def installed_services() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=SERVICE_ENTRY_POINTS)}


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(
        args.service, grpc_port=args.port, http_port=args.http_port, grpc_host=args.host
    )
    from facepipe import natsauth
    from facepipe.auth import check_settings
    from facepipe.tls import check_files

    try:
        check_settings(settings)
        natsauth.credentials(settings)  # a NATS user without its password, said up front
        check_files(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # Said up front, in one line: the usual cause is a local stack already on the standard ports.
    for what, option, port in (
        ("gRPC", "--port", settings.grpc_port),
        ("HTTP", "--http-port", settings.http_port),
    ):
        if _port_in_use(settings.grpc_host, port):
            raise CliError(
                f"{what} port {settings.grpc_host}:{port} is in use (a local stack? see `facepipe status`); "
                f"pass a free {option} or stop it with `facepipe down`"
            )
    installed_services()[args.service].load()(settings)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from facepipe import stack

    data_dir = addresses.data_dir(args)
    running = addresses.stack_state(args)
    if running is not None:
        where = f" --data-dir {data_dir}" if args.data_dir else ""
        raise CliError(
            f"a stack is already running in {data_dir} (supervisor pid {running.supervisor_pid}); "
            f"`facepipe status{where}` shows it, `facepipe down{where}` stops it"
        )
    from facepipe.tls import check_files

    try:  # every component and the nats-server would fail on these, one after the other
        check_files(Settings.from_env("stack"))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.detach:
        try:
            state = stack.start_detached(data_dir, auto_ports=args.auto_ports, timeout=args.timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise CliError(str(exc)) from None
        _print_status(state, as_json=False)
        return 0
    from facepipe.runtime.logs import setup_logging

    setup_logging("supervisor")
    return stack.Supervisor(data_dir, auto_ports=args.auto_ports).run()


def cmd_down(args: argparse.Namespace) -> int:
    from facepipe import stack

    where = addresses.data_dir(args)
    stopped = stack.stop(where)
    print(f"stopped the stack in {where}" if stopped else f"no running stack in {where}")
    return 0


def _print_status(state, as_json: bool) -> int:
    from facepipe.stack import health, web_url

    rows = health(state)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"stack in {state.data_dir}")
        for r in rows:
            extra = f" restarts={r['restarts']}" if r.get("restarts") else ""
            print(f"  {r['name']:11} {r.get('address', ''):24} {r.get('status', '')}{extra}")
        if url := web_url(state):
            print(f"web UI and REST API: {url}")
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


def cmd_producer_url(args: argparse.Namespace) -> int:
    """Prints a NATS URL carrying a producer's credentials for the aimed local stack."""
    from facepipe.stack import producer_url

    state = addresses.stack_state(args)
    if state is None:
        raise addresses.not_running(args)
    try:
        print(producer_url(state, args.tenant))
    except TimeoutError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    """Creates or updates the NATS topology at FACEPIPE_NATS_URL, as FACEPIPE_NATS_USER."""
    import asyncio

    from facepipe import bus, natsauth
    from facepipe.auth import KeyStore

    settings = Settings.from_env("provision")
    if not settings.nats_url:
        raise CliError("set FACEPIPE_NATS_URL (and FACEPIPE_NATS_USER with its password)")
    try:
        user, password = natsauth.credentials(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not addresses.nats_reachable(settings.nats_url):
        raise CliError(f"cannot reach NATS at {natsauth.redact(settings.nats_url)}")

    async def provision() -> None:
        nc = await bus.connect(settings.nats_url, "provision", user, password)
        try:
            js = nc.jetstream()
            await bus.ensure_topology(js, settings.dedup_ttl_seconds)
            await KeyStore.open(js)  # the key bucket every service watches
        finally:
            await nc.close()

    try:
        asyncio.run(asyncio.wait_for(provision(), args.timeout))
    except TimeoutError:
        raise CliError(
            f"the topology was not made within {args.timeout:g}s: is {user or 'anonymous'} allowed to?"
        ) from None
    print("NATS topology ready: streams, stage consumers and KV buckets")
    return 0
