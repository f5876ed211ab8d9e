"""The functions' real container images, built and run on this machine.

* :class:`DockerDaemon`: the Docker that ``DOCKER_HOST`` names, else a **private dockerd** of
  facepipe's own (its own data root, exec root and socket; no bridge, no iptables: containers
  run with ``--network host`` only, so only loopback carries their traffic), started when needed
  and stopped by whoever started it. Its data root (``FACEPIPE_DOCKER_ROOT``, default
  ``~/.cache/facepipe/docker``) keeps the built images between runs.
* :func:`stand_in_base`: where no registry can be reached (``python:3.x-slim`` cannot be pulled),
  a base image made from Debian's own packages (``debootstrap --variant=minbase bookworm`` with
  python3 and pip, the host's CA bundle, ``docker import``).
* :class:`TorchWheels`: the CPU torch wheel from local disk, served as a package index on
  127.0.0.1 for a build (``TORCH_INDEX_URL``), where PyTorch's own index cannot be reached.
* :func:`build_image`: ``docker build`` of a function's Dockerfile with the repository as the
  context, as ``sam build`` does; what differs here is build arguments only.
* :class:`ImageFunction`: a function's image under the Lambda RIE that aws-sam-cli bundles,
  mounted as ``sam local invoke`` mounts it, the image's own ENTRYPOINT/CMD after it
  (``python -m awslambdaric <handler>``), with the function's environment and memory limit.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facepipe.errors import ConfigError
from facepipe.lifecycle import Service
from facepipe.local.rie import RieError, RieFunction, rie_binary

_log = logging.getLogger(__name__)


class DockerUnavailable(ConfigError):
    """No Docker can be had on this machine (none answers, dockerd missing or cannot start)."""

    code = "docker_unavailable"


STAND_IN_BASE = "facepipe/stand-in-python:3.11"  # Debian bookworm's python3 is 3.11
IMAGE_TAG = "local"
RIE_IN_IMAGE = "/aws-lambda-rie"  # where the RIE binary is mounted, as sam local invoke does
TORCH_WHEEL_DIRS = ("/opt/wheels",)  # where this workplace keeps the CPU torch wheel


def default_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facepipe" / "docker"


def image_name(function_dir: Path) -> str:
    """``functions/detection`` → ``facepipe-detection:local``: one image per Dockerfile."""
    return f"facepipe-{function_dir.name}:{IMAGE_TAG}"


# --- the daemon -------------------------------------------------------------------------------
class DockerDaemon(Service):
    """A Docker daemon to talk to: ``DOCKER_HOST`` when it answers, else a private dockerd.

    Args:
        root: the private daemon's data root (images, containers) and socket folder.
        host: a daemon to use (default ``DOCKER_HOST``); the private one is started only
            when neither it nor an already running private daemon answers.

    After :meth:`start`, :attr:`host` is the ``unix://`` socket to pass as ``DOCKER_HOST``;
    :attr:`started` says whether this object started it (and so stops it in :meth:`stop`).
    """

    def __init__(self, root: str | Path | None = None, host: str | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_root()
        self.requested = host if host is not None else os.environ.get("DOCKER_HOST", "")
        self.host = ""
        self.started = False
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def private_host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def env(self) -> dict[str, str]:
        """The environment for ``docker`` commands against this daemon."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def answers(self, host: str) -> bool:
        if not host or shutil.which("docker") is None:
            return False
        env = {**os.environ, "DOCKER_HOST": host}
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            env=env,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def running(self) -> bool:
        """Whether a daemon answers already (``DOCKER_HOST``'s or the private one)."""
        return self.answers(self.requested) or self.answers(self.private_host)

    def start(self, ready_timeout: float = 60.0) -> None:
        for host in (self.requested, self.private_host):
            if self.answers(host):
                self.host = host
                return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable(
                "no Docker: DOCKER_HOST does not answer and dockerd is not installed "
                "(Debian: apt-get install docker.io; make image-check installs it as root)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "dockerd.log").open("ab")
        self._process = subprocess.Popen(
            self.dockerd_command(dockerd),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = True
        deadline = time.monotonic() + ready_timeout
        while not self.answers(self.private_host):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise DockerUnavailable(f"the private dockerd did not start:\n{tail}")
            time.sleep(0.5)
        self.host = self.private_host
        _log.info("private dockerd on %s (data root %s)", self.host, self.root)

    def dockerd_command(self, dockerd: str = "dockerd") -> list[str]:
        """The private daemon: no bridge and no iptables rules (containers can only have the
        host's network, and use it with --network host: loopback here), its own data root,
        exec root (its containerd) and unix socket."""
        return [
            dockerd,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--host={self.private_host}",
            f"--pidfile={self.root / 'docker.pid'}",
        ]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.started = False

    def docker(
        self, *args: str, check: bool = True, capture: bool = True, timeout: float = 3600
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this daemon."""
        done = subprocess.run(
            ["docker", *args],
            env=self.env(),
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip()[-3000:]
            raise ConfigError(f"docker {' '.join(args[:3])} failed ({done.returncode}): {detail}")
        return done

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def image_facts(self, name: str) -> dict[str, Any]:
        """Size (bytes) and labels of a built image."""
        raw = self.docker("image", "inspect", name).stdout
        (info,) = json.loads(raw)
        return {"size": int(info["Size"]), "labels": info["Config"].get("Labels") or {}}


# --- a base image without a registry ----------------------------------------------------------
STAND_IN_DOCKERFILE = """\
FROM facepipe/debian-bookworm-minbase
RUN ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip
# Debian marks its python3 as externally managed; an image's python is the image's own.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 LANG=C.UTF-8
LABEL org.facepipe.stand-in="debootstrap --variant=minbase bookworm: no registry was reachable"
"""


def stand_in_base(daemon: DockerDaemon, *, rebuild: bool = False) -> str:
    """The stand-in for ``python:3.11-slim``: Debian bookworm (minbase) with python3, pip and the
    host's CA bundle (so pip trusts the package proxy). Built once per data root."""
    if not rebuild and daemon.has_image(STAND_IN_BASE):
        return STAND_IN_BASE
    if shutil.which("debootstrap") is None:
        raise DockerUnavailable(
            "debootstrap is not installed (Debian: apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix="facepipe-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(rootfs),
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.is_file():
            shutil.copyfile(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", "facepipe/debian-bookworm-minbase"],
            stdin=tar.stdout,
            env=daemon.env(),
            capture_output=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0:
            raise ConfigError(f"docker import failed: {imported.stderr.decode()[-2000:]}")
        context = Path(tmp) / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(STAND_IN_DOCKERFILE)
        daemon.docker("build", "--network", "host", "-q", "-t", STAND_IN_BASE, str(context))
    return STAND_IN_BASE


# --- torch from local disk --------------------------------------------------------------------
def local_torch_wheel(python_tag: str = "cp311") -> Path | None:
    """A CPU torch wheel for ``python_tag`` on this machine's disk (the newest), if any."""
    found = [
        path
        for folder in TORCH_WHEEL_DIRS
        for path in Path(folder).glob(f"torch-*+cpu-{python_tag}-{python_tag}-*x86_64.whl")
    ]
    return max(found, key=lambda p: p.name) if found else None


def wheel_version(wheel: Path) -> str:
    """``torch-2.13.0+cpu-cp311-...whl`` → ``2.13.0+cpu``."""
    return wheel.name.split("-")[1]


class TorchWheels(Service):
    """One torch wheel served as a PEP 503 index on 127.0.0.1 for the length of a build:
    :attr:`url` is the ``TORCH_INDEX_URL`` build argument (the Dockerfile's ``--index-url``;
    torch's own dependencies still come from PyPI, its ``--extra-index-url``)."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.url = ""
        self._server: http.server.ThreadingHTTPServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="facepipe-wheels-")
        root = Path(self._tmp.name)
        (root / "simple" / "torch").mkdir(parents=True)
        (root / self.wheel.name).symlink_to(self.wheel)
        href = "../../" + self.wheel.name.replace("+", "%2B")
        (root / "simple" / "torch" / "index.html").write_text(
            f'<html><body><a href="{href}">{self.wheel.name}</a></body></html>\n'
        )

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# --- building ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    """One built image: its name, how long the build took, its size and labels."""

    name: str
    dockerfile: str
    seconds: float
    size_bytes: int
    labels: Mapping[str, str]
    build_args: Mapping[str, str]


def build_image(
    daemon: DockerDaemon,
    context: Path,
    dockerfile: Path,
    name: str,
    build_args: Mapping[str, str],
    *,
    log: Path | None = None,
) -> Built:
    """``docker build --network host`` of ``dockerfile`` with ``context`` (the repository) and
    ``build_args``; the build's output goes to ``log`` (default: discarded)."""
    args = ["build", "--network", "host", "-f", str(dockerfile), "-t", name]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    start = time.monotonic()
    with open(log or os.devnull, "w") as out:
        done = subprocess.run(
            ["docker", *args, str(context)],
            env=daemon.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=3600,
            check=False,
        )
    seconds = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        where = f"; see {log}" if log else ""
        raise ConfigError(f"building {name} from {dockerfile} failed{where}")
    facts = daemon.image_facts(name)
    return Built(name, str(dockerfile), seconds, facts["size"], facts["labels"], dict(build_args))


# --- running ----------------------------------------------------------------------------------
class ImageFunction(RieFunction):
    """A function's image under the RIE, as ``sam local invoke`` runs it: the RIE binary
    mounted read-only and made the entrypoint, the image's own ``python -m awslambdaric``
    after it with the function's handler (its ImageConfig Command), the function's environment
    and ``--memory`` of its MemorySize. ``--network host``: the RIE listens on 127.0.0.1 of
    this machine, and the function reaches the local stack's AWS there too.

    Args:
        daemon: a started :class:`DockerDaemon`.
        image: the image to run (``facepipe-detection:local``).
        env: the function's environment (no host variables are passed).
        handler: ``module.function``.
        memory_mb: the container's memory limit (Lambda's MemorySize), 0 for none.
    """

    def __init__(
        self,
        daemon: DockerDaemon,
        image: str,
        env: Mapping[str, str],
        handler: str = "app.handler",
        *,
        memory_mb: int = 0,
        timeout_s: int = 120,
    ) -> None:
        self.daemon = daemon
        self.image = image
        self.memory_mb = memory_mb
        self.container = f"facepipe-{uuid.uuid4().hex[:12]}"
        self.handler = handler
        self.env = {"AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s), **env}
        self.port = 0
        self.url = ""
        self.log_path = None
        self._tmp = None
        self._process = None

    def command(self, api_port: int) -> list[str]:
        assert self._tmp is not None
        env_file = Path(self._tmp) / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        limits = (
            ["--memory", f"{self.memory_mb}m", "--memory-swap", f"{self.memory_mb}m"]
            if self.memory_mb
            else []
        )
        return [
            "docker",
            "run",
            "--rm",
            "--name",
            self.container,
            "--network",
            "host",
            *limits,
            "--env-file",
            str(env_file),
            "-v",
            f"{rie_binary()}:{RIE_IN_IMAGE}:ro",
            "--entrypoint",
            RIE_IN_IMAGE,
            self.image,
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{api_port}",
            "python",
            "-m",
            "awslambdaric",
            self.handler,
        ]

    def start(self, ready_timeout: float = 120.0) -> None:
        if not self.daemon.has_image(self.image):
            raise RieError(
                f"no image {self.image} on {self.daemon.host}: build it with `make images` "
                "(or `make image-check` where no registry can be reached)"
            )
        super().start(ready_timeout)

    def _launch_env(self) -> Mapping[str, str]:
        return self.daemon.env()  # the docker client's; the container gets only --env-file

    def _launch_cwd(self) -> Path | None:
        return None

    def stop(self) -> None:
        if self._process is not None:
            self.daemon.docker("rm", "-f", self.container, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=30)
            self._process = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill_runtime(self) -> None:
        """SIGKILL the function's runtime inside the container (``awslambdaric``), as an
        out-of-memory kill or a crash would; the RIE then starts a fresh one (a new init)."""
        self.daemon.docker(
            "exec",
            self.container,
            "python",
            "-c",
            "import os, signal\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit():\n"
            "        try: c = open(f'/proc/{p}/cmdline', 'rb').read()\n"
            "        except OSError: continue\n"
            "        if b'awslambdaric' in c: os.kill(int(p), signal.SIGKILL)\n",
            check=False,
        )

    def peak_rss_mb(self) -> float | None:
        """The peak resident memory (VmHWM) of the function's runtime process in the container
        (``python -m awslambdaric``), as for the RIE runtime, in MiB; None when unknown."""
        done = self.daemon.docker("top", self.container, "-eo", "pid,args", check=False)
        for line in done.stdout.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            args = args.strip()
            runtime = args.startswith("python") and "awslambdaric" in args  # not the RIE
            if runtime and pid.isdigit():
                with contextlib.suppress(OSError):
                    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if row.startswith("VmHWM:"):
                            return round(int(row.split()[1]) / 1024, 1)
        return None
