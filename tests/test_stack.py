"""Port choice for the local stack."""

from __future__ import annotations

import socket

from facepipe import stack


def test_auto_ports_never_repeat(monkeypatch) -> None:
    # The OS may hand out the same ephemeral port twice in a row; the stack must not.
    handed_out = iter([41001, 41001, 41002, 41002, 41003])
    monkeypatch.setattr(stack, "_free_port", lambda: next(handed_out))
    taken: set[int] = set()
    assert [stack._pick(50051, True, taken) for _ in range(3)] == [41001, 41002, 41003]


def test_default_port_when_free_else_another() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken: set[int] = set()
        other = stack._pick(port, False, taken)
        assert other != port and other in taken
    free = stack._free_port()
    assert stack._pick(free, False, set()) == free


def test_failed_detached_start_leaves_nothing_running(tmp_path) -> None:
    """Without models the stack never gets healthy; `up --detach` fails and stops what it started."""
    import os
    import subprocess
    import time

    from conftest import run_facepipe

    data_dir = tmp_path / "stack"
    env = {**os.environ, "FACEPIPE_HOME": str(tmp_path / "empty-home")}
    result = run_facepipe(
        "up", "--detach", "--auto-ports", "--data-dir", str(data_dir), "--timeout", "5", env=env, check=False
    )
    assert result.returncode == 1 and "was stopped" in result.stderr
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True).stdout
    assert left == "", left
    state = stack.StackState.load(data_dir)
    assert state is not None and state.status == "stopped"
