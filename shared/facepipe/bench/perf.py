"""Performance harness of ``facepipe bench perf`` (``make bench``): this pipeline's detection +
recognition against plain facenet-pytorch on the same frames, their parity, embedding throughput
against the machine's float32 matmul peak, cold start, and a modelled Lambda cost.

Every measurement is a function returning a JSON-ready dict; :func:`run_perf` runs them all and
:func:`summary_keys` lifts the headline numbers to the top level (``bench/results/latest.json``).
Times are ``time.perf_counter`` medians after a warm-up; nothing here changes the pipeline.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from facepipe.bench.timing import FACENET_GFLOP_PER_FACE, median_ms, sgemm_ms
from facepipe.config import Settings
from facepipe.vision.frames import decode_image

HEIGHTS = (480, 720, 1080)
# The opt-in maximum detection side the benchmark measures (its own parity figure).
MAX_SIDE_LEVER = 640
# `--quick` measures only these embedder levers (the full run measures all of them).
QUICK_EMBED_LEVERS = ("eager", "onnxruntime", "bfloat16")
# Published prices (us-east-1, checked 2026): Lambda x86 per GB-second and per request, SQS
# standard queue per request (each 64 KB chunk of a message is billed as one request).
PRICES = {
    "lambda_gb_second_usd": 0.0000166667,
    "lambda_request_usd": 0.20 / 1_000_000,
    "sqs_request_usd": 0.40 / 1_000_000,
    "sqs_chunk_bytes": 64 * 1024,
    "rekognition_per_1000_images_usd": 1.00,
}
# template.yaml: DetectionFunction / RecognitionFunction MemorySize, RecognitionBatchSize default.
TEMPLATE_DEFAULTS = {"detection_mb": 2048, "recognition_mb": 3008, "batch_size": 10}


def log_to(stream: TextIO | None) -> Callable[[str], None]:
    def log(message: str) -> None:
        if stream is not None:
            print(f"bench: {message}", file=stream, flush=True)

    return log


def paired_median_ms(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Medians of two workloads timed in alternation, one warm-up each."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


# ---- frames -------------------------------------------------------------------------------


@dataclass
class BenchFrame:
    name: str
    resolution: str  # "native" or "480p" / "720p" / "1080p"
    image: Image.Image


def default_sources(
    quick: bool = False, shared_faces: Path = Path("../shared/faces")
) -> list[Path]:
    samples = Path("samples")
    if quick:  # two faces and one, each at four resolutions
        return [samples / "frames" / "obama-and-biden.jpg", samples / "astronaut.jpg"]
    paths = [*sorted((samples / "frames").glob("*.jpg")), samples / "astronaut.jpg"]
    if shared_faces.is_dir():
        paths += sorted(shared_faces.glob("*.jpg"))[:10]
    return paths


def resize_to_height(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def load_frames(paths: Sequence[Path], heights: Sequence[int] = HEIGHTS) -> list[BenchFrame]:
    """Each photo decoded as the pipeline decodes it (upright RGB), as is and resized to each
    height (aspect kept)."""
    frames = []
    for path in paths:
        image = decode_image(path.read_bytes(), max_pixels=10**9)
        frames.append(BenchFrame(path.name, "native", image))
        frames += [BenchFrame(path.name, f"{h}p", resize_to_height(image, h)) for h in heights]
    return frames


# ---- reference and pipeline ---------------------------------------------------------------


class Reference:
    """facenet-pytorch as its README uses it: ``MTCNN(keep_all=True)`` then
    ``InceptionResnetV1`` on the crops it returns (same weights as the pipeline)."""

    def __init__(self, weights: str, device: str) -> None:
        import torch
        from facenet_pytorch import MTCNN, InceptionResnetV1

        self.mtcnn = MTCNN(keep_all=True, device=device)
        if weights.startswith("random:"):
            torch.manual_seed(int(weights.split(":", 1)[1]))  # as FacenetEmbedder's random:<n>
            self.resnet = InceptionResnetV1(pretrained=None).eval().to(device)
        else:
            from facepipe.identity.facenet import FacenetEmbedder

            self.resnet = FacenetEmbedder("vggface2", weights, device, mode="eager").model
        self.device = device

    def run(self, image: Image.Image) -> Any:
        import torch

        faces = self.mtcnn(image)
        if faces is None:
            return None
        with torch.inference_mode():  # to the CPU, as the pipeline's: waits for a GPU's work
            return self.resnet(faces.to(self.device)).cpu()

    def boxes(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        boxes, probs = self.mtcnn.detect(image)
        if boxes is None:
            return np.zeros((0, 4)), np.zeros(0)
        return np.asarray(boxes), np.asarray(probs)


class PipelinePath:
    """This project's detection + recognition code path in one process (the Lambdas' stage
    objects, as :class:`facepipe.app.pipeline.LocalPipeline` wires them)."""

    def __init__(self, settings: Settings) -> None:
        from facepipe.app.pipeline import LocalPipeline

        self.local = LocalPipeline(settings)

    def detect(self, frame: BenchFrame) -> Any:
        return self.local.detection.image("bench", frame.name, frame.image)

    def run(self, frame: BenchFrame, *, with_embeddings: bool = False) -> Any:
        found = self.detect(frame)
        if not found.faces:
            return found.no_face_result()
        return self.local.recognition.recognize([found], with_embeddings=with_embeddings)[0]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def parity(reference: Reference, pipeline: PipelinePath, frame: BenchFrame) -> dict[str, Any]:
    """Per face of the pipeline's result: IoU with the reference's best-overlapping box and the
    cosine of the two embeddings. The pipeline drops faces MTCNN scores under
    ``min_face_probability`` by design; reference faces above it that the pipeline lacks (and
    pipeline faces the reference lacks) count as IoU 0."""
    ref_boxes, ref_probs = reference.boxes(frame.image)
    embeddings = reference.run(frame.image)
    ref_emb = embeddings.numpy() if embeddings is not None else np.zeros((0, 512))
    result = pipeline.run(frame, with_embeddings=True)
    floor = pipeline.local.settings.min_face_probability
    ious, cosines, used = [], [], set()
    for face in result.faces:
        if not len(ref_boxes):
            ious.append(0.0)
            continue
        overlaps = [iou(face.box, box) for box in ref_boxes]
        best = int(np.argmax(overlaps))
        used.add(best)
        ious.append(overlaps[best])
        a, b = np.asarray(face.embedding, dtype=np.float64), ref_emb[best].astype(np.float64)
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    missed = [i for i, p in enumerate(ref_probs) if p >= floor and i not in used]
    ious += [0.0] * len(missed)
    return {
        "frame": frame.name,
        "resolution": frame.resolution,
        "pipeline_faces": len(result.faces),
        "reference_faces": len(ref_boxes),
        "reference_faces_below_floor": int(sum(p < floor for p in ref_probs)),
        "iou": [round(v, 6) for v in ious],
        "cosine": [round(v, 7) for v in cosines],
    }


def compare(
    reference: Reference,
    pipeline: PipelinePath,
    frames: Sequence[BenchFrame],
    repeats: int,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Warm per-frame medians of both paths, per resolution. The two run in turns (reference,
    pipeline, reference, …) after one warm-up each, so a burst of load from elsewhere on a
    shared machine hits both alike."""
    rows: list[dict[str, Any]] = []
    for frame in frames:
        ref_ms, pipe_ms = paired_median_ms(
            partial(reference.run, frame.image), partial(pipeline.run, frame), repeats
        )
        rows.append(
            {
                "frame": frame.name,
                "resolution": frame.resolution,
                "size": [frame.image.width, frame.image.height],
                "reference_ms": round(ref_ms, 3),
                "pipeline_ms": round(pipe_ms, 3),
            }
        )
        log(
            f"{frame.name} {frame.resolution}: reference {ref_ms:.1f} ms, pipeline {pipe_ms:.1f} ms"
        )
    by_res: dict[str, Any] = {}
    for res in dict.fromkeys(r["resolution"] for r in rows):
        sel = [r for r in rows if r["resolution"] == res]
        ref = sum(r["reference_ms"] for r in sel)
        pipe = sum(r["pipeline_ms"] for r in sel)
        by_res[res] = {
            "frames": len(sel),
            "reference_ms_per_frame": round(ref / len(sel), 3),
            "pipeline_ms_per_frame": round(pipe / len(sel), 3),
            "ratio": round(pipe / ref, 4),
        }
    ref_all = sum(r["reference_ms"] for r in rows)
    pipe_all = sum(r["pipeline_ms"] for r in rows)
    by_res["overall"] = {
        "frames": len(rows),
        "reference_ms_per_frame": round(ref_all / len(rows), 3),
        "pipeline_ms_per_frame": round(pipe_all / len(rows), 3),
        "ratio": round(pipe_all / ref_all, 4),
    }
    return {"repeats": repeats, "frames": rows, "by_resolution": by_res}


def max_side_lever(
    reference: Reference,
    settings: Settings,
    frames: Sequence[BenchFrame],
    side: int,
    repeats: int,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The opt-in ``FACEPIPE_MAX_DETECT_SIDE=side`` (detect on a downscaled frame, crop from the
    full one) against the full-size reference on the frames larger than ``side``: time ratio
    per resolution and its own parity (IoU 0 for a face it misses)."""
    large = [f for f in frames if max(f.image.size) > side]
    if not large:
        return {"side": side, "frames": 0}
    pipeline = PipelinePath(settings.model_copy(update={"max_detect_side": side}))
    timing = compare(reference, pipeline, large, repeats, log)
    checks = [parity(reference, pipeline, f) for f in large]
    ious = [v for c in checks for v in c["iou"]]
    cosines = [v for c in checks for v in c["cosine"]]
    return {
        "side": side,
        "frames": len(large),
        "ratio": {res: v["ratio"] for res, v in timing["by_resolution"].items()},
        "parity_faces": len(ious),
        "parity_min_iou": min(ious) if ious else None,
        "parity_min_cosine": min(cosines) if cosines else None,
        "faces_missed": sum(v == 0.0 for v in ious),
    }


# ---- throughput, stage durations ----------------------------------------------------------


def sgemm_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu") -> dict[str, Any]:
    """float32 ``torch.matmul`` of two n×n matrices on ``device`` (the CPU: torch's configured
    threads; CUDA: strict float32, 8192² so the GPU is full): 2n³ FLOP."""
    import torch

    if device.startswith("cuda"):
        n = max(n, 8192)
    ms = sgemm_ms(n, repeats, device)
    return {
        "n": n,
        "repeats": repeats,
        "device": device,
        "threads": torch.get_num_threads(),
        "median_ms": round(ms, 3),
        "gflops": round(2 * n**3 / (ms / 1000) / 1e9, 2),
    }


def embed_throughput(
    embedder: Any, crops: Sequence[np.ndarray], batch: int, repeats: int
) -> dict[str, Any]:
    """The pipeline embedder on ``batch`` crops per forward pass (the template's batch of
    frames, one face each), faces/s → GFLOP/s at 2.84 GFLOP per face."""
    picked = [crops[i % len(crops)] for i in range(batch)]
    ms = median_ms(lambda: embedder.embed(picked), repeats)
    faces_per_s = batch / (ms / 1000)
    return {
        "batch": batch,
        "median_ms": round(ms, 3),
        "faces_per_s": round(faces_per_s, 2),
        "gflop_per_face": FACENET_GFLOP_PER_FACE,
        "gflops": round(faces_per_s * FACENET_GFLOP_PER_FACE, 2),
    }


def stage_durations(
    pipeline: PipelinePath, frames: Sequence[BenchFrame], batch: int, repeats: int
) -> dict[str, Any]:
    """Per resolution: detection ms per frame (the detection function's work, decode aside) and
    recognition ms per frame amortised over a batch of ``batch`` frames (one forward pass), plus
    the queue message sizes (task with PNG crops, result) for the SQS cost."""
    out: dict[str, Any] = {}
    for res in dict.fromkeys(f.resolution for f in frames):
        sel = [f for f in frames if f.resolution == res]
        detect = [median_ms(partial(pipeline.detect, f), repeats, warmup=0) for f in sel]
        found = [pipeline.detect(f) for f in sel]
        with_faces = [f for f in found if f.faces]
        task_bytes = [len(f.to_task().model_dump_json()) for f in with_faces]
        recog = pipeline.local.recognition
        results = [recog.recognize([f])[0] for f in with_faces] + [
            f.no_face_result() for f in found if not f.faces
        ]
        result_bytes = [len(r.model_dump_json()) for r in results]
        recog_ms = 0.0
        if with_faces:
            batch_frames = [with_faces[i % len(with_faces)] for i in range(batch)]
            recog_ms = median_ms(partial(recog.recognize, batch_frames), repeats) / batch
        out[res] = {
            "frames": len(sel),
            "frames_with_faces": len(with_faces),
            "faces_per_frame": round(sum(len(f.faces) for f in found) / len(sel), 3),
            "detection_ms_per_frame": round(statistics.mean(detect), 3),
            "recognition_ms_per_frame": round(recog_ms, 3),
            "recognition_batch": batch,
            "task_bytes_mean": round(statistics.mean(task_bytes), 1) if task_bytes else 0.0,
            "result_bytes_mean": round(statistics.mean(result_bytes), 1),
        }
    return out


# ---- cost ---------------------------------------------------------------------------------


def lambda_cost(
    stage: dict[str, Any],
    detection_mb: int = TEMPLATE_DEFAULTS["detection_mb"],
    recognition_mb: int = TEMPLATE_DEFAULTS["recognition_mb"],
    prices: dict[str, float] = PRICES,
) -> dict[str, float]:
    """Modelled cost of 1,000 frames (one frame per request) for one resolution's durations:
    detection GB-s + one invocation per frame; recognition GB-s for the frames with faces, one
    invocation per batch; SQS: task and result sends (64 KB chunks each), and a receive + a
    delete per batch on each queue. Not modelled: S3 claim checks, DynamoDB ledger, CloudWatch,
    Function URL data transfer, empty SQS polls, init duration."""
    n = 1000
    gbs = prices["lambda_gb_second_usd"]
    frac = stage["frames_with_faces"] / stage["frames"]
    batch = stage["recognition_batch"]
    det_gb_s = n * stage["detection_ms_per_frame"] / 1000 * detection_mb / 1024
    rec_gb_s = n * frac * stage["recognition_ms_per_frame"] / 1000 * recognition_mb / 1024
    det_req = n
    rec_req = math.ceil(n * frac / batch)
    chunk = prices["sqs_chunk_bytes"]
    sqs_req = (
        n * frac * max(1, math.ceil(stage["task_bytes_mean"] / chunk))
        + n * max(1, math.ceil(stage["result_bytes_mean"] / chunk))
        + 2 * rec_req  # request queue: the event source's receive + delete per batch
        + 2 * math.ceil(n / batch)  # response queue: the client's receive + delete per 10
    )
    cost = {
        "detection_compute": det_gb_s * gbs,
        "recognition_compute": rec_gb_s * gbs,
        "lambda_requests": (det_req + rec_req) * prices["lambda_request_usd"],
        "sqs_requests": sqs_req * prices["sqs_request_usd"],
    }
    cost["total"] = sum(cost.values())
    return {k: round(v, 6) for k, v in cost.items()}


def cost_model(
    stages: dict[str, Any], defaults: dict[str, int] = TEMPLATE_DEFAULTS
) -> dict[str, Any]:
    mb = (defaults["detection_mb"], defaults["recognition_mb"])
    per_res = {res: lambda_cost(stage, *mb) for res, stage in stages.items()}
    frames = sum(s["frames"] for s in stages.values())
    overall = round(sum(per_res[r]["total"] * s["frames"] for r, s in stages.items()) / frames, 6)
    return {
        "prices": PRICES,
        "memory_mb": {"detection": mb[0], "recognition": mb[1]},
        "per_resolution": per_res,
        "overall_total": overall,
        "rekognition_per_1000_usd": PRICES["rekognition_per_1000_images_usd"],
    }


def template_defaults(template: Path = Path("template.yaml")) -> dict[str, int]:
    """MemorySize of both functions and the RecognitionBatchSize default, read from the
    template (text scan: CloudFormation tags defeat a plain YAML loader)."""
    out = dict(TEMPLATE_DEFAULTS)
    if not template.is_file():
        return out
    current, in_batch = "", False
    for raw in template.read_text().splitlines():
        line = raw.strip()
        if raw.startswith("  ") and not raw.startswith("   ") and line.endswith(":"):
            current = line[:-1]
            in_batch = current == "RecognitionBatchSize"
        elif line.startswith("MemorySize:") and current in (
            "DetectionFunction",
            "RecognitionFunction",
        ):
            out["detection_mb" if current == "DetectionFunction" else "recognition_mb"] = int(
                line.split(":")[1]
            )
        elif in_batch and line.startswith("Default:"):
            out["batch_size"] = int(line.split(":")[1])
            in_batch = False
    return out


# ---- cold start ---------------------------------------------------------------------------


def _cold_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")}
    env.update(
        AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "testing"),
        AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        POWERTOOLS_TRACE_DISABLED="true",
        FACEPIPE_REQUEST_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/000000000000/bench-req",
        FACEPIPE_RESPONSE_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/000000000000/bench-res",
        FACEPIPE_BUCKET="bench-bucket",
        FACEPIPE_EMBEDDER=settings.embedder,
        FACEPIPE_THREADS=str(settings.threads),
    )
    if settings.weights:
        env["FACEPIPE_WEIGHTS"] = settings.weights
    return env


# A fresh interpreter's imports, each timed inside it (its own start-up and shutdown, the same
# for every process and no part of a Lambda init, stay out); prints one JSON object: the times,
# and whether torch was loaded once they were done.
_IMPORTS = """
import json, sys, time
sys.path.insert(0, {folder!r})
times = {{}}
for name in {order!r}:
    start = time.perf_counter()
    __import__(name)
    times[name] = time.perf_counter() - start
print(json.dumps({{"times": times, "torch_loaded": "torch" in sys.modules}}))
"""


def _time_imports(
    folder: Path, order: tuple[str, ...], env: dict[str, str], guard: str
) -> tuple[dict[str, float], bool]:
    """``{module: seconds}`` for importing ``order`` one after the other in a fresh interpreter
    that first runs ``guard`` (the images' package set), with ``folder`` on its path; and
    whether torch was imported by then."""
    code = guard + _IMPORTS.format(folder=str(folder), order=order)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
        text=True,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(answer["times"]), bool(answer["torch_loaded"])


def weights_file_like_the_image(weights: str, folder: Path) -> str:
    """``random:<seed>`` saved as the recognition image bakes the VGGFace2 file
    (``facepipe weights fetch``): the state_dict with its ``.sha256`` sidecar and the baked ONNX
    graph, so a cold start loads what production loads instead of computing a random
    initialisation. Other values pass through."""
    if not weights.startswith("random:"):
        return weights
    import torch

    from facepipe.identity.facenet import write_digest_sidecar
    from facepipe.identity.facenet_graph import bake_onnx, random_model

    path = folder / "weights.pt"
    model = random_model(int(weights.split(":", 1)[1]))
    torch.save(model.state_dict(), path)
    bake_onnx(model, path, write_digest_sidecar(path))
    return str(path)


def cold_start(settings: Settings, repeats: int = 5, root: Path = Path(".")) -> dict[str, Any]:
    """Each handler module (``functions/<stage>/app.py``: its init builds the service, loads the
    model, creates boto3 clients; no AWS call is made with no gallery set) imported by fresh
    interpreters, against ``import torch``; the fastest of ``repeats`` rounds (start-up time only
    grows with load from elsewhere).

    Per round and stage, one interpreter imports torch and then the handler, another the handler
    alone. A handler that imports torch (detection) costs what its import takes after torch's in
    the same interpreter: the same difference as between two processes, without their noise
    (torch's import alone swings by 0.8 s between fresh processes on the 2-core machine). One
    that does not (recognition) costs its import alone minus torch's.

    Every interpreter sees only the packages the images install
    (:mod:`facepipe.local.image_env`: this environment's development tools are hidden, e.g.
    ``awscrt``, which botocore imports whenever it is installed). Random weights are loaded from
    a saved file, as the image loads its baked one."""
    import tempfile

    from facepipe.local.image_env import guard_source

    guard = guard_source()
    stages = ("detection", "recognition")
    torch_s: list[float] = []
    after_torch: dict[str, list[float]] = {stage: [] for stage in stages}
    alone: dict[str, list[float]] = {stage: [] for stage in stages}
    imports_torch: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = weights_file_like_the_image(settings.weights, Path(tmp))
        env = _cold_env(settings.model_copy(update={"weights": weights}))
        for _ in range(repeats):
            for stage in stages:
                folder = (root / "functions" / stage).resolve()
                both, _ = _time_imports(folder, ("torch", "app"), env, guard)
                torch_s.append(both["torch"])
                after_torch[stage].append(both["app"])
                single, imports_torch[stage] = _time_imports(folder, ("app",), env, guard)
                alone[stage].append(single["app"])
    base = min(torch_s)
    out: dict[str, Any] = {
        "repeats": repeats,
        "weights": "state_dict file" if weights != settings.weights else settings.weights,
        "packages": "the images' (development tools hidden)",
        "import_torch_s": round(base, 3),
    }
    for stage in stages:
        out[f"{stage}_s"] = round(min(alone[stage]), 3)
        out[f"{stage}_imports_torch"] = imports_torch[stage]
        overhead = min(after_torch[stage]) if imports_torch[stage] else min(alone[stage]) - base
        out[f"{stage}_overhead_s"] = round(overhead, 3)
    return out


# ---- the whole run ------------------------------------------------------------------------


def run_perf(
    settings: Settings,
    *,
    quick: bool = False,
    e2e: bool = True,
    cold: bool = True,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Every measurement of ``make bench``; see docs/performance.md."""
    import torch

    say = log_to(log)
    repeats = 1 if quick else 5
    paths = default_sources(quick)
    frames = load_frames(paths)
    defaults = template_defaults()
    say(
        f"{len(frames)} frames from {len(paths)} photos, {repeats} repeats, weights "
        f"{settings.weights or 'vggface2'}, {torch.get_num_threads()} torch threads"
    )
    pipeline = PipelinePath(settings)  # configures torch threads from settings
    device = pipeline.local.detection.detector.device
    reference = Reference(settings.weights, device)
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        },
        "weights": pipeline.local.weights_id,
        "quick": quick,
        "images": [p.name for p in paths],
        "template": defaults,
    }
    say("timing reference and pipeline")
    out["compare"] = compare(reference, pipeline, frames, repeats, say)
    say("parity")
    out["parity"] = [parity(reference, pipeline, f) for f in frames]
    say(f"lever: FACEPIPE_MAX_DETECT_SIDE={MAX_SIDE_LEVER}")
    out["max_detect_side"] = max_side_lever(
        reference, settings, frames, MAX_SIDE_LEVER, repeats, say
    )
    say("sgemm peak")
    out["sgemm"] = sgemm_gflops(repeats=5 if quick else 10, device=device)
    crops = [face.crop for f in frames for face in pipeline.detect(f).faces]
    if not crops:  # no face anywhere: embed blank crops (the FLOP count does not change)
        crops = [np.zeros((160, 160, 3), np.uint8)]
    say("embedding throughput")
    out["embed"] = embed_throughput(
        pipeline.local.recognition.embedder, crops, defaults["batch_size"], repeats
    )
    say("embedder levers")
    from facepipe.bench.embed_levers import embed_levers

    out["embed_levers"] = embed_levers(
        repeats=1 if quick else 3, levers=QUICK_EMBED_LEVERS if quick else None
    )
    say("stage durations and cost model")
    out["stages"] = stage_durations(pipeline, frames, defaults["batch_size"], repeats)
    out["cost"] = cost_model(out["stages"], defaults)
    if cold:
        say("cold start")
        # Even --quick takes the faster of two rounds: one fresh interpreter's start-up can
        # swing by more than a handler's whole cost while anything else runs on the machine.
        out["cold_start"] = cold_start(settings, repeats=2 if quick else 5)
    del reference, pipeline
    if e2e:
        say("end to end through the local stack")
        out["e2e"] = run_e2e_local(settings, n=10 if quick else 100)
    return {**summary_keys(out), **out}


def run_e2e_local(settings: Settings, n: int) -> dict[str, Any]:
    from facepipe.bench.e2e import local_endpoints, run_e2e

    with local_endpoints(settings) as (endpoints, _stack):
        return run_e2e(
            endpoints.require("function_url", "response_queue_url"),
            [Path("samples/frames") / n for n in ("biden-west-wing.jpg", "obama-and-biden.jpg")]
            + [Path("samples/astronaut.jpg")],
            n=n,
            concurrency=settings.concurrency,
            timeout=settings.poll_timeout,
            retries=settings.retries,
            sign=settings.sign,
        )


def summary_keys(out: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``latest.json`` (issue #7)."""
    all_iou = [v for p in out["parity"] for v in p["iou"]]
    all_cos = [v for p in out["parity"] for v in p["cosine"]]
    cold = out.get("cold_start")
    e2e = out.get("e2e")
    return {
        "pipeline_vs_reference_ratio": {
            res: v["ratio"] for res, v in out["compare"]["by_resolution"].items()
        },
        "parity_faces": len(all_iou),
        "parity_min_iou": min(all_iou) if all_iou else None,
        "parity_min_cosine": min(all_cos) if all_cos else None,
        "embed_gflops": out["embed"]["gflops"],
        "sgemm_gflops": out["sgemm"]["gflops"],
        "embed_fraction_of_sgemm": round(out["embed"]["gflops"] / out["sgemm"]["gflops"], 4),
        "cold_start_overhead_s": {
            "detection": cold["detection_overhead_s"],
            "recognition": cold["recognition_overhead_s"],
        }
        if cold
        else None,
        "e2e_p50_ms": e2e["e2e_ms"]["p50"] if e2e else None,
        "e2e_p95_ms": e2e["e2e_ms"]["p95"] if e2e else None,
        "e2e_lost": e2e["lost"] if e2e else None,
        "cost_per_1000_frames_usd": out["cost"]["overall_total"],
        "rekognition_per_1000_frames_usd": PRICES["rekognition_per_1000_images_usd"],
    }


def table(summary: dict[str, Any]) -> str:
    lines = [
        f"weights {summary['weights']}, {summary['machine']['cpus']} CPUs, "
        f"{summary['machine']['torch_threads']} torch threads, device "
        f"{summary['machine']['device']}"
        + (f" ({summary['machine']['gpu']})" if summary["machine"].get("gpu") else ""),
        f"{'resolution':<12}{'frames':>7}{'reference ms':>14}{'pipeline ms':>13}{'ratio':>8}"
        f"{'cost $/1000':>13}",
    ]
    costs = summary["cost"]["per_resolution"]
    for res, v in summary["compare"]["by_resolution"].items():
        cost = costs[res]["total"] if res in costs else summary["cost_per_1000_frames_usd"]
        lines.append(
            f"{res:<12}{v['frames']:>7}{v['reference_ms_per_frame']:>14.1f}"
            f"{v['pipeline_ms_per_frame']:>13.1f}{v['ratio']:>8.3f}{cost:>13.4f}"
        )
    cold = summary.get("cold_start")
    lines += [
        f"parity: {summary['parity_faces']} faces, min IoU {summary['parity_min_iou']}, "
        f"min cosine {summary['parity_min_cosine']}",
        f"embedding: {summary['embed']['faces_per_s']} faces/s at batch "
        f"{summary['embed']['batch']} = {summary['embed_gflops']} GFLOP/s; float32 matmul peak "
        f"{summary['sgemm_gflops']} GFLOP/s ({summary['embed_fraction_of_sgemm']:.1%})",
        f"cold start: import torch {cold['import_torch_s']} s; detection handler "
        f"{cold['detection_s']} s ({cold['detection_overhead_s']:+} s beyond it), recognition "
        f"handler {cold['recognition_s']} s ({cold['recognition_overhead_s']:+} s)"
        if cold
        else "cold start: not measured (--no-cold-start)",
        f"cost per 1,000 frames (Lambda x86 ${PRICES['lambda_gb_second_usd']:.10f}/GB-s, "
        f"${PRICES['lambda_request_usd'] * 1e6:.2f}/1M requests, SQS "
        f"${PRICES['sqs_request_usd'] * 1e6:.2f}/1M requests): "
        f"${summary['cost_per_1000_frames_usd']:.4f} vs Rekognition $1.00",
    ]
    levers = (summary.get("embed_levers") or {}).get("levers", {})
    for name, lever in levers.items():
        lines.append(
            f"embedder lever {name:<20}{lever['ms_batch_10']:>8.1f} ms / 10 faces "
            f"{lever['fraction_of_sgemm']:>6.1%} of peak, 1 - cosine "
            f"{1 - lever['min_cosine_vs_eager']:.1e}{' (lossy, opt-in)' if lever['lossy'] else ''}"
        )
    side = summary.get("max_detect_side") or {}
    if side.get("frames"):
        lines.append(
            f"opt-in FACEPIPE_MAX_DETECT_SIDE={side['side']}: ratio "
            f"{side['ratio']['overall']:.3f} on the {side['frames']} larger frames, min IoU "
            f"{side['parity_min_iou']}, faces missed {side['faces_missed']}"
        )
    if summary.get("e2e"):
        lines.append(
            f"end to end: {summary['e2e']['requests']} requests, p50 {summary['e2e_p50_ms']} ms,"
            f" p95 {summary['e2e_p95_ms']} ms, lost {summary['e2e_lost']}"
        )
    return "\n".join(lines)


def chart(summary: dict[str, Any], path: Path) -> None:
    """Bar chart: reference vs pipeline warm ms per frame, per resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_res = summary["compare"]["by_resolution"]
    labels = list(by_res)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ref = [by_res[r]["reference_ms_per_frame"] for r in labels]
    pipe = [by_res[r]["pipeline_ms_per_frame"] for r in labels]
    ax.bar(x - 0.2, ref, 0.4, label="facenet-pytorch reference")
    ax.bar(x + 0.2, pipe, 0.4, label="facepipe detection + recognition")
    for i, r in enumerate(labels):
        ax.annotate(
            f"×{by_res[r]['ratio']:.2f}",
            (x[i] + 0.2, pipe[i]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(x, labels)
    ax.set_ylabel("warm ms per frame (median)")
    ax.set_title(
        f"facepipe vs facenet-pytorch, {summary['machine']['cpus']} CPUs, {summary['weights']}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
