"""Echoed input in error messages is cut to a bounded length."""

from __future__ import annotations

from facepipe.echo import ECHO_CHARS, echo, shorten


def test_short_values_are_quoted_whole() -> None:
    assert echo("victim") == "'victim'"
    assert shorten("victim") == "victim"
    assert echo("x" * ECHO_CHARS) == repr("x" * ECHO_CHARS)


def test_long_values_are_cut_with_an_ellipsis_and_their_length() -> None:
    value = "t" * 10_000
    assert echo(value) == f"{'t' * ECHO_CHARS!r}… (10000 characters)"
    assert shorten(value) == f"{'t' * ECHO_CHARS}… (10000 characters)"
    assert len(echo(value)) < ECHO_CHARS + 30
