"""Where the client sends frames and polls results.

Three ways to say it, per endpoint the first that gives a value wins:

1. the settings: ``--function-url``, ``--response-queue-url``, ``--endpoint-url``, ``--region``
   (or their ``FACEPIPE_*`` variables);
2. ``--local-info FILE_OR_JSON``: the JSON line ``facepipe local up`` prints
   (``function_url``, ``endpoint_url``, ``request_queue_url``, ``response_queue_url``,
   ``bucket``), given inline or as a file holding it;
3. ``--stack-name NAME``: the Outputs of the deployed CloudFormation stack (``FunctionUrl``,
   ``ResponseQueueUrl``), read with ``describe_stacks``.

Example:
    >>> endpoints = resolve_endpoints(Settings.from_env(), local_info='{"function_url": '
    ...     '"http://127.0.0.1:9000/", "response_queue_url": "http://127.0.0.1:5000/q", '
    ...     '"endpoint_url": "http://127.0.0.1:5000"}')
    >>> endpoints.function_url, endpoints.region
    ('http://127.0.0.1:9000/', 'us-east-1')
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from facepipe.aws.clients import client
from facepipe.aws.s3 import read_uri
from facepipe.client.http import NoStack, is_loopback
from facepipe.config import Settings
from facepipe.errors import ConfigError
from facepipe.local.emulator import DUMMY_CREDENTIALS
from facepipe.local.emulator import REGION as LOCAL_REGION

LOCAL_INFO_KEYS = ("function_url", "endpoint_url", "request_queue_url", "response_queue_url")


@dataclass(frozen=True)
class Endpoints:
    """The Function URL to POST to and the response queue to poll (through ``endpoint_url``
    when it is an emulator), in ``region``."""

    function_url: str = ""
    response_queue_url: str = ""
    endpoint_url: str = ""
    region: str = ""

    def require(self, *names: str) -> Endpoints:
        """Raise a :class:`ConfigError` naming the flags to use when one of ``names`` is empty."""
        flags = {
            "function_url": "--function-url",
            "response_queue_url": "--response-queue-url",
        }
        for name in names:
            if not getattr(self, name):
                raise ConfigError(
                    f"no {name.replace('_', ' ')}: pass {flags.get(name, name)}, --local-info "
                    f"(the local stack's info line) or --stack-name (a deployed stack)"
                )
        return self

    def sqs(self) -> Any:
        """A boto3 SQS client for the response queue. Against an emulator, dummy credentials
        stand in when the AWS chain has none."""
        return self.client("sqs")

    def fetch_result(self, uri: str) -> bytes:
        """The bytes of a result the stack wrote to S3 (``payload_uri``: too large for the
        queue); only ``s3://`` URIs are read."""
        if not uri.startswith("s3://"):
            raise ValueError(f"a result's payload_uri must be an s3:// URI, not {uri[:80]!r}")
        return read_uri(uri, self.client("s3"))  # rare: no client kept

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` in ``region`` (through ``endpoint_url`` when set);
        against an emulator, dummy credentials stand in when the AWS chain has none. A loopback
        ``endpoint_url`` nothing listens on is :class:`NoStack` at once (see
        :func:`check_listening`)."""
        if self.endpoint_url:
            check_listening(self.endpoint_url)
        settings = Settings.from_env({}, endpoint_url=self.endpoint_url, region=self.region)
        if self.endpoint_url and boto3.Session().get_credentials() is None:
            return boto3.session.Session().client(  # type: ignore[call-overload]
                service,
                endpoint_url=self.endpoint_url,
                region_name=self.region or LOCAL_REGION,
                **DUMMY_CREDENTIALS,
            )
        return client(service, settings)


def check_listening(url: str, timeout: float = 2.0) -> None:
    """Raise :class:`NoStack` when ``url`` is a loopback URL whose port refuses connections (a
    local stack that is not up), where botocore would retry for some 20 s and then fail with a
    traceback. Other URLs, and any other outcome, are left to the real calls."""
    if not is_loopback(url):
        return
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            pass
    except ConnectionRefusedError as exc:
        raise NoStack(url) from exc
    except (OSError, ValueError):
        pass


def read_local_info(value: str) -> dict[str, str]:
    """The local stack's info: ``value`` is the JSON line itself, ``-`` (stdin) or a file whose
    last JSON object line is it."""
    if value.lstrip().startswith("{"):
        text = value
    elif value == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise ConfigError(f"--local-info {value}: {exc.strerror or exc}") from exc
    for line in reversed(text.strip().splitlines() or [""]):
        try:
            info = json.loads(line)
        except ValueError:
            continue
        if isinstance(info, dict) and any(k in info for k in LOCAL_INFO_KEYS):
            return {k: str(v) for k, v in info.items() if isinstance(v, str | int | float)}
    raise ConfigError(
        f"--local-info: no JSON line with {', '.join(LOCAL_INFO_KEYS)} in {value[:80]!r}; "
        "pass the line `facepipe local up` prints, or a file holding it"
    )


def stack_outputs(
    stack_name: str, settings: Settings, cloudformation: Any = None
) -> dict[str, str]:
    """``OutputKey`` → ``OutputValue`` of a deployed stack."""
    try:
        cloudformation = cloudformation or client("cloudformation", settings)
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the outputs of stack {stack_name}: {exc}") from exc
    if not stacks:
        raise ConfigError(f"stack {stack_name} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def stack_gallery(settings: Settings, cloudformation: Any = None) -> str:
    """The gallery the deployed stack ``settings.stack_name`` recognises with: its
    ``GalleryUri`` output (``s3://<data bucket>/<GalleryKey>``)."""
    outputs = stack_outputs(settings.stack_name, settings, cloudformation)
    if not outputs.get("GalleryUri"):
        bucket = outputs.get("BucketName", "<its BucketName output>")
        raise ConfigError(
            f"stack {settings.stack_name} has no GalleryUri output (deployed by an older "
            f"template): pass --gallery s3://{bucket}/gallery/gallery.pt (its GalleryKey "
            "parameter), or deploy again"
        )
    return outputs["GalleryUri"]


def resolve_endpoints(
    settings: Settings, *, local_info: str | None = None, cloudformation: Any = None
) -> Endpoints:
    """The endpoints from the settings, then ``local_info``, then the stack ``settings.
    stack_name`` (read only when something is still missing)."""
    info = read_local_info(local_info) if local_info else {}
    function_url = settings.function_url or info.get("function_url", "")
    queue_url = settings.response_queue_url or info.get("response_queue_url", "")
    endpoint_url = settings.endpoint_url or info.get("endpoint_url", "")
    if settings.stack_name and not (function_url and queue_url):
        outputs = stack_outputs(settings.stack_name, settings, cloudformation)
        function_url = function_url or outputs.get("FunctionUrl", "")
        queue_url = queue_url or outputs.get("ResponseQueueUrl", "")
    region = settings.region or info.get("region", "") or (LOCAL_REGION if endpoint_url else "")
    return Endpoints(function_url, queue_url, endpoint_url, region)


@dataclass(frozen=True)
class Ingress:
    """Where photos are uploaded (S3 ingress) and where their results appear: the stack's data
    ``bucket``, its ``ingest_prefix`` and ``output_prefix``, reached through ``endpoints``."""

    bucket: str
    ingest_prefix: str
    output_prefix: str
    endpoints: Endpoints

    def s3(self) -> Any:
        return self.endpoints.client("s3")


def resolve_ingress(
    settings: Settings, *, local_info: str | None = None, cloudformation: Any = None
) -> Ingress:
    """The bucket and prefixes from ``--bucket``/``--ingest-prefix``/``--output-prefix`` (when
    set), then ``local_info`` (``bucket``, ``ingest_prefix``, ``output_prefix``), then the
    stack's Outputs (``BucketName``, ``IngestPrefix``, ``OutputPrefix``), then the defaults."""
    info = read_local_info(local_info) if local_info else {}
    chosen = settings.model_fields_set
    bucket = settings.bucket or info.get("bucket", "")
    ingest = settings.ingest_prefix if "ingest_prefix" in chosen else info.get("ingest_prefix", "")
    output = settings.output_prefix if "output_prefix" in chosen else info.get("output_prefix", "")
    if settings.stack_name and not (bucket and ingest and output):
        outputs = stack_outputs(settings.stack_name, settings, cloudformation)
        bucket = bucket or outputs.get("BucketName", "")
        ingest = ingest or outputs.get("IngestPrefix", "")
        output = output or outputs.get("OutputPrefix", "")
    if not bucket:
        raise ConfigError(
            "no bucket: pass --bucket, --local-info (the local stack's info line) or "
            "--stack-name (a deployed stack)"
        )
    endpoint_url = settings.endpoint_url or info.get("endpoint_url", "")
    region = settings.region or info.get("region", "") or (LOCAL_REGION if endpoint_url else "")
    return Ingress(
        bucket,
        ingest or settings.ingest_prefix,
        output or settings.output_prefix,
        Endpoints(endpoint_url=endpoint_url, region=region),
    )
