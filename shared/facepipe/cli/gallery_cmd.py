"""``facepipe gallery enroll|list|show|remove|import|export``: the managed gallery.

Every command works on the gallery ``--gallery`` (``FACEPIPE_GALLERY``) names: a local path or
``s3://bucket/key``, with its manifest and enrolment crops beside it
(``facepipe.identity.gallery_store``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.errors import FacepipeError


def register(sub: Any) -> None:
    p = sub.add_parser("gallery", help="manage the gallery of known people")
    gsub = p.add_subparsers(dest="gallery_command", required=True)

    enroll = gsub.add_parser(
        "enroll",
        help="embed DIR/<person>/<photos> into the gallery (adds to it)",
        description="One sub-folder per person, any number of photos each. A photo of "
        "several faces gives its largest face when that is at least twice the next (said on "
        "stderr), or the face --face/--box picks; else it is skipped and reported, as are "
        "photos with no face, a small or uncertain face, and photos whose crop is already "
        "enrolled. Each enrolled crop is stored beside the gallery (crops/<name>/<sha256>.png). "
        "A gallery of another embedder is refused. --stack-name enrols into a deployed stack's "
        "gallery (its GalleryUri output).",
    )
    enroll.add_argument("folder", type=Path, metavar="DIR")
    enroll.add_argument("--out", help="the gallery to write (same as --gallery)")
    enroll.add_argument(
        "--face",
        type=int,
        metavar="N",
        help="in a photo of several faces, enrol the N-th from the left (1 = leftmost)",
    )
    enroll.add_argument(
        "--box",
        type=_box,
        metavar="X1,Y1,X2,Y2",
        help="enrol the face at this box (pixels of the photo; the detected face overlapping "
        "it most); `facepipe run PHOTO` prints the boxes",
    )
    enroll.add_argument("--min-face-px", type=int, default=40, help="smallest face side (px)")
    enroll.add_argument(
        "--min-probability", type=float, default=0.99, help="lowest detection probability"
    )
    enroll.set_defaults(func=run_enroll)

    listing = gsub.add_parser("list", help="people and their photo counts")
    listing.set_defaults(func=run_list)

    show = gsub.add_parser("show", help="one person's rows and stored crops (JSON)")
    show.add_argument("name")
    show.set_defaults(func=run_show)

    remove = gsub.add_parser(
        "remove",
        help="erase a person: gallery rows, crops, and every older gallery version",
        description="Writes the gallery without NAME, deletes every version of NAME's crops "
        "and every older version of the gallery object and its manifest (they may hold NAME's "
        "rows), so nothing of NAME stays in the store. Album indexes hold no names.",
    )
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)

    imp = gsub.add_parser(
        "import",
        help="add the rows of a .pt ([embeddings, names]) or .npz file to the gallery",
        description="The original worker's data.pt format records no embedder: its rows are "
        "taken to be FACEPIPE_EMBEDDER's. Imported rows have no crops.",
    )
    imp.add_argument("file", help="a .pt/.npz path or s3://bucket/key")
    imp.set_defaults(func=run_import)

    export = gsub.add_parser("export", help="write the gallery to OUT (.pt or .npz)")
    export.add_argument("out", metavar="OUT", help="a .pt/.npz path or s3://bucket/key")
    export.set_defaults(func=run_export)

    add_settings_flags(enroll, "models", "detection", "matching", "aws")
    for parser in (listing, show, remove, imp, export):
        add_settings_flags(parser, "models", "matching", "aws")


def _box(text: str) -> list[float]:
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected X1,Y1,X2,Y2 with X2 > X1, Y2 > Y1")
    return box


def _store(settings: Any, location: str | None = None) -> Any:
    from facepipe.app.stores import open_gallery_store

    location = location or settings.gallery
    if not location and settings.stack_name:
        from facepipe.client.stack import stack_gallery

        location = stack_gallery(settings)  # the one the deployed stack recognises with
    if not location:  # your own, outside the checkout (FACEPIPE_DATA_DIR)
        location = str(settings.default_gallery)
    return open_gallery_store(location, settings)


def run_enroll(args: argparse.Namespace) -> int:
    from facepipe.app.embedder_choice import choose_embedder
    from facepipe.app.enrollment import Skipped, enroll_folder
    from facepipe.app.pipeline import LocalPipeline
    from facepipe.errors import GalleryError
    from facepipe.identity.facenet import default_weights_note
    from facepipe.identity.gallery import Gallery
    from facepipe.vision.crops import encode_png

    settings = settings_from_args(args)
    store = _store(settings, args.out)
    existing = store.embedder()

    def refuse_another_embedder(embedder: str) -> None:
        if existing and existing != embedder:
            raise GalleryError(
                f"{store.location} holds {existing} embeddings; this enrolment would "
                f"add {embedder} ones: pass --embedder {existing}, or enrol into "
                "another gallery"
            )

    if "embedder" in settings.model_fields_set:  # before loading one that could not be used
        refuse_another_embedder(settings.embedder)
    choice = choose_embedder(settings, existing, recorded_by=f"the gallery at {store.location}")
    settings = choice.settings
    refuse_another_embedder(settings.embedder)
    pipeline = LocalPipeline(settings.model_copy(update={"gallery": ""}), embedder=choice.embedder)
    note = default_weights_note(pipeline.weights_id)
    if note:
        print(note, file=sys.stderr)
    report = enroll_folder(
        pipeline,
        args.folder,
        min_face_px=args.min_face_px,
        min_probability=args.min_probability,
        face=args.face,
        box=args.box,
    )
    for noted in report.notes:
        print(f"note: {noted.path}: {noted.reason}", file=sys.stderr)
    stored = {name: set(store.crops_of(name)) for name in {n for n, _ in report.enrolled}}
    rows, crops, skipped = [], {}, list(report.skipped)
    for row, ((name, photo), crop) in enumerate(zip(report.enrolled, report.crops, strict=True)):
        png = encode_png(crop)
        key = store.crop_key(name, hashlib.sha256(png).hexdigest())
        if key in stored[name] or key in crops:
            skipped.append(Skipped(photo, "already enrolled (the same crop is in the gallery)"))
            continue
        rows.append(row)
        crops[key] = png
    added = Gallery(
        [report.gallery.names[i] for i in rows],
        report.gallery.embeddings[rows],
        report.gallery.embedder,
    )
    for skip in skipped:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    already = len(skipped) - len(report.skipped)  # photos whose crop is in the gallery
    if not len(added) and not already:  # (a re-run that finds them all there is no error)
        reason = (
            f"each of its {len(report.skipped)} photo(s) was skipped (reasons above)"
            if report.skipped
            else "it holds no photo in a person's folder"
        )
        raise FacepipeError(
            f"nothing enrolled from {args.folder}: {reason}; enrol photos of one face each, "
            f"as {args.folder}/<person>/<photo>.jpg",
            code="nothing_enrolled",
        )
    total = store.add(added, crops) if len(added) else len(store.load())
    people = sorted(set(added.names))
    print(
        f"enrolled {len(added)} photo(s) of {len(people)} people ({', '.join(people)}) "
        f"into {store.location} ({total} rows); skipped {len(skipped)}",
        file=sys.stderr,
    )
    return 0 if total else 1


def run_list(args: argparse.Namespace) -> int:
    store = _store(settings_from_args(args))
    people = store.people()
    width = max((len(name) for name in people), default=4)
    print(f"{'name':<{width}}  photos")
    for name, count in people.items():
        print(f"{name:<{width}}  {count}")
    print(
        f"{len(people)} people, {sum(people.values())} rows, embedder "
        f"{store.embedder() or '-'}: {store.location}",
        file=sys.stderr,
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from facepipe.errors import GalleryError
    from facepipe.identity.gallery_store import is_person_name

    store = _store(settings_from_args(args))
    rows = len(store.rows_of(args.name))
    crops = store.crops_of(args.name) if is_person_name(args.name) else []
    if not rows and not crops:
        raise GalleryError(f"{args.name!r} is not in {store.location}", code="not_found")
    print(
        json.dumps(
            {
                "name": args.name,
                "rows": rows,
                "crops": [store.objects.uri(key) for key in crops],
                "embedder": store.embedder(),
                "gallery": store.location,
                "updated_at": store.updated_at(),
            },
            indent=2,
        )
    )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from facepipe.app.stores import albums_beside

    settings = settings_from_args(args)
    store = _store(settings)
    rows = store.rows_of(args.name)
    removal = store.remove(args.name)
    # Album faces carry no names: the person's faces are those within the match threshold of
    # their enrolment rows, in every album beside the gallery (its bucket, folder or database).
    forgotten = albums_beside(store).forget(rows, settings.effective_match_threshold)
    print(
        f"removed {removal.name}: {removal.rows} row(s), {removal.crops} crop object(s) "
        f"(every version), {removal.old_versions} older gallery/manifest version(s) "
        f"from {store.location}, and {forgotten} matching album face(s)",
        file=sys.stderr,
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from facepipe.app.stores import open_gallery_store
    from facepipe.errors import GalleryError

    settings = settings_from_args(args)
    store = _store(settings)
    source = open_gallery_store(args.file, settings)
    if source.status() != "present":
        raise GalleryError(f"cannot read {args.file}: no such file or object")
    rows = source.export()
    if rows.embedder is None:
        rows.embedder = settings.embedder
    total = store.add(rows)
    print(
        f"imported {len(rows)} row(s) of {len(set(rows.names))} people ({rows.embedder}) into "
        f"{store.location}: {total} rows",
        file=sys.stderr,
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from facepipe.app.stores import open_gallery_store
    from facepipe.errors import ConfigError
    from facepipe.identity.gallery_store import GalleryStore

    settings = settings_from_args(args)
    gallery = _store(settings).export()
    target = open_gallery_store(args.out, settings)
    if not isinstance(target, GalleryStore):
        raise ConfigError(f"{args.out}: export writes a .pt or .npz file (a path or s3://...)")
    target.objects.put(target.key, gallery.to_bytes(target.key))
    print(f"exported {len(gallery)} rows to {target.location}", file=sys.stderr)
    return 0
