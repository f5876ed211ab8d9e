"""How the local stack runs a function: in this process, or its real entrypoint under the RIE.

Both invokers take an event and return what Lambda's Invoke API would: the handler's JSON answer,
or Lambda's error shape ``{"errorMessage", "errorType", ...}`` when the handler (or its init)
raised (:func:`facepipe.local.rie.function_error` tells the two apart). Neither ever raises for a
function's failure, so a bad request or a poisoned record cannot take the stack down.

* :class:`InProcessInvoker` imports ``functions/<name>/app.py`` (or the module the function's
  ImageConfig Command names, e.g. ``ingest_app.py``) into this process, with the
  function's environment in ``os.environ`` while the module is imported (its init code reads
  it there, as in Lambda), and its own copy of :mod:`facepipe.aws.powertools` (so its logs carry
  its own service name). This process *is* the stack: both functions share one interpreter, one
  ``os.environ`` and Powertools' process-wide state (the metric set, the cold-start flag), so
  the stack gives all its in-process invokers one lock and runs one invocation at a time. Fast
  to start and easy to debug.
* :class:`RieInvoker` runs the function's ``python -m awslambdaric app.handler`` (the image's
  ENTRYPOINT + CMD) under the Lambda Runtime Interface Emulator, one process per function
  (:class:`~facepipe.local.rie.RieFunction`): the real entrypoint and real isolation.

As in Lambda, one execution environment handles one request at a time: each invoker serializes
its invocations with a lock (a second concurrent request waits for the first).

Example:
    >>> with LocalAws() as aws:  # doctest: +SKIP
    ...     fn = InProcessInvoker(aws.function_dir("DetectionFunction"),
    ...                           aws.function_env("DetectionFunction"))
    ...     fn.start()
    ...     fn.invoke(function_url_event("{}", method="GET"))["statusCode"]
    405
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from facepipe.local.emulator import REGION
from facepipe.local.rie import DEFAULT_FUNCTION_TIMEOUT_S, RieError, RieFunction

_log = logging.getLogger(__name__)
# Variables a function must not inherit from the process that runs the stack: the caller's own
# facepipe settings (the stack passes the ones that apply) and real AWS configuration.
_NOT_INHERITED = ("FACEPIPE_", "AWS_")
_ENVIRON_LOCK = threading.Lock()  # os.environ is process-wide: one import at a time changes it
# Modules that read the environment when imported (Powertools' service name, metrics namespace
# and log level): each in-process function imports its own copy under its own environment, as in
# its own execution environment, and the process's copy (if any) is put back afterwards.
# facepipe.aws.function_url logs through facepipe.aws.powertools's logger, so it is one of them.
_PER_FUNCTION_MODULES = ("facepipe.aws.powertools", "facepipe.aws.function_url")


class Invoker(Protocol):
    """Runs one function: ``invoke(event)`` → the handler's answer or Lambda's error shape."""

    name: str

    def start(self) -> None:
        """Make the function ready (in-process: its init; RIE: its process)."""

    def invoke(self, event: dict[str, Any]) -> Any:
        """The function's JSON answer (a dict for facepipe's handlers), never an exception."""

    def stop(self) -> None:
        """Release what :meth:`start` took (idempotent)."""


def error_payload(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    """Lambda's answer for an unhandled exception (what the runtime returns to the Invoke API)."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


@dataclass
class LocalContext:
    """The Lambda context object handlers receive (the fields Powertools reads)."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@contextlib.contextmanager
def _function_environ(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` as the function sees it (``env``, none of the caller's ``FACEPIPE_*`` or
    ``AWS_*``) for the duration; then as it was. Only the differing keys change, so the other
    threads of this process (the moto server) never see an empty environment."""
    with _ENVIRON_LOCK:
        saved = dict(os.environ)
        wanted = {k: v for k, v in saved.items() if not k.startswith(_NOT_INHERITED)}
        wanted.update(env)
        _set_environ(wanted)
        try:
            yield
        finally:
            _set_environ(saved)


@contextlib.contextmanager
def _own_copies(names: tuple[str, ...]) -> Iterator[None]:
    """Imports of ``names`` inside the block make new modules; outside, nothing changes."""
    saved = {name: sys.modules.pop(name, None) for name in names}
    try:
        yield
    finally:
        for name, previous in saved.items():
            sys.modules.pop(name, None)
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name)
            if previous is not None:
                sys.modules[name] = previous
                if parent is not None:
                    setattr(parent, child, previous)
            elif parent is not None and hasattr(parent, child):
                delattr(parent, child)


def _set_environ(wanted: Mapping[str, str]) -> None:
    for key in [k for k in os.environ if k not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class InProcessInvoker:
    """A function's handler imported into this process.

    Args:
        function_dir: the folder holding the handler module (``functions/detection``).
        env: the function's environment (:meth:`LocalAws.function_env` plus settings); it is
            what ``os.environ`` holds, minus the caller's ``FACEPIPE_*``/``AWS_*``, while the
            module is imported. Afterwards ``os.environ`` is restored: what the init read
            (settings, boto3 clients, models) stays with the module.
        handler: ``module.function``: the image's CMD or the function's ImageConfig Command.
        timeout_s: the context's remaining time starts from this (not enforced in-process).
        lock: shared by the stack's in-process invokers (see the module docstring); default
            one of its own.
    """

    def __init__(
        self,
        function_dir: str | Path,
        env: Mapping[str, str],
        handler: str = "app.handler",
        *,
        name: str | None = None,
        timeout_s: float = 60.0,
        lock: threading.Lock | None = None,
    ) -> None:
        self.function_dir = Path(function_dir).resolve()
        self.env = dict(env)
        self.handler_name = handler
        self.name = name or self.env.get("AWS_LAMBDA_FUNCTION_NAME", self.function_dir.name)
        self.timeout_s = timeout_s
        self.lock = lock or threading.Lock()
        self.module: ModuleType | None = None
        self._handler: Any = None

    def start(self) -> None:
        """Import the handler module: the function's init (models, clients, gallery).

        Raises what the init raises (e.g. :class:`~facepipe.errors.WeightsUnavailable`): unlike
        Lambda, the local stack runs the init at start-up, so that a missing model says so
        before the first request.
        """
        if self.module is not None:
            return
        module_name, _, attribute = self.handler_name.rpartition(".")
        path = self.function_dir / (module_name.replace(".", "/") + ".py")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (handler {self.handler_name})")
        spec = importlib.util.spec_from_file_location(
            f"facepipe_local_{self.function_dir.name}_{uuid.uuid4().hex}", path
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        with self.lock, _function_environ(self.env), _own_copies(_PER_FUNCTION_MODULES):
            spec.loader.exec_module(module)
        self.module = module
        self._handler = getattr(module, attribute)

    def invoke(self, event: dict[str, Any]) -> Any:
        if self._handler is None:
            return error_payload(RuntimeError(f"{self.name} is not started"))
        memory = int(self.env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        with self.lock:
            context = LocalContext(self.name, memory, self.timeout_s)
            try:
                return self._handler(event, context)
            except Exception as exc:
                _log.error("%s failed: %s: %s", self.name, type(exc).__name__, exc, exc_info=True)
                return error_payload(exc, context.aws_request_id)

    def stop(self) -> None:
        """Drop the module (its models are freed with it)."""
        self.module = None
        self._handler = None


class RieInvoker:
    """A function's real entrypoint, ``python -m awslambdaric app.handler``, under the RIE:
    from this checkout (:meth:`for_dir`) or in its container image
    (:class:`facepipe.local.docker.ImageFunction`).

    Args:
        function: the :class:`~facepipe.local.rie.RieFunction` (or image) to run.
        name: the function's name in logs.
        invoke_timeout_s: how long one invocation (the first one includes the init) may take
            before it counts as failed.
        echo_log: copy the function's log (its INIT/REPORT lines and Powertools JSON) to
            stderr, each line prefixed with the function's name.
    """

    def __init__(
        self,
        function: RieFunction,
        name: str,
        *,
        invoke_timeout_s: float = 300.0,
        echo_log: bool = False,
    ) -> None:
        self.function = function
        self.name = name
        self.invoke_timeout_s = invoke_timeout_s
        self.echo_log = echo_log
        self.lock = threading.Lock()
        self._echo_stop = threading.Event()
        self._echo: threading.Thread | None = None

    @classmethod
    def for_dir(
        cls,
        function_dir: str | Path,
        env: Mapping[str, str],
        handler: str = "app.handler",
        *,
        name: str | None = None,
        timeout_s: int = DEFAULT_FUNCTION_TIMEOUT_S,
        invoke_timeout_s: float = 300.0,
        echo_log: bool = False,
    ) -> RieInvoker:
        """The function of ``function_dir`` run from this checkout under the RIE."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        function = RieFunction(function_dir, env, handler, timeout_s=timeout_s, base_env=base)
        return cls(
            function,
            name or env.get("AWS_LAMBDA_FUNCTION_NAME", Path(function_dir).name),
            invoke_timeout_s=invoke_timeout_s,
            echo_log=echo_log,
        )

    def start(self) -> None:
        """Start the RIE and the runtime; the function's init runs on the first invoke."""
        self.function.start()
        if self.echo_log:
            self._echo_stop.clear()
            self._echo = threading.Thread(
                target=self._follow_log, name=f"{self.name}-log", daemon=True
            )
            self._echo.start()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self.lock:
            try:
                return self.function.invoke(event, timeout=self.invoke_timeout_s)
            except RieError as exc:
                _log.error("%s: %s", self.name, exc.message.splitlines()[0])
                return error_payload(exc)

    def stop(self) -> None:
        self.function.stop()
        self._echo_stop.set()
        if self._echo is not None:
            self._echo.join(timeout=2)
            self._echo = None

    def _follow_log(self) -> None:
        path = self.function.log_path
        offset = 0
        while path is not None and not self._echo_stop.wait(0.2):
            try:
                with path.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
            except OSError:
                return  # the log went away with the process
            complete = chunk.rfind(b"\n") + 1
            if complete:
                offset += complete
                for line in chunk[:complete].decode(errors="replace").splitlines():
                    print(f"[{self.name}] {line}", file=sys.stderr, flush=True)
