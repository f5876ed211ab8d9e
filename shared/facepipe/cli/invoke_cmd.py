"""``facepipe invoke detection|recognition EVENT.json``: a function's real entrypoint, locally.

What ``sam local invoke`` does, without Docker: the template's queues and bucket in a local moto
server (:class:`~facepipe.local.emulator.LocalAws`), the function's ``python -m awslambdaric
app.handler`` under the Lambda RIE with the environment the template gives it
(:class:`~facepipe.local.rie.RieFunction`), one invocation with the event; then the function's
answer and every message it left on the queues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

FUNCTIONS = {"detection": "DetectionFunction", "recognition": "RecognitionFunction"}
_ELIDED = ("crop_png", "content")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "invoke",
        help="invoke a function's real awslambdaric entrypoint under the Lambda RIE",
        description="Starts the template's SQS queues and S3 bucket in a local moto server, runs "
        "the function's `python -m awslambdaric app.handler` under the Lambda Runtime Interface "
        "Emulator (shipped with aws-sam-cli) with the environment template.yaml gives it, "
        "invokes it once with EVENT and prints its answer and what landed on the queues. Exit "
        "status 1 when the invocation failed (init or unhandled error).",
    )
    p.add_argument("function", choices=sorted(FUNCTIONS), help="which function to run")
    p.add_argument("event", type=Path, metavar="EVENT.json", help="the event, e.g. from events/")
    p.add_argument(
        "--weights",
        default=None,
        help="FACEPIPE_WEIGHTS for the function (a state_dict path, or random:0 for a smoke "
        "test); default: your environment's FACEPIPE_WEIGHTS, else facenet-pytorch's cache",
    )
    p.add_argument(
        "--gallery",
        type=Path,
        default=None,
        metavar="FILE",
        help="gallery file (.pt/.npz) to upload to the local bucket where FACEPIPE_GALLERY "
        "points; without it the bucket has none and every face is unknown",
    )
    p.add_argument("--template", type=Path, default=None, help="default: ./template.yaml upward")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for init + invoke")
    p.add_argument("--show-log", action="store_true", help="print the function's log (stderr)")
    p.set_defaults(func=run)


def elide(value: Any) -> Any:
    """A message with its image data (``crop_png``, ``content``) replaced by its length."""
    if isinstance(value, dict):
        return {
            k: f"<{len(v)} base64 chars>" if k in _ELIDED and isinstance(v, str) else elide(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [elide(v) for v in value]
    return value


def _shown(body: str) -> str:
    try:
        return json.dumps(elide(json.loads(body)))
    except ValueError:
        return body


def _upload_gallery(aws: Any, env: dict[str, str], gallery: Path | None) -> None:
    """Put ``gallery`` where the template's FACEPIPE_GALLERY points (the fresh local bucket has
    none: the function then names every face unknown, as a fresh stack does)."""
    uri = env.get("FACEPIPE_GALLERY", "")
    if gallery is None or not uri.startswith("s3://"):
        return
    parsed = urlparse(uri)
    aws.s3.put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=gallery.read_bytes())


def run(args: argparse.Namespace) -> int:
    from facepipe.local.emulator import LocalAws
    from facepipe.local.rie import RieFunction, function_error

    event = json.loads(args.event.read_text())
    logical_id = FUNCTIONS[args.function]
    with LocalAws(args.template) as aws:
        env = aws.function_env(logical_id)
        weights = args.weights or os.environ.get("FACEPIPE_WEIGHTS")
        if weights:
            env["FACEPIPE_WEIGHTS"] = weights
        _upload_gallery(aws, env, args.gallery)
        with RieFunction(
            aws.function_dir(logical_id), env, aws.function_handler(logical_id)
        ) as function:
            payload = function.invoke(event, timeout=args.timeout)
            error = function_error(payload)
            report = function.last_report()
            log = function.log_text()
        print(json.dumps(payload, indent=2))
        for name, url in aws.queue_urls().items():
            messages = aws.drain(url, wait_seconds=0)
            print(f"--- {name}: {len(messages)} message(s)")
            for message in messages:
                print(_shown(message["Body"]))
    sys.stdout.flush()
    if args.show_log or error:
        print(f"--- {args.function} function log\n{log}", file=sys.stderr)
    if report is not None:
        init = f"init {report.init_duration_ms:.0f} ms, " if report.init_duration_ms else ""
        print(f"{args.function}: {init}duration {report.duration_ms} ms", file=sys.stderr)
    if error:
        print(f"facepipe: the {args.function} function failed: {error}", file=sys.stderr)
        return 1
    return 0
