"""Run a function the way its container does: ``python -m awslambdaric app.handler`` under the
Lambda Runtime Interface Emulator (RIE) that aws-sam-cli ships, without Docker.

The command is the image's ``ENTRYPOINT ["python", "-m", "awslambdaric"]`` + ``CMD
["app.handler"]`` (or the template's ``ImageConfig.Command``, e.g. S3 ingress's
``ingest_app.handler``), run from the function's folder. Both RIE addresses are bound to
127.0.0.1 on free ports (without them the RIE listens on 0.0.0.0:8080). As in Lambda, the first
invoke runs the init (imports, model load) and the next ones reuse it.

Example:
    >>> with LocalAws() as aws, RieFunction(  # doctest: +SKIP
    ...     aws.function_dir("DetectionFunction"), aws.function_env("DetectionFunction")
    ... ) as fn:
    ...     fn.invoke(json.loads(Path("events/detection-single.json").read_text()))["statusCode"]
    202
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facepipe.errors import FacepipeError
from facepipe.lifecycle import Service

RIE_RELATIVE = Path("local") / "rapid" / "aws-lambda-rie-x86_64"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
DEFAULT_FUNCTION_TIMEOUT_S = 120  # local init (torch import, model load) is slower than Lambda's

_REPORT = re.compile(r"^REPORT RequestId: (?P<id>\S+)(?P<rest>.*)$", re.MULTILINE)
_INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: (?P<ms>[0-9.]+)\)")
_FIELD = re.compile(r"(?P<name>[A-Za-z ]+?): (?P<value>[0-9.]+) (?:ms|MB)")


class RieError(FacepipeError):
    """The emulator could not be started or did not answer."""

    code = "rie_error"


def rie_binary() -> Path:
    """The ``aws-lambda-rie-x86_64`` binary inside the installed aws-sam-cli package."""
    spec = importlib.util.find_spec("samcli")
    if spec is None or not spec.submodule_search_locations:
        raise RieError(
            "aws-sam-cli is not installed, so there is no Lambda RIE to run the function under: "
            "`pip install aws-sam-cli` (make install does)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / RIE_RELATIVE
        if candidate.is_file():
            return candidate
    raise RieError(
        f"the installed aws-sam-cli has no {RIE_RELATIVE} (looked in "
        f"{', '.join(spec.submodule_search_locations)}); reinstall aws-sam-cli"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def function_error(payload: Any) -> str | None:
    """``"<errorType>: <errorMessage>"`` when ``payload`` is Lambda's unhandled-error answer."""
    if isinstance(payload, dict) and "errorType" in payload and "errorMessage" in payload:
        return f"{payload['errorType']}: {payload['errorMessage']}"
    return None


@dataclass(frozen=True)
class Report:
    """Durations of the last invocation, from the RIE's log (milliseconds)."""

    request_id: str
    duration_ms: float | None
    init_duration_ms: float | None


class RieFunction(Service):
    """One function process under the RIE, for as long as the ``with`` block lasts.

    Args:
        function_dir: the folder holding the handler's module (``functions/detection``, its
            ``app.py`` or ``ingest_app.py``); the cwd.
        env: the function's environment (e.g. :meth:`LocalAws.function_env`); it is added to
            ``base_env`` (default: this process's environment) minus every ``AWS_*`` variable,
            so no real credentials or region leak into the function.
        handler: ``module.function``: the image's CMD or the function's ImageConfig Command.
        base_env: the environment to start from, e.g. without the caller's ``FACEPIPE_*``.
        timeout_s: ``AWS_LAMBDA_FUNCTION_TIMEOUT`` unless ``env`` sets it.
    """

    def __init__(
        self,
        function_dir: str | Path,
        env: Mapping[str, str],
        handler: str = "app.handler",
        *,
        timeout_s: int = DEFAULT_FUNCTION_TIMEOUT_S,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.function_dir = Path(function_dir).resolve()
        if not (self.function_dir / (handler.rsplit(".", 1)[0] + ".py")).is_file():
            raise RieError(f"{self.function_dir} has no module for the handler {handler}")
        self.handler = handler
        base = os.environ if base_env is None else base_env
        self.env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        self.env.update(
            AWS_LAMBDA_FUNCTION_TIMEOUT=str(timeout_s),
            LAMBDA_TASK_ROOT=str(self.function_dir),
            PYTHONUNBUFFERED="1",
        )
        self.env.update(env)
        self.port = 0
        self.url = ""
        self.log_path: Path | None = None
        self._tmp: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def command(self, api_port: int) -> list[str]:
        return [
            str(rie_binary()),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{api_port}",
            sys.executable,
            "-m",
            "awslambdaric",
            self.handler,
        ]

    def start(self, ready_timeout: float = 15.0) -> None:
        self._tmp = tempfile.mkdtemp(prefix="facepipe-rie-")
        self.port = free_port()
        command = self.command(free_port())
        self.url = f"http://127.0.0.1:{self.port}{INVOKE_PATH}"
        self._launch(command, ready_timeout)

    def _launch_env(self) -> Mapping[str, str]:
        """The environment of the process :meth:`start` launches (the RIE's own)."""
        return self.env

    def _launch_cwd(self) -> Path | None:
        return self.function_dir

    def _launch(self, command: list[str], ready_timeout: float) -> None:
        """Start ``command`` (the RIE, or the container holding it) with its output in the log,
        and wait until the RIE listens on 127.0.0.1:``port``."""
        assert self._tmp is not None  # made by start()
        self.log_path = Path(self._tmp) / "rie.log"
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self._launch_cwd(),
                env=dict(self._launch_env()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends RIE and runtime
            )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self._process.poll() is not None:
                log_text = self.log_text()
                code = self._process.returncode
                self.stop()
                raise RieError(f"the RIE exited at start ({code}):\n{log_text[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RieError(f"the RIE did not listen on 127.0.0.1:{self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def invoke(self, event: Any, timeout: float = 180.0) -> Any:
        """POST ``event`` to the RIE; returns the function's decoded JSON answer.

        An unhandled error comes back as Lambda's ``{"errorType", "errorMessage", ...}``
        (see :func:`function_error`); a failed init too (the RIE answers it with HTTP 502).
        ``timeout`` covers the init on the first call.
        """
        if self._process is None:
            raise RieError("the function is not running: use it inside `with RieFunction(...)`")
        request = urllib.request.Request(
            self.url,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
        except (urllib.error.URLError, TimeoutError) as exc:
            raise RieError(f"invoke failed ({exc}); function log:\n{self.log_text()}") from exc
        try:
            return json.loads(raw)
        except ValueError:
            raise RieError(
                f"the function answered non-JSON {raw[:200]!r}; function log:\n{self.log_text()}"
            ) from None

    def runtime_pid(self) -> int | None:
        """The function's runtime process (``python -m awslambdaric``, the RIE's child), as
        Linux's /proc shows it; None when it is not running (or off Linux)."""
        if self._process is None:
            return None
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                runtime = b"awslambdaric" in (proc / "cmdline").read_bytes().split(b"\0")
                if parent == self._process.pid and runtime:
                    return int(proc.name)
            except (OSError, ValueError, IndexError):
                continue
        return None

    def peak_rss_mb(self) -> float | None:
        """The runtime process's peak resident memory (VmHWM) in MiB, None when unknown."""
        pid = self.runtime_pid()
        if pid is None:
            return None
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def log_text(self) -> str:
        """Everything the RIE and the function printed so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def reports(self) -> int:
        """How many ``REPORT`` lines the log holds (one per finished invocation)."""
        return len(_REPORT.findall(self.log_text()))

    def report_after(self, seen: int, wait_s: float = 5.0) -> Report | None:
        """The report of the invocation after the first ``seen`` ones: the RIE writes the
        ``REPORT`` line just after it answers, so it is waited for (at most ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while self.reports() <= seen and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.last_report() if self.reports() > seen else None

    def last_report(self) -> Report | None:
        """The last ``REPORT`` line's duration, and the init duration when that invoke ran it."""
        text = self.log_text()
        reports = list(_REPORT.finditer(text))
        if not reports:
            return None
        last = reports[-1]
        fields = {m["name"].strip(): float(m["value"]) for m in _FIELD.finditer(last["rest"])}
        # The RIE's own "INIT REPORT(durationMs: …)" is the real init time (its REPORT line's
        # "Init Duration" is not); it belongs to this invoke when it comes after the previous one.
        previous_end = reports[-2].end() if len(reports) > 1 else 0
        inits = list(_INIT_REPORT.finditer(text, previous_end, last.start()))
        init_ms = float(inits[0]["ms"]) if inits else None
        return Report(last["id"], fields.get("Duration"), init_ms)
