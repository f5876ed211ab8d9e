"""``facepipe send | poll | get``: drive a local or deployed stack from images and videos.

* ``send INPUT...``: POST every frame; one JSON line per accepted request on stdout.
* ``poll --ids FILE_OR_-``: wait for the results of those ids (``send``'s lines or plain ids).
* ``get INPUT...``: send, then poll for exactly those ids (the everyday command).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from facepipe.cli.options import add_client_flags, settings_from_args
from facepipe.config import Settings
from facepipe.errors import ConfigError
from facepipe.messages import check_request_id

if TYPE_CHECKING:
    from facepipe.client.output import Origin
    from facepipe.client.results import Received, ResultPoller
    from facepipe.client.stack import Endpoints
    from facepipe.client.url_results import UrlResultPoller
    from facepipe.messages import Reply

    Origins = list[tuple[str, Origin | None]]  # request_id and where its pixels are, send order

EPILOG = (
    "Endpoints: --function-url/--response-queue-url/--endpoint-url, else --local-info (the line "
    "`facepipe local up` prints), else --stack-name (a deployed stack's Outputs)."
)


def register(sub: Any) -> None:
    send = sub.add_parser(
        "send",
        help="POST images/videos to the Function URL; print one line per accepted request",
        description="Sends every frame of the inputs to the detection Function URL and prints "
        "one JSON line per accepted request ({request_id, filename, status, faces}), ready for "
        "`facepipe poll --ids -`. Their results go to the response queue (and are kept by "
        "request_id), unless --results-via url asks for them by request_id only: then poll "
        "them by request_id too (poll's default, auto, does so where the stack offers it).",
        epilog=EPILOG,
    )
    _inputs(send)
    add_client_flags(send)
    send.set_defaults(func=send_command)

    poll = sub.add_parser(
        "poll",
        help="wait for the results of request ids",
        description="Reads the results of the given request ids by request_id from the "
        "Function URL (--results-via url), or takes them off the response queue, leaving "
        "others' results for them (--results-via queue); `auto` (the default) takes the URL "
        "when the stack offers it. Prints them as JSON lines.",
        epilog=EPILOG,
    )
    poll.add_argument(
        "--ids",
        required=True,
        metavar="FILE_OR_-",
        help="`facepipe send` output lines or plain request ids, one a line (- for stdin)",
    )
    _results(poll)
    add_client_flags(poll)
    poll.set_defaults(func=poll_command)

    get = sub.add_parser(
        "get",
        help="send images/videos and print their results (send + poll)",
        description="Sends every frame of the inputs, then waits for exactly their results and "
        "prints them as JSON lines. Read by request_id (--results-via url, or auto where the "
        "stack offers it), the results are asked for by request_id only: nothing is left on "
        "the response queue.",
        epilog=EPILOG,
    )
    _inputs(get)
    _results(get)
    add_client_flags(get)
    get.set_defaults(func=get_command)


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (recursive), globs or video files",
    )
    p.add_argument("--run-id", help="first part of every request_id (default: 8 random hex)")
    p.add_argument(
        "--frames-per-request",
        type=int,
        default=1,
        metavar="N",
        help='frames per POST, as {"frames": [...]} (default 1)',
    )


def _results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ordered", action="store_true", help="print results in send order")
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON lines even on a terminal (where the default is a readable table at the end; "
        "piped or redirected, the output is always JSON lines)",
    )
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write DIR/<request_id>.jpg with the faces boxed and named",
    )


# --- console ----------------------------------------------------------------------------------
class Console:
    """stdout for data lines, stderr for everything else; a tqdm bar on stderr when it is a
    terminal (and not ``--quiet``), which data lines do not tear."""

    def __init__(self, quiet: bool, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.bars = not quiet and self.stderr.isatty()
        handler = logging.StreamHandler(self.stderr)
        handler.setFormatter(logging.Formatter("facepipe: %(message)s"))
        client_log = logging.getLogger("facepipe.client")
        client_log.handlers[:] = [handler]
        client_log.propagate = False

    def line(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stdout)
        self.stdout.flush()

    def note(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"facepipe: {text}", file=self.stderr)

    @contextmanager
    def progress(self, unit: str, total: int | None = None) -> Iterator[Any]:
        from tqdm import tqdm

        with tqdm(
            total=total, unit=unit, file=self.stderr, disable=not self.bars, leave=False
        ) as bar:
            yield bar


# --- the commands -----------------------------------------------------------------------------
def _settings_and_endpoints(args: argparse.Namespace, *required: str) -> tuple[Settings, Endpoints]:
    from facepipe.client.stack import resolve_endpoints

    settings = settings_from_args(args)
    endpoints = resolve_endpoints(settings, local_info=args.local_info).require(*required)
    return settings, endpoints


def _send(
    args: argparse.Namespace,
    settings: Settings,
    endpoints: Endpoints,
    console: Console,
    *,
    echo: bool,
    reply: Reply = "queue",
) -> tuple[Origins, int]:
    """Send the inputs' frames, their results wanted as ``reply`` says, reporting rejections on
    stderr (and, with ``echo``, each accepted request on stdout) → (the accepted ids with their
    origins, in send order; the number of frames rejected)."""
    from facepipe.client.http import Sender
    from facepipe.client.output import Origin
    from facepipe.client.sources import Frame, iter_frames, new_run_id

    position: dict[str, int] = {}

    def numbered(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            position[frame.request_id] = len(position)
            yield frame

    frames = iter_frames(
        args.inputs,
        run_id=args.run_id or new_run_id(),
        video_fps=settings.video_fps,
        video_every=settings.video_every,
    )
    sender = Sender.from_settings(
        endpoints.function_url, settings, frames_per_request=args.frames_per_request, reply=reply
    )
    accepted: Origins = []
    with sender, console.progress("frame") as bar:
        for outcome in sender.send_all(numbered(frames)):
            bar.update(1)
            frame = outcome.frame
            if outcome.accepted:
                origin = Origin(frame.source, frame.frame, frame.time_s)
                accepted.append((frame.request_id, origin))
                if echo:
                    console.line(outcome.to_line())
            else:
                console.note(f"rejected {frame.request_id} ({frame.filename}): {outcome.reason()}")
    console.note(sender.summary.line())
    accepted.sort(key=lambda item: position[item[0]])
    return accepted, sender.summary.rejected


def _poll(
    args: argparse.Namespace,
    settings: Settings,
    poller: ResultPoller | UrlResultPoller,
    origins: Origins,
    console: Console,
) -> int:
    """Poll for the ids of ``origins`` with ``poller`` (the Function URL or the response queue,
    as ``settings.results_via`` says: :func:`~facepipe.client.url_results.result_poller`) and
    print their results → the number missing."""
    from facepipe.client.output import ResultWriter

    order = [request_id for request_id, _ in origins]
    readable = not args.json and console.stdout.isatty()
    lines: list[str] = []  # the readable table's rows, printed once all are in
    writer = ResultWriter(
        lines.append if readable else console.line,
        order=order,
        ordered=args.ordered or readable,
        annotate=args.annotate,
        origins={request_id: origin for request_id, origin in origins if origin is not None},
    )
    timeout = settings.poll_timeout
    with console.progress("result", total=len(order)) as bar:

        def on_result(received: Received) -> None:
            writer.add(received)
            bar.update(1)

        report = poller.poll(order, timeout=timeout, on_result=on_result)
    writer.finish()
    if lines:
        from facepipe.messages import Result, results_table

        console.line(results_table([Result.model_validate_json(line) for line in lines]))
    if report.missing:
        console.note(f"no result within {timeout:g} s for: {' '.join(report.missing)}")
    console.note(
        report.line()
        + (f", annotated {writer.annotated} in {args.annotate}" if args.annotate else "")
    )
    return len(report.missing)


def send_command(args: argparse.Namespace) -> int:
    """Results on the response queue (the default), or with ``--results-via url`` by request_id
    only, for a ``poll`` that reads them so (from a stack that offers it: checked first)."""
    from facepipe.client.url_results import reply_for, result_poller

    console = Console(args.quiet)
    settings, endpoints = _settings_and_endpoints(args, "function_url")
    reply: Reply = "queue"
    if settings.results_via == "url":
        reply = reply_for(result_poller(endpoints, settings))
    _, rejected = _send(args, settings, endpoints, console, echo=True, reply=reply)
    return 1 if rejected else 0


def get_command(args: argparse.Namespace) -> int:
    """The poller is chosen before a frame is sent: results read by request_id are asked for
    by request_id only (nothing left on the response queue), the others on the queue."""
    from facepipe.client.url_results import reply_for, result_poller

    console = Console(args.quiet)
    settings, endpoints = _settings_and_endpoints(args, "function_url")
    poller = result_poller(endpoints, settings)
    origins, rejected = _send(
        args, settings, endpoints, console, echo=False, reply=reply_for(poller)
    )
    missing = _poll(args, settings, poller, origins, console) if origins else 0
    return 1 if rejected or missing else 0


def poll_command(args: argparse.Namespace) -> int:
    console = Console(args.quiet)
    settings, endpoints = _settings_and_endpoints(args)
    if not (endpoints.function_url or endpoints.response_queue_url):
        endpoints.require("response_queue_url")
    if args.ids == "-":
        origins = read_ids(sys.stdin)
    else:
        try:
            with open(args.ids, encoding="utf-8") as stream:
                origins = read_ids(stream)
        except OSError as exc:
            raise ConfigError(f"--ids {args.ids}: {exc.strerror or exc}") from exc
    if not origins:
        raise ConfigError(f"--ids {args.ids}: no request ids in it")
    from facepipe.client.url_results import result_poller

    poller = result_poller(endpoints, settings)
    return 1 if _poll(args, settings, poller, origins, console) else 0


def read_ids(lines: Iterable[str]) -> Origins:
    """``(request_id, Origin | None)`` per line of ``facepipe send`` output or plain ids, in
    order, each id once; blank lines and ``#`` comments are skipped."""
    from facepipe.client.output import Origin

    found: dict[str, Origin | None] = {}
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        origin = None
        if text.startswith("{"):
            try:
                line = json.loads(text)
                text = str(line["request_id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"--ids line {number}: not a `send` line ({exc})") from exc
            if line.get("source"):
                origin = Origin(str(line["source"]), line.get("frame"), line.get("time_s"))
        try:
            found.setdefault(check_request_id(text), origin)
        except ValueError as exc:
            raise ConfigError(f"--ids line {number}: {exc}") from exc
    return list(found.items())
