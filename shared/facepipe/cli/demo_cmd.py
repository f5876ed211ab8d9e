"""``facepipe demo``: the full pipeline on the local stack with the shipped samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="enrol the sample gallery, run sample frames through the local stack, annotate",
        description="Enrols samples/gallery, starts `facepipe local up`, sends samples/frames "
        "and two single samples with `facepipe get`, prints the results, writes annotated "
        "images and stops the stack. Recognises with the VGGFace2 weights when they are there, "
        "else with the offline dlib embedder; --random-weights for seeded random weights.",
    )
    p.add_argument("--samples", type=Path, default=Path("samples"), help="samples folder")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="use seeded random embedder weights (real detection, meaningless names)",
    )
    add_settings_flags(p, "models", "local")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.app.demo import run_demo

    return run_demo(
        settings_from_args(args), args.samples, args.out, random_weights=args.random_weights
    )
