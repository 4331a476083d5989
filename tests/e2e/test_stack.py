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


def test_foreground_up_says_what_it_started(tmp_path) -> None:
    """`facepipe up` without --detach prints each component with its address, then supervises."""
    import json
    import os
    import signal
    import subprocess

    from conftest import VENV_BIN

    data_dir = tmp_path / "stack"
    env = {**os.environ, "FACEPIPE_HOME": str(tmp_path / "empty-home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(VENV_BIN / "facepipe"), "up", "--auto-ports", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "shows their health" in line:
                break
        state = json.loads((data_dir / "stack.json").read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    text = "".join(lines)
    assert lines[0].startswith(f"started the stack in {data_dir} (supervisor pid {proc.pid})"), text
    assert f"  nats       {state['nats_url']}" in text
    for name in stack.STACK_SERVICES:
        port = state["components"][name]["grpc_port"]
        assert f"  {name:10} 127.0.0.1:{port} " in text, text
    assert stack.StackState.load(data_dir).status == "stopped"
