"""``facepipe invoke detection|recognition|ingest EVENT.json``: a function's real entrypoint,
locally.

What ``sam local invoke`` does, without Docker: the template's queues and bucket in a local moto
server (:class:`~facepipe.local.emulator.LocalAws`), the function's ``python -m awslambdaric
app.handler`` under the Lambda RIE with the environment the template gives it
(:class:`~facepipe.local.rie.RieFunction`), one invocation with the event; then the function's
answer, every message it left on the queues and every object it wrote to the bucket.

``ingest`` (S3 ingress) reads the objects its event announces: ``--object FILE`` uploads FILE to
each of them first, in the local bucket, as the upload that sent the event would have.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

FUNCTIONS = {
    "detection": "DetectionFunction",
    "recognition": "RecognitionFunction",
    "ingest": "IngestFunction",
}
_ELIDED = ("crop_png", "content")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "invoke",
        help="invoke a function's real awslambdaric entrypoint under the Lambda RIE",
        description="Starts the template's SQS queues and S3 bucket in a local moto server, runs "
        "the function's `python -m awslambdaric app.handler` under the Lambda Runtime Interface "
        "Emulator (shipped with aws-sam-cli) with the environment template.yaml gives it, "
        "invokes it once with EVENT and prints its answer, what landed on the queues and what it "
        "wrote to the bucket. `ingest` (S3 ingress, ingest_app.handler) reads the photos its "
        "event announces: --object uploads one first. Exit status 1 when the invocation failed "
        "(init or unhandled error).",
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
    p.add_argument(
        "--object",
        type=Path,
        default=None,
        metavar="FILE",
        help="ingest: upload FILE to every object key the event announces, in the local bucket, "
        "before the invoke (the event's ETag and version id become the upload's); without it the "
        "bucket is empty and each photo gets an object_missing result",
    )
    p.add_argument(
        "--runtime",
        choices=("auto", "rie", "image"),
        default="auto",
        help="rie: the function's code from this checkout; image: its built container image "
        "(facepipe-<dir>:local, `make images`) on the Docker of DOCKER_HOST or the private "
        "dockerd; auto (default): image when that image is built, else rie",
    )
    p.add_argument("--docker-root", default=None, help="FACEPIPE_DOCKER_ROOT (image runtime)")
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


def _objects(aws: Any) -> dict[str, str]:
    bucket = aws.outputs["BucketName"]
    pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _function(
    args: argparse.Namespace, aws: Any, logical_id: str, env: dict[str, str], stack: Any
) -> Any:
    """The function to invoke: its code under the RIE, or its built image (see --runtime)."""
    from facepipe.config import Settings
    from facepipe.local.docker import DockerDaemon, ImageFunction, image_name
    from facepipe.local.rie import RieFunction

    folder, handler = aws.function_dir(logical_id), aws.function_handler(logical_id)
    if args.runtime != "rie":
        daemon = DockerDaemon(args.docker_root or Settings.from_env().docker_root or None)
        # auto: only a Docker already running, and only when the image is built there
        if args.runtime == "image" or daemon.running():
            stack.enter_context(daemon)
            if args.runtime == "image" or daemon.has_image(image_name(folder)):
                memory = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0"))
                if args.weights is None:
                    env.pop("FACEPIPE_WEIGHTS", None)  # the image's own baked weights
                return ImageFunction(daemon, image_name(folder), env, handler, memory_mb=memory)
    return RieFunction(folder, env, handler)


def _check_weights(env: dict[str, str]) -> None:
    from facepipe.errors import WeightsUnavailable
    from facepipe.local.stack import check_weights

    try:
        check_weights(env)
    except WeightsUnavailable as exc:
        raise WeightsUnavailable(
            f"the recognition function cannot start: {exc.message} The shipped events hold "
            "vggface2 crops: for a smoke test of the function, FACEPIPE_WEIGHTS=random:0 make "
            "invoke-recognition (or --weights random:0)."
        ) from exc


def _where(function: Any) -> str:
    from facepipe.local.docker import ImageFunction

    if isinstance(function, ImageFunction):
        return f"image {function.image} (RIE in the container)"
    return "the RIE (this checkout's code)"


def run(args: argparse.Namespace) -> int:
    from facepipe.errors import ConfigError
    from facepipe.local.emulator import LocalAws
    from facepipe.local.rie import RieFunction, function_error

    if args.object is not None and args.function != "ingest":
        raise ConfigError("--object is for `facepipe invoke ingest`: only its event names photos")
    if args.object is not None and not args.object.is_file():
        raise ConfigError(f"--object {args.object}: no such file")
    event = json.loads(args.event.read_text())
    logical_id = FUNCTIONS[args.function]
    with LocalAws(args.template) as aws:
        env = aws.function_env(logical_id)
        weights = args.weights or os.environ.get("FACEPIPE_WEIGHTS")
        if weights:
            env["FACEPIPE_WEIGHTS"] = weights
        _upload_gallery(aws, env, args.gallery)
        if args.object is not None:
            event = aws.upload_announced(event, args.object)
        before = _objects(aws)
        with contextlib.ExitStack() as stack:
            function = _function(args, aws, logical_id, env, stack)
            if args.function == "recognition" and isinstance(function, RieFunction):
                _check_weights(env)  # one clear line now, not an init failure in the RIE's log
            print(f"facepipe invoke: {args.function} on {_where(function)}", file=sys.stderr)
            with function:
                seen = function.reports()
                payload = function.invoke(event, timeout=args.timeout)
                error = function_error(payload)
                report = function.report_after(seen)
                log = function.log_text()
        print(json.dumps(payload, indent=2))
        for name, url in aws.queue_urls().items():
            messages = aws.drain(url, wait_seconds=0)
            print(f"--- {name}: {len(messages)} message(s)")
            for message in messages:
                print(_shown(message["Body"]))
        bucket = aws.outputs["BucketName"]
        for key, etag in _objects(aws).items():
            if before.get(key) != etag:  # written by the function
                obj = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                print(f"--- s3://{bucket}/{key}: {len(obj)} bytes")
                if key.endswith(".json"):
                    print(_shown(obj.decode()))
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
