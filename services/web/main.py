"""Web service entrypoint: ``facepipe serve web``.

Serves the REST API (/api/v1/) and the browser UI on its port (default 8080), in
front of the gRPC services named by FACEPIPE_WEB_BACKENDS.
"""

from __future__ import annotations

from facepipe.config import Settings
from facepipe.runtime.logs import setup_logging

from .app import create_app, serve
from .backends import WebDeps, open_deps


def build(settings: Settings) -> WebDeps:
    setup_logging("web", settings.log_level)
    return open_deps(settings)


def main(settings: Settings) -> None:
    serve(create_app(build(settings)), settings)
