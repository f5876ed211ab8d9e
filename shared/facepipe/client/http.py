"""Sending frames to the detection Function URL: concurrency, retries, SigV4 signing.

One POST carries one frame (``{"request_id", "filename", "content"}``) or, with
``frames_per_request`` > 1, several (``{"frames": [...]}``). ``concurrency`` requests are in flight
at once. Throttling (429), 5xx answers and connection errors are retried with exponential backoff
and jitter, honouring ``Retry-After``; any other 4xx is final and reported with the server's
``error`` and ``message``. A connection refused by a loopback URL is not retried: nothing listens
there (the local stack is not up), and :class:`NoStack` says so at once.

A frame whose request would be over ``max_body_bytes`` (the Function URL's 6 MB) is sent as a JPEG
downscaled just enough, with its ``original_size`` so that boxes come back in the original's
pixels (:mod:`facepipe.client.fit`); one that cannot be made to fit is rejected here, pointing to
``facepipe upload``.

Requests to an AWS Function URL (``https://<id>.lambda-url.<region>.on.aws/``, ``AuthType
AWS_IAM``) are SigV4-signed for the service ``lambda`` with the normal AWS credential chain;
requests to anything else (the local stack on 127.0.0.1) are not, unless ``sign="always"``.

Example:
    >>> with Sender("http://127.0.0.1:9000/", concurrency=8) as sender:  # doctest: +SKIP
    ...     for outcome in sender.send_all(iter_frames(["photos/"], run_id="demo")):
    ...         print(outcome.request_id, outcome.status)
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import ipaddress
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from facepipe.client.sources import Frame
from facepipe.config import Settings
from facepipe.errors import ConfigError
from facepipe.messages import MAX_SIDE, Reply

SignMode = Literal["auto", "always", "never"]
_FUNCTION_URL_HOST = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))
USER_AGENT = "facepipe-client"
MAX_BODY_BYTES = 6_291_456  # Lambda's synchronous payload, all a Function URL passes on
EVENT_HEADROOM = 16_384  # what the Lambda event adds around the body (headers, requestContext)
Size = tuple[int, int]
logger = logging.getLogger(__name__)


# --- signing ----------------------------------------------------------------------------------
def should_sign(url: str, sign: SignMode) -> bool:
    """``always``/``never`` as said; ``auto`` signs only AWS hosts (``*.on.aws``).

    >>> should_sign("http://127.0.0.1:8000/", "auto"), should_sign("https://x.on.aws/", "auto")
    (False, True)
    """
    if sign != "auto":
        return sign == "always"
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(".on.aws")


def region_from_url(url: str) -> str:
    """The region of a Function URL host, ``""`` for any other URL.

    >>> region_from_url("https://abc.lambda-url.eu-west-1.on.aws/")
    'eu-west-1'
    """
    match = _FUNCTION_URL_HOST.search((urlsplit(url).hostname or "").lower())
    return match.group(1) if match else ""


class SigV4Signer:
    """Signs requests for the ``lambda`` service with the default credential chain."""

    def __init__(self, region: str, credentials: Any = None) -> None:
        from botocore.auth import SigV4Auth

        if credentials is None:
            import boto3

            credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ConfigError(
                "signing the Function URL request needs AWS credentials (AWS_PROFILE, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, an instance role…); none found"
            )
        self.region = region
        self._auth = SigV4Auth(credentials, "lambda", region)

    def headers(
        self, url: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> dict[str, str]:
        """``headers`` plus ``Authorization``, ``X-Amz-Date`` (and a session token's header)."""
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        self._auth.add_auth(request)
        return dict(request.headers.items())


def signer_for(url: str, sign: SignMode, region: str = "", credentials: Any = None) -> Any:
    """A :class:`SigV4Signer` when ``url`` is to be signed, else None. The region comes from
    ``region``, the Function URL's host, or the AWS config, in that order."""
    if not should_sign(url, sign):
        return None
    region = region or region_from_url(url)
    if not region:
        import boto3

        region = boto3.Session().region_name or ""
    if not region:
        raise ConfigError(
            f"cannot tell the region to sign requests to {url} for: set FACEPIPE_REGION "
            "(--region) or AWS_REGION"
        )
    return SigV4Signer(region, credentials)


# --- a local stack that is not there ------------------------------------------------------------
class NoStack(ConfigError):
    """A loopback URL refused the connection: no local stack listens there."""

    def __init__(self, url: str) -> None:
        super().__init__(f"no stack at {url}: is `facepipe local up` running?")
        self.url = url


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``).

    >>> is_loopback("http://127.0.0.1:9000/"), is_loopback("http://[::1]:9000/")
    (True, True)
    >>> is_loopback("http://localhost:9000/"), is_loopback("https://x.on.aws/")
    (True, False)
    """
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` (requests', urllib3's or botocore's error) comes from a refused
    connection: a ``ConnectionRefusedError`` somewhere in its causes."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        cause = todo.pop()
        if not isinstance(cause, BaseException) or id(cause) in seen:
            continue
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        todo += [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
    return False


# --- retries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` retries after the first attempt; the n-th waits ``base_delay·2ⁿ`` (capped at
    ``max_delay``) with equal jitter (between half and all of it), or what ``Retry-After`` says
    (capped at ``max_retry_after``)."""

    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 120.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Sent:
    """How a request with retries ended: its last ``response`` (None when the last attempt got
    none), the last attempt's connection ``error`` (else None), and the ``attempts`` made."""

    response: requests.Response | None
    error: Exception | None
    attempts: int


def send_with_retries(
    session: requests.Session,
    prepare: Callable[[], requests.PreparedRequest],
    *,
    url: str,
    retry: RetryPolicy,
    timeout: tuple[float, float],
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[], None] | None = None,
) -> Sent:
    """Send ``prepare()`` (made again for each attempt: a signature is dated) until it gets an
    answer that is not 429 or 5xx, or ``retry`` says to stop; connection errors and timeouts are
    retried too, waiting as ``retry`` (or ``Retry-After``) says. A connection refused by a
    loopback ``url`` is :class:`NoStack` at once: nothing listens there."""
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        response: requests.Response | None = None
        error: Exception | None = None
        try:
            response = session.send(prepare(), timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if refused(exc) and is_loopback(url):
                raise NoStack(url) from exc
            error = exc
        else:
            if response.status_code not in RETRYABLE_STATUS:
                return Sent(response, None, attempt)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if attempt > retry.retries:
            return Sent(response, error, attempt)
        if on_retry is not None:
            on_retry()
        sleep(retry.delay(attempt - 1, retry_after))


# --- outcomes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What became of one frame: ``queued``/``no_face``/``duplicate`` (accepted: ``duplicate``
    is the same frame sent before, whose result is out already) or ``rejected``."""

    frame: Frame
    status: Literal["queued", "no_face", "duplicate", "rejected"]
    faces: int | None = None
    http_status: int | None = None
    error: str = ""
    message: str = ""
    attempts: int = 1

    @property
    def request_id(self) -> str:
        return self.frame.request_id

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"

    def reason(self) -> str:
        status = f"HTTP {self.http_status} " if self.http_status else ""
        return f"{status}{self.error}: {self.message}" if self.message else f"{status}{self.error}"

    def to_line(self) -> str:
        """The JSON line ``facepipe send`` prints (and ``facepipe poll --ids`` reads)."""
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "filename": self.frame.filename,
            "status": self.status,
            "faces": self.faces,
            "source": self.frame.source,
        }
        if self.frame.frame is not None:
            line["frame"] = self.frame.frame
            line["time_s"] = self.frame.time_s
        return json.dumps(line)


@dataclass
class SendSummary:
    frames: int = 0
    requests: int = 0
    queued: int = 0
    no_face: int = 0
    duplicate: int = 0
    rejected: int = 0
    retried: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.queued + self.no_face + self.duplicate

    def add(self, outcome: Outcome) -> None:
        self.frames += 1
        if outcome.status == "queued":
            self.queued += 1
        elif outcome.status == "no_face":
            self.no_face += 1
        elif outcome.status == "duplicate":
            self.duplicate += 1
        else:
            self.rejected += 1
            self.reasons[outcome.error or "error"] += 1

    def line(self) -> str:
        reasons = ", ".join(f"{code} ×{n}" for code, n in self.reasons.most_common())
        return (
            f"sent {self.frames} frames in {self.requests} requests: accepted {self.accepted} "
            f"(queued {self.queued}, no_face {self.no_face}"
            + (f", duplicate {self.duplicate}" if self.duplicate else "")
            + f"), rejected {self.rejected}"
            + (f" ({reasons})" if reasons else "")
            + f", retried {self.retried}"
        )


# --- the sender -------------------------------------------------------------------------------
class Sender:
    """POSTs frames to ``function_url`` from a pool of ``concurrency`` threads.

    Args:
        function_url: the detection Function URL (or the local stack's).
        concurrency: requests in flight at once (also the connection pool size).
        retry: how often and how long to retry 429/5xx/connection errors.
        sign: ``auto`` (SigV4 for ``*.on.aws``), ``always`` or ``never``.
        region: the signing region; default from the URL's host or the AWS config.
        frames_per_request: frames packed into one POST as ``{"frames": [...]}``.
        max_body_bytes: the Function URL's body limit: a frame whose request would be larger is
            sent downscaled (or rejected when it cannot be).
        fields: more request fields sent with every frame (e.g. ``{"album": {...}}``).
        reply: how the frames' results are wanted: ``queue`` (the default: the field is not
            sent) or ``by_id``, kept by request_id only and never posted to the response queue,
            for a client that reads them from the Function URL's ``/results``
            (:func:`facepipe.client.url_results.reply_for` says which).
        timeout: seconds to connect and to wait for the answer, per attempt.
        credentials: botocore credentials to sign with (default: the normal chain).
        sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        function_url: str,
        *,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        sign: SignMode = "auto",
        region: str = "",
        frames_per_request: int = 1,
        max_body_bytes: int = MAX_BODY_BYTES,
        fields: Mapping[str, Any] | None = None,
        reply: Reply = "queue",
        timeout: tuple[float, float] = (10.0, 60.0),
        credentials: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not function_url:
            raise ConfigError(
                "no Function URL: pass --function-url, --local-info or --stack-name "
                "(or set FACEPIPE_FUNCTION_URL)"
            )
        if frames_per_request < 1:
            raise ConfigError("frames per request must be at least 1")
        self.function_url = function_url
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.frames_per_request = frames_per_request
        self.max_body_bytes = max_body_bytes
        # "reply" only when it is not the default: a stack that knows no "reply" takes the rest
        self.fields = {**(fields or {}), **({"reply": reply} if reply != "queue" else {})}
        self.timeout = timeout
        self.signer = signer_for(function_url, sign, region, credentials)
        self.sleep = sleep
        self.summary = SendSummary()
        self._lock = threading.Lock()
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, function_url: str, settings: Settings, **kwargs: Any) -> Sender:
        """A sender with the client settings (concurrency, retries, signing, region, body
        limit)."""
        return cls(
            function_url,
            concurrency=settings.concurrency,
            retry=RetryPolicy(retries=settings.retries),
            sign=settings.sign,
            region=settings.region,
            max_body_bytes=settings.max_body_bytes,
            **kwargs,
        )

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # --- one request ---------------------------------------------------------------------------
    def body(self, frames: Sequence[Frame], sizes: Mapping[str, Size] | None = None) -> bytes:
        """The JSON body for ``frames``; ``sizes``: the original size of downscaled ones."""
        sizes = sizes or {}
        items = [
            {
                "request_id": f.request_id,
                "filename": f.filename,
                "content": base64.b64encode(f.data).decode("ascii"),
                **self.fields,
                **({"original_size": list(sizes[f.request_id])} if f.request_id in sizes else {}),
            }
            for f in frames
        ]
        return json.dumps(items[0] if len(items) == 1 else {"frames": items}).encode()

    def prepare(
        self, frames: Sequence[Frame], sizes: Mapping[str, Size] | None = None
    ) -> requests.PreparedRequest:
        """The POST for ``frames``, signed when this sender signs (freshly dated each call)."""
        body = self.body(frames, sizes)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self.signer is not None:
            headers = self.signer.headers(self.function_url, body, headers)
        return requests.Request("POST", self.function_url, data=body, headers=headers).prepare()

    def room(self, frame: Frame) -> int:
        """The most bytes of image ``frame`` may carry for its request, alone, to fit the body
        limit (with room for the Lambda event around it)."""
        empty = dataclasses.replace(frame, data=b"")
        envelope = len(self.body([empty], {frame.request_id: (MAX_SIDE, MAX_SIDE)}))
        return max(0, (self.max_body_bytes - EVENT_HEADROOM - envelope) // 4 * 3)

    def fit(self, frame: Frame) -> tuple[Frame, Size | None]:
        """``frame``, or when it is too large for a request body of its own, the frame as a
        JPEG downscaled to fit and its original size (see :mod:`facepipe.client.fit`); raises
        :class:`~facepipe.client.fit.FrameTooLarge` when it cannot fit."""
        room = self.room(frame)
        if len(frame.data) <= room:
            return frame, None
        from facepipe.client.fit import fit_image

        data, size, original = fit_image(frame.data, room)
        resized = size != original
        note = (
            f"{frame.request_id} ({frame.filename}): {len(frame.data)} bytes, more than the "
            f"{room} of image one request body holds: sent as a {size[0]}x{size[1]} JPEG of "
            f"{len(data)} bytes"
        )
        if resized:
            note += (
                f", downscaled from {original[0]}x{original[1]} (boxes in the original's pixels)"
            )
        logger.warning(note)
        return dataclasses.replace(frame, data=data), original if resized else None

    def post(self, frames: Sequence[Frame]) -> list[Outcome]:
        """POST ``frames`` (retrying what may be retried) → one outcome per frame, in order. A
        frame too large for a request body is sent downscaled, or rejected without a request
        when it cannot be (error ``frame_too_large``)."""
        from facepipe.client.fit import FrameTooLarge

        outcomes: dict[str, Outcome] = {}
        sendable: list[Frame] = []
        sizes: dict[str, Size] = {}
        for frame in frames:
            try:
                fitted, original = self.fit(frame)
            except FrameTooLarge as exc:
                outcomes[frame.request_id] = Outcome(
                    frame, "rejected", error=exc.code, message=exc.message, attempts=0
                )
                continue
            sendable.append(fitted)
            if original is not None:
                sizes[frame.request_id] = original
        if sendable:
            outcomes.update((o.request_id, o) for o in self._post(sendable, sizes))
        return [dataclasses.replace(outcomes[f.request_id], frame=f) for f in frames]

    def _post(self, frames: Sequence[Frame], sizes: Mapping[str, Size]) -> list[Outcome]:
        sent = send_with_retries(
            self.session,
            lambda: self.prepare(frames, sizes),
            url=self.function_url,
            retry=self.retry,
            timeout=self.timeout,
            sleep=self.sleep,
            on_retry=self._retried,
        )
        response = sent.response
        if response is None:
            text = exception_text(sent.error or Exception("no answer"))
            return _rejected(frames, None, "connection_error", text, sent.attempts)
        if response.ok:
            return _accepted(frames, response, sent.attempts)
        error, message = error_of(response)
        return _rejected(frames, response.status_code, error, message, sent.attempts)

    def _retried(self) -> None:
        with self._lock:
            self.summary.retried += 1

    # --- many --------------------------------------------------------------------------------
    def _batches(self, frames: Iterable[Frame]) -> Iterator[list[Frame]]:
        batch: list[Frame] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.frames_per_request:
                yield batch
                batch = []
        if batch:
            yield batch

    def send_all(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        """Send every frame; yield each frame's outcome as its request completes.

        Frames are read from ``frames`` only as requests free up (at most twice
        ``concurrency`` requests are prepared ahead), so a lazy source stays lazy.
        """
        limit = 2 * self.concurrency
        pending: set[Future[list[Outcome]]] = set()
        batches = self._batches(frames)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="facepipe-send") as pool:
            try:
                exhausted = False
                while pending or not exhausted:
                    while not exhausted and len(pending) < limit:
                        batch = next(batches, None)
                        if batch is None:
                            exhausted = True
                        else:
                            self.summary.requests += 1
                            pending.add(pool.submit(self.post, batch))
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        for outcome in future.result():
                            self.summary.add(outcome)
                            yield outcome
            finally:
                for future in pending:
                    future.cancel()


def exception_text(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def error_of(response: requests.Response) -> tuple[str, str]:
    """The server's ``error`` and ``message`` (or the start of a non-JSON body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error" in body or "message" in body):
        return str(body.get("error") or f"http_{response.status_code}"), str(
            body.get("message", "")
        )
    return f"http_{response.status_code}", response.text.strip()[:300] or response.reason or ""


def _rejected(
    frames: Sequence[Frame], status: int | None, error: str, message: str, attempts: int
) -> list[Outcome]:
    return [
        Outcome(f, "rejected", http_status=status, error=error, message=message, attempts=attempts)
        for f in frames
    ]


def _accepted(frames: Sequence[Frame], response: requests.Response, attempts: int) -> list[Outcome]:
    """One outcome per frame from the 202 answer ``{"frames": [{request_id, status, faces}]}``."""
    try:
        answer = response.json()
        entries = {e["request_id"]: e for e in answer.get("frames", [])}
    except (ValueError, AttributeError, KeyError, TypeError):
        entries = {}
    outcomes = []
    for frame in frames:
        entry = entries.get(frame.request_id)
        if entry is None or entry.get("status") not in ("queued", "no_face", "duplicate"):
            outcomes.append(
                Outcome(
                    frame,
                    "rejected",
                    http_status=response.status_code,
                    error="invalid_response",
                    message="the answer does not list this frame as queued, no_face or duplicate",
                    attempts=attempts,
                )
            )
        else:
            faces = entry.get("faces")
            outcomes.append(
                Outcome(
                    frame,
                    entry["status"],
                    faces=faces if isinstance(faces, int) else None,
                    http_status=response.status_code,
                    attempts=attempts,
                )
            )
    return outcomes
