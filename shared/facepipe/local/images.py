"""Build both container images and run every shipped event through them (``make images``,
``make image-check``).

:func:`build_all` builds the detection and recognition images from their Dockerfiles with the
repository as the context, as ``sam build`` does. ``offline=True`` is how this repository's own
machines build them, with no registry and no PyTorch index in reach: the stand-in base
(:func:`~facepipe.local.docker.stand_in_base`), the CPU torch wheel from local disk, and, where
the VGGFace2 file is not in ``weights/``, ``WEIGHTS=random:0`` (labelled in the image and in
every result). Nothing else differs from a user's build.

:func:`check_images` then runs each function's image under the RIE (the image's own
``python -m awslambdaric``) against the local stack's AWS and checks its answer to each event of
``events/``: the answer, what it put on the queues, its init (cold start) and warm durations as
the RIE reports them, and its runtime's peak memory, with the template's MemorySize as the
container's limit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facepipe.errors import ConfigError
from facepipe.identity.facenet import WEIGHT_FILES
from facepipe.local.docker import (
    Built,
    DockerDaemon,
    ImageFunction,
    TorchWheels,
    build_image,
    image_name,
    local_torch_wheel,
    stand_in_base,
    wheel_version,
)
from facepipe.local.emulator import DEFAULT_STACK, LocalAws, find_template
from facepipe.local.rie import function_error

_log = logging.getLogger(__name__)
FUNCTION_DIRS = ("detection", "recognition")
LAMBDA_IMAGE_LIMIT_BYTES = 10 * 1024**3  # Lambda's limit for an image (uncompressed)


def repository_root() -> Path:
    return find_template().parent


def build_args(offline: bool, root: Path, daemon: DockerDaemon) -> tuple[dict[str, str], Any]:
    """The build arguments of an offline build (none for a user's build) and the torch index
    to serve during it (or None)."""
    if not offline:
        return {}, None
    args = {"BASE_IMAGE": stand_in_base(daemon), "PYTHON_VERSION": "3.11"}
    wheel = local_torch_wheel()
    server = None
    if wheel is not None:
        server = TorchWheels(wheel)
        args["TORCH_VERSION"] = wheel_version(wheel)
    if not (root / "weights" / WEIGHT_FILES["vggface2"]).is_file():
        args["WEIGHTS"] = "random:0"
        _log.warning(
            "weights/%s is not here: the recognition image bakes SEEDED RANDOM weights "
            "(WEIGHTS=random:0), for tests only; every result says weights random:0",
            WEIGHT_FILES["vggface2"],
        )
    return args, server


def build_all(
    daemon: DockerDaemon,
    *,
    offline: bool,
    extra_args: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> list[Built]:
    """Build ``facepipe-detection:local`` and ``facepipe-recognition:local``."""
    root = repository_root()
    args, server = build_args(offline, root, daemon)
    args.update(extra_args or {})
    built = []
    if server is not None:
        server.start()
        args["TORCH_INDEX_URL"] = server.url
    try:
        for name in FUNCTION_DIRS:
            folder = root / "functions" / name
            wanted = {k: v for k, v in args.items() if k != "WEIGHTS" or name == "recognition"}
            log = log_dir / f"build-{name}.log" if log_dir else None
            _log.info(
                "building %s (%s)",
                image_name(folder),
                ", ".join(f"{k}={v}" for k, v in wanted.items()),
            )
            built.append(
                build_image(
                    daemon, root, folder / "Dockerfile", image_name(folder), wanted, log=log
                )
            )
    finally:
        if server is not None:
            server.stop()
    return built


# --- the check --------------------------------------------------------------------------------
@dataclass
class EventCheck:
    """One event through one image: what it answered, what the check expected."""

    event: str
    function: str
    ok: bool
    problem: str = ""
    init_ms: float | None = None
    duration_ms: float | None = None
    warm_duration_ms: float | None = None
    weights: str | None = None  # what the results posted say of the weights that made them


@dataclass
class FunctionRun:
    function: str
    image: str
    handler: str
    memory_mb: int
    peak_rss_mib: float | None = None
    events: list[EventCheck] = field(default_factory=list)


Expect = Callable[[Any, dict[str, list[dict[str, Any]]]], str]


def _body(answer: Any) -> dict[str, Any]:
    return json.loads(answer.get("body", "{}")) if isinstance(answer, dict) else {}


def _expect_queued(answer: Any, queues: dict[str, list[dict[str, Any]]]) -> str:
    body = _body(answer)
    if answer.get("statusCode") != 202:
        return f"expected 202, got {answer}"
    if [f["status"] for f in body.get("frames", [])] != ["queued"]:
        return f"expected one queued frame, got {body}"
    return (
        ""
        if len(queues["RequestQueue"]) == 1
        else f"expected 1 task, got {len(queues['RequestQueue'])}"
    )


def _expect_multi(answer: Any, queues: dict[str, list[dict[str, Any]]]) -> str:
    statuses = [f["status"] for f in _body(answer).get("frames", [])]
    if answer.get("statusCode") != 202 or statuses != ["queued", "no_face"]:
        return f"expected 202 queued + no_face, got {answer}"
    counts = (len(queues["RequestQueue"]), len(queues["ResponseQueue"]))
    return "" if counts == (1, 1) else f"expected 1 task and 1 result, got {counts}"


def _expect_refused(answer: Any, queues: dict[str, list[dict[str, Any]]]) -> str:
    body = _body(answer)
    if answer.get("statusCode") != 400 or body.get("error") != "invalid_request":
        return f"expected 400 invalid_request, got {answer}"
    sent = sum(len(v) for v in queues.values())
    return "" if sent == 0 else f"a refused request sent {sent} messages"


def _expect_result(answer: Any, queues: dict[str, list[dict[str, Any]]]) -> str:
    if answer != {"batchItemFailures": []}:
        return f"expected no failed records, got {answer}"
    results = [json.loads(m["Body"]) for m in queues["ResponseQueue"]]
    if len(results) != 1 or results[0].get("status") != "ok" or not results[0].get("faces"):
        return f"expected one ok result with faces, got {results}"
    weights = str(results[0].get("weights"))
    if not (weights.startswith(("random:", "vggface2:sha256:", "casia-webface:sha256:"))):
        return f"the result does not say which weights made it: {weights}"
    return ""


def _expect_ingested(answer: Any, queues: dict[str, list[dict[str, Any]]]) -> str:
    if answer != {"batchItemFailures": []}:
        return f"expected no failed records, got {answer}"
    tasks = [json.loads(m["Body"]) for m in queues["RequestQueue"]]
    if len(tasks) != 1 or not tasks[0].get("output_key"):
        return f"expected one task with an output_key, got {len(tasks)}"
    return ""


# event file → (function, what it must do)
EVENTS: dict[str, tuple[str, Expect]] = {
    "detection-single.json": ("DetectionFunction", _expect_queued),
    "detection-multi.json": ("DetectionFunction", _expect_multi),
    "detection-bad.json": ("DetectionFunction", _expect_refused),
    "recognition-sqs.json": ("RecognitionFunction", _expect_result),
    "ingest-sqs.json": ("IngestFunction", _expect_ingested),
}


def _drain(aws: LocalAws) -> dict[str, list[dict[str, Any]]]:
    return {name: aws.drain(url, wait_seconds=0) for name, url in aws.queue_urls().items()}


def check_images(daemon: DockerDaemon, *, stack: str = DEFAULT_STACK) -> list[FunctionRun]:
    """Every shipped event through its function's image (see the module doc)."""
    root = repository_root()
    runs: list[FunctionRun] = []
    with LocalAws(stack=stack) as aws:
        for function in dict.fromkeys(f for f, _ in EVENTS.values()):
            folder = aws.function_dir(function)
            memory = int(aws.function_env(function)["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
            run = FunctionRun(function, image_name(folder), aws.function_handler(function), memory)
            image = ImageFunction(
                daemon, run.image, aws.function_env(function), run.handler, memory_mb=memory
            )
            with image:
                for name, (target, expect) in EVENTS.items():
                    if target != function:
                        continue
                    event = json.loads((root / "events" / name).read_text())
                    if name == "ingest-sqs.json":
                        event = aws.upload_announced(event, root / "samples" / "astronaut.jpg")
                    run.events.append(_check_event(aws, image, function, name, event, expect))
                run.peak_rss_mib = image.peak_rss_mb()
            runs.append(run)
    labels = daemon.image_facts(image_name(root / "functions" / "recognition"))["labels"]
    label = labels.get("org.facepipe.weights", "")
    for check in (e for r in runs for e in r.events if e.weights):
        if label.startswith("random:") and check.weights != label:  # labelled in every result
            check.ok, check.problem = False, f"image {label}, result says {check.weights}"
    return runs


def _check_event(
    aws: LocalAws, image: ImageFunction, function: str, name: str, event: Any, expect: Expect
) -> EventCheck:
    _drain(aws)
    seen = image.reports()
    answer = image.invoke(event, timeout=300)
    report = image.report_after(seen)
    queues = _drain(aws)
    problem = function_error(answer) or expect(answer, queues)
    check = EventCheck(name, function, not problem, problem)
    posted = [json.loads(m["Body"]) for m in queues.get("ResponseQueue", [])]
    check.weights = next((str(r["weights"]) for r in posted if r.get("weights")), None)
    if report is not None:
        check.init_ms, check.duration_ms = report.init_duration_ms, report.duration_ms
    if not problem and name != "ingest-sqs.json":  # warm: the same event, new request ids
        seen = image.reports()
        image.invoke(json.loads(json.dumps(event).replace("sample-", "warm-sample-")), timeout=300)
        warm = image.report_after(seen)
        check.warm_duration_ms = warm.duration_ms if warm else None
        _drain(aws)
    return check


def image_summary(built: Built) -> dict[str, Any]:
    """One built image as the figures report it (``size_mb`` beside the bytes)."""
    return asdict(built) | {"size_mb": round(built.size_bytes / 2**20, 1)}


def summary(built: list[Built], runs: list[FunctionRun], daemon: DockerDaemon) -> dict[str, Any]:
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "docker_host": daemon.host,
        "lambda_image_limit_bytes": LAMBDA_IMAGE_LIMIT_BYTES,
        "images": [image_summary(b) for b in built],
        "functions": [asdict(r) for r in runs],
        "ok": all(e.ok for r in runs for e in r.events),
    }


def table(result: Mapping[str, Any]) -> str:
    lines = []
    for image in result["images"]:
        share = image["size_bytes"] / LAMBDA_IMAGE_LIMIT_BYTES
        lines.append(
            f"{image['name']}: {image['size_mb']} MB ({share:.0%} of Lambda's 10 GB), built in "
            f"{image['seconds']} s"
        )
    for run in result["functions"]:
        lines.append(
            f"{run['function']} ({run['image']}, {run['handler']}, {run['memory_mb']} MB): peak "
            f"{run['peak_rss_mib']} MiB"
        )
        for event in run["events"]:
            state = "ok" if event["ok"] else f"FAILED: {event['problem']}"
            if event.get("weights"):
                state += f" (weights {event['weights']})"
            lines.append(
                f"  {event['event']:<24} init {event['init_ms']} ms, duration "
                f"{event['duration_ms']} ms, warm {event['warm_duration_ms']} ms: {state}"
            )
    return "\n".join(lines)


def require_images(daemon: DockerDaemon) -> None:
    missing = [
        image_name(repository_root() / "functions" / name)
        for name in FUNCTION_DIRS
        if not daemon.has_image(image_name(repository_root() / "functions" / name))
    ]
    if missing:
        raise ConfigError(
            f"no image {', '.join(missing)} on {daemon.host}: build them with `make images` "
            "(or `make image-check` where no registry can be reached)"
        )
