"""Caller-supplied values quoted in error messages, cut to a bounded length.

Errors travel in gRPC status details (metadata), dead-letter headers and logs;
a 10,000-character tenant or URL echoed whole would overflow the first and
flood the others."""

from __future__ import annotations

# Enough to recognise the value; the caller has it whole.
ECHO_CHARS = 100


def shorten(value: object, limit: int = ECHO_CHARS) -> str:
    """``str(value)``, cut to ``limit`` characters with an ellipsis when longer."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``value`` quoted as ``repr`` does, cut like :func:`shorten`."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
