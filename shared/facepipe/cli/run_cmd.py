"""``facepipe run INPUT... [--json] [--embeddings] [--gallery PATH] [--annotate DIR]``.

The inputs follow ``facepipe get``'s rules (:mod:`facepipe.client.sources`): image files, folders
(their images, recursively), globs and videos (sampled at ``--video-fps``); one result per image
or sampled frame, in the order given. A file that cannot be read is an error result in its place.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facepipe.cli.options import add_settings_flags, settings_from_args

if TYPE_CHECKING:
    from facepipe.app.pipeline import LocalPipeline
    from facepipe.client.sources import RequestIds
    from facepipe.config import Settings
    from facepipe.messages import Result


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="detect and recognise faces in images and videos, in-process",
        description="Runs the pipeline's detection + recognition code in this process and "
        "prints one result per image or sampled video frame, in the order given. Inputs as for "
        "`facepipe get`: image files, folders (recursive), globs and videos.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (recursive), globs or video files",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON result per line (default: one readable line per result)",
    )
    p.add_argument("--embeddings", action="store_true", help="include each face's embedding")
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write DIR/<request_id>.jpg with the faces boxed and named",
    )
    p.add_argument("--run-id", help="first part of every request_id (default: 8 random hex)")
    add_settings_flags(p, "models", "detection", "matching", "video", "aws")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facepipe.app.pipeline import LocalPipeline
    from facepipe.client.annotate import write_annotated
    from facepipe.client.sources import RequestIds, new_run_id
    from facepipe.identity.facenet import default_weights_note

    settings = _with_default_gallery(settings_from_args(args))
    pipeline = LocalPipeline.offline_default(settings)
    note = default_weights_note(pipeline.weights_id)
    if note:
        print(note, file=sys.stderr)
    ids = RequestIds(args.run_id or new_run_id())
    failed = 0
    for result, data, where in _results(pipeline, settings, args, ids):
        failed += result.status == "error"
        if args.annotate is not None and data is not None:
            write_annotated(args.annotate, data, result)
        if args.json:
            print(json.dumps({**json.loads(result.to_json()), **where}), flush=True)
        else:
            print(_readable(result, where.get("time_s")), flush=True)
    return 1 if failed else 0


def _with_default_gallery(settings: Settings) -> Settings:
    """No ``--gallery``: the one ``facepipe gallery enroll`` writes by default, when it exists
    (said on stderr), so enrol-then-run needs no path."""
    if settings.gallery or not settings.default_gallery.is_file():
        return settings
    print(
        f"facepipe: gallery {settings.default_gallery} (`gallery enroll`'s default; --gallery "
        "for another)",
        file=sys.stderr,
    )
    return settings.model_copy(update={"gallery": str(settings.default_gallery)})


def _results(
    pipeline: LocalPipeline, settings: Settings, args: argparse.Namespace, ids: RequestIds
) -> Iterator[tuple[Result, bytes | None, dict[str, Any]]]:
    """``(result, the bytes it was found in, where in a video)`` per image or sampled frame;
    an input that cannot be read is an error result in its place."""
    from facepipe.client.sources import SourceError, expand_inputs

    for text in args.images:
        try:
            files = list(expand_inputs([text]))
        except SourceError as exc:
            yield _unreadable(ids.make(text), text, exc.message), None, {}
            continue
        for path in files:
            try:
                yield from _file_results(pipeline, settings, path, ids, args.embeddings)
            except SourceError as exc:
                yield _unreadable(ids.make(str(path)), str(path), exc.message), None, {}


def _file_results(
    pipeline: LocalPipeline, settings: Settings, path: Path, ids: RequestIds, embeddings: bool
) -> Iterator[tuple[Result, bytes | None, dict[str, Any]]]:
    from facepipe.client.sources import is_video, iter_video

    source = str(path)
    if not is_video(path):
        data = _read(path)
        yield (
            pipeline.run_bytes(data, source, ids.make(source), with_embeddings=embeddings),
            data,
            {},
        )
        return
    for frame in iter_video(path, video_fps=settings.video_fps, video_every=settings.video_every):
        result = pipeline.run_bytes(
            frame.data,
            f"{path}.f{frame.number:06d}.jpg",
            ids.make(source, frame.number),
            with_embeddings=embeddings,
        )
        yield result, frame.data, {"source": source, "frame": frame.number, "time_s": frame.time_s}


def _read(path: Path) -> bytes:
    from facepipe.client.sources import SourceError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _unreadable(request_id: str, filename: str, message: str) -> Result:
    from facepipe.messages import ErrorInfo, Result

    error = ErrorInfo(code="unreadable_file", message=message)
    return Result(request_id=request_id, filename=filename, status="error", error=error)


def _readable(result: Result, time_s: float | None = None) -> str:
    where = result.filename if time_s is None else f"{result.filename} ({time_s:g} s)"
    if result.error:
        return f"{where}: error: {result.error.message}"
    faces = ", ".join(f"{f.label()} at {[round(v) for v in f.box]}" for f in result.faces)
    return f"{where}: {result.status}: {faces or 'no face'}"
