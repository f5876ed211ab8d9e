"""The client against the whole local stack, in both runtimes: real HTTP, real SQS semantics.

Every sent request_id gets exactly one result; concurrent clients each get exactly their own,
by request_id from the Function URL (the default: the response queue is not consumed) or off
the shared response queue; a video yields one result per sampled frame; a photo too large for
the Function URL's body is sent downscaled and boxed in its own pixels.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facepipe.local.stack import LocalStack
from facepipe.vision.detector import FaceDetector
from tests.conftest import SAMPLES, run_facepipe

pytestmark = pytest.mark.slow


def get(stack: LocalStack, *args: str) -> tuple[int, list[dict], str]:  # type: ignore[type-arg]
    info = json.dumps(stack.info())
    proc = run_facepipe("get", *args, "--local-info", info, "--quiet", "--poll-timeout", "90")
    return proc.returncode, [json.loads(x) for x in proc.stdout.splitlines()], proc.stderr


def test_frames_with_and_without_faces_several_per_post(stack: LocalStack) -> None:
    code, results, err = get(
        stack,
        str(SAMPLES / "frames"),
        str(SAMPLES / "rocket.jpg"),
        str(SAMPLES / "astronaut.jpg"),
        "--run-id",
        "mix",
        "--frames-per-request",
        "2",
        "--ordered",
    )
    assert code == 0, err
    assert [r["request_id"] for r in results] == [
        "mix.biden-west-wing",
        "mix.obama-and-biden",
        "mix.rocket",
        "mix.astronaut",
    ]
    assert [(r["status"], len(r["faces"])) for r in results] == [
        ("ok", 1),
        ("ok", 2),
        ("no_face", 0),
        ("ok", 1),
    ]
    assert "missing 0, duplicates 0" in err


def test_two_concurrent_clients_on_the_queue_each_get_exactly_their_own(
    local: LocalStack,
) -> None:
    """Off the response queue (emptied first: other tests' clients read by request_id and leave
    the queue's copies), each takes its own and leaves nothing behind."""
    inputs = [str(SAMPLES / "frames"), str(SAMPLES / "astronaut.jpg"), str(SAMPLES / "rocket.jpg")]
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda run: get(local, *inputs, "--run-id", run, "--results-via", "queue"),
                ["ann", "bob"],
            )
        )
    for run, (code, results, err) in zip(["ann", "bob"], runs, strict=True):
        assert code == 0, err
        ids = [r["request_id"] for r in results]
        assert len(ids) == len(set(ids)) == 4
        assert all(i.startswith(f"{run}.") for i in ids)
        assert "receives from the queue" in err
    info = local.info()
    assert local.aws.drain(info["response_queue_url"], wait_seconds=0) == []


def test_concurrent_clients_read_exactly_their_own_by_request_id(
    local: LocalStack, tmp_path: Path
) -> None:
    """Four `facepipe get`s at once, ten frames each (faces and none), with the default
    --results-via auto: each gets exactly its own results, in about a request per result or
    fewer, and never receives from the response queue, where its results, asked for by
    request_id only, never go (before: one copy per request, never received, for the queue's
    retention)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(10):
        sample = "astronaut.jpg" if i % 2 else "rocket.jpg"
        (inputs / f"f{i}.jpg").write_bytes((SAMPLES / sample).read_bytes())
    names = ["c1", "c2", "c3", "c4"]
    with ThreadPoolExecutor(len(names)) as pool:
        runs = list(pool.map(lambda run: get(local, str(inputs), "--run-id", run), names))

    requests = []
    for run, (code, results, err) in zip(names, runs, strict=True):
        assert code == 0, err
        ids = sorted(r["request_id"] for r in results)
        assert ids == sorted(f"{run}.f{i}" for i in range(10))  # its own, each once
        assert [r["status"] for r in results].count("ok") == 5
        asked = re.search(r"; (\d+) requests to the Function URL", err)
        assert asked is not None, err
        requests.append(int(asked[1]))
    assert sum(requests) <= 1.2 * 40, requests  # receives per result <= 1.2
    assert local.aws.drain(local.info()["response_queue_url"], wait_seconds=0) == []


def test_clients_by_request_id_leave_no_orphans_in_the_way_of_clients_on_the_queue(
    local: LocalStack,
) -> None:
    """`bench e2e --clients 2 --results-via url`, then `--results-via queue`, on one stack.
    Before: the first run's 10 results stayed on the response queue, unread; the queue clients,
    handing them back (visibility 0) and getting the same oldest ones again first, timed out
    with every result missing, and the queue's "results waiting" only grew."""
    from facepipe.bench.e2e import run_e2e
    from facepipe.client.stack import resolve_endpoints
    from facepipe.config import Settings
    from tests.e2e.conftest import queue_counts

    info = local.info()
    endpoints = resolve_endpoints(Settings.from_env({}), local_info=json.dumps(info))
    images = [SAMPLES / "astronaut.jpg", SAMPLES / "rocket.jpg"]

    def bench(via: str) -> dict[str, object]:
        return run_e2e(
            endpoints, images, n=5, concurrency=2, timeout=60, clients=2, results_via=via
        )

    by_url = bench("url")
    left = queue_counts(local.aws.sqs, info["response_queue_url"])
    on_queue = bench("queue")

    for summary, via in ((by_url, "url"), (on_queue, "queue")):
        lost = (summary["results"], summary["lost"], summary["wrong_client"])
        assert (summary["results_via"], *lost) == (via, 10, 0, 0), summary
        assert summary["statuses"] == {"ok": 6, "no_face": 4, "error": 0}, summary
    assert left == (0, 0)  # nothing posted for nobody
    assert queue_counts(local.aws.sqs, info["response_queue_url"]) == (0, 0)
    assert queue_counts(local.aws.sqs, info["dead_letter_queue_url"]) == (0, 0)


def _video(path: Path, frames: int = 20, fps: float = 10.0) -> None:
    """Frames 0-9 show the astronaut, 10-19 the rocket (no face)."""
    face = np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB").resize((320, 320)))
    empty = np.asarray(Image.open(SAMPLES / "rocket.jpg").convert("RGB").resize((320, 320)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 320))
    for i in range(frames):
        writer.write(cv2.cvtColor(face if i < frames // 2 else empty, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_gives_one_result_per_sampled_frame(stack: LocalStack, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _video(video)
    code, results, err = get(
        stack,
        str(video),
        "--run-id",
        "vid",
        "--video-fps",
        "2",
        "--ordered",
        "--annotate",
        str(tmp_path / "ann"),
    )
    assert code == 0, err
    assert [r["request_id"] for r in results] == [f"vid.clip.f{n:06d}" for n in (0, 5, 10, 15)]
    assert [r["status"] for r in results] == ["ok", "ok", "no_face", "no_face"]
    assert [(r["source"], r["frame"], r["time_s"]) for r in results] == [
        (str(video), n, n / 10)
        for n in (0, 5, 10, 15)  # 10 fps
    ]
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 4


def test_on_a_terminal_get_prints_the_readable_table(stack: LocalStack) -> None:
    """stdout a terminal: the demo's table, one row per result in send order (JSON lines only
    with --json, as when piped: the other tests)."""
    import os
    import pty
    import subprocess

    from tests.conftest import FACEPIPE, ROOT

    info = json.dumps(stack.info())
    inputs = [str(SAMPLES / "astronaut.jpg"), str(SAMPLES / "rocket.jpg")]

    def on_a_terminal(run_id: str, *flags: str) -> str:
        leader, follower = pty.openpty()
        proc = subprocess.run(
            [*FACEPIPE, "get", *inputs, "--local-info", info, "--run-id", run_id, *flags],
            cwd=ROOT, stdout=follower, stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.returncode == 0, proc.stderr
        return b"".join(chunks).decode().replace("\r\n", "\n")

    rows = on_a_terminal("tty", "--quiet").strip().splitlines()
    assert rows[0].split() == ["request_id", "file", "status", "faces:", "name", "(similarity)"]
    assert [row.split()[:3] for row in rows[1:]] == [
        ["tty.astronaut", "astronaut.jpg", "ok"],
        ["tty.rocket", "rocket.jpg", "no_face"],
    ]
    assert rows[1].split()[3] == "unknown" and rows[2].split()[3] == "-"
    lines = on_a_terminal("json", "--quiet", "--json").strip().splitlines()
    assert sorted(json.loads(line)["request_id"] for line in lines) == [
        "json.astronaut",
        "json.rocket",
    ]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def test_a_photo_over_the_body_limit_is_sent_downscaled_and_boxed_in_its_own_pixels(
    stack: LocalStack, tmp_path: Path, detector: FaceDetector
) -> None:
    """A 6144 x 2048 PNG of 29 MB (noise, then a face on the right): over the Function URL's
    6 MB even as a JPEG, so `get` sends it downscaled with its original_size, and the box comes
    back where detection on the photo's own pixels finds the face. Before: 413, "send fewer or
    smaller frames per request"."""
    face = Image.open(SAMPLES / "astronaut.jpg").convert("RGB")
    face = face.resize((2048, 2048), Image.Resampling.BICUBIC)
    pixels = np.random.default_rng(0).integers(0, 256, (2048, 6144, 3), dtype=np.uint8)
    pixels[:, 4096:] = np.asarray(face)
    photo = tmp_path / "big.png"
    Image.fromarray(pixels).save(photo)
    assert photo.stat().st_size > 6 * 2**20

    code, results, err = get(stack, str(photo), "--run-id", "big")

    assert code == 0, err
    assert "big.big (big.png): " in err and "downscaled from 6144x2048" in err
    [result] = results
    assert (result["status"], result["width"], result["height"]) == ("ok", 6144, 2048)
    [expected] = detector.detect(face)  # the photo's own pixels, where the face is
    x1, y1, x2, y2 = expected.box
    boxes = [f["box"] for f in result["faces"]]
    assert max(_iou(box, [x1 + 4096, y1, x2 + 4096, y2]) for box in boxes) > 0.85, boxes
