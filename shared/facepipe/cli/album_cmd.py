"""``facepipe album index NAME SOURCE`` and ``facepipe album find NAME SELFIE``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.config import Settings
from facepipe.errors import ConfigError, FacepipeError

if TYPE_CHECKING:
    from facepipe.client.stack import Endpoints
    from facepipe.messages import Result

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
    compact = asub.add_parser(
        "compact",
        help="merge the album's shards and segments (what writers do as they go, and more)",
        description="Merges the shards waiting into a segment and segments by size tier, "
        "without the cap writers keep to (FACEPIPE_ALBUM_MERGE_MAX_FACES); --full merges "
        "everything into one segment. Safe while others write and search: the manifest is "
        "swapped with a conditional write.",
    )
    compact.add_argument("album", metavar="NAME")
    compact.add_argument("--full", action="store_true", help="merge everything into one segment")
    add_settings_flags(compact, "matching", "aws")
    compact.set_defaults(func=run_compact)


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local-info",
        metavar="FILE_OR_JSON",
        help="go through this local stack (the line `facepipe local up` prints)",
    )
    # --albums (FACEPIPE_ALBUMS) says where the albums live when run here; --function-url,
    # --stack-name or --local-info send the photos through that stack instead.
    add_settings_flags(p, "models", "detection", "matching", "aws", "client")
    p.epilog = (
        "Where: with --function-url, --stack-name or --local-info the photos go through that "
        "stack's Function URL (album mode of the API) and its albums are used; otherwise the "
        "pipeline runs here on the albums at --albums."
    )


def _remote(args: argparse.Namespace, settings: Settings) -> Endpoints | None:
    """The stack to go through, when one was named; None to run the pipeline here."""
    if not (args.local_info or settings.function_url or settings.stack_name):
        return None
    from facepipe.client.stack import resolve_endpoints

    return resolve_endpoints(settings, local_info=args.local_info).require(
        "function_url", "response_queue_url"
    )


def through_stack(
    settings: Settings,
    endpoints: Endpoints,
    photos: Iterable[tuple[str, bytes]],
    album: dict[str, str],
) -> tuple[list[tuple[str, Result]], list[tuple[str, str]]]:
    """Send each ``(photo id, bytes)`` with ``album`` to the stack and wait for the results →
    (``(photo id, result)`` in send order, ``(photo id, why)`` for those that got none)."""
    from facepipe.client.http import Sender
    from facepipe.client.sources import Frame, RequestIds, new_run_id
    from facepipe.client.url_results import reply_for, result_poller

    ids = RequestIds(new_run_id())
    sent: list[tuple[str, str]] = []  # (request_id, photo id), in send order

    def frames() -> Iterator[Frame]:  # lazily: a big folder is never all in memory
        for photo, data in photos:
            sent.append((ids.make(photo), photo))
            yield Frame(sent[-1][0], photo, data, photo)  # the filename is the album's photo id

    poller = result_poller(endpoints, settings)  # before sending: it says how they are wanted
    sender = Sender.from_settings(
        endpoints.function_url, settings, fields={"album": album}, reply=reply_for(poller)
    )
    failed: list[tuple[str, str]] = []
    accepted: set[str] = set()
    with sender:
        for outcome in sender.send_all(frames()):
            if outcome.accepted:
                accepted.add(outcome.frame.request_id)
            else:
                failed.append((outcome.frame.filename, f"rejected: {outcome.reason()}"))
    wanted = [request_id for request_id, _ in sent if request_id in accepted]
    report = poller.poll(wanted, timeout=settings.poll_timeout)
    done: list[tuple[str, Result]] = []
    for request_id, photo in sent:
        if request_id in report.results:
            done.append((photo, report.results[request_id].result))
        elif request_id in accepted:
            failed.append((photo, f"no result within {settings.poll_timeout:g} s"))
    return done, failed


def _store(args: argparse.Namespace, settings: Any) -> Any:
    from facepipe.app.stores import albums_location, open_albums
    from facepipe.aws.clients import client

    location = albums_location(settings)
    s3 = client("s3", settings) if "s3://" in location else None
    return open_albums(location, s3, settings)


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
    from facepipe.app.albums import index_photos
    from facepipe.app.pipeline import LocalPipeline

    settings = settings_from_args(args)
    endpoints = _remote(args, settings)
    if endpoints is not None:
        return _index_through(args, settings, endpoints)
    store = _store(args, settings)
    pipeline = LocalPipeline.offline_default(
        settings, store.embedder_of(args.album), recorded_by=f"album {args.album!r}"
    )
    report = index_photos(pipeline, store, args.album, photos_of(args.source, settings))
    for photo, reason in report.skipped:
        print(f"skipped {photo}: {reason}", file=sys.stderr)
    print(
        f"album {args.album}: indexed {report.faces} face(s) of {report.photos} photo(s) in "
        f"{len(report.shards)} new shard(s); skipped {len(report.skipped)}",
        file=sys.stderr,
    )
    return 0


def _index_through(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    album = {"name": args.album, "mode": "index"}
    done, failed = through_stack(settings, endpoints, photos_of(args.source, settings), album)
    faces = 0
    for photo, result in done:
        if result.status == "ok" and result.album is not None:
            faces += result.album.indexed or 0
        elif result.status == "no_face":
            failed.append((photo, "no face found"))
        else:
            failed.append((photo, _error_text(result)))
    for photo, reason in failed:
        print(f"skipped {photo}: {reason}", file=sys.stderr)
    print(
        f"album {args.album}: indexed {faces} face(s) of {len(done)} photo(s) through "
        f"{endpoints.function_url}; skipped {len(failed)}",
        file=sys.stderr,
    )
    return 1 if any(not reason.startswith("no face") for _, reason in failed) else 0


def _error_text(result: Result) -> str:
    error = result.error
    return f"{error.code}: {error.message}" if error else f"status {result.status}"


def _find_through(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    album = {"name": args.album, "mode": "find"}
    selfie = [(args.selfie.name, _read(args.selfie))]
    done, failed = through_stack(settings, endpoints, selfie, album)
    if failed:
        raise FacepipeError(f"selfie {args.selfie}: {failed[0][1]}")
    result = done[0][1]
    if result.status == "no_face":
        raise FacepipeError(f"selfie {args.selfie}: no face found in it")
    if result.status != "ok" or result.album is None:
        raise FacepipeError(f"album {args.album}: {_error_text(result)}")
    hits = (result.album.matches or [])[: args.limit]
    for hit in hits:
        print(hit.model_dump_json())
    print(f"album {args.album}: {len(hits)} photo(s) with that person", file=sys.stderr)
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc


def _known(store: Any, album: str) -> None:
    """A typo is not "0 photos": an error naming the albums there are."""
    known = store.albums()
    if album not in known:
        raise FacepipeError(
            f"no album {album!r} at {store.objects.uri(store.prefix)}; known albums: "
            f"{', '.join(known) or 'none'} (index photos into one with `facepipe album index`)",
            code="unknown_album",
            status=404,
        )


def run_find(args: argparse.Namespace) -> int:
    from facepipe.app.albums import selfie_embedding
    from facepipe.app.pipeline import LocalPipeline

    settings = settings_from_args(args)
    endpoints = _remote(args, settings)
    if endpoints is not None:
        return _find_through(args, settings, endpoints)
    store = _store(args, settings)
    _known(store, args.album)
    pipeline = LocalPipeline.offline_default(
        settings, store.embedder_of(args.album), recorded_by=f"album {args.album!r}"
    )
    query = selfie_embedding(pipeline, _read(args.selfie))
    hits = store.find(
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


def run_compact(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    store = _store(args, settings)
    _known(store, args.album)
    report = store.compact(args.album, full=args.full)
    segments = store.segments(args.album)
    print(
        f"album {args.album}: {report.line()}; now {len(segments)} segment(s) of "
        f"{sum(s.faces for s in segments)} face(s) and {store.waiting(args.album)} shard(s) "
        "waiting",
        file=sys.stderr,
    )
    return 0
