"""README.md's `sh` blocks run as written, in order, in one bash session, as a new
user pastes them into a terminal: from the repository root, with the venv's tools
put on PATH only by the README's own `source .venv/bin/activate`, and a fresh
FACEPIPE_HOME so the default stack, its data and the model pack of `make setup`
live in a temporary folder. Each block must end with status 0; a failing command
stops its block (an ERR trap, like `set -e`) and fails the test with the output.

`nats pub` blocks run with the `nats` CLI when it is on PATH; `make setup` does not
install it, so otherwise the test runs the block's `VAR=$(facepipe producer-url ...)`
lines in the shell and publishes the same payloads to the same subjects with
nats-py, on the URLs they printed (a producer's credentials). Either way each message must be taken: its
ImageDone event arrives, and only a message naming a URL may end as a failure,
with the fetch's reason.

At the end, the README's own blocks must have left nothing running (its
`facepipe down` and `kill %1`); whatever happens, the test then runs `facepipe
down` itself, ends the shell's process group, and checks that no process started
with its FACEPIPE_HOME is left."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_FACES, SHARED_MODELS, VENV_BIN
from test_readme import RUN, Block, readme_blocks

# A normal run takes about 30 s; the limits leave room for a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BLOCK_TIMEOUT = 240.0
EVENT_TIMEOUT = 120.0
# Reasons an ingest message fails with when it was not understood: never what a README shows.
NOT_UNDERSTOOD = {"malformed", "missing_fields", "invalid_batch_id"}
# Stops the block being sourced at its first failing command, like `set -e`, but keeps the
# shell: the next block runs in it, with the jobs and variables the earlier ones left.
PREAMBLE = """set -o pipefail
trap '__readme_rc=$?; if [ -n "$__readme_block" ]; then __readme_block=;
  echo "README block: exit $__readme_rc at line $LINENO: $BASH_COMMAND" >&2; return $__readme_rc; fi' ERR
"""


def user_environment(home: Path) -> dict[str, str]:
    """The environment of a fresh terminal: no facepipe settings, no venv on PATH, no make."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FACEPIPE_", "PYTEST_", "MAKE"))
        and key not in ("VIRTUAL_ENV", "MFLAGS", "PYTHONPATH", "PYTHONHOME", "NATS_URL")
    }
    venv_bins = {str(VENV_BIN), str(ROOT / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    env["FACEPIPE_HOME"] = str(home)
    return env


def processes_with_home(home: Path, exclude: set[int] = frozenset()) -> dict[int, str]:
    """pid -> command line of each process whose environment names this FACEPIPE_HOME."""
    marker = f"FACEPIPE_HOME={home}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone, or not ours to read
            continue
    return found


def wait_for_none(home: Path, exclude: set[int] = frozenset(), timeout: float = 30.0) -> dict[int, str]:
    """Waits for every process with this home to exit (a SIGTERM'd service drains first)."""
    deadline = time.monotonic() + timeout
    while (left := processes_with_home(home, exclude)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def busy_ports(blocks: list[Block]) -> list[int]:
    """The fixed loopback ports the blocks use that something already holds."""
    ports = set()
    for block in blocks:
        ports |= {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", block.text)}
        ports |= {int(p) for p in re.findall(r"--port (\d+)", block.text)}
    busy = []
    for port in sorted(ports):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


class ReadmeShell:
    """One bash session that runs blocks one after another, like a user's terminal."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "shell.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            text=True,
            start_new_session=True,  # its own process group: close() ends background jobs too
        )
        self.send(PREAMBLE)
        self.count = 0

    def send(self, commands: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(commands)
        self.proc.stdin.flush()

    def run(self, text: str, timeout: float = BLOCK_TIMEOUT) -> tuple[int, str]:
        """Sources ``text`` in the session; its exit status and everything it printed."""
        self.count += 1
        script = self.workdir / f"block-{self.count:02}.sh"
        status_file = script.with_suffix(".status")
        script.write_text(text)
        start = self.log_path.stat().st_size
        # stdin is /dev/null: a command reading it must not eat the session's next commands.
        self.send(
            f"__readme_block=1; . {shlex.quote(str(script))} </dev/null\n"
            f"echo $? > {shlex.quote(str(status_file))}; __readme_block=\n"
        )
        deadline = time.monotonic() + timeout
        while not status_file.exists() or not status_file.read_text().endswith("\n"):
            if self.proc.poll() is not None:
                return -1, self.output_since(start) + f"\n[the shell exited with {self.proc.returncode}]"
            if time.monotonic() > deadline:
                return -1, self.output_since(start) + f"\n[still running after {timeout:g}s]"
            time.sleep(0.2)
        return int(status_file.read_text()), self.output_since(start)

    def output_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def close(self) -> None:
        """Ends the shell and every job it left, by its process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            self.proc.stdin.close()
            self.log.close()


PRODUCER_URL_LINE = re.compile(r"^([A-Z_]+)=\$\(facepipe producer-url( --tenant [A-Za-z0-9_-]+)?\)$")


@dataclass
class NatsBlock:
    """A block of `VAR=$(facepipe producer-url ...)` lines and `nats pub --server "$VAR"
    SUBJECT PAYLOAD` lines: the assignments, and each publication as (VAR, subject, payload)."""

    assignments: list[str]
    published: list[tuple[str, str, str]]


def nats_pub_lines(block: Block) -> NatsBlock | None:
    """The block's producer URLs and publications when it publishes with `nats pub`, else None."""
    commands = block.commands
    if not commands or not any(line.startswith("nats ") for line in commands):
        return None
    assignments, published = [], []
    for line in commands:
        if not line.startswith("nats "):
            assert PRODUCER_URL_LINE.match(line), (
                f"README.md line {block.line}: a `nats pub` block may only set URLs with "
                f"`VAR=$(facepipe producer-url [--tenant T])`, not {line!r}"
            )
            assignments.append(line)
            continue
        words = shlex.split(line)
        assert (
            len(words) == 6 and words[1] == "pub" and words[2] == "--server" and words[3].startswith("$")
        ), (
            f'README.md line {block.line}: only `nats pub --server "$VAR" SUBJECT PAYLOAD` can be '
            "run without the nats CLI"
        )
        published.append((words[3][1:], words[4], words[5]))
    return NatsBlock(assignments, published)


async def publish_and_wait(admin_url: str, published: list[tuple[str, str, str]], use_cli: bool) -> list[str]:
    """Publishes each (producer URL, subject, payload), unless the CLI did, and waits, as
    the stack's admin, for each message's ImageDone; problems found."""
    import nats

    from facepipe import bus
    from facepipe.v1 import pipeline_pb2

    if not use_cli:
        for url, subject, payload in published:
            producer = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
            try:
                await producer.publish(subject, payload.encode())
                await producer.flush()
            finally:
                await producer.close()
    nc = await nats.connect(admin_url, connect_timeout=5, max_reconnect_attempts=1)
    problems = []
    try:
        js = nc.jetstream()
        for _, subject, payload in published:
            if subject != bus.SUBJECT_INGEST and not subject.startswith(bus.SUBJECT_INGEST + "."):
                continue
            request = json.loads(payload)
            if subject != bus.SUBJECT_INGEST:
                # On a tenant's subject, the subject's tenant is the message's.
                request["tenant_id"] = subject.removeprefix(bus.SUBJECT_INGEST + ".")
            done_subject = f"{bus.SUBJECT_DONE}.{request.get('batch_id') or 'none'}"
            sub = await js.subscribe(done_subject, stream=bus.EVENTS_STREAM, ordered_consumer=True)
            deadline = time.monotonic() + EVENT_TIMEOUT
            found = None
            try:
                while found is None and (left := deadline - time.monotonic()) > 0:
                    try:
                        msg = await sub.next_msg(timeout=left)
                    except TimeoutError:
                        break
                    done = pipeline_pb2.ImageDone.FromString(msg.data)
                    same_image = (
                        done.url == request["url"]
                        if "url" in request
                        else done.image_sha256 == request.get("image_sha256")
                    )
                    if done.tenant_id == request["tenant_id"] and same_image:
                        found = done
            finally:
                await sub.unsubscribe()
            if found is None:
                problems.append(f"no ImageDone within {EVENT_TIMEOUT:g}s for {payload}")
            elif found.status == pipeline_pb2.IMAGE_STATUS_FAILED and (
                "url" not in request or not found.reason or found.reason in NOT_UNDERSTOOD
            ):
                problems.append(f"{payload} failed: {found.reason}: {found.error}")
    finally:
        await nc.close()
    return problems


def run_nats_block(shell: ReadmeShell, block: Block, nats_block: NatsBlock, env) -> str:
    """Runs a `nats pub` block (with the CLI when installed, else its `facepipe
    producer-url` lines in the shell and the publications with nats-py, to the URLs they
    printed); what went wrong, or ''."""
    from facepipe.config import default_stack_dir
    from facepipe.stack import StackState, nats_admin_url

    state = StackState.load(default_stack_dir(env))
    if state is None or state.status != "running":
        return "no running local stack to publish to"
    use_cli = shutil.which("nats", path=env["PATH"]) is not None
    if use_cli:
        status, output = shell.run(block.text)
        if status != 0:
            return f"exit status {status}\n{output}"
    elif nats_block.assignments:
        status, output = shell.run("\n".join(nats_block.assignments))
        if status != 0:
            return f"exit status {status}\n{output}"
    urls = {}
    for var in {var for var, _, _ in nats_block.published}:
        status, output = shell.run(f'printf "%s\\n" "${var}"')
        urls[var] = output.strip().splitlines()[-1] if status == 0 and output.strip() else ""
        if not urls[var].startswith("nats://"):
            return f"${var} is not a NATS URL after the block's assignments: {output!r}"
    published = [(urls[var], subject, payload) for var, subject, payload in nats_block.published]
    problems = asyncio.run(publish_and_wait(nats_admin_url(state), published, use_cli))
    return "\n".join(problems)


def fail_block(block: Block, problem: str) -> None:
    pytest.fail(
        f"README.md line {block.line} ({block.heading}):\n{block.text}\n{problem[-6000:]}", pytrace=False
    )


def test_the_readme_blocks_run_as_written(tmp_path: Path) -> None:
    if not SHARED_MODELS.is_dir() or not SHARED_FACES.is_dir():
        pytest.skip("../shared/models and ../shared/faces are not present")
    stale = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True)
    if stale.returncode != 0:
        pytest.fail("the venv is older than pyproject.toml: run `make setup` first", pytrace=False)
    blocks = [b for b in readme_blocks((ROOT / "README.md").read_text()) if b.info == RUN]
    if busy := busy_ports(blocks):
        pytest.fail(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1, which README.md's blocks use, are "
            "taken: stop what holds them (`facepipe status`, `ss -ltnp`) and run again",
            pytrace=False,
        )

    home = tmp_path / "facepipe-home"
    env = user_environment(home)
    shell = ReadmeShell(env, tmp_path)
    failure: BaseException | None = None
    try:
        for block in blocks:
            published = nats_pub_lines(block)
            if published is not None:
                if problem := run_nats_block(shell, block, published, env):
                    fail_block(block, problem)
                continue
            status, output = shell.run(block.text)
            if status != 0:
                fail_block(block, f"exit status {status}\n{output}")
        # The README's own `facepipe down` and `kill %1` stopped what its blocks started.
        if left := wait_for_none(home, exclude={shell.proc.pid}):
            pytest.fail(f"README.md's blocks left processes running: {left}", pytrace=False)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        down = subprocess.run(
            [str(VENV_BIN / "facepipe"), "down"], env=env, capture_output=True, text=True, timeout=120
        )
        shell.close()
        left = wait_for_none(home)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if left or down.returncode != 0:
            message = (
                f"after `facepipe down` (exit {down.returncode}: {down.stdout}{down.stderr}): left {left}"
            )
            if failure is None:
                pytest.fail(message, pytrace=False)
            failure.add_note(message)
