"""The CLI's help and usage errors: each command's --help lists the settings it uses (every other
setting's flag is accepted too, hidden), and a usage error is printed before the usage."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from facepipe.cli.main import build_parser, main
from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.config import SETTING_GROUPS, Settings, flag_name, settings_markdown

MOST_HELP_LINES = (
    215  # every setting listed: 300-320 lines at 80 columns (album index, the widest, 201)
)


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every runnable subcommand: ``("gallery enroll", its parser)``..."""

    def walk(
        parser: argparse.ArgumentParser, path: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
            return
        for name, child in subs[0].choices.items():
            yield from walk(child, f"{path} {name}".strip())

    yield from walk(build_parser(), "")


def command(path: str) -> argparse.ArgumentParser:
    return dict(commands())[path]


def shown_settings(parser: argparse.ArgumentParser) -> set[str]:
    """The settings whose flag the parser's help lists."""
    return {
        a.dest.removeprefix("setting_")
        for a in parser._actions
        if a.dest.startswith("setting_") and a.help is not argparse.SUPPRESS
    }


@pytest.fixture(autouse=True)
def _columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width


def test_run_help_lists_the_settings_run_uses_and_not_the_others() -> None:
    text = command("run").format_help()
    for used in ("--embedder", "--gallery", "--min-face-probability", "--max-pixels"):
        assert used in text
    for unused in ("--function-url", "--worker-batch-size", "--runtime", "--max-body-bytes"):
        assert unused not in text
    hidden = len(Settings.model_fields) - len(shown_settings(command("run")))
    assert text.rstrip().endswith(
        f"The other {hidden} are accepted too; `facepipe config --markdown` lists all."
    )


def test_every_command_accepts_every_setting_as_a_flag() -> None:
    flags = {flag_name(name) for name in Settings.model_fields}
    for path, parser in commands():
        options = {o for a in parser._actions for o in a.option_strings}
        if any(a.dest.startswith("setting_") for a in parser._actions):  # it reads Settings
            assert flags <= options, f"facepipe {path} lacks {sorted(flags - options)}"
    args = build_parser().parse_args(
        ["run", "a.jpg", "--function-url", "http://127.0.0.1:9", "--worker-batch-size", "3"]
    )
    settings = settings_from_args(args)
    assert (settings.function_url, settings.worker_batch_size) == ("http://127.0.0.1:9", 3)


@pytest.mark.parametrize("path", [path for path, _ in commands()])
def test_every_commands_help_is_short(path: str) -> None:
    lines = command(path).format_help().splitlines()
    assert len(lines) < MOST_HELP_LINES, f"facepipe {path} --help: {len(lines)} lines"


def test_every_setting_is_in_one_group_and_every_group_is_shown_by_a_command() -> None:
    grouped = [name for _, names in SETTING_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields), "a setting in no group, or in two"
    shown = set().union(*(shown_settings(parser) for _, parser in commands()))
    for group, (title, names) in SETTING_GROUPS.items():
        assert set(names) <= shown, f"no command's --help shows the {group} settings"
        assert f"### `{group}`: {title}" in settings_markdown()


def test_an_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="no settings group modles"):
        add_settings_flags(argparse.ArgumentParser(), "modles")


@pytest.mark.parametrize(
    ("argv", "error", "usage"),
    [
        (["run"], "facepipe run: error: the following arguments are required: INPUT", "run"),
        (
            ["gallery", "enrol"],
            "facepipe gallery: error: argument gallery_command: invalid",
            "gallery",
        ),
        (["bogus"], "facepipe: error: argument command: invalid choice: 'bogus'", ""),
        (["config", "--nope"], "facepipe: error: unrecognized arguments: --nope", ""),
    ],
)
def test_a_usage_error_is_printed_before_the_usage(
    argv: list[str], error: str, usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(error)
    assert lines[1].startswith(f"usage: facepipe {usage}".rstrip() + " ")
