"""``facepipe local up``: the whole pipeline on this machine until Ctrl-C (or SIGTERM).

Stdout carries exactly one line, the JSON of :meth:`LocalStack.info` (where the Function URL,
the emulator and the queues are), so scripts can read it and go; everything else (start-up
lines, request and batch lines, the functions' own logs) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from facepipe.cli.console import reserve_stdout
from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.config import Settings
from facepipe.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "local",
        help="run the whole pipeline locally (local up)",
        description="The stack of template.yaml on this machine, without AWS or Docker.",
    )
    local = p.add_subparsers(dest="local_command", required=True, metavar="{up}")
    up = local.add_parser(
        "up",
        help="start the local stack until Ctrl-C / SIGTERM",
        description="Starts the template's queues and bucket in a moto server, both functions "
        "(--runtime inprocess: in this process; rie: their real awslambdaric entrypoints under "
        "the Lambda RIE), the detection Function URL on 127.0.0.1 and the SQS event source "
        "mapping of the recognition function. Prints one JSON line on stdout (function_url, "
        "endpoint_url, queue URLs, bucket, runtime, region), logs to stderr, and stops cleanly "
        "on SIGINT/SIGTERM.",
    )
    up.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter override, e.g. --parameter MaxReceiveCount=2 (repeatable)",
    )
    up.add_argument("--template", type=Path, default=None, help="default: ./template.yaml upward")
    add_settings_flags(up, "models", "matching", "limits", "local")
    up.set_defaults(func=up_command)


def _parameters(pairs: list[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--parameter {pair!r}: expected KEY=VALUE")
        parameters[key] = value
    return parameters


def _with_embedder(settings: Settings) -> Settings:
    """The settings the functions get, their embedder chosen as ``run``'s is
    (:mod:`~facepipe.app.embedder_choice`): a local gallery file says which one it was made
    with; a gallery in the stack's bucket is read only once the stack runs."""
    from facepipe.app.embedder_choice import choose_embedder
    from facepipe.app.wiring import load_gallery

    local_file = settings.gallery and "://" not in settings.gallery
    recorded = load_gallery(settings).embedder if local_file else None
    return choose_embedder(
        settings, recorded, recorded_by=f"the gallery {settings.gallery}"
    ).settings


def up_command(args: argparse.Namespace) -> int:
    from facepipe.identity.facenet import default_weights_note
    from facepipe.local.emulator import TemplateError
    from facepipe.local.stack import LocalStack

    settings = settings_from_args(args)
    if settings.runtime != "image":  # an image recognises with what is baked into it
        settings = _with_embedder(settings)
    parameters = _parameters(args.parameter)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="facepipe local: %(message)s")
    for name in ("botocore", "urllib3", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    note = default_weights_note(settings.weights) if settings.weights else None
    if note:
        print(note, file=sys.stderr, flush=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting politely
        print(f"facepipe local: {signal.Signals(signum).name}, shutting down", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    out = reserve_stdout()
    try:
        try:
            stack = LocalStack(
                settings, parameters=parameters, template=args.template, echo_logs=True
            )
        except TemplateError as exc:
            raise ConfigError(str(exc)) from exc
        with stack:
            info = stack.info()
            out.write(json.dumps(info) + "\n")
            out.close()
            for source in stack.event_sources:
                print(
                    f"facepipe local: {source.name}: BatchSize {source.batch_size}, window "
                    f"{source.window_seconds:g} s, ReportBatchItemFailures "
                    f"{'on' if source.report_batch_item_failures else 'off'}",
                    file=sys.stderr,
                )
            print(
                f"facepipe local: {stack.url_function} Function URL {info['function_url']} "
                f"({stack.runtime}); moto at {info['endpoint_url']}. Ctrl-C stops.",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.5):
                pass
    finally:
        if not out.closed:
            out.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("facepipe local: stopped", file=sys.stderr, flush=True)
    return 0
