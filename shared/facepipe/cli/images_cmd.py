"""``facepipe images build|check``: the two Lambda container images, built and run here.

``build`` is ``make images``: both Dockerfiles, the repository as the context, as ``sam build``
builds them (``--offline``: with the stand-in base, the local CPU torch wheel and, without the
VGGFace2 file in ``weights/``, seeded random weights: what this repository's machines need).
``check`` is ``make image-check``: an offline build (``--skip-build`` to reuse the images), then
every event of ``events/`` through its function's image under the RIE against local AWS, with
sizes, build times, cold starts, warm durations and peak memory (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facepipe.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("images", help="build the Lambda container images and run them locally")
    isub = p.add_subparsers(dest="images_command", required=True)
    build = isub.add_parser(
        "build",
        help="build facepipe-detection:local and facepipe-recognition:local",
        description="docker build of both functions' Dockerfiles with the repository as the "
        "context (what sam build does). Uses the Docker DOCKER_HOST names, else starts a "
        "private dockerd (FACEPIPE_DOCKER_ROOT) and stops it afterwards.",
    )
    check = isub.add_parser(
        "check",
        help="build offline, then run every shipped event through its function's image",
        description="An offline build (stand-in base, local torch wheel, seeded random weights "
        "without the VGGFace2 file), then each event of events/ through its function's image "
        "under the RIE against the local stack's AWS: answers checked, sizes, build times, cold "
        "starts, warm durations and peak memory reported. Exit status 1 when an event fails.",
    )
    for cmd in (build, check):
        cmd.add_argument("--docker-root", default=None, help="FACEPIPE_DOCKER_ROOT")
        cmd.add_argument(
            "--build-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="one more build argument for both images (e.g. PYTHON_VERSION=3.12)",
        )
        cmd.add_argument("--logs", type=Path, default=None, help="folder for the build logs")
    build.add_argument(
        "--offline",
        action="store_true",
        help="no registry or PyTorch index: stand-in base, local torch wheel, random weights "
        "unless weights/ holds the VGGFace2 file",
    )
    build.set_defaults(func=run_build)
    check.add_argument("--skip-build", action="store_true", help="use the images already built")
    check.add_argument("--json-out", type=Path, default=None, help="write the figures here")
    check.set_defaults(func=run_check)


SKIPPED = 3  # the exit status when no Docker can be had here: a skip, said as such


def _skipped(what: str, exc: Exception) -> int:
    print(f"facepipe images {what}: SKIPPED, no Docker here: {exc}", file=sys.stderr)
    return SKIPPED


def _daemon(args: argparse.Namespace) -> Any:
    from facepipe.local.docker import DockerDaemon

    root = args.docker_root or Settings.from_env().docker_root or None
    return DockerDaemon(root)


def _extra(args: argparse.Namespace) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.build_arg)


def run_build(args: argparse.Namespace) -> int:
    from facepipe.local.docker import DockerUnavailable

    try:
        return _build(args)
    except DockerUnavailable as exc:
        return _skipped("build", exc)


def _build(args: argparse.Namespace) -> int:
    from facepipe.local.images import build_all, image_summary, table

    with _daemon(args) as daemon:
        built = build_all(daemon, offline=args.offline, extra_args=_extra(args), log_dir=args.logs)
        print(
            table({"images": [image_summary(b) for b in built], "functions": []}), file=sys.stderr
        )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from facepipe.local.docker import DockerUnavailable

    try:
        return _check(args)
    except DockerUnavailable as exc:
        return _skipped("check", exc)


def _check(args: argparse.Namespace) -> int:
    from facepipe.local.images import (
        FUNCTION_DIRS,
        build_all,
        check_images,
        repository_root,
        summary,
        table,
    )

    with _daemon(args) as daemon:
        if args.skip_build:
            from facepipe.local.docker import Built, image_name

            built = []
            for name in FUNCTION_DIRS:
                tag = image_name(repository_root() / "functions" / name)
                facts = daemon.image_facts(tag)
                built.append(Built(tag, "", 0.0, facts["size"], facts["labels"], {}))
        else:
            built = build_all(daemon, offline=True, extra_args=_extra(args), log_dir=args.logs)
        runs = check_images(daemon)
        result = summary(built, runs, daemon)
    print(table(result), file=sys.stderr)
    print(json.dumps(result))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1
