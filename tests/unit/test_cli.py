"""The command line as its user meets it: help, defaults, examples, usage mistakes
and failures reported in one line without a traceback, and a light start-up."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_FACES, free_port, run_facepipe

from facepipe.cli import build_parser


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every command parser by its full name ('erase', 'models pull'), leaves only."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                inner = commands(sub, full + " ")
                found.update(inner or {full: sub})
    return found


COMMANDS = commands(build_parser())


def test_every_command_is_known() -> None:
    assert set(COMMANDS) == {
        "serve",
        "detect",
        "verify",
        "recognize",
        "subjects enrol",
        "subjects list",
        "subjects show",
        "subjects rename",
        "subjects remove-face",
        "subjects delete",
        "models list",
        "models pull",
        "models install",
        "up",
        "down",
        "status",
        "ingest",
        "search",
        "crawl",
        "erase",
        "reindex",
        "batch",
        "stats",
        "dlq list",
        "dlq replay",
        "keys create",
        "keys list",
        "keys revoke",
        "producer-url",
        "provision",
        "audit",
        "access-log",
        "optout add",
        "optout list",
        "optout remove",
        "persons list",
        "persons show",
        "persons rename",
        "persons merge",
        "persons split",
        "persons hide",
        "persons unassign",
        "persons recluster",
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    parser = COMMANDS[name]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.dest} has no help text"
        if action.option_strings and action.default is not None and action.default is not False:
            # The value itself is shown, e.g. "(default: 120.0)".
            assert f"default: {action.default}" in text, f"{name}: {action.dest} hides its default"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_an_example_that_parses(name: str) -> None:
    epilog = COMMANDS[name].epilog or ""
    assert epilog.startswith("example:"), f"{name} has no example"
    example = epilog.splitlines()[1].split("#")[0].split()
    assert example[0] == "facepipe" and " ".join(example[1:]).startswith(name)
    args = build_parser().parse_args(example[1:])
    assert args.func is not None


def test_defaults() -> None:
    parser = build_parser()
    search = parser.parse_args(["search", "q.jpg"])
    # min_score None: the model pack's calibrated threshold.
    assert (search.tenant, search.top_k, search.min_score, search.timeout) == ("default", 5, None, 60.0)
    assert (search.face, search.all_faces, search.site) == (0, False, None)
    assert search.addr is None and search.data_dir is None and not search.json
    ingest = parser.parse_args(["ingest", "a", "b"])
    assert (ingest.sources, ingest.tenant, ingest.site, ingest.wait, ingest.timeout) == (
        ["a", "b"],
        "default",
        "",
        False,
        600.0,
    )
    up = parser.parse_args(["up"])
    assert (up.detach, up.auto_ports, up.timeout) == (False, False, 180.0)
    serve = parser.parse_args(["serve", "detector"])
    assert (serve.port, serve.http_port, serve.host) == (None, None, None)
    crawl = parser.parse_args(["crawl", "https://example.org/"])
    assert (crawl.render, crawl.max_pages, crawl.max_depth, crawl.timeout) == ("auto", 0, None, 3600.0)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        # A prefix is not taken for the option it starts: `--al` must not mean `--all`.
        (["erase", "--tenant", "t", "--al"], "usage: facepipe erase"),
        (["search", "q.jpg", "--topk"], "usage: facepipe search"),
        (["models", "pull", "buffalo_l", "--frm"], "usage: facepipe models pull"),
        (["up", "--detatch"], "usage: facepipe up"),
    ],
)
def test_mistyped_option_shows_the_subcommand_usage(argv: list[str], usage: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(usage), err
    assert f"error: unrecognized arguments: {argv[-1]} (see '{usage[7:]} --help')" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "a.jpg", "--tenant", "no such"],
        ["search", "a.jpg", "--tenant", "no such"],
        ["crawl", "https://example.org/", "--tenant", "no such"],
        ["erase", "--all", "--tenant", "no such"],
    ],
)
def test_one_message_for_an_invalid_tenant(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"usage: facepipe {argv[0]}" in err
    assert "error: argument --tenant: invalid tenant 'no such': 1-64 letters, digits, '_' or '-'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "q.jpg", "--top-k", "99999999999"], "99999999999 is not between 1 and"),
        (["search", "q.jpg", "--top-k", "0"], "0 is not between 1 and"),
        (["search", "q.jpg", "--top-k", "many"], "'many' is not a whole number"),
        (["erase", "--all", "--tenant", "t", "--timeout", "-1"], "-1 must be more than 0"),
        (["serve", "detector", "--port", "70000"], "70000 is not between 0 and 65535"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def facepipe_offline(*args: str, home: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """The real CLI with a FACEPIPE_HOME that holds no models and no stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")}
    env.update(FACEPIPE_HOME=str(home), **extra_env)
    return run_facepipe(*args, env=env, check=False, timeout=120)


def sample_image() -> Path:
    images = sorted(SHARED_FACES.glob("*/*.jpg"))
    if not images:
        pytest.skip("../shared/faces is not present")
    return images[0]


def test_user_mistakes_end_in_one_line_without_a_traceback(tmp_path) -> None:
    image = sample_image()
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        # (arguments, exit status, what the message says)
        (["detect", str(image), "--addr", dead, "--timeout", "5"], 1, f"cannot reach the detector at {dead}"),
        (["detect", str(image)], 1, "model pack not found at"),
        (["detect", str(tmp_path / "missing.jpg")], 2, "no such file:"),
        (["search", str(tmp_path)], 2, "is a directory; give one image file"),
        (["search", str(tmp_path / "missing.jpg")], 2, "no such file:"),
        (["search", str(image), "--addr", dead, "--timeout", "5"], 1, f"cannot reach the indexer at {dead}"),
        (
            ["erase", "--tenant", "t", "--all", "--addr", dead, "--timeout", "5"],
            1,
            "cannot reach the indexer",
        ),
        (["erase", "--tenant", "t", "--url", "u", "--all"], 2, "give exactly one of"),
        (["crawl", "ftp://example.org/", "--addr", dead], 2, "is not an http(s) URL"),
        (["models", "install", "x", "--from", str(tmp_path / "none")], 1, "is not a directory"),
    ]
    for argv, code, message in cases:
        result = facepipe_offline(*argv, home=tmp_path / "home")
        shown = f"facepipe {' '.join(argv)}:\n{result.stderr}"
        assert result.returncode == code, shown
        assert "Traceback" not in result.stderr, shown
        assert result.stderr.startswith("error: ") and message in result.stderr, shown
        assert len(result.stderr.strip().splitlines()) == 1, shown


def test_without_a_stack_commands_say_how_to_start_one(tmp_path) -> None:
    home = tmp_path / "home"
    default_dir = home / "stack"
    for argv, override in (
        (["search", str(sample_image())], "FACEPIPE_INDEXER_ADDR"),
        (["erase", "--tenant", "t", "--all"], "FACEPIPE_INDEXER_ADDR"),
        (["ingest", str(sample_image())], "FACEPIPE_NATS_URL"),
        (["crawl", "https://example.org/"], "FACEPIPE_CRAWLER_ADDR"),
    ):
        result = facepipe_offline(*argv, home=home)
        assert result.returncode == 1, result.stderr
        assert f"error: no running stack in {default_dir}; start it with `facepipe up --detach`" in (
            result.stderr
        )
        assert override in result.stderr and "Traceback" not in result.stderr
    status = facepipe_offline("status", "--json", home=home)
    assert status.returncode == 1 and json.loads(status.stdout) == []
    down = facepipe_offline("down", home=home)
    assert down.returncode == 0 and down.stdout == f"no running stack in {default_dir}\n"


def test_a_dead_nats_url_ends_in_one_line(tmp_path) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    result = facepipe_offline(
        "ingest",
        str(sample_image()),
        home=tmp_path / "home",
        FACEPIPE_NATS_URL=dead,
        FACEPIPE_OBJECT_DIR=str(tmp_path / "objects"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach NATS at {dead} (from FACEPIPE_NATS_URL)")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_unexpected_errors_name_their_type_and_place() -> None:
    from facepipe.cli import _unexpected

    try:
        {}["missing"]
    except KeyError as exc:
        line = _unexpected(exc)
    assert line.startswith("unexpected KeyError: 'missing' at test_cli.py:")


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = facepipe_offline("serve", "extractor", "--port", str(port), home=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: gRPC port 127.0.0.1:{port} is in use (a local stack? see `facepipe status`); "
        "pass a free --port or stop it with `facepipe down`\n"
    )


def test_services_bind_loopback_unless_told_otherwise(monkeypatch) -> None:
    from facepipe.config import Settings

    monkeypatch.delenv("FACEPIPE_GRPC_HOST", raising=False)
    assert Settings.from_env("detector").grpc_host == "127.0.0.1"
    monkeypatch.setenv("FACEPIPE_GRPC_HOST", "0.0.0.0")
    assert Settings.from_env("detector").grpc_host == "0.0.0.0"


HEAVY = ("qdrant_client", "onnxruntime", "cv2", "facepipe.storage.vectors")


def test_the_cli_starts_without_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from facepipe.cli import build_parser\n"
        "for argv in (['ingest', 'a.jpg', '--tenant', 't'], ['search', 'q.jpg'], ['erase', '--all', "
        "'--tenant', 't'], ['crawl', 'https://example.org/'], ['status'], ['detect', 'x.jpg'], "
        "['verify', 'a.jpg', 'b.jpg']):\n"
        "    build_parser().parse_args(argv)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("command", ["ingest", "search", "erase"])
def test_help_imports_nothing_heavy(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facepipe", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_a_reader_that_goes_away_is_not_an_error(tmp_path) -> None:
    """`facepipe ... | head` closes the pipe early: no traceback and no error line."""
    import subprocess
    import sys

    # `true` exits before Python has started, so every write meets a closed pipe.
    script = f"{sys.executable} -m facepipe models list | true"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "Traceback" not in out.stderr and "Broken pipe" not in out.stderr, out.stderr
