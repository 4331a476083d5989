"""A command acts on exactly the stack it is aimed at, with two stacks in play: a
running one, and an empty or stopped data dir. Aiming at the second must fail
with a message naming it, and never reach the running stack's services."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_FACES, run_facepipe, stack_key

pytestmark = pytest.mark.slow

TENANT = "victim"


@pytest.fixture(scope="module")
def running(shared_stack) -> dict:
    """A real local stack holding the faces of one photo for TENANT."""
    stack = dict(shared_stack)
    photo = sorted(SHARED_FACES.glob("*/*.jpg"))[0]
    out = run_facepipe(
        "ingest", str(photo), "--tenant", TENANT, "--wait", "--json", "--data-dir", str(stack["dir"]),
        env=stack["env"],
    )  # fmt: skip
    assert json.loads(out.stdout)["faces_indexed"] >= 1, out.stdout
    stack["photo"] = photo
    stack["indexer"] = f"127.0.0.1:{stack['state']['components']['indexer']['grpc_port']}"
    return stack


def hostile_env(stack: dict) -> dict:
    """The running stack's env plus overrides that name its services: a command aimed at
    another data dir must still not use them."""
    return {
        **stack["env"],
        "FACEPIPE_INDEXER_ADDR": stack["indexer"],
        "FACEPIPE_NATS_URL": stack["state"]["nats_url"],
        "FACEPIPE_CRAWLER_ADDR": f"127.0.0.1:{stack['state']['components']['crawler']['grpc_port']}",
        # What a user who talks to services elsewhere sets (their own key).
        "FACEPIPE_API_KEY": stack_key(stack),
    }


def search_matches(stack: dict, *where: str, env: dict | None = None) -> list[dict]:
    out = run_facepipe(
        "search", str(stack["photo"]), "--tenant", TENANT, "--json", *where, env=env or stack["env"]
    )
    return json.loads(out.stdout)


def stopped_copy(stack: dict, where: Path, status: str, supervisor_pid: int) -> Path:
    """A data dir whose stack.json records the running stack's ports but no live supervisor:
    what `facepipe down` leaves behind ('stopped', no pids) or a crash ('running', dead pid)."""
    where.mkdir()
    state = json.loads((stack["dir"] / "stack.json").read_text())
    state.update(data_dir=str(where), status=status, supervisor_pid=supervisor_pid)
    for component in state["components"].values():
        component["pid"] = 0 if status == "stopped" else component["pid"]
    (where / "stack.json").write_text(json.dumps(state))
    return where


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def assert_refused(result: subprocess.CompletedProcess, data_dir: Path) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: no running stack in {data_dir}; ")
    assert f"start it with `facepipe up --detach --data-dir {data_dir}`" in result.stderr


def test_commands_aimed_at_an_empty_data_dir_fail_and_touch_nothing(running, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = hostile_env(running)
    photo = str(running["photo"])
    for argv in (
        ["erase", "--tenant", TENANT, "--all"],
        ["search", photo, "--tenant", TENANT],
        ["ingest", photo, "--tenant", TENANT],
        ["crawl", "https://example.org/", "--tenant", TENANT],
    ):
        assert_refused(run_facepipe(*argv, "--data-dir", str(empty), env=env, check=False), empty)
    status = run_facepipe("status", "--data-dir", str(empty), env=env, check=False)
    assert status.returncode == 1 and status.stdout == f"no running stack in {empty}\n"
    assert search_matches(running, "--data-dir", str(running["dir"])), "the running stack lost its faces"


@pytest.mark.parametrize("how", ["stopped", "crashed"])
def test_a_stopped_stack_is_never_confused_with_the_running_one(running, tmp_path, how: str) -> None:
    """Its stack.json names ports the running stack serves on: status must not call them
    SERVING, and commands must not act on them."""
    stopped = stopped_copy(
        running,
        tmp_path / how,
        "stopped" if how == "stopped" else "running",
        0 if how == "stopped" else dead_pid(),
    )
    env = hostile_env(running)
    status = run_facepipe("status", "--data-dir", str(stopped), env=env, check=False)
    assert status.returncode == 1 and "SERVING" not in status.stdout, status.stdout
    assert status.stdout.startswith(f"no running stack in {stopped}")
    as_json = run_facepipe("status", "--json", "--data-dir", str(stopped), env=env, check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == []
    erase = run_facepipe(
        "erase", "--tenant", TENANT, "--all", "--data-dir", str(stopped), env=env, check=False
    )
    assert_refused(erase, stopped)
    assert search_matches(running, "--data-dir", str(running["dir"])), "the running stack lost its faces"


def test_up_refuses_a_second_stack_in_the_same_data_dir(running) -> None:
    again = run_facepipe("up", "--detach", "--data-dir", str(running["dir"]), env=running["env"], check=False)
    assert again.returncode == 1
    assert again.stderr.startswith(f"error: a stack is already running in {running['dir']} (supervisor pid ")
    assert search_matches(running, "--data-dir", str(running["dir"])), "the running stack was disturbed"


def test_explicit_addresses_still_reach_a_stack(running, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # --addr wins over any data dir; a stack's own key is never sent to a server it did not aim at.
    out = run_facepipe(
        "search", str(running["photo"]), "--tenant", TENANT, "--data-dir", str(empty), "--addr", running["indexer"],
        env=running["env"], check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "no API key" in out.stderr, out.stderr
    key = stack_key(running)
    assert search_matches(running, "--data-dir", str(empty), "--addr", running["indexer"], "--key", key)
    # Without --data-dir and with no default stack running, the env override is used.
    env = {**hostile_env(running), "FACEPIPE_HOME": str(tmp_path / "home-without-stack")}
    assert search_matches(running, env=env)
    # And the stack aimed at by --data-dir is the one that acts.
    out = run_facepipe(
        "erase", "--tenant", TENANT, "--sha256", "0" * 64, "--json", "--data-dir", str(running["dir"]),
        env=running["env"], check=False,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["points_deleted"] == 0
    assert f"nothing matched --sha256 {'0' * 64} in tenant {TENANT}" in out.stderr


def test_ingest_of_local_files_loads_no_vector_store_or_model_runtime(running) -> None:
    """Publishing local files needs NATS and the object store only: start-up stays short."""
    import sys

    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facepipe", "ingest", str(running["photo"]),
         "--tenant", TENANT, "--json", "--rescan", "--data-dir", str(running["dir"])],
        env=running["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["images"] == 1
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"qdrant_client", "onnxruntime", "facepipe.storage.vectors"}
