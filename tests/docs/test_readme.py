"""The READMEs' command blocks, checked offline: every `facepipe ...` line parses
with the real parser (its command and options exist) and every `make X` names a
Makefile target. Blocks of the kind section need a cluster and are left out.

README.md marks each fenced block with its info string, and nothing else:

    ```sh        commands that run as written, in order, in one shell, after `make setup`
                 and the activation it documents; tests/docs/test_readme_blocks.py runs them
    ```sh norun  commands this test machine cannot run (a cluster, a GPU box, the internet);
                 NOT_RUN below names each section holding one, and why
    ```text      a diagram or a listing, not commands

Any other fence is an error, so a new block is either run or explained."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pytest
from conftest import ROOT

from facepipe.cli import build_parser

RUN, NORUN, TEXT = "sh", "sh norun", "text"
# The sections of README.md whose `sh norun` blocks are not run, and why.
NOT_RUN = {
    "Quick start": "`make test` is the suite this check belongs to; `make run` is the demo script, "
    "the same flow as the local stack blocks, which run",
    "Crawling web sites": "crawls public web sites, and the test machines are offline "
    "(the crawl tests use a site served on 127.0.0.1)",
    "Inference nodes": "servers in the foreground on other machines, one of them a GPU box",
    "Models": "`models pull` downloads packs from the internet (the pull tests use a local server)",
    "Switching model packs": "needs a second model pack, pulled from the internet; "
    "tests/e2e/test_reindex.py switches a stack between two packs the same way",
    "Deploy on kind": "needs docker, kind, kubectl and helm, and a cluster they start",
    "Live streams": "needs a video file or a camera; tests/integration/test_recognize_stream.py "
    "streams a video made of the eval photos through `recognize --video` the same way",
    "TLS": "needs certificates from the reader's own CA; tests/integration/test_tls.py and "
    "tests/e2e/test_tls_stack.py run the same settings with a throwaway CA",
}


@dataclass(frozen=True)
class Block:
    """One fenced block of a README."""

    line: int  # of the opening fence, counted from 1
    heading: str  # the section it is in
    info: str  # the fence's info string
    text: str

    @property
    def commands(self) -> list[str]:
        """Its lines without comments and blank lines, continuations joined."""
        joined = self.text.replace("\\\n", " ")
        return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of a README, in order, with the heading of its section."""
    blocks, heading, opened, info, body = [], "", 0, "", []
    for number, line in enumerate(text.splitlines(), start=1):
        if opened:
            if line.startswith("```"):
                blocks.append(Block(opened, heading, info, "\n".join(body) + "\n"))
                opened, body = 0, []
            else:
                body.append(line)
        elif line.startswith("```"):
            opened, info = number, line[3:].strip()
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    assert not opened, f"the block opened on line {opened} is never closed"
    return blocks


READMES = [
    ROOT / "README.md",
    *sorted(ROOT.glob("services/*/README.md")),
    *sorted(ROOT.glob("deploy/**/README.md")),
]
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}


def command_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, block) for each fenced block outside a kind section."""
    blocks, heading = [], ""
    parts = re.split(r"^```[^\n]*\n", text, flags=re.M)
    for i, part in enumerate(parts):
        if i % 2 == 0:
            headings = re.findall(r"^#+ (.*)$", part, flags=re.M)
            heading = headings[-1] if headings else heading
        elif "kind" not in heading.lower():
            blocks.append((heading, part))
    return blocks


def commands(block: str) -> list[list[str]]:
    """Each simple command of a shell block as words, without env assignments."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError:  # an unbalanced quote in a JSON example: not a facepipe line
            continue
        current: list[str] = []
        for word in [*words, ";"]:
            if word in SEPARATORS:
                while current and ASSIGNMENT.match(current[0]):
                    current.pop(0)
                if current:
                    found.append(current)
                current = []
            else:
                current.append(word)
    return found


def readme_commands(program: str) -> list[tuple[str, list[str]]]:
    found = []
    for readme in READMES:
        for heading, block in command_blocks(readme.read_text()):
            for words in commands(block):
                if words[0] == program:
                    found.append((f"{readme.relative_to(ROOT)} ({heading})", words))
    return found


FACEPIPE_LINES = readme_commands("facepipe")


def test_the_readme_shows_facepipe_commands() -> None:
    shown = {words[1] for _, words in FACEPIPE_LINES if len(words) > 1}
    assert {
        "up",
        "status",
        "ingest",
        "search",
        "erase",
        "down",
        "detect",
        "serve",
        "crawl",
        "models",
    } <= shown


@pytest.mark.parametrize(("where", "words"), FACEPIPE_LINES, ids=[" ".join(w) for _, w in FACEPIPE_LINES])
def test_every_facepipe_line_parses(where: str, words: list[str], capsys) -> None:
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exit_info:
        # --help exits 0; anything else is an unknown command or option.
        assert exit_info.code == 0, f"{where}: `{shlex.join(words)}`\n{capsys.readouterr().err}"


def test_every_make_target_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for where, words in readme_commands("make"):
        named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        assert set(named) <= targets, f"{where}: `{shlex.join(words)}` names no Makefile target"


def test_the_readme_says_how_to_activate_the_tools() -> None:
    """`make setup` installs into .venv/bin only; the Quick start activates it before anything else."""
    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick_start and "make shell" in quick_start
    blocks = [block for _, block in command_blocks(text)]
    activates = next(i for i, block in enumerate(blocks) if "source .venv/bin/activate" in block)
    first_facepipe = next(i for i, block in enumerate(blocks) if re.search(r"^facepipe ", block, flags=re.M))
    assert activates <= first_facepipe


def test_every_block_of_the_readme_says_whether_it_runs() -> None:
    for block in readme_blocks((ROOT / "README.md").read_text()):
        assert block.info in (RUN, NORUN, TEXT), (
            f"README.md line {block.line}: a block must open with ```{RUN}, ```{NORUN} or ```{TEXT}"
            f" (see tests/docs/test_readme.py), not ```{block.info}"
        )


def test_the_blocks_not_run_are_the_ones_explained() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text())
    not_run = {block.heading for block in blocks if block.info == NORUN}
    assert not_run == set(NOT_RUN), "README.md's `sh norun` sections and NOT_RUN differ"
    assert any(block.info == RUN for block in blocks)
