"""The local stack: nats-server and every pipeline service as supervised local
processes on the embedded defaults (local object folder, Qdrant Edge), with
logs and state under one data directory. A crashed component, nats-server
included, is restarted with a growing delay; what a crashed component left
running is killed, and every exited child is reaped."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facepipe import natsauth
from facepipe.config import DEFAULT_PORTS, HTTP_PORT_OFFSET, NatsTlsSettings, default_stack_dir, environ
from facepipe.natsd import NatsServer

log = logging.getLogger("facepipe.stack")

STATE_FILE = "stack.json"
# The stack's own credentials, readable by their owner only: the admin API key the
# command line uses for this stack, and the service credential the services share.
ADMIN_KEY_FILE = "admin.key"
SERVICE_KEY_FILE = "service.key"
# The NATS users' passwords, one owner-only file each (facepipe.natsauth.PasswordDir).
NATS_AUTH_DIR = "nats-auth"
STACK_SERVICES = ("crawler", "extractor", "detector", "embedder", "indexer", "persons", "recognizer", "web")
# Services that serve HTTP rather than gRPC and use no NATS: the web service.
HTTP_SERVICES = ("web",)
NATS_PORT = 4222
NATS_HTTP_PORT = 8222
MAX_RESTART_DELAY = 30.0
NATS = "nats"
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Component:
    name: str
    grpc_port: int = 0
    http_port: int = 0
    pid: int = 0
    restarts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class StackState:
    data_dir: str
    nats_url: str
    nats_http_port: int
    supervisor_pid: int
    status: str  # starting, running, stopping, stopped
    env: dict[str, str]
    components: dict[str, Component] = field(default_factory=dict)
    started_at: float = 0.0

    def save(self, data_dir: Path) -> None:
        tmp = data_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(data_dir / STATE_FILE)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = Path(data_dir) / STATE_FILE
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        doc["components"] = {k: Component(**v) for k, v in doc.get("components", {}).items()}
        return cls(**doc)

    def address(self, service: str) -> str:
        return self.components[service].address


def default_data_dir() -> Path:
    return default_stack_dir()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pick(port: int, auto: bool, taken: set[int]) -> int:
    """The default port when free, else (or with ``auto``) a free one no other component got."""
    if not auto and port not in taken and _port_free(port):
        taken.add(port)
        return port
    while (candidate := _free_port()) in taken:
        pass
    taken.add(candidate)
    return candidate


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Runs in the foreground until SIGTERM/SIGINT; restarts crashed services."""

    def __init__(
        self, data_dir: Path, auto_ports: bool = False, extra_env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.auto_ports = auto_ports
        self.extra_env = extra_env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.next_restart: dict[str, float] = {}
        self.nats: NatsServer | None = None
        self._stop = False
        self._reload_users = False

    def _env(self, nats_url: str) -> dict[str, str]:
        env = {
            "FACEPIPE_NATS_URL": nats_url,
            "FACEPIPE_OBJECT_STORE": "local",
            "FACEPIPE_OBJECT_DIR": str(self.data_dir / "objects"),
            "FACEPIPE_VECTOR_STORE": "edge",
            "FACEPIPE_VECTOR_DIR": str(self.data_dir / "vectors"),
            "FACEPIPE_GRPC_HOST": "127.0.0.1",
            "FACEPIPE_SERVICE_KEY_FILE": str(self.data_dir / SERVICE_KEY_FILE),
        }
        env.update(self.extra_env)
        return env

    def run(self) -> int:
        existing = StackState.load(self.data_dir)
        if existing and existing.status != "stopped" and pid_alive(existing.supervisor_pid):
            print(
                f"a stack is already running from {self.data_dir} (pid {existing.supervisor_pid})",
                file=sys.stderr,
            )
            return 1
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # SIGHUP: NATS users were added (facepipe producer-url); nats-server reads them again.
        signal.signal(signal.SIGHUP, self._on_reload)
        become_subreaper()
        taken: set[int] = set()
        self.nats = nats = NatsServer(
            port=_pick(NATS_PORT, self.auto_ports, taken),
            http_port=_pick(NATS_HTTP_PORT, self.auto_ports, taken),
            store_dir=self.data_dir / "nats",
            tls=NatsTlsSettings.from_env(environ(self.extra_env)),
        )
        state = StackState(
            data_dir=str(self.data_dir),
            nats_url=nats.url,
            nats_http_port=nats.http_port,
            supervisor_pid=os.getpid(),
            status="starting",
            env=self._env(nats.url),
            started_at=time.time(),
        )
        for name in STACK_SERVICES:
            grpc_port = _pick(DEFAULT_PORTS[name], self.auto_ports, taken)
            # The web service has one HTTP port, /metrics and health included.
            http_port = (
                grpc_port
                if name in HTTP_SERVICES
                else _pick(grpc_port + HTTP_PORT_OFFSET, self.auto_ports, taken)
            )
            state.components[name] = Component(name, grpc_port, http_port)
        state.env.update(web_env(state))
        state.components[NATS] = Component(NATS, nats.port, nats.http_port)
        # The persons service reaches the faces through the indexer.
        state.env["FACEPIPE_PERSONS_INDEXER_ADDR"] = state.address("indexer")
        state.save(self.data_dir)
        try:
            self._spawn(state, NATS, wait=True)
            make_credentials(self.data_dir, nats.url, self._settings(state).dedup_ttl_seconds)
            for name in STACK_SERVICES:
                self._spawn(state, name)
            state.status = "running"
            state.save(self.data_dir)
            announce(state)
            self._watch(state)
        finally:
            state.status = "stopping"
            state.save(self.data_dir)
            self._terminate_all()
            state.status = "stopped"
            for c in state.components.values():
                c.pid = 0
            state.save(self.data_dir)
        return 0

    def _settings(self, state: StackState):
        from facepipe.config import Settings

        return Settings.from_env("supervisor", env=environ(state.env))

    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    def _on_reload(self, signum, frame) -> None:
        self._reload_users = True

    def _reload_nats_users(self) -> None:
        self._reload_users = False
        if self.nats is not None:
            self.nats.authorization = natsauth.authorization(nats_passwords(self.data_dir).all())
            self.nats.reload()
            log.info("nats-server users reloaded")

    def _spawn(self, state: StackState, name: str, wait: bool = False) -> None:
        c = state.components[name]
        if name == NATS:
            assert self.nats is not None
            # Read again at each start: producers made since are users too.
            self.nats.authorization = natsauth.authorization(nats_passwords(self.data_dir).all())
            # Services reconnect on their own; only the first start waits for the port.
            self.nats.start(log_path=self.data_dir / "logs" / "nats.log", wait=wait, new_session=True)
            assert self.nats.proc is not None
            self.procs[name] = self.nats.proc
            c.pid = self.nats.proc.pid
            return
        if name in HTTP_SERVICES:
            # No NATS user: the web service reaches the others over gRPC only.
            env = {k: v for k, v in environ({**state.env, "PYTHONUNBUFFERED": "1"}).items()}
            env.pop("FACEPIPE_NATS_URL", None)
        else:
            passwords = nats_passwords(self.data_dir)
            passwords.password(name)
            env = environ(
                {
                    **state.env,
                    "PYTHONUNBUFFERED": "1",
                    "FACEPIPE_NATS_USER": name,
                    "FACEPIPE_NATS_PASSWORD_FILE": str(passwords.file(name)),
                    **self._peers(state, name),
                }
            )
        logf = open(self.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "facepipe",
                "serve",
                name,
                "--port",
                str(c.grpc_port),
                "--http-port",
                str(c.http_port),
            ],
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.procs[name] = proc
        c.pid = proc.pid

    @staticmethod
    def _peers(state: StackState, name: str) -> dict[str, str]:
        """Addresses of the stack's services that ``name`` calls: the recognizer enrols
        from the persons service's faces when the stack runs one."""
        if name == "recognizer" and "persons" in state.components:
            return {"FACEPIPE_RECOGNIZER_PERSONS_ADDR": state.address("persons")}
        return {}

    def _watch(self, state: StackState) -> None:
        rounds = 0
        while not self._stop:
            time.sleep(0.25)
            rounds += 1
            changed = False
            if self._reload_users:
                self._reload_nats_users()
            for name, proc in list(self.procs.items()):
                if proc.poll() is None or self._stop:
                    continue
                c = state.components[name]
                due = self.next_restart.get(name)
                if due is None:
                    kill_leftovers(proc.pid)
                    delay = min(MAX_RESTART_DELAY, 2.0 ** min(c.restarts, 5) * 0.5)
                    self.next_restart[name] = time.monotonic() + delay
                    log.warning(
                        "service exited",
                        extra={"service": name, "code": proc.returncode, "restart_in": delay},
                    )
                    print(
                        f"{name} exited with {proc.returncode}; restarting in {delay:.1f}s", file=sys.stderr
                    )
                elif time.monotonic() >= due:
                    del self.next_restart[name]
                    c.restarts += 1
                    self._spawn(state, name)
                    changed = True
            if changed or rounds % 8 == 0:
                reap_orphans(self.procs.values())
            if changed:
                state.save(self.data_dir)

    def _terminate_all(self) -> None:
        """Services first (they drain, acking through NATS), nats-server last."""
        services = [proc for name, proc in self.procs.items() if name != NATS]
        _terminate(services, 20)
        if NATS in self.procs:
            _terminate([self.procs[NATS]], 10)
        for proc in self.procs.values():
            kill_leftovers(proc.pid)
        reap_orphans(())


def _terminate(procs: list[subprocess.Popen], grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def web_env(state: StackState) -> dict[str, str]:
    """Where the web service finds the stack's gRPC services and their /stats ports."""
    services = [c for name, c in state.components.items() if name not in (NATS, *HTTP_SERVICES)]
    return {
        "FACEPIPE_WEB_BACKENDS": ",".join(f"{c.name}={c.address}" for c in services),
        "FACEPIPE_WEB_STATUS_ADDRS": ",".join(f"{c.name}=127.0.0.1:{c.http_port}" for c in services),
    }


def web_url(state: StackState) -> str | None:
    """The web UI's URL, when the stack runs the web service: https when the stack's
    services serve TLS (the web service then serves it with the same certificate)."""
    from facepipe.config import TlsSettings

    web = state.components.get("web")
    if not web:
        return None
    scheme = "https" if TlsSettings.from_env().serves_tls else "http"
    return f"{scheme}://{web.address}/"


def become_subreaper() -> None:
    """Makes this process adopt the orphans of its children (a browser left by a killed
    crawler), so that they are killed and reaped here rather than outliving the stack."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_leftovers(session_leader: int) -> None:
    """Kills what an exited component left in its session (each runs in its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session_leader, signal.SIGKILL)


def reap_orphans(own: Iterable[subprocess.Popen]) -> None:
    """Reaps exited children other than the components (whose Popen reaps them):
    adopted orphans and what they left."""
    own_pids = {proc.pid for proc in own}
    me = os.getpid()
    for pid, parent, state in _children_states():
        if parent != me or pid in own_pids:
            continue
        if state != "Z":
            # An adopted orphan still running: its component is gone, so is its purpose.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _children_states() -> list[tuple[int, int, str]]:
    """(pid, parent pid, state) of every process, from /proc; empty where there is none."""
    out = []
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return out
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out.append((int(entry.name), int(fields[1]), fields[0]))
    return out


def write_secret(path: Path, text: str) -> None:
    """Writes a file only its owner may read (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def nats_passwords(data_dir: Path) -> natsauth.PasswordDir:
    return natsauth.PasswordDir(Path(data_dir) / NATS_AUTH_DIR)


def nats_admin_url(state: StackState) -> str:
    """The stack's NATS URL carrying the admin user, for the command line."""
    password = nats_passwords(Path(state.data_dir)).password(natsauth.ADMIN_USER)
    return natsauth.url_with_credentials(state.nats_url, natsauth.ADMIN_USER, password)


def producer_url(state: StackState, tenant: str | None, timeout: float = 15.0) -> str:
    """A NATS URL carrying the producer user of ``tenant`` (the trusted producer for None),
    made on first use: the supervisor then has nats-server read its users again, and
    this returns once the new user is let in."""
    user = natsauth.producer_user(tenant)
    passwords = nats_passwords(Path(state.data_dir))
    made = not passwords.file(user).exists()
    url = natsauth.url_with_credentials(state.nats_url, user, passwords.password(user))
    if made:
        os.kill(state.supervisor_pid, signal.SIGHUP)
        _wait_admitted(url, timeout)
    return url


def _wait_admitted(url: str, timeout: float) -> None:
    import asyncio

    import nats

    async def quiet(exc: Exception) -> None:
        """A refusal is expected until the reload; the client would print it."""

    async def admitted() -> bool:
        try:
            nc = await nats.connect(
                url, allow_reconnect=False, connect_timeout=1, max_reconnect_attempts=0, error_cb=quiet
            )
        except Exception:  # noqa: BLE001 - not yet: refused until the server reloaded
            return False
        await nc.close()
        return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(admitted()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nats-server did not let the new producer in within {timeout:g}s")


def make_credentials(data_dir: Path, nats_url: str, dedup_ttl: float = 30 * 24 * 3600.0) -> None:
    """The stack's topology (made as the supervisor's NATS user, before any service
    starts), service credential and admin API key: kept across restarts of the stack,
    and the admin key (re)registered in the key store each start."""
    import asyncio

    from facepipe import auth, bus

    service_file, admin_file = data_dir / SERVICE_KEY_FILE, data_dir / ADMIN_KEY_FILE
    if not service_file.exists():
        write_secret(service_file, auth.new_key()[1] + "\n")
    admin_key = auth.read_key_file(admin_file) if admin_file.exists() else ""
    if auth.key_id_of(admin_key) is None:
        admin_key = auth.new_key()[1]
        write_secret(admin_file, admin_key + "\n")
    os.chmod(admin_file, 0o600)
    os.chmod(service_file, 0o600)

    async def register() -> None:
        user = natsauth.SUPERVISOR_USER
        nc = await bus.connect(nats_url, user, user, nats_passwords(data_dir).password(user))
        try:
            await bus.ensure_topology(nc.jetstream(), dedup_ttl)
            store = await auth.KeyStore.open(nc.jetstream())
            existing = await store.get(auth.key_id_of(admin_key) or "")
            if existing is None or not existing.matches(admin_key):
                await store.put(
                    auth.keys.make_record(admin_key, auth.ANY_TENANT, "admin", note="local stack admin")
                )
        finally:
            await nc.close()

    asyncio.run(register())


def announce(state: StackState, out=None) -> None:
    """Tells who runs the stack in the foreground what was started and where."""
    out = out or sys.stdout
    print(f"started the stack in {state.data_dir} (supervisor pid {state.supervisor_pid}):", file=out)
    for name, c in sorted(state.components.items(), key=lambda item: item[0] != "nats"):
        address = state.nats_url if name == "nats" else c.address
        side = "" if name in HTTP_SERVICES else f"http :{c.http_port}  "
        print(f"  {name:10} {address:24} {side}pid {c.pid}", file=out)
    if url := web_url(state):
        print(
            f"web UI and REST API: {url} (log in with the key in {Path(state.data_dir) / ADMIN_KEY_FILE})",
            file=out,
        )
    print(
        f"`facepipe status --data-dir {state.data_dir}` shows their health, Ctrl-C stops them; "
        f"logs in {Path(state.data_dir) / 'logs'}",
        file=out,
    )
    out.flush()


def start_detached(data_dir: Path, auto_ports: bool = False, timeout: float = 120.0) -> StackState:
    """Starts the supervisor in its own session and waits until every service is SERVING."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "facepipe", "up", "--data-dir", str(data_dir)]
    if auto_ports:
        args.append("--auto-ports")
    with open(data_dir / "supervisor.log", "ab") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the stack failed to start; see {data_dir / 'supervisor.log'}")
        state = StackState.load(data_dir)
        running = state and state.supervisor_pid == proc.pid and state.status == "running"
        if running and all(h["healthy"] for h in health(state) if h["name"] != "supervisor"):
            return state
        time.sleep(0.3)
    # Leave nothing half-started behind: the supervisor stops what it started.
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise TimeoutError(
        f"the stack did not become healthy in {timeout}s and was stopped; see {data_dir / 'logs'}"
    )


def stop(data_dir: Path, timeout: float = 60.0) -> bool:
    state = StackState.load(data_dir)
    if state is None or not pid_alive(state.supervisor_pid):
        return False
    os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(state.supervisor_pid):
        time.sleep(0.2)
    return not pid_alive(state.supervisor_pid)


def _http_status(url: str) -> str:
    """SERVING when ``url`` answers 200, else DOWN with why. An https URL is verified
    against `FACEPIPE_TLS_CA` when set (else the system roots)."""
    import ssl

    import httpx

    from facepipe.config import TlsSettings

    ca = TlsSettings.from_env().ca
    try:
        answer = httpx.get(url, timeout=1, verify=ssl.create_default_context(cafile=str(ca)) if ca else True)
    except httpx.HTTPError as exc:
        return f"DOWN ({type(exc).__name__})"
    return "SERVING" if answer.status_code == 200 else f"DOWN (HTTP {answer.status_code})"


def health(state: StackState) -> list[dict]:
    """Each component with its address, pid, restarts and health."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from facepipe.auth.client import channel

    rows = [
        {
            "name": "supervisor",
            "address": "",
            "pid": state.supervisor_pid,
            "healthy": pid_alive(state.supervisor_pid),
            "status": state.status,
        }
    ]
    for name, c in state.components.items():
        row = {
            "name": name,
            "address": c.address,
            "http": f"127.0.0.1:{c.http_port}",
            "pid": c.pid,
            "restarts": c.restarts,
        }
        if name == "nats":
            row["address"] = state.nats_url
            row["healthy"] = not _port_free(c.grpc_port) and pid_alive(c.pid)
            row["status"] = "SERVING" if row["healthy"] else "DOWN"
        elif name in HTTP_SERVICES:
            row["http"] = row["address"]
            row["status"] = _http_status(f"{web_url(state)}healthz")
            row["healthy"] = row["status"] == "SERVING"
        else:
            try:
                with channel(c.address, None) as ch:  # health needs no key
                    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                row["status"] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as exc:
                row["status"] = f"DOWN ({exc.code().name})"
            row["healthy"] = row["status"] == "SERVING"
        rows.append(row)
    return rows
