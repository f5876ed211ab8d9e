"""The whole two-stage pipeline on one machine: no AWS account, and Docker only for the images.

:class:`LocalStack` starts, from ``template.yaml``:

1. local AWS (:class:`~facepipe.local.emulator.LocalAws`): the template's queues (with their
   visibility timeouts and redrive policy) and bucket in a moto server on 127.0.0.1;
2. every function that has a Function URL or an SQS event, each behind an invoker
   (:mod:`facepipe.local.invokers`): in this process (``runtime="inprocess"``), as its real
   ``python -m awslambdaric app.handler`` under the Lambda RIE (``runtime="rie"``), or in its
   built container image with the RIE inside (``runtime="image"``,
   :class:`~facepipe.local.docker.ImageFunction`), with the environment the template gives it
   plus the settings the caller set;
3. the Function URL (:class:`~facepipe.local.url_server.FunctionUrlServer`) on
   ``http://127.0.0.1:<port>/``;
4. one SQS event source mapping (:class:`~facepipe.local.event_source.SqsEventSource`) per SQS
   event of the template, with its ``BatchSize``, ``MaximumBatchingWindowInSeconds`` and
   ``FunctionResponseTypes`` (parameters resolved as in AWS).

Example:
    >>> settings = Settings.from_env(weights="random:0")
    >>> with LocalStack(settings) as stack:  # doctest: +SKIP
    ...     stack.info()["function_url"]
    'http://127.0.0.1:40123/'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facepipe.config import Settings, env_name
from facepipe.errors import ConfigError
from facepipe.lifecycle import Service
from facepipe.local.docker import DockerDaemon, ImageFunction, image_name
from facepipe.local.emulator import FUNCTION, REGION, LocalAws, TemplateError
from facepipe.local.event_source import SqsEventSource
from facepipe.local.invokers import InProcessInvoker, Invoker, RieInvoker
from facepipe.local.rie import DEFAULT_FUNCTION_TIMEOUT_S
from facepipe.local.url_server import FunctionUrlServer

RUNTIMES = ("inprocess", "rie", "image")
INFO_KEYS = (
    "function_url",
    "endpoint_url",
    "request_queue_url",
    "response_queue_url",
    "dead_letter_queue_url",
    "bucket",
    "runtime",
    "region",
    "ingest_queue_url",
    "ingest_dead_letter_queue_url",
    "ingest_prefix",
    "output_prefix",
)
# Settings the functions never take from the caller: where the stack's resources are (the
# template's environment says that) and how the local stack itself runs.
_STACK_SETTINGS = frozenset(
    {
        "request_queue_url",
        "response_queue_url",
        "bucket",
        "payload_prefix",
        "ingest_prefix",
        "output_prefix",
        "endpoint_url",
        "region",
        "runtime",
        "port",
    }
)
# What an image brings itself (FACEPIPE_WEIGHTS is its baked file), and this machine's own
# settings a container has no use for.
_IMAGE_OWN_SETTINGS = frozenset({"weights", "docker_root"})
_LOCAL_PATHS = ("weights", "gallery")  # made absolute: an RIE function runs in its own folder
_log = logging.getLogger(__name__)


def _absolute(value: str) -> str:
    if not value or "://" in value or value.startswith("random:"):
        return value
    return str(Path(value).expanduser().resolve())


class LocalStack(Service):
    """The template's queues, bucket, functions, Function URL and SQS event source mappings.

    Args:
        settings: what the caller set (flags, ``FACEPIPE_*``); every setting in
            ``settings.model_fields_set`` reaches the functions' environment, except where the
            stack's resources are (queues, bucket, endpoint, region: the template decides).
            ``FACEPIPE_GALLERY`` defaults to the template's ``s3://`` location in the local
            bucket, which starts empty: every face is ``unknown`` until a gallery is put there.
        runtime: ``"inprocess"`` or ``"rie"``; default ``settings.runtime``.
        parameters: template parameter overrides (e.g. ``{"MaxReceiveCount": "2"}``).
        port: Function URL port on 127.0.0.1; default ``settings.port`` (0: any free port).
        template / stack: as :class:`~facepipe.local.emulator.LocalAws`.
        echo_logs: copy RIE functions' logs to stderr (in-process functions log there anyway).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        runtime: str | None = None,
        parameters: Mapping[str, str] | None = None,
        port: int | None = None,
        *,
        template: str | Path | None = None,
        stack: str | None = None,
        echo_logs: bool = False,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.runtime = runtime or self.settings.runtime
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; choose one of {RUNTIMES}")
        self.port = self.settings.port if port is None else port
        self.echo_logs = echo_logs
        kwargs: dict[str, Any] = {"stack": stack} if stack else {}
        self.aws = LocalAws(template, parameters, **kwargs)
        self.invokers: dict[str, Invoker] = {}
        self.url_function = ""
        self.url_server: FunctionUrlServer | None = None
        self.event_sources: list[SqsEventSource] = []
        # In-process functions share one interpreter: one invocation at a time (see invokers).
        self._inprocess_lock = threading.Lock()
        self.docker: DockerDaemon | None = None  # the image runtime's Docker

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything; on any failure, stop what was started and raise."""
        try:
            self.aws.start()
            url_functions, mappings = self._plan()
            if self.runtime == "image":
                self._start_docker()
            if self.runtime == "rie":
                for function in dict.fromkeys(m["function"] for m in mappings):
                    self._check_weights(function)
            # Functions behind queues first: the recognition init (weights, gallery) is the one
            # most likely to fail, and it fails faster alone.
            for logical_id in dict.fromkeys([m["function"] for m in mappings] + url_functions):
                self.invokers[logical_id] = self._start_invoker(logical_id)
            self.url_function = url_functions[0]
            self.url_server = FunctionUrlServer(self.invokers[self.url_function], self.port)
            try:
                self.url_server.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on 127.0.0.1:{self.port} ({exc.strerror or exc}); choose "
                    "another --port (FACEPIPE_PORT), or 0 for any free port"
                ) from exc
            for mapping in mappings:
                source = SqsEventSource(
                    self.aws.sqs,
                    mapping["queue_url"],
                    mapping["queue_arn"],
                    self.invokers[mapping["function"]],
                    mapping["batch_size"],
                    mapping["window_seconds"],
                    report_batch_item_failures=mapping["report_batch_item_failures"],
                    name=f"{mapping['queue']} → {mapping['function']}",
                )
                source.start()
                self.event_sources.append(source)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the pollers, the Function URL, the functions (RIE processes) and moto."""
        for source in self.event_sources:
            source.stop()
        self.event_sources = []
        if self.url_server is not None:
            self.url_server.stop()
            self.url_server = None
        for invoker in self.invokers.values():
            try:
                invoker.stop()
            except Exception:
                _log.warning("could not stop %s", invoker.name, exc_info=True)
        self.invokers = {}
        self.aws.stop()
        if self.docker is not None:
            self.docker.stop()  # only a private dockerd this stack started
            self.docker = None

    # --- what runs ---------------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        """Where everything is: the line ``facepipe local up`` prints first."""
        if self.url_server is None:
            raise RuntimeError("the local stack is not running")
        outputs = self.aws.outputs
        return {
            "function_url": self.url_server.url,
            "endpoint_url": self.aws.endpoint_url,
            "request_queue_url": outputs["RequestQueueUrl"],
            "response_queue_url": outputs["ResponseQueueUrl"],
            "dead_letter_queue_url": outputs["DeadLetterQueueUrl"],
            "bucket": outputs["BucketName"],
            "runtime": self.runtime,
            "region": REGION,
            # S3 ingress: uploads under the ingest prefix of the bucket become requests
            "ingest_queue_url": outputs.get("IngestQueueUrl", ""),
            "ingest_dead_letter_queue_url": outputs.get("IngestDeadLetterQueueUrl", ""),
            "ingest_prefix": outputs.get("IngestPrefix", ""),
            "output_prefix": outputs.get("OutputPrefix", ""),
        }

    def peak_memory_mb(self) -> dict[str, float | None]:
        """Peak resident memory so far: each function's runtime process under the RIE, or, with
        in-process functions, this whole process (functions, Function URL and moto together)."""
        if self.runtime in ("rie", "image"):
            return {
                logical_id: invoker.function.peak_rss_mb()  # type: ignore[attr-defined]
                for logical_id, invoker in self.invokers.items()
            }
        import resource

        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return {"in-process (all functions and the emulator)": round(peak_kib / 1024, 1)}

    def function_env(self, logical_id: str) -> dict[str, str]:
        """The template's environment for the function (pointed at local AWS), plus every
        setting the caller set, except where the stack's resources are."""
        env = self.aws.function_env(logical_id)
        chosen = self.settings.model_fields_set - _STACK_SETTINGS
        if self.runtime == "image":
            # The image is the artefact under test: its baked weights and its own paths.
            chosen -= _IMAGE_OWN_SETTINGS
        for name in sorted(chosen):
            value = getattr(self.settings, name)
            text = _absolute(str(value)) if name in _LOCAL_PATHS else str(value)
            env[env_name(name)] = text
        return env

    def _plan(self) -> tuple[list[str], list[dict[str, Any]]]:
        """The functions with a Function URL, and every SQS event's mapping, from the template."""
        url_functions: list[str] = []
        mappings: list[dict[str, Any]] = []
        queues = {
            attributes["Arn"]: (logical_id, attributes["QueueUrl"])
            for logical_id, attributes in self.aws.intrinsics.resources.items()
            if "QueueUrl" in attributes
        }
        for logical_id, resource in self.aws.resources(FUNCTION).items():
            properties = resource.get("Properties", {})
            if "FunctionUrlConfig" in properties:
                url_functions.append(logical_id)
            for event_name, event in properties.get("Events", {}).items():
                if event.get("Type") != "SQS":
                    continue
                props = self.aws.intrinsics.evaluate(event.get("Properties", {}))
                if str(props.get("Enabled", True)).lower() == "false":
                    continue
                if props.get("Queue") not in queues:
                    raise TemplateError(f"{logical_id}.{event_name}: its queue is not emulated")
                queue, url = queues[props["Queue"]]
                mappings.append(
                    {
                        "function": logical_id,
                        "queue": queue,
                        "queue_url": url,
                        "queue_arn": props["Queue"],
                        "batch_size": int(props.get("BatchSize", 10)),
                        "window_seconds": float(props.get("MaximumBatchingWindowInSeconds", 0)),
                        "report_batch_item_failures": "ReportBatchItemFailures"
                        in (props.get("FunctionResponseTypes") or []),
                    }
                )
        if len(url_functions) != 1:
            raise TemplateError(
                f"expected one function with a FunctionUrlConfig, found {url_functions}"
            )
        return url_functions, mappings

    def _timeout(self, logical_id: str) -> int:
        globals_ = self.aws.template.get("Globals", {}).get("Function", {})
        properties = self.aws.template["Resources"][logical_id].get("Properties", {})
        timeout = properties.get("Timeout", globals_.get("Timeout", 3))
        return int(self.aws.intrinsics.resolve(timeout))

    def _start_invoker(self, logical_id: str) -> Invoker:
        env = self.function_env(logical_id)
        folder = self.aws.function_dir(logical_id)
        handler = self.aws.function_handler(logical_id)
        invoker: Invoker
        if self.runtime == "inprocess":
            invoker = InProcessInvoker(
                folder,
                env,
                handler,
                name=logical_id,
                timeout_s=self._timeout(logical_id),
                lock=self._inprocess_lock,
            )
        elif self.runtime == "rie":
            invoker = RieInvoker.for_dir(
                folder, env, handler, name=logical_id, echo_log=self.echo_logs
            )
        else:
            assert self.docker is not None
            function = ImageFunction(
                self.docker,
                image_name(folder),
                env,
                handler,
                memory_mb=int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")),
                timeout_s=DEFAULT_FUNCTION_TIMEOUT_S,
            )
            invoker = RieInvoker(function, logical_id, echo_log=self.echo_logs)
        _log.info("starting %s (%s, %s)", logical_id, self.runtime, folder)
        invoker.start()
        return invoker

    def _start_docker(self) -> None:
        """The Docker of ``DOCKER_HOST``, else the private dockerd (stopped with the stack), and
        both images built; a gallery on this machine's disk is not in the containers."""
        gallery = self.settings.gallery
        if gallery and not gallery.startswith(("s3://", "lancedb+s3://")):
            raise ConfigError(
                f"--gallery {gallery}: the image runtime's functions run in containers and read "
                "the gallery from the local bucket: enrol into it (`facepipe gallery enroll "
                "--local-info ...`) or give an s3:// (or lancedb+s3://) location"
            )
        from facepipe.local.images import require_images

        self.docker = DockerDaemon(self.settings.docker_root or None)
        self.docker.start()
        require_images(self.docker)

    def _check_weights(self, logical_id: str) -> None:
        check_weights(self.function_env(logical_id))


def check_weights(env: Mapping[str, str]) -> None:
    """Load the embedder the way a function's init will from its environment ``env``
    (``FACEPIPE_EMBEDDER``, ``FACEPIPE_WEIGHTS``), so that missing weights stop a stack or an
    invoke at start-up with the function's own one-line message, rather than as an init failure
    inside an RIE process."""
    from facepipe.app.wiring import make_embedder

    make_embedder(Settings.from_env(env, device="cpu"))
