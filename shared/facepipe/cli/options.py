"""CLI flags generated from :class:`~facepipe.config.Settings`: one ``--flag`` per setting."""

from __future__ import annotations

import argparse
from typing import Any

from facepipe.config import Settings, env_name, flag_name


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also an env var FACEPIPE_<NAME>)")
    for name, field in Settings.model_fields.items():
        group.add_argument(
            flag_name(name),
            dest=f"setting_{name}",
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [{env_name(name)}, default {field.default!r}]",
        )


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """What every command that talks to a stack takes: ``--local-info``, ``--quiet`` and the
    settings' flags."""
    parser.add_argument(
        "--local-info",
        metavar="FILE_OR_JSON",
        help="the JSON line `facepipe local up` prints (or a file holding it)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_settings_flags(parser)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        name: getattr(args, f"setting_{name}")
        for name in Settings.model_fields
        if getattr(args, f"setting_{name}", None) is not None
    }
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return Settings.from_env(**overrides)
