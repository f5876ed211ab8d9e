"""``facepipe run IMAGE... [--json] [--embeddings] [--gallery PATH]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="detect and recognise faces in images, in-process",
        description="Runs the pipeline's detection + recognition code in this process and "
        "prints one result per image, in the order given.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument("--embeddings", action="store_true", help="include each face's embedding")
    add_settings_flags(p, "models", "detection", "matching", "aws")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.app.pipeline import LocalPipeline
    from facepipe.identity.facenet import default_weights_note

    pipeline = LocalPipeline(settings_from_args(args))
    note = default_weights_note(pipeline.weights_id)
    if note:
        print(note, file=sys.stderr)
    failed = 0
    for image in args.images:
        result = pipeline.run_file(image, with_embeddings=args.embeddings)
        failed += result.status == "error"
        if args.json:
            print(result.to_json(), flush=True)
        elif result.error:
            print(f"{image}: error: {result.error.message}", flush=True)
        else:
            faces = ", ".join(f"{f.label()} at {[round(v) for v in f.box]}" for f in result.faces)
            print(f"{image}: {result.status}: {faces or 'no face'}", flush=True)
    return 1 if failed else 0
