"""The models command: list, pull and install model packs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facepipe.cli.errors import CliError
from facepipe.config import Settings


def cmd_models(args: argparse.Namespace) -> int:
    from facepipe.models import registry

    home = Settings.from_env().home
    if args.models_cmd == "list":
        root = registry.models_root(home)
        installed = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for name, spec in registry.PACKS.items():
            mark = "installed" if name in installed else "-"
            print(f"{name:12} {mark:10} {spec.description} [{spec.license}]")
        for name in installed:
            if name not in registry.PACKS:
                print(f"{name:12} {'installed':10}")
        return 0
    try:
        if args.models_cmd == "pull":

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty():
                    pct = f"{100 * done / total:5.1f}%" if total else f"{done >> 20} MiB"
                    print(f"\rdownloading {args.name}: {pct}", end="", file=sys.stderr)

            path = registry.pull(
                args.name, home, url=args.url, sha256=args.sha256, force=args.force, progress=progress
            )
        else:
            path = registry.install_local(args.name, Path(args.source), home)
        pack = registry.load_pack(path)
    except registry.PackError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.name}: detector {pack.detector.name}, recognizer {pack.recognizer.name} in {path}")
    return 0
