"""Configuration: every setting is an env var ``FACEPIPE_<NAME>`` and a CLI flag ``--<name>``.

One pydantic model holds them all. The Lambda handlers read it from the environment; the CLI
builds its flags from the same fields (``facepipe.cli.options``), so the two never drift and the
table of docs/configuration.md (``facepipe config --markdown``) is generated from
here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facepipe.errors import ConfigError
from facepipe.identity.embedders import DEFAULT_MATCH_THRESHOLDS
from facepipe.messages import MAX_FILENAME
from facepipe.vision.frames import ACCEPTED_FORMATS, SUPPORTED_FORMATS
from facepipe.vision.memory_budget import DETECTION_MEMORY

ENV_PREFIX = "FACEPIPE_"
LAMBDA_MEMORY_ENV = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"


class Settings(BaseModel):
    """All facepipe settings with their defaults. Field name ``foo_bar`` ↔ ``FACEPIPE_FOO_BAR``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- models -------------------------------------------------------------------------------
    embedder: Literal["vggface2", "casia-webface", "dlib"] = Field(
        "vggface2",
        description=(
            "Face embedder, the same on both functions (it decides the crop detection cuts): "
            "`vggface2`/`casia-webface` (InceptionResnetV1 pretrained on that data set) or "
            "`dlib` (dlib's ResNet from face-recognition-models, offline)."
        ),
    )
    weights: str = Field(
        "",
        description=(
            "Facenet embedder weights: a state_dict file path (the images bake one in), empty "
            "for facenet-pytorch's cache/download, or `random:<seed>` (tests only, not "
            "recognition). `dlib` ignores paths: its model ships with face-recognition-models."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description=(
            "Torch device; `auto` picks CUDA when present, else CPU; `cuda` without a GPU "
            "fails at start-up with a config_error."
        ),
    )
    threads: int = Field(0, ge=0, description="Torch intra-op threads; 0 keeps torch's default.")
    embed_mode: Literal["auto", "onnxruntime", "torch", "eager", "bfloat16"] = Field(
        "auto",
        description=(
            "How the facenet embedder runs: `auto` (ONNX Runtime on CPU, batch norms folded: "
            "1.9× eager torch's throughput at float32 parity; torch elsewhere), `onnxruntime`, "
            "`torch` (folded, channels_last), `eager` (plain facenet-pytorch), or `bfloat16` "
            "(lossy: cosine about 0.99999 to float32; fast only on CPUs with AMX/AVX-512 BF16). "
            "Threads: `FACEPIPE_THREADS`."
        ),
    )
    # --- detection ----------------------------------------------------------------------------
    image_size: int = Field(
        160,
        ge=75,  # InceptionResnetV1 cannot embed anything smaller
        le=1024,
        description="Side of each facenet face crop in pixels (dlib: 150).",
    )
    margin: int = Field(
        0, ge=0, le=200, description="Facenet crop margin in pixels, as facenet-pytorch."
    )
    min_face_size: int = Field(20, ge=8, description="MTCNN minimum face size in pixels.")
    min_face_probability: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Detection threshold: faces MTCNN scores lower are dropped as false faces.",
    )
    max_detect_side: int = Field(
        0,
        ge=0,
        description=(
            "Detect on the frame downscaled so its longer side is at most this many pixels "
            "(0: full size); boxes map back and crops come from the full frame. Faster on large "
            "frames, but faces under `min_face_size` × (longer side / this) pixels are missed "
            "(docs/performance.md)."
        ),
    )
    # --- matching -----------------------------------------------------------------------------
    gallery: str = Field(
        "",
        description=(
            "Gallery of known people: a local path or `s3://bucket/key` (.pt or .npz), or, for "
            "one too large for a function's memory, a LanceDB database: "
            "`lancedb+s3://bucket/prefix` or `lancedb:<folder>` (docs/vector-stores.md)."
        ),
    )
    match_threshold: float | None = Field(
        None,
        gt=0.0,
        le=2.0,
        description=(
            "L2 distance between unit embeddings above which a face is `unknown`; empty: the "
            "embedder's default ("
            + ", ".join(f"`{name}` {value}" for name, value in DEFAULT_MATCH_THRESHOLDS.items())
            + ", see docs/models.md, Thresholds)."
        ),
    )
    top_k: int = Field(
        5, ge=1, le=100, description="People listed per face in `matches`, best first."
    )
    index_min_size: int = Field(
        50_000,
        ge=1,
        description=(
            "Gallery rows from which matching searches an IVF index (faiss; in LanceDB the "
            "writer builds one), not all rows."
        ),
    )
    index_nprobe: int = Field(
        0,
        ge=0,
        description="IVF lists searched per query; 0: `1.5·sqrt(lists)` (LanceDB: its own "
        "default); more: slower, closer to exact.",
    )
    album_compact_every: int = Field(
        32,
        ge=0,
        description="Album shards waiting that make a writer compact (0: only `album compact`).",
    )
    album_merge_max_faces: int = Field(
        300_000,
        ge=1,
        description="Largest album merge a writer does; bigger: `album compact`.",
    )
    gallery_refresh_seconds: int = Field(
        60,
        ge=0,
        description="Recognition: seconds between checks for a new gallery (0: every batch).",
    )
    albums: str = Field(
        "",
        description=(
            "Where album indexes live: `s3://bucket` or a local folder, or a LanceDB database "
            "(`lancedb+s3://bucket/prefix`, `lancedb:<folder>`: a table per album); empty: beside "
            "the gallery (its bucket, folder or database), else the data bucket, else "
            "`FACEPIPE_DATA_DIR`."
        ),
    )
    data_dir: str = Field(
        "",
        description=(
            "Where local commands keep what they make when given no path: the gallery "
            "(`<data_dir>/gallery.npz`, which `gallery enroll` writes and `run` reads) and album "
            "indexes (`<data_dir>/albums/`); empty: the user data directory "
            "(`~/.local/share/facepipe` on Linux, `~/Library/Application Support/facepipe` on "
            "macOS), never the checkout."
        ),
    )
    # --- limits -------------------------------------------------------------------------------
    max_frames: int = Field(16, ge=1, le=256, description="Most frames one HTTP request may carry.")
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description=(
            "Most decoded pixels per frame, checked from the header before decoding; lowered to "
            "what `FACEPIPE_MEMORY_MB` can decode, when that is less."
        ),
    )
    max_request_pixels: int = Field(
        48_000_000,
        ge=1,
        description=(
            "Most decoded pixels of all the frames of one HTTP request together (frames are "
            "decoded and detected one at a time: this bounds the request's time, not memory)."
        ),
    )
    memory_mb: int = Field(
        0,
        ge=0,
        description=(
            "Memory (MiB) detection's frame limits are sized for; 0: the function's own "
            "(`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, set by Lambda and the local stack), else no "
            "memory limit (docs/reliability.md, Memory)."
        ),
    )
    max_detect_pixels: int = Field(
        0,
        ge=0,
        description=(
            "MTCNN runs on at most this many pixels of a frame: a larger frame is detected on a "
            "downscaled copy (boxes map back, crops come from the full frame); 0: what "
            "`FACEPIPE_MEMORY_MB` leaves after decoding the frame (full size without a limit)."
        ),
    )
    max_faces: int = Field(
        100,
        ge=1,
        le=1000,
        description=(
            "Most faces kept per frame, the largest first; the result's `faces_dropped` counts "
            "the rest. Keeps every result within the response queue's message size."
        ),
    )
    max_body_bytes: int = Field(
        6_291_456,
        ge=1024,
        description=(
            "Most bytes of one HTTP request body (the Function URL's own limit is 6 MB); the "
            "client downscales a frame whose request would be larger."
        ),
    )
    max_object_bytes: int = Field(
        20_971_520,
        ge=1024,
        description=(
            "S3 ingress: most bytes of one uploaded photo; larger objects get a "
            "`payload_too_large` result without being downloaded."
        ),
    )
    max_filename: int = Field(
        MAX_FILENAME, ge=1, le=MAX_FILENAME, description="Most characters of a frame's filename."
    )
    formats: str = Field(
        ",".join(sorted(ACCEPTED_FORMATS)),
        description=(
            "Image formats detection accepts, comma-separated, from "
            + ", ".join(sorted(SUPPORTED_FORMATS))
            + "; animated and multi-page files are refused whatever the format."
        ),
    )
    max_message_bytes: int = Field(
        262_144,
        ge=1024,
        le=1_048_576,
        description="Queue message size above which crops go to S3 (claim check).",
    )
    # --- AWS ----------------------------------------------------------------------------------
    request_queue_url: str = Field("", description="SQS queue detection sends face crops to.")
    response_queue_url: str = Field("", description="SQS queue results are posted to.")
    bucket: str = Field("", description="S3 bucket for claim-check payloads and the gallery.")
    payload_prefix: str = Field("payloads/", description="Key prefix of claim-check payloads.")
    ingest_prefix: str = Field(
        "input/",
        description="S3 ingress: photos uploaded under this bucket key prefix are processed.",
    )
    output_prefix: str = Field(
        "output/",
        description=(
            "S3 ingress: each photo's result is written to this prefix + its key without the "
            "ingest prefix + `.json`."
        ),
    )
    ledger_table: str = Field(
        "",
        description=(
            "DynamoDB table of the request_ids whose final result is out, so a duplicate "
            "message gets no second result; empty: an in-memory ledger per process."
        ),
    )
    results_by_id: bool = Field(
        True,
        description=(
            "Detection: answer each request's result by request_id under the Function URL's "
            "`/results` (read from the ledger table). The template turns it off when the URL is "
            "public (`FunctionUrlAuthType=NONE`), where anyone could read a result whose "
            "request_id they guess; clients then take the response queue."
        ),
    )
    endpoint_url: str = Field(
        "", description="AWS endpoint override (the local stack's emulator); empty for AWS."
    )
    region: str = Field("", description="AWS region; empty uses the normal AWS_REGION chain.")
    # --- client (send / poll / get) -----------------------------------------------------------
    function_url: str = Field("", description="Client: the detection Function URL to POST to.")
    stack_name: str = Field(
        "", description="Client: a deployed stack whose Outputs give the URL and the queues."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Client: requests in flight at once.")
    retries: int = Field(
        5, ge=0, le=20, description="Client: retries on throttling/5xx, exponential backoff."
    )
    poll_timeout: float = Field(
        120.0, gt=0, description="Client: seconds to wait for results before reporting missing."
    )
    results_via: Literal["auto", "url", "queue"] = Field(
        "auto",
        description=(
            "Client (poll, get, album, bench e2e): where results are read: `url` (by "
            "request_id from the Function URL's `/results`: only this client's, a request per "
            "ask of up to 100), `queue` (the shared response queue, handing others' results "
            "back), `auto` (`url` when the stack offers it, else `queue`). Read by `url`, "
            "results are asked for by request_id only (`reply` `by_id`: none on the response "
            "queue); `send` asks so with `url` only, and its results must then be polled by "
            "`url` (or `auto`)."
        ),
    )
    video_fps: float = Field(1.0, gt=0, description="Client: frames per second sampled from video.")
    video_every: int = Field(
        0, ge=0, description="Client: sample every Nth video frame instead (0 uses video_fps)."
    )
    sign: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Client: SigV4-sign requests (`auto`: for AWS Function URLs, *.on.aws).",
    )
    # --- local stack --------------------------------------------------------------------------
    runtime: Literal["inprocess", "rie", "image"] = Field(
        "inprocess",
        description=(
            "Local stack: run the handlers in-process, behind awslambdaric + the RIE, or in "
            "their built container images (`image`: one container per function, RIE inside)."
        ),
    )
    docker_root: str = Field(
        "",
        description=(
            "Images: data root (images, containers, socket) of the private dockerd started when "
            "`DOCKER_HOST` names no running Docker; empty: `~/.cache/facepipe/docker`."
        ),
    )
    port: int = Field(
        0, ge=0, le=65535, description="Local stack: Function URL port on 127.0.0.1 (0: any free)."
    )
    # --- worker (`facepipe worker`, docs/uploads-and-workers.md) --------------------------------
    stage: Literal["recognition", "detection", "both"] = Field(
        "recognition",
        description=(
            "Worker: which queue `facepipe worker` consumes: `recognition` (the request queue, "
            "as the recognition function), `detection` (the S3 ingest queue) or `both` (one "
            "thread each)."
        ),
    )
    ingest_queue_url: str = Field(
        "",
        description=(
            "Worker, detection stage: the S3 ingest queue to consume (the stack's `IngestQueue`)."
        ),
    )
    worker_wait_seconds: int = Field(
        20,
        ge=0,
        le=20,
        description="Worker: SQS long-poll wait per receive (WaitTimeSeconds), cut to half "
        "the SQS client's read timeout (5 s with facepipe's clients) so an idle poll never "
        "times out.",
    )
    worker_batch_size: int = Field(
        10,
        ge=1,
        le=100,
        description="Worker: most messages per batch (receives of up to 10 are gathered).",
    )
    worker_batch_window_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description=(
            "Worker: how long to keep receiving to fill a batch after its first message (0: "
            "one receive makes the batch)."
        ),
    )
    worker_visibility_timeout: int = Field(
        300,
        ge=3,
        le=43200,
        description=(
            "Worker: visibility timeout of received messages, renewed every third of it while "
            "their batch runs; a worker that dies hands its messages back after this long. Keep "
            "it above the result ledger's 260 s lease, so a message it held finds the lease over."
        ),
    )
    worker_grace_seconds: float = Field(
        25.0,
        ge=0,
        description=(
            "Worker: on SIGTERM/SIGINT, how long the in-flight batch may take to finish; what "
            "is left then is released (visibility 0). Keep it under the platform's stop timeout "
            "(ECS: 30 s by default)."
        ),
    )
    worker_health_host: str = Field(
        "127.0.0.1", description="Worker: address of the `GET /healthz` endpoint."
    )
    worker_health_port: int = Field(
        8080, ge=0, le=65535, description="Worker: port of `GET /healthz` (0: any free port)."
    )
    worker_heartbeat_seconds: float = Field(
        60.0, gt=0, description="Worker: seconds between heartbeat log lines."
    )
    worker_stuck_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "Worker: `/healthz` answers 503 when a stage has made no progress (no receive "
            "returned, no record finished) for this long."
        ),
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: str) -> str:
        names = [f.strip().upper() for f in value.split(",") if f.strip()]
        names = ["JPEG" if n == "JPG" else "TIFF" if n == "TIF" else n for n in names]
        unknown = sorted(set(names) - SUPPORTED_FORMATS)
        if unknown or not names:
            raise ValueError(
                f"unsupported image format(s) {', '.join(unknown) or '(none)'}; choose from "
                + ", ".join(sorted(SUPPORTED_FORMATS))
            )
        return ",".join(sorted(set(names)))

    @field_validator("ingest_prefix", "output_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not value.endswith("/") or value.startswith("/") or "//" in value:
            raise ValueError(
                "must be a key prefix such as `input/`: ending in /, not starting with /"
            )
        return value

    @property
    def accepted_formats(self) -> frozenset[str]:
        """``formats`` as Pillow format names."""
        return frozenset(self.formats.split(","))

    @property
    def frame_pixel_limit(self) -> int:
        """``max_pixels``, lowered to what ``memory_mb`` can decode (see memory_budget)."""
        if not self.memory_mb:
            return self.max_pixels
        return min(self.max_pixels, DETECTION_MEMORY.max_frame_pixels(self.memory_mb))

    def detect_pixel_limit(self, frame_pixels: int) -> int:
        """The most pixels MTCNN runs on for a frame of ``frame_pixels`` (0: no limit)."""
        if self.max_detect_pixels:
            return self.max_detect_pixels
        if not self.memory_mb:
            return 0
        return DETECTION_MEMORY.detect_pixels(self.memory_mb, frame_pixels)

    @property
    def data_path(self) -> Path:
        """``data_dir``, or the user data directory of this OS (platformdirs)."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        import platformdirs

        return Path(platformdirs.user_data_dir("facepipe", appauthor=False))

    @property
    def default_gallery(self) -> Path:
        """The local gallery of commands given none: ``<data_path>/gallery.npz``."""
        return self.data_path / "gallery.npz"

    @property
    def effective_match_threshold(self) -> float:
        """``match_threshold``, or the embedder's default when it is not set."""
        if self.match_threshold is not None:
            return self.match_threshold
        return DEFAULT_MATCH_THRESHOLDS[self.embedder]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FACEPIPE_*`` variables, then apply ``overrides`` (e.g. CLI flags).

        >>> Settings.from_env({"FACEPIPE_MARGIN": "20"}).margin
        20
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(env_name(name))
            if raw is not None and raw != "":
                values[name] = raw
        if "memory_mb" not in values and environ.get(LAMBDA_MEMORY_ENV, "").isdigit():
            values["memory_mb"] = environ[LAMBDA_MEMORY_ENV]  # Lambda's own: MemorySize
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{_setting_names(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ConfigError(f"invalid configuration: {problems}") from exc


class SettingGroup(NamedTuple):
    title: str  # what the group's settings are about (the configuration page's heading)
    names: tuple[str, ...]


# Every setting is in one group; each command names the groups it uses, and its --help shows
# those settings' flags (every other one is accepted too, hidden: facepipe.cli.options). A new
# setting goes in a group here (tests/unit/cli/test_help.py fails otherwise).
SETTING_GROUPS: dict[str, SettingGroup] = {
    "models": SettingGroup(
        "the embedder and how it runs", ("embedder", "weights", "device", "threads", "embed_mode")
    ),
    "detection": SettingGroup(
        "finding faces, and the limits of one frame",
        (
            "image_size",
            "margin",
            "min_face_size",
            "min_face_probability",
            "max_detect_side",
            "max_pixels",
            "memory_mb",
            "max_detect_pixels",
            "max_faces",
            "formats",
        ),
    ),
    "matching": SettingGroup(
        "the gallery and albums: naming faces",
        (
            "gallery",
            "match_threshold",
            "top_k",
            "index_min_size",
            "index_nprobe",
            "gallery_refresh_seconds",
            "albums",
            "album_compact_every",
            "album_merge_max_faces",
            "data_dir",
        ),
    ),
    "limits": SettingGroup(
        "the functions' limits on a request, an upload and a queue message",
        (
            "max_frames",
            "max_request_pixels",
            "max_body_bytes",
            "max_object_bytes",
            "max_filename",
            "max_message_bytes",
        ),
    ),
    "stack": SettingGroup(
        "the queues, bucket and table the functions use",
        (
            "request_queue_url",
            "response_queue_url",
            "bucket",
            "payload_prefix",
            "ingest_prefix",
            "output_prefix",
            "ledger_table",
            "results_by_id",
        ),
    ),
    "aws": SettingGroup(
        "where AWS is: the endpoint, the region, a deployed stack",
        ("endpoint_url", "region", "stack_name"),
    ),
    "client": SettingGroup(
        "commands that talk to a stack (send, poll, get, upload, album, bench e2e)",
        ("function_url", "concurrency", "retries", "poll_timeout", "results_via", "sign"),
    ),
    "video": SettingGroup(
        "the frames taken from a video (run, send, get)", ("video_fps", "video_every")
    ),
    "local": SettingGroup("the local stack and the images", ("runtime", "docker_root", "port")),
    "worker": SettingGroup(
        "the workers (`facepipe worker`)",
        (
            "stage",
            "ingest_queue_url",
            "worker_wait_seconds",
            "worker_batch_size",
            "worker_batch_window_seconds",
            "worker_visibility_timeout",
            "worker_grace_seconds",
            "worker_health_host",
            "worker_health_port",
            "worker_heartbeat_seconds",
            "worker_stuck_seconds",
        ),
    ),
}


def setting_group(name: str) -> str:
    """The group of setting ``name``.

    >>> setting_group("gallery")
    'matching'
    """
    for group, (_, names) in SETTING_GROUPS.items():
        if name in names:
            return group
    raise KeyError(f"setting {name} is in no group: add it to config.SETTING_GROUPS")


def _setting_names(loc: tuple[int | str, ...]) -> str:
    """``FACEPIPE_MAX_FRAMES (--max-frames)``: where a bad value may have come from."""
    if not loc:
        return "?"
    return f"{env_name(str(loc[0]))} ({flag_name(str(loc[0]))})"


def env_name(field: str) -> str:
    """``min_face_size`` → ``FACEPIPE_MIN_FACE_SIZE``."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """``min_face_size`` → ``--min-face-size``."""
    return "--" + field.replace("_", "-")


def settings_markdown() -> str:
    """Every setting (docs/configuration.md), one table per group: env var, flag, default,
    meaning."""
    parts = []
    for group, (title, names) in SETTING_GROUPS.items():
        lines = [f"### `{group}`: {title}", ""]
        lines += ["| env var | CLI flag | default | meaning |", "| --- | --- | --- | --- |"]
        for name in names:
            field = Settings.model_fields[name]
            default = field.default
            shown = f"`{default}`" if default not in ("", None) else "(empty)"
            lines.append(
                f"| `{env_name(name)}` | `{flag_name(name)}` | {shown} | {field.description} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
