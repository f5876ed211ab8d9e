"""``facepipe gallery enroll DIR --out PATH``: build a gallery from one folder per person."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facepipe.cli.options import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("gallery", help="manage the gallery of known people")
    gsub = p.add_subparsers(dest="gallery_command", required=True)
    enroll = gsub.add_parser(
        "enroll",
        help="embed DIR/<person>/<photos> into a gallery file",
        description="One sub-folder per person, any number of photos each. Photos with no "
        "face, several faces, a small or uncertain face are skipped and reported.",
    )
    enroll.add_argument("folder", type=Path, metavar="DIR")
    enroll.add_argument(
        "--out", required=True, help="gallery to write: a .pt/.npz path or s3://bucket/key"
    )
    enroll.add_argument("--min-face-px", type=int, default=40, help="smallest face side (px)")
    enroll.add_argument(
        "--min-probability", type=float, default=0.99, help="lowest detection probability"
    )
    add_settings_flags(enroll)
    enroll.set_defaults(func=run_enroll)


def write_gallery(data: bytes, out: str, settings: Any) -> None:
    parsed = urlparse(out)
    if parsed.scheme == "s3":
        from facepipe.aws.clients import client

        client("s3", settings).put_object(
            Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data
        )
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)


def run_enroll(args: argparse.Namespace) -> int:
    from facepipe.embedding import default_weights_note
    from facepipe.enrollment import enroll_folder
    from facepipe.pipeline import LocalPipeline

    settings = settings_from_args(args)
    pipeline = LocalPipeline(settings)
    note = default_weights_note(pipeline.weights_id)
    if note:
        print(note, file=sys.stderr)
    report = enroll_folder(
        pipeline, args.folder, min_face_px=args.min_face_px, min_probability=args.min_probability
    )
    for skipped in report.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    gallery = report.gallery
    data = gallery.to_npz_bytes() if args.out.endswith(".npz") else gallery.to_pt_bytes()
    write_gallery(data, args.out, settings)
    people = sorted(set(gallery.names))
    print(
        f"enrolled {len(gallery)} photo(s) of {len(people)} people ({', '.join(people)}) "
        f"into {args.out}; skipped {len(report.skipped)}",
        file=sys.stderr,
    )
    return 0 if len(gallery) else 1
