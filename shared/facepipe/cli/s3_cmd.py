"""``facepipe upload`` and ``facepipe results csv``: S3 ingress from the command line.

* ``upload INPUT...``: put photos under ``<ingest prefix><batch>/`` of the stack's bucket (a
  progress bar in bytes, multipart for large files, several in flight); with ``--wait`` (or
  ``--csv``) wait for each photo's ``<output prefix><batch>/<path>.json``, print one line per
  photo, report those that did not finish and why, and write the batch's CSV.
* ``results csv --prefix output/<batch>/ --out FILE|s3://bucket/key|-``: the CSV of every
  result under a prefix, whoever uploaded the photos.

The bucket and prefixes come from ``--bucket``/``--ingest-prefix``/``--output-prefix``, else
``--local-info`` (the line ``facepipe local up`` prints), else ``--stack-name`` (its Outputs).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from facepipe.cli.client_cmd import Console
from facepipe.cli.options import add_client_flags, settings_from_args

if TYPE_CHECKING:
    from facepipe.client.stack import Ingress
    from facepipe.client.uploads import Uploaded
    from facepipe.messages import Result

EPILOG = (
    "Bucket and prefixes: --bucket/--ingest-prefix/--output-prefix, else --local-info (the line "
    "`facepipe local up` prints), else --stack-name (a deployed stack's Outputs)."
)


def register(sub: Any) -> None:
    upload = sub.add_parser(
        "upload",
        help="upload photos for S3 ingress; --wait for their results and a CSV",
        description="Uploads photos under <ingest prefix><batch>/ of the stack's bucket, where "
        "each becomes a request; with --wait, waits for every result under <output "
        "prefix><batch>/, prints one JSON line per photo and reports those that did not finish.",
        epilog=EPILOG,
    )
    upload.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs"
    )
    upload.add_argument("--batch", help="key prefix of this upload (default: time + random hex)")
    upload.add_argument(
        "--wait", action="store_true", help="wait (--poll-timeout s) for every photo's result"
    )
    upload.add_argument(
        "--csv", metavar="PATH", help="write the batch's results as CSV (implies --wait)"
    )
    add_client_flags(upload)
    upload.set_defaults(func=upload_command)

    results = sub.add_parser("results", help="collect S3-ingress results")
    verbs = results.add_subparsers(dest="results_command", required=True)
    to_csv = verbs.add_parser(
        "csv",
        help="every result under a prefix as one CSV",
        description="Reads every result (.json) under --prefix of the bucket and writes one "
        "CSV: key, face_index, box, name, similarity, status, error.",
        epilog=EPILOG,
    )
    to_csv.add_argument(
        "--prefix", required=True, help="results prefix, e.g. output/<batch>/ (whole keys)"
    )
    to_csv.add_argument(
        "--out", default="-", metavar="FILE|s3://BUCKET/KEY|-", help="where (default stdout)"
    )
    add_client_flags(to_csv)
    to_csv.set_defaults(func=results_csv_command)


def _ingress(args: argparse.Namespace) -> tuple[Any, Ingress]:
    from facepipe.client.stack import resolve_ingress

    settings = settings_from_args(args)
    return settings, resolve_ingress(settings, local_info=args.local_info)


def upload_command(args: argparse.Namespace) -> int:
    from facepipe.client.uploads import new_batch, outputs_for, plan_uploads, upload_all

    console = Console(args.quiet)
    settings, ingress = _ingress(args)
    batch = args.batch or new_batch()
    uploads = plan_uploads(args.inputs, ingress.ingest_prefix, batch)
    s3 = ingress.s3()
    total = sum(u.path.stat().st_size for u in uploads)
    with console.progress("B", total=total) as bar:
        photos, failed = upload_all(
            s3,
            ingress.bucket,
            uploads,
            output_of=outputs_for(ingress.ingest_prefix, ingress.output_prefix),
            concurrency=settings.concurrency,
            on_bytes=bar.update,
        )
    where = f"s3://{ingress.bucket}/{ingress.ingest_prefix}{batch}/"
    console.note(f"uploaded {len(photos)} of {len(uploads)} photos ({total} bytes) to {where}")
    for key, reason in failed.items():
        console.note(f"not uploaded {key}: {reason}")
    if not (args.wait or args.csv):
        for photo in photos:
            console.line(json.dumps(_line(photo)))
        return 1 if failed else 0
    return _wait(args, settings, ingress, photos, console) or (1 if failed else 0)


def _wait(
    args: argparse.Namespace,
    settings: Any,
    ingress: Ingress,
    photos: list[Uploaded],
    console: Console,
) -> int:
    """Wait for the photos' results, print them, report the unfinished, write the CSV."""
    from facepipe.client.uploads import by_key, save_csv, wait_for_results

    s3 = ingress.s3()
    with console.progress("result", total=len(photos)) as bar:
        found = wait_for_results(
            s3,
            ingress.bucket,
            photos,
            timeout=settings.poll_timeout,
            on_result=lambda _photo, _result: bar.update(1),
        )
    unfinished = 0
    for photo in photos:
        result = found.get(photo.request_id)
        console.line(json.dumps(_line(photo, result)))
        if result is None:
            unfinished += 1
            console.note(
                f"timed out {photo.upload.key}: no result within {settings.poll_timeout:g} s"
            )
        elif result.status == "error" and result.error is not None:
            unfinished += 1
            console.note(f"error {photo.upload.key}: {result.error.code}: {result.error.message}")
    statuses = [r.status for r in found.values()]
    console.note(
        f"results: {len(found)} of {len(photos)} (ok {statuses.count('ok')}, no_face "
        f"{statuses.count('no_face')}, error {statuses.count('error')}), timed out "
        f"{len(photos) - len(found)}"
    )
    if args.csv:
        rows = save_csv(by_key(photos, found), args.csv, s3)
        console.note(f"wrote {rows} rows to {args.csv}")
    return 1 if unfinished else 0


def _line(photo: Uploaded, result: Result | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "key": photo.upload.key,
        "request_id": photo.request_id,
        "output_key": photo.output_key,
    }
    if result is not None:
        line.update(status=result.status, faces=len(result.faces), names=result.result)
        if result.error is not None:
            line["error"] = result.error.model_dump()
    return line


def results_csv_command(args: argparse.Namespace) -> int:
    from facepipe.client.uploads import read_results, save_csv

    console = Console(args.quiet)
    _, ingress = _ingress(args)
    s3 = ingress.s3()
    skipped: list[str] = []
    results = read_results(s3, ingress.bucket, args.prefix, skipped=skipped)
    for key in skipped:
        console.note(f"skipped {key}: not a result")
    rows = save_csv(results, args.out, s3)
    console.note(f"{len(results)} results, {rows} rows from s3://{ingress.bucket}/{args.prefix}")
    return 0
