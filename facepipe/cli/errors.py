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
