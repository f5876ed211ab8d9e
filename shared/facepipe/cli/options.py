"""CLI flags generated from :class:`~facepipe.config.Settings`: one ``--flag`` per setting.

Every command takes every setting's flag; its ``--help`` shows those of the groups it names
(``facepipe.config.SETTING_GROUPS``) and says the rest are accepted too.
"""

from __future__ import annotations

import argparse
from typing import Any

from facepipe.config import SETTING_GROUPS, Settings, env_name, flag_name, setting_group


def add_settings_flags(parser: argparse.ArgumentParser, *groups: str) -> None:
    """Every setting's flag; ``--help`` lists those of ``groups``, then one line saying the
    others are accepted too (their flags are there, hidden from the help)."""
    unknown = sorted(set(groups) - SETTING_GROUPS.keys())
    if unknown:
        raise ValueError(f"no settings group {', '.join(unknown)}: {', '.join(SETTING_GROUPS)}")
    group = parser.add_argument_group("settings (each also an env var FACEPIPE_<NAME>)")
    hidden = 0
    for name, field in Settings.model_fields.items():
        shown = setting_group(name) in groups
        hidden += not shown
        group.add_argument(
            flag_name(name),
            dest=f"setting_{name}",
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [{env_name(name)}, default {field.default!r}]"
            if shown
            else argparse.SUPPRESS,
        )
    if hidden == len(Settings.model_fields):
        text = f"All {hidden} are accepted; `facepipe config --markdown` lists them."
    else:
        text = f"The other {hidden} are accepted too; `facepipe config --markdown` lists all."
    if hidden:
        parser.add_argument_group("other settings", text)


CLIENT_GROUPS = ("client", "video", "stack", "aws")


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """What every command that talks to a stack takes: ``--local-info``, ``--quiet`` and the
    settings' flags (help: :data:`CLIENT_GROUPS`)."""
    parser.add_argument(
        "--local-info",
        metavar="FILE_OR_JSON",
        help="the JSON line `facepipe local up` prints (or a file holding it)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_settings_flags(parser, *CLIENT_GROUPS)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        name: getattr(args, f"setting_{name}")
        for name in Settings.model_fields
        if getattr(args, f"setting_{name}", None) is not None
    }
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return Settings.from_env(**overrides)
