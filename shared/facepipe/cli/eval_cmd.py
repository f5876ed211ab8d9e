"""``facepipe eval``: verification accuracy, ROC AUC and the best threshold on labelled pairs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args

DEFAULT_PAIRS = Path("../shared/faces/master.csv")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="calibrate: ROC AUC, best threshold and accuracy on labelled face pairs",
        description="Embeds every image of a pairs CSV (file_x,file_y,Decision) once, with the "
        "pipeline's detection, crop step and --embedder, and measures the pairs: ROC AUC, the "
        "L2 threshold (and cosine) with the best accuracy, the accuracy at it and at the "
        "embedder's default threshold. The table goes to stderr, the JSON summary to stdout.",
    )
    p.add_argument(
        "--pairs",
        type=Path,
        default=DEFAULT_PAIRS,
        help=f"labelled pairs CSV, paths relative to its folder (default {DEFAULT_PAIRS})",
    )
    p.add_argument("--json-out", type=Path, help="also write the summary JSON here")
    add_settings_flags(p, "models", "detection")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.app.evaluation import evaluate, table
    from facepipe.app.pipeline import LocalPipeline
    from facepipe.errors import FacepipeError
    from facepipe.identity.facenet import default_weights_note

    if not args.pairs.is_file():
        raise FacepipeError(f"no pairs file at {args.pairs}: pass --pairs CSV")
    settings = settings_from_args(args)
    pipeline = LocalPipeline(settings.model_copy(update={"gallery": ""}))
    note = default_weights_note(pipeline.weights_id)
    if note:
        print(note, file=sys.stderr)
    summary = evaluate(pipeline, args.pairs)
    print(table(summary), file=sys.stderr)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return 0
