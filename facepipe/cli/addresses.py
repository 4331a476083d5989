"""Finding the running local stack and the services' addresses from its stack.json.

A command acts on exactly the stack it is aimed at. An explicit ``--addr`` wins;
then a ``--data-dir`` given on the command line, whose stack must be running;
without one, the default stack when it runs, else the ``FACEPIPE_*_ADDR`` /
``FACEPIPE_NATS_URL`` overrides. Nothing ever falls back to the standard ports,
which may belong to another stack."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from urllib.parse import urlsplit

from facepipe import config
from facepipe.cli.errors import CliError


def data_dir(args: argparse.Namespace) -> Path:
    from facepipe.stack import default_data_dir

    given = getattr(args, "data_dir", None)
    return Path(given).expanduser().resolve() if given else default_data_dir()


def stack_state(args: argparse.Namespace):
    """The stack in the command's data dir when its supervisor runs, else None."""
    from facepipe.stack import StackState, pid_alive

    state = StackState.load(data_dir(args))
    if state is None or state.status != "running" or not pid_alive(state.supervisor_pid):
        return None
    return state


def not_running(args: argparse.Namespace, hint: str = "") -> CliError:
    """The error for a command aimed at a stack that does not run."""
    where = data_dir(args)
    start = "facepipe up --detach" + (f" --data-dir {where}" if args.data_dir else "")
    return CliError(f"no running stack in {where}; start it with `{start}`{hint}")


def _aimed_stack(args: argparse.Namespace, override: str, env_name: str):
    """The running stack the command is aimed at, or None when ``override`` (the value
    of ``env_name``) replaces it."""
    state = stack_state(args)
    if state is not None:
        return state
    if not args.data_dir and override:
        return None
    raise not_running(args, "" if args.data_dir else f", or set {env_name}")


def nats_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether any server of a NATS URL list accepts a TCP connection."""
    for server in url.split(","):
        parsed = urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout):
                return True
        except OSError:
            continue
    return False


def pipeline_env(args: argparse.Namespace) -> tuple[str, object]:
    """NATS URL and object store of the stack the command is aimed at."""
    from facepipe import natsauth
    from facepipe.stack import nats_admin_url
    from facepipe.storage import open_object_store

    settings = config.Settings.from_env("cli")
    override = settings.nats_url
    state = _aimed_stack(args, override, "FACEPIPE_NATS_URL")
    if state is not None:
        url = state.nats_url
        objects = open_object_store(config.ObjectStoreSettings.from_env(config.environ(state.env)))
    else:
        url, objects = override, open_object_store(config.ObjectStoreSettings.from_env())
    # The NATS client retries forever; a dead URL must end in one line instead.
    if not nats_reachable(url):
        source = f"the stack in {state.data_dir}" if state else "FACEPIPE_NATS_URL"
        raise CliError(
            f"cannot reach NATS at {natsauth.redact(url)} (from {source}); is it running? "
            "`facepipe status` shows the local stack"
        )
    # The URL the commands connect with carries the user: the stack's admin, or
    # FACEPIPE_NATS_USER's (else whatever user FACEPIPE_NATS_URL carries).
    if state is not None:
        return nats_admin_url(state), objects
    try:
        user, password = natsauth.credentials(settings)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return (natsauth.url_with_credentials(url, user, password) if user else url), objects


def service_addr(args: argparse.Namespace, service: str) -> str:
    """HOST:PORT of ``service``: --addr, the aimed stack's, or FACEPIPE_<SERVICE>_ADDR."""
    if getattr(args, "addr", None):
        return args.addr
    env_name = f"FACEPIPE_{service.upper()}_ADDR"
    override = getattr(config.ClientSettings.from_env(), f"{service}_addr", "")
    try:
        state = _aimed_stack(args, override, env_name)
    except CliError as exc:
        raise CliError(f"{exc.message} (or pass --addr HOST:PORT)") from None
    if state is None:
        return override
    if service not in state.components:
        raise CliError(f"the stack in {state.data_dir} runs no {service}")
    return state.address(service)


def api_key(args: argparse.Namespace, addr: str = "") -> str | None:
    """The key to send: --key, else FACEPIPE_API_KEY, else the aimed local stack's admin
    key, but only when ``addr`` is one of that stack's services (never to another server)."""
    if getattr(args, "key", None):
        return args.key
    configured = config.ClientSettings.from_env().api_key
    if configured:
        return configured
    state = stack_state(args)
    if state is None or (addr and addr not in {c.address for c in state.components.values()}):
        return None
    from facepipe.auth import read_key_file
    from facepipe.stack import ADMIN_KEY_FILE

    path = Path(state.data_dir) / ADMIN_KEY_FILE
    if not path.exists():
        return None
    try:
        return read_key_file(path)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def tls_settings(args: argparse.Namespace) -> config.TlsSettings:
    """The TLS of the command's gRPC calls: the environment's, with ``--tls`` forcing it on."""
    from facepipe.tls import channel_credentials

    try:
        tls = config.TlsSettings.from_env(enabled=True if getattr(args, "tls", False) else None)
        if tls.client_tls:
            channel_credentials(tls)  # unreadable files: one line now, not a traceback later
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return tls


def indexer_addr(args: argparse.Namespace) -> str:
    return service_addr(args, "indexer")


def crawler_addr(args: argparse.Namespace) -> str:
    return service_addr(args, "crawler")


def thumb_location(args: argparse.Namespace, bucket: str, key: str) -> str:
    state = stack_state(args)
    objects = config.ObjectStoreSettings.from_env(config.environ(state.env if state else None))
    if objects.kind == "local":
        return str(Path(objects.dir) / bucket / key)
    return f"s3://{bucket}/{key}"
