"""``facepipe``: the one console script.

Subcommands:
  run IMAGE...        detection + recognition in-process, one result per image
  config              every setting (``--markdown`` prints the table of docs/configuration.md)
  invoke FUNCTION     a function's real awslambdaric entrypoint under the Lambda RIE
  images build|check  build the container images; run every event through them
  events              write the sample Lambda events (events/*.json)
  weights fetch|check get embedder weights (image builds) and prove they load
  local up            the whole pipeline on this machine: Function URL, queues, both functions
  send INPUT...       POST images/videos to the Function URL (local or deployed stack)
  poll --ids FILE     wait for those request ids' results on the response queue
  get INPUT...        send, then poll for exactly those results
  gallery enroll DIR  build a gallery from one folder per person
  demo                the whole pipeline on the local stack with the shipped samples
  eval                verification on labelled pairs: ROC AUC, best threshold, accuracy
  bench e2e           N requests end to end: latency, throughput, stages, lost
  worker --stage S    consume the queues outside Lambda (EC2/ECS) until SIGTERM
  upload INPUT...     S3 ingress: upload photos, --wait for their results and a CSV
  results csv         every S3-ingress result under a prefix as one CSV
  bucket empty        every object version out of a stack's versioned data bucket (teardown)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from facepipe.errors import FacepipeError
from facepipe.runtime import setup_process


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is printed before the usage, not after it (the
    usage of a command can be long): ``facepipe run: error: ...`` first, exit status 2 as
    argparse. Every subcommand's parser is one too (``add_subparsers`` takes the parser's
    class)."""

    def error(self, message: str) -> NoReturn:
        self._print_message(f"{self.prog}: error: {message}\n", sys.stderr)
        self.print_usage(sys.stderr)
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from facepipe.cli import (
        album_cmd,
        bench_cmd,
        bucket_cmd,
        client_cmd,
        config_cmd,
        demo_cmd,
        eval_cmd,
        events_cmd,
        gallery_cmd,
        images_cmd,
        invoke_cmd,
        local_cmd,
        run_cmd,
        s3_cmd,
        weights_cmd,
        worker_cmd,
    )

    parser = Parser(prog="facepipe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (
        run_cmd,
        config_cmd,
        gallery_cmd,
        invoke_cmd,
        images_cmd,
        weights_cmd,
        events_cmd,
        local_cmd,
        client_cmd,
        demo_cmd,
        eval_cmd,
        bench_cmd,
        album_cmd,
        worker_cmd,
        s3_cmd,
        bucket_cmd,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_process()  # before any command imports torch
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FacepipeError as exc:
        print(f"facepipe: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
