"""Taking this client's results from the Function URL by request_id: nobody else's in sight.

A stack whose detection function answers ``/results`` (:mod:`facepipe.aws.function_url`) keeps
every final result in its result ledger, and posts it to the response queue as well unless its
request said ``"reply": "by_id"``. :class:`UrlResultPoller` asks for the request_ids it waits
for, up to 100 per ``POST /results``, and gets exactly their states and results, in as many
requests as its pacing makes, however many other clients the stack has. It never receives from
the response queue, so a client that reads here sends its frames with ``"reply": "by_id"``
(:func:`reply_for`): else their queue copies would wait there unread for the queue's retention
(4 days), in the way of every client that does take results off the queue. Its
:meth:`~UrlResultPoller.poll` and :class:`~facepipe.client.results.PollReport` are the queue
poller's, so callers take either; :func:`result_poller` picks one (``FACEPIPE_RESULTS_VIA``:
``auto``, ``url`` or ``queue``).

Pacing: the first ask goes at once (``no_face`` and ``duplicate`` frames are done when their
POST is answered); while results arrive, the next ask waits for about :data:`RESULTS_PER_ASK`
more (the mean time between results so far); after an ask that brought none, twice as long as
before; always between the bounds of :data:`WAIT`, and never past the deadline, where one last
ask is made. A ``deferred`` result (it did not fit in the answer) is asked for again at once.

A request that fails with 429, a 5xx or a connection error is retried as the sender retries
(:class:`~facepipe.client.http.RetryPolicy`); one that still fails, or any other answer,
ends the poll with :class:`ResultsUnavailable`. Requests are SigV4-signed as the POSTs are.

Example:
    >>> poller = UrlResultPoller("http://127.0.0.1:9000/")  # doctest: +SKIP
    >>> report = poller.poll(["demo.alice", "demo.bob"], timeout=60)  # doctest: +SKIP
    >>> report.missing, report.receives  # doctest: +SKIP
    ([], 2)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests
from pydantic import ValidationError

from facepipe.client.http import (
    USER_AGENT,
    RetryPolicy,
    SignMode,
    error_of,
    exception_text,
    send_with_retries,
    signer_for,
)
from facepipe.client.results import PollReport, Received, ResultPoller, whole_result
from facepipe.client.stack import Endpoints
from facepipe.config import Settings
from facepipe.errors import ConfigError, FacepipeError
from facepipe.messages import MAX_RESULT_IDS, Reply, ResultState

WAIT = (0.25, 5.0)  # seconds between asks: least, most
RESULTS_PER_ASK = 2  # while results arrive, an ask waits for about this many more
logger = logging.getLogger(__name__)


class ResultsUnavailable(FacepipeError):
    """The Function URL's ``/results`` cannot be read: an answer other than 200, or a request
    that kept failing."""

    code = "results_unavailable"


class UrlResultPoller:
    """Reads this client's results from ``function_url`` + ``results`` (see the module doc).

    Args:
        function_url: the detection Function URL (or the local stack's).
        sign / region / credentials: SigV4 signing, as :class:`~facepipe.client.http.Sender`.
        retry: how often and how long to retry 429/5xx/connection errors.
        timeout: seconds to connect and to wait for each answer.
        fetch: reads an ``s3://`` URI: a claim-checked result names its whole copy
            (``payload_uri``), read back with it (without ``fetch`` the short form is the
            result).
        queue: the response queue's poller, for results the stack did not keep (``on_queue``:
            completed before it kept them); without one they are missing.
        clock / sleep: time sources (tests may pass their own).
    """

    def __init__(
        self,
        function_url: str,
        *,
        sign: SignMode = "auto",
        region: str = "",
        credentials: Any = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 30.0),
        fetch: Callable[[str], bytes] | None = None,
        queue: ResultPoller | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.function_url = function_url
        self.url = function_url.rstrip("/") + "/results"
        self.signer = signer_for(function_url, sign, region, credentials)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.fetch = fetch
        self.queue = queue
        self.clock = clock
        self.sleep = sleep
        self.session = requests.Session()
        self.takes_by_id = False  # the stack keeps "reply": "by_id" results (see offered())

    @classmethod
    def from_settings(cls, function_url: str, settings: Settings, **kwargs: Any) -> UrlResultPoller:
        """A poller with the client settings (retries, signing, region)."""
        kwargs.setdefault("region", settings.region)
        return cls(
            function_url, sign=settings.sign, retry=RetryPolicy(retries=settings.retries), **kwargs
        )

    # --- requests -------------------------------------------------------------------------------
    def _send(self, method: str, url: str, payload: Any = None) -> requests.Response | str:
        """One request (retried as :attr:`retry` says) → the response, or why there is none."""
        body = b"" if payload is None else json.dumps(payload).encode()

        def prepare() -> requests.PreparedRequest:
            headers = {"User-Agent": USER_AGENT}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            if self.signer is not None:
                headers = self.signer.headers(url, body, headers, method)
            return requests.Request(method, url, data=body or None, headers=headers).prepare()

        sent = send_with_retries(
            self.session,
            prepare,
            url=self.function_url,
            retry=self.retry,
            timeout=self.timeout,
            sleep=self.sleep,
        )
        if sent.response is None:
            return exception_text(sent.error or Exception("no answer"))
        return sent.response

    def offered(self) -> str | None:
        """``None`` when the stack answers ``GET /results`` (it offers results by request_id),
        else why not: an older stack answers 405, as to any GET. Sets :attr:`takes_by_id` when
        the answer lists ``by_id`` among the ``reply`` a POSTed frame may say."""
        answer = self._send("GET", self.url)
        if isinstance(answer, str):
            return answer
        try:
            about = answer.json() if answer.status_code == 200 else None
        except ValueError:
            about = None
        if isinstance(about, dict) and "max_ids" in about:
            replies = about.get("reply")
            self.takes_by_id = isinstance(replies, list) and "by_id" in replies
            return None
        error, message = error_of(answer)
        return f"GET {self.url} answered HTTP {answer.status_code} {error}: {message}"

    def ask(self, request_ids: list[str]) -> list[ResultState]:
        """The states of ``request_ids`` (at most :data:`~facepipe.messages.MAX_RESULT_IDS`)."""
        answer = self._send("POST", self.url, {"request_ids": request_ids})
        if isinstance(answer, str):
            raise ResultsUnavailable(f"cannot read results from {self.url}: {answer}")
        if answer.status_code != 200:
            error, message = error_of(answer)
            raise ResultsUnavailable(
                f"cannot read results from {self.url}: HTTP {answer.status_code} {error}: {message}"
            )
        try:
            return [ResultState.model_validate(s) for s in answer.json()["results"]]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ResultsUnavailable(f"{self.url} answered something else: {exc}") from exc

    def received(self, request_id: str, result: dict[str, Any] | None) -> Received:
        """A done state's result as :class:`Received`: read from S3 when it names its copy; one
        that is not a result becomes an ``error`` result, as on the queue."""
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        return whole_result(request_id, body, self.fetch)

    # --- polling --------------------------------------------------------------------------------
    def poll(
        self,
        wanted: Iterable[str],
        *,
        timeout: float,
        on_result: Callable[[Received], None] | None = None,
    ) -> PollReport:
        """Ask until every id in ``wanted`` has a result or ``timeout`` seconds pass.

        ``on_result`` is called with each new result as it arrives (completion order).
        """
        order = list(dict.fromkeys(wanted))
        waiting = list(order)
        report = PollReport(via="url")
        on_queue: list[str] = []
        start = self.clock()
        deadline = start + timeout
        wait = 0.0
        while waiting:
            got, again = self._round(waiting, report, on_queue, on_result)
            waiting = [r for r in waiting if r not in report.results and r not in on_queue]
            remaining = deadline - self.clock()
            if not waiting or remaining <= 0:
                break
            if again:
                continue
            if got:  # about when RESULTS_PER_ASK more are due, at the pace they came so far
                wait = (self.clock() - start) / len(report.results) * RESULTS_PER_ASK
            else:
                wait = wait * 2
            wait = min(WAIT[1], max(WAIT[0], wait))
            self.sleep(min(wait, remaining))
        if on_queue:
            self._from_queue(on_queue, deadline, report, on_result)
        report.missing = [r for r in order if r not in report.results]
        return report

    def _round(
        self,
        waiting: list[str],
        report: PollReport,
        on_queue: list[str],
        on_result: Callable[[Received], None] | None,
    ) -> tuple[int, bool]:
        """Ask for every id in ``waiting`` once → (results got, whether one was deferred)."""
        got, again = 0, False
        for start in range(0, len(waiting), MAX_RESULT_IDS):
            report.receives += 1
            for state in self.ask(waiting[start : start + MAX_RESULT_IDS]):
                if state.request_id in report.results:
                    continue
                if state.state == "done":
                    received = self.received(state.request_id, state.result)
                    report.results[state.request_id] = received
                    got += 1
                    if on_result is not None:
                        on_result(received)
                elif state.state == "on_queue":
                    on_queue.append(state.request_id)
                elif state.state == "deferred":
                    again = True
        return got, again

    def _from_queue(
        self,
        request_ids: list[str],
        deadline: float,
        report: PollReport,
        on_result: Callable[[Received], None] | None,
    ) -> None:
        """The results the stack did not keep, from the response queue (with the time left)."""
        remaining = deadline - self.clock()
        if self.queue is None or remaining <= 0:
            logger.warning(
                "%d results are only on the response queue (posted before the stack kept "
                "them): poll them with --results-via queue",
                len(request_ids),
            )
            return
        got = self.queue.poll(request_ids, timeout=remaining, on_result=on_result)
        report.results.update(got.results)
        report.duplicates += got.duplicates
        report.released += got.released
        report.receives += got.receives


def result_poller(endpoints: Endpoints, settings: Settings) -> ResultPoller | UrlResultPoller:
    """The poller ``settings.results_via`` says: ``url`` (the Function URL's ``/results``),
    ``queue`` (the response queue), or ``auto``: the Function URL when the stack offers results
    by request_id (``GET /results``), else the response queue."""
    via = settings.results_via

    def queue() -> ResultPoller:
        endpoints.require("response_queue_url")
        return ResultPoller(
            endpoints.sqs(), endpoints.response_queue_url, fetch=endpoints.fetch_result
        )

    if via == "queue" or (via == "auto" and not endpoints.function_url):
        return queue()
    endpoints.require("function_url")
    poller = UrlResultPoller.from_settings(
        endpoints.function_url,
        settings,
        region=endpoints.region,
        fetch=endpoints.fetch_result,
        queue=queue() if endpoints.response_queue_url else None,
    )
    why_not = poller.offered()
    if why_not is None:
        return poller
    if via == "url" or poller.queue is None:
        raise ConfigError(
            f"the stack does not offer results by request_id ({why_not}): deploy the current "
            "template, or take results from the response queue (--results-via queue)"
        )
    logger.warning(
        "the stack does not offer results by request_id (%s): polling the response queue",
        why_not,
    )
    return poller.queue


def reply_for(poller: ResultPoller | UrlResultPoller) -> Reply:
    """How to ask for the results ``poller`` will read: ``by_id`` (kept by request_id only,
    nothing left on the response queue) when it reads them from a Function URL that takes it,
    else ``queue``, the default (a queue poller takes them from there)."""
    if isinstance(poller, UrlResultPoller) and poller.takes_by_id:
        return "by_id"
    return "queue"
