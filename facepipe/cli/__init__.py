"""The ``facepipe`` command line."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from facepipe.cli.errors import FAILURE, CliError, print_error
from facepipe.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def _grpc_error_line(exc: Exception) -> str | None:
    """One line for a gRPC error nobody handled, or None when it is not one."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(exc, grpc.RpcError) or not hasattr(exc, "code"):
        return None
    return f"{exc.code().name}: {exc.details()}"


def _unexpected(exc: Exception) -> str:
    """Type, message and where it was raised: enough to report a bug without a traceback."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"unexpected {type(exc).__name__}: {exc}{where}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is handled below rather than at exit
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`facepipe status --json | head`): nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except CliError as exc:
        print_error(exc.message)
        code = exc.exit_code
    except OSError as exc:
        print_error(str(exc))
        code = FAILURE
    except Exception as exc:
        # Last resort: one line instead of a traceback, naming the type so a real bug shows.
        print_error(_grpc_error_line(exc) or _unexpected(exc))
        code = FAILURE
    raise SystemExit(code)
