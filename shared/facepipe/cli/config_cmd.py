"""``facepipe config``: the effective settings, or the table of them all (docs/configuration.md)."""

from __future__ import annotations

import argparse
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.config import settings_markdown


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="show the effective settings")
    p.add_argument("--markdown", action="store_true", help="print the table of every setting")
    add_settings_flags(p)  # help: none (`facepipe config --markdown` lists them all)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
    else:
        print(settings_from_args(args).model_dump_json(indent=2))
    return 0
