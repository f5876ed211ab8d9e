"""``facepipe bucket empty``: every version of every object out of a stack's data bucket.

The data bucket is versioned and kept by ``sam delete`` (``DeletionPolicy: Retain``: photos,
galleries and results outlive the stack unless you decide otherwise). Removing it for good means
deleting every object version and delete marker first, which the console and ``aws s3 rm`` do
not do; this does, and with ``--delete`` removes the bucket too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from facepipe.cli.options import add_settings_flags, settings_from_args
from facepipe.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("bucket", help="empty (and delete) a stack's versioned data bucket")
    verbs = p.add_subparsers(dest="bucket_command", required=True)
    empty = verbs.add_parser(
        "empty",
        help="delete every object version and delete marker of the bucket",
        description="Deletes every object version and delete marker of BUCKET (or of the "
        "BucketName output of --stack-name), so a versioned bucket can be deleted: the step "
        "before or after `sam delete`, which keeps the data bucket. Without --yes it only "
        "counts what it would delete.",
    )
    empty.add_argument("bucket", nargs="?", metavar="BUCKET", help="default: --stack-name's")
    empty.add_argument("--yes", action="store_true", help="really delete (else only count)")
    empty.add_argument("--delete", action="store_true", help="then delete the bucket itself")
    add_settings_flags(empty, "aws")
    empty.set_defaults(func=run_empty)


def run_empty(args: argparse.Namespace) -> int:
    from facepipe.aws.clients import client
    from facepipe.aws.s3 import S3Objects
    from facepipe.client.stack import stack_outputs

    settings = settings_from_args(args)
    bucket = args.bucket
    if not bucket and settings.stack_name:
        bucket = stack_outputs(settings.stack_name, settings).get("BucketName", "")
    if not bucket:
        raise ConfigError("which bucket? pass BUCKET or --stack-name NAME")
    s3 = client("s3", settings)
    objects = S3Objects(s3, bucket)
    versions = objects.versions("")
    if not args.yes:
        print(
            f"s3://{bucket}: {len(versions)} object version(s) and delete marker(s); run again "
            f"with --yes to delete them{' and the bucket' if args.delete else ''}",
            file=sys.stderr,
        )
        return 1
    deleted = objects.erase_prefix("")
    print(
        f"s3://{bucket}: deleted {deleted} object version(s) and delete marker(s)", file=sys.stderr
    )
    if args.delete:
        s3.delete_bucket(Bucket=bucket)
        print(f"s3://{bucket}: bucket deleted", file=sys.stderr)
    return 0
