"""Peak memory of the real detection service per frame size and per request (``make bench-memory``).

Each measurement runs in a fresh interpreter (``python -m facepipe.bench.memory --child``): it
builds :class:`~facepipe.stages.detect.DetectionService` as the detection function does (the
settings of a function of ``memory_mb``, as Lambda's ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` gives
them), runs one small frame through it (the nets' first run), then one POST body of synthetic
frames (a real photo scaled up to the size asked, so MTCNN finds faces in it), and reports the
process's peak resident memory (``VmHWM``) before and after that request.

The fitted figures are what :class:`facepipe.vision.memory_budget.MemoryModel` holds, rounded up.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facepipe.vision.memory_budget import DETECTION_MEMORY, MP

SOURCE = "samples/frames/obama-and-biden.jpg"  # two faces, 4:3-ish; scaled to each size asked


def synthetic_frame(root: Path, pixels: int) -> bytes:
    """The sample photo resized to about ``pixels`` pixels, as a JPEG."""
    from PIL import Image

    source = Image.open(root / SOURCE).convert("RGB")
    ratio = source.width / source.height
    height = int((pixels / ratio) ** 0.5)
    width = int(height * ratio)
    buf = io.BytesIO()
    source.resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    return buf.getvalue()


class _Collect:
    def __init__(self) -> None:
        self.tasks = 0
        self.results = 0

    def send_task(self, task: Any) -> None:
        self.tasks += 1

    def send_result(self, result: Any) -> None:
        self.results += 1


def _rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``). Not ``ru_maxrss``: Linux carries that
    over from the parent through fork and exec, so a child of a large test process would report
    its parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(
    root: Path, frames_mp: Sequence[float], memory_mb: int, max_detect: int
) -> dict[str, Any]:
    """Inside the fresh interpreter: one request of ``frames_mp`` frames; the peaks."""
    from facepipe.runtime import setup_process

    setup_process()  # what the handler's init does first
    import boto3

    import facepipe.aws.powertools  # noqa: F401  (what the handler imports: Powertools)
    from facepipe.app.wiring import make_detector
    from facepipe.config import Settings
    from facepipe.stages.detect import Detection, DetectionService

    # The function's clients, so the base holds what its init holds (no request is sent).
    clients = [boto3.client(name, region_name="us-east-1") for name in ("sqs", "s3", "dynamodb")]

    overrides: dict[str, Any] = {"max_body_bytes": 1 << 30, "max_request_pixels": 10**10}
    overrides.update(memory_mb=memory_mb, max_pixels=200_000_000)
    if max_detect:
        overrides["max_detect_pixels"] = max_detect
    settings = Settings.from_env({}, **overrides)
    collect = _Collect()
    service = DetectionService(Detection(settings, make_detector(settings)), collect)
    warm = base64.b64encode((root / "samples/astronaut.jpg").read_bytes()).decode()
    service.handle_body(json.dumps({"request_id": "warm", "content": warm}))
    frames = [
        {
            "request_id": f"f{i}",
            "content": base64.b64encode(synthetic_frame(root, int(mp * MP))).decode(),
        }
        for i, mp in enumerate(frames_mp)
    ]
    body = json.dumps({"frames": frames})
    del frames
    base = _rss_mib()
    start = time.perf_counter()
    report = service.handle_body(body)
    return {
        "frames_mp": list(frames_mp),
        "memory_mb": memory_mb,
        "max_detect_pixels": max_detect or None,
        "base_mib": round(base, 1),
        "peak_mib": round(_rss_mib(), 1),
        "seconds": round(time.perf_counter() - start, 2),
        "faces": report.faces,
        "tasks": collect.tasks,
        "clients": len(clients),
    }


def measure(
    frames_mp: Sequence[float], *, memory_mb: int = 0, max_detect_pixels: int = 0
) -> dict[str, Any]:
    """One request in a fresh interpreter (see the module doc): its peak memory and time."""
    root = Path(__file__).resolve().parents[3]
    if not (root / SOURCE).is_file():
        root = Path.cwd()
    command = [
        sys.executable,
        "-m",
        "facepipe.bench.memory",
        "--child",
        "--root",
        str(root),
        "--memory-mb",
        str(memory_mb),
        "--max-detect-pixels",
        str(max_detect_pixels),
        *[str(mp) for mp in frames_mp],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_LAMBDA"))}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - b * mx, b


def run(memories: Sequence[int] = (2048, 3008)) -> dict[str, Any]:
    """The table behind the memory model, and the worst cases the model allows per memory."""
    full = [measure([mp]) for mp in (2, 4, 8, 12, 16)]
    base, detect_slope = _fit([m["frames_mp"][0] for m in full], [m["peak_mib"] for m in full])
    small = 1_000_000  # MTCNN on 1 MP: what is left is the decoded frame's cost
    decoded = [measure([mp], max_detect_pixels=small) for mp in (10, 20, 40)]
    _, decode_slope = _fit([m["frames_mp"][0] for m in decoded], [m["peak_mib"] for m in decoded])
    checks = []
    for memory in memories:
        largest = DETECTION_MEMORY.max_frame_pixels(memory)
        frame = min(40 * MP, largest)
        one = measure([frame / MP], memory_mb=memory)
        twelve = DETECTION_MEMORY.detect_pixels(memory, 12 * MP)
        request = measure([12.0] * 4, memory_mb=memory)
        checks.append(
            {
                "memory_mb": memory,
                "max_frame_pixels": largest,
                "detect_pixels_for_12mp": twelve,
                "largest_frame": one,
                "request_4x12mp": request,
                "largest_frame_fits": one["peak_mib"] < memory * DETECTION_MEMORY.headroom,
                "request_fits": request["peak_mib"] < memory * DETECTION_MEMORY.headroom,
            }
        )
    return {
        "full_resolution": full,
        "decode_only": decoded,
        "fitted": {
            "base_mib": round(base, 1),
            "detect_mib_per_mp": round(detect_slope, 1),
            "decode_mib_per_mp": round(decode_slope, 1),
        },
        "model": {
            "base_mib": DETECTION_MEMORY.base_mib,
            "detect_mib_per_mp": DETECTION_MEMORY.detect_mib_per_mp,
            "decode_mib_per_mp": DETECTION_MEMORY.decode_mib_per_mp,
            "headroom": DETECTION_MEMORY.headroom,
        },
        "checks": checks,
    }


def table(summary: dict[str, Any]) -> str:
    lines = ["frames (MP)          memory  detect px    peak MiB   seconds  faces"]
    rows = summary["full_resolution"] + summary["decode_only"]
    rows += [c[k] for c in summary["checks"] for k in ("largest_frame", "request_4x12mp")]
    for m in rows:
        frames = "+".join(f"{mp:g}" for mp in m["frames_mp"])
        lines.append(
            f"{frames:<20} {m['memory_mb'] or '-':>6}  {m['max_detect_pixels'] or 'auto':>9}"
            f"  {m['peak_mib']:>10}  {m['seconds']:>8}  {m['faces']:>5}"
        )
    fitted, model = summary["fitted"], summary["model"]
    lines.append(
        f"fitted: base {fitted['base_mib']} MiB + {fitted['detect_mib_per_mp']} MiB/MP detected "
        f"+ {fitted['decode_mib_per_mp']} MiB/MP decoded; model: {model['base_mib']} + "
        f"{model['detect_mib_per_mp']} + {model['decode_mib_per_mp']}"
    )
    for check in summary["checks"]:
        lines.append(
            f"{check['memory_mb']} MB: frames up to {check['max_frame_pixels'] / MP:.1f} MP, "
            f"a 12 MP frame detected on {check['detect_pixels_for_12mp'] / MP:.1f} MP; largest "
            f"frame peak {check['largest_frame']['peak_mib']} MiB, 4 x 12 MP request "
            f"{check['request_4x12mp']['peak_mib']} MiB: "
            + ("fits" if check["largest_frame_fits"] and check["request_fits"] else "DOES NOT FIT")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facepipe.bench.memory")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--max-detect-pixels", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("frames_mp", nargs="*", type=float)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.root, args.frames_mp, args.memory_mb, args.max_detect_pixels)))
        return 0
    summary = run()
    print(table(summary))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
