"""``facepipe album index NAME SOURCE`` and ``facepipe album find NAME SELFIE``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facepipe.cli.options import add_settings_flags, settings_from_args

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def register(sub: Any) -> None:
    p = sub.add_parser("album", help="index photos and find a person in them by a selfie")
    asub = p.add_subparsers(dest="album_command", required=True)
    index = asub.add_parser(
        "index",
        help="index every face of every photo under SOURCE (folder or s3://bucket/prefix)",
        description="Runs the pipeline's detection and embedding on every photo and adds the "
        "faces (photo id, box, embedding) to the album as a new shard.",
    )
    index.add_argument("album", metavar="NAME")
    index.add_argument("source", metavar="SOURCE")
    _where(index)
    index.set_defaults(func=run_index)
    find = asub.add_parser(
        "find", help="the album's photos that contain the selfie's person, best first"
    )
    find.add_argument("album", metavar="NAME")
    find.add_argument("selfie", type=Path, metavar="SELFIE")
    find.add_argument("--limit", type=int, default=100, help="most photos to list")
    _where(find)
    find.set_defaults(func=run_find)


def _where(p: argparse.ArgumentParser) -> None:
    add_settings_flags(p)  # --albums (FACEPIPE_ALBUMS) says where the albums live


def _store(args: argparse.Namespace, settings: Any) -> Any:
    from facepipe.album import albums_location, open_albums
    from facepipe.aws.clients import client

    location = albums_location(settings)
    s3 = client("s3", settings) if location.startswith("s3://") else None
    return open_albums(location, s3)


def photos_of(source: str, settings: Any) -> Iterator[tuple[str, bytes]]:
    """``(photo id, bytes)``: a folder's images (relative paths) or an S3 prefix's (URIs)."""
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        from facepipe.aws.clients import client
        from facepipe.aws.s3 import S3Objects

        objects = S3Objects(client("s3", settings), parsed.netloc)
        for key in objects.keys(parsed.path.lstrip("/")):
            if key.lower().endswith(IMAGE_SUFFIXES):
                data = objects.get(key)
                if data is not None:
                    yield objects.uri(key), data
        return
    root = Path(source)
    if root.is_file():
        yield root.name, root.read_bytes()
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path.relative_to(root).as_posix(), path.read_bytes()


def run_index(args: argparse.Namespace) -> int:
    from facepipe.album import index_photos
    from facepipe.pipeline import LocalPipeline

    settings = settings_from_args(args)
    pipeline = LocalPipeline(settings)
    report = index_photos(
        pipeline, _store(args, settings), args.album, photos_of(args.source, settings)
    )
    for photo, reason in report.skipped:
        print(f"skipped {photo}: {reason}", file=sys.stderr)
    print(
        f"album {args.album}: indexed {report.faces} face(s) of {report.photos} photo(s) in "
        f"{len(report.shards)} new shard(s); skipped {len(report.skipped)}",
        file=sys.stderr,
    )
    return 0


def run_find(args: argparse.Namespace) -> int:
    from facepipe.album import selfie_embedding
    from facepipe.pipeline import LocalPipeline

    settings = settings_from_args(args)
    pipeline = LocalPipeline(settings)
    query = selfie_embedding(pipeline, args.selfie.read_bytes())
    hits = _store(args, settings).find(
        args.album,
        query,
        threshold=pipeline.recognition.threshold,
        embedder=pipeline.recognition.embedder.name,
        limit=args.limit,
    )
    for hit in hits:
        print(json.dumps(hit.__dict__))
    print(f"album {args.album}: {len(hits)} photo(s) with that person", file=sys.stderr)
    return 0
