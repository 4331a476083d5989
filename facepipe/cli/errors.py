"""One error type and one message style for the command line.

Every command reports a problem the same way: ``error: ...`` on stderr and exit
status 2 for a usage mistake (a wrong option or value), 1 for a failure (a
server down, a file unreadable, work that did not finish)."""

from __future__ import annotations

import sys

USAGE = 2
FAILURE = 1


class CliError(Exception):
    """A problem to tell the user in one line, with the exit status to end with."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(CliError):
    """The user gave a wrong option or value: exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE)


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def image_file(path: str) -> None:
    """Raises a usage error unless ``path`` is a readable image file ('-' is stdin)."""
    from pathlib import Path

    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{path} is a directory; give one image file")
    if not p.is_file():
        raise UsageError(f"no such file: {path}")


def rpc_failure(exc: Exception, service: str, addr: str) -> CliError:
    """One message per kind of gRPC failure, naming the service and the address called."""
    import grpc

    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    details = exc.details() if code is not None else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"cannot reach the {service} at {addr} ({details}); is it running? "
            "`facepipe status` shows the local stack, `facepipe up --detach` starts it"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the {service} at {addr} did not answer in time; try a larger --timeout")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return UsageError(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if details.startswith("no API key"):
            return CliError(
                f"no API key for the {service} at {addr}: pass --key KEY or set FACEPIPE_API_KEY "
                "(`facepipe keys create` makes one)"
            )
        return CliError(f"the {service} at {addr} refused the API key: {details}; pass another with --key")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
        # The service's message says what to do (e.g. run `facepipe reindex`).
        return CliError(details)
    name = code.name if code is not None else type(exc).__name__
    return CliError(f"the {service} at {addr} answered {name}: {details}")
