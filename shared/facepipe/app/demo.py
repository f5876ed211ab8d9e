"""``facepipe demo``: the whole pipeline on the local stack with the shipped public-domain samples.

It runs exactly what a user would type, as separate processes: ``facepipe gallery enroll``,
``facepipe local up``, ``facepipe get --annotate``; then prints the results and stops the stack.

Recognition is real without any download: when the VGGFace2 weights are not there (and no
embedder or weights were asked for), the demo uses the offline ``dlib`` embedder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from facepipe.app.embedder_choice import choose_embedder
from facepipe.config import Settings, env_name
from facepipe.errors import FacepipeError, WeightsUnavailable
from facepipe.messages import Result, results_table

GET_TIMEOUT = 300.0


def _facepipe() -> list[str]:
    return [sys.executable, "-m", "facepipe.cli.main"]


def _start_stack(
    args: Sequence[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    with log.open("w") as log_file:  # the stack's own log lines (and the functions')
        proc = subprocess.Popen(
            [*_facepipe(), "local", "up", *args],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise FacepipeError(
            f"the local stack did not start (exit status {proc.returncode}); see {log}"
        )
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_demo(settings: Settings, samples: Path, out: Path, *, random_weights: bool) -> int:
    """Enrol ``samples/gallery``, start the local stack, send ``samples/frames`` and the two
    single samples, print the results, write annotated images under ``out``, stop the stack."""
    if random_weights:
        settings = settings.model_copy(update={"weights": "random:0"})
        print(
            "demo: --random-weights: detection is real, but embeddings come from seeded random "
            "weights, so the names below are NOT recognition.",
            file=sys.stderr,
        )
    else:
        try:
            settings = choose_embedder(settings).settings
        except WeightsUnavailable as exc:
            print(
                f"demo: cannot recognise anyone: {exc.message}\n"
                "demo: put the VGGFace2 file where FACEPIPE_WEIGHTS points, use the offline dlib "
                "embedder (make demo DEMO_ARGS=--embedder=dlib), or run the demo with seeded "
                "random weights (real detection, meaningless names):\n"
                "    make demo DEMO_ARGS=--random-weights",
                file=sys.stderr,
            )
            return 2
    # The processes below read their settings from the environment: pass on what was chosen.
    env = dict(os.environ)
    env.update({env_name(n): str(getattr(settings, n)) for n in settings.model_fields_set})
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gallery = out / "gallery.npz"  # .npz records the embedder, so the stack can check it
    subprocess.run(
        [*_facepipe(), "gallery", "enroll", str(samples / "gallery"), "--out", str(gallery)],
        check=True,
        env=env,
        timeout=300,
    )
    stack, info = _start_stack(["--gallery", str(gallery.resolve())], env, out / "stack.log")
    try:
        print(f"demo: local stack up: {info['function_url']}", file=sys.stderr)
        inputs = [samples / "frames", samples / "astronaut.jpg", samples / "rocket.jpg"]
        got = subprocess.run(
            [
                *_facepipe(),
                "get",
                *map(str, inputs),
                "--local-info",
                json.dumps(info),
                "--annotate",
                str(out / "annotated"),
                "--ordered",
                "--quiet",
                "--run-id",
                "demo",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=GET_TIMEOUT,
            check=False,
        )
    finally:
        stopped = _stop(stack)
    sys.stderr.write(got.stderr)
    results = [Result.model_validate_json(line) for line in got.stdout.splitlines() if line]
    (out / "results.jsonl").write_text(got.stdout)
    print(results_table(results))
    print(
        f"demo: {len(results)} results; annotated images in {out / 'annotated'}; "
        f"results in {out / 'results.jsonl'}; stack log in {out / 'stack.log'}; "
        f"stack stopped (exit {stopped})",
        file=sys.stderr,
    )
    return got.returncode or (1 if stopped else 0)
