"""``facepipe events --out DIR``: the sample Lambda events, from samples/ and real detection."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "events",
        help="write the sample Lambda events (events/*.json)",
        description="Writes Function URL events for the detection function and an SQS event "
        "for the recognition function, from the images in samples/. The SQS event carries the "
        "task the detection stage makes of astronaut.jpg. Output is reproducible.",
    )
    p.add_argument(
        "--out", default="events", metavar="DIR", help="folder to write (default: events)"
    )
    p.add_argument(
        "--samples", default=None, metavar="DIR", help="sample images (default: samples/)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.local.events import generate_events

    for path in generate_events(args.out, args.samples):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0
