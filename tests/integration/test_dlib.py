"""The offline ``dlib`` embedder on real photos: the shipped samples always (what makes
``make demo`` real offline), ``../shared/faces`` when present (identification, unknown people,
verification at the calibrated threshold); and the embedder is recorded and never mixed."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facepipe.app.enrollment import enroll_folder
from facepipe.app.evaluation import embed_largest_faces, evaluate
from facepipe.app.pipeline import LocalPipeline
from facepipe.app.wiring import make_detector, make_embedder
from facepipe.config import Settings
from facepipe.errors import ConfigError, GalleryError, InvalidMessage
from facepipe.identity.dlib_embedder import DlibChipCropper, DlibEmbedder
from facepipe.identity.embedders import DEFAULT_MATCH_THRESHOLDS
from facepipe.identity.facenet import FacenetEmbedder
from facepipe.identity.gallery import UNKNOWN, Gallery
from facepipe.messages import FaceTask, Result
from facepipe.stages.batch import Message
from facepipe.stages.ledger import MemoryLedger, OncePerRequest
from facepipe.stages.recognize import Recognition, RecognitionService
from tests.conftest import SAMPLES

DLIB_THRESHOLD = DEFAULT_MATCH_THRESHOLDS["dlib"]


class ListSink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def send_result(self, result: Result) -> None:
        self.results.append(result)


def _service(recognition: Recognition, sink: ListSink | None = None) -> RecognitionService:
    return RecognitionService(recognition, OncePerRequest(sink or ListSink(), MemoryLedger()))


def _messages(**bodies: str) -> list[Message]:
    return [Message(message_id, "", body) for message_id, body in bodies.items()]


@pytest.fixture(scope="module")
def dlib_pipeline() -> LocalPipeline:
    return LocalPipeline(Settings.from_env({}, embedder="dlib", device="cpu"))


@pytest.fixture(scope="module")
def sample_gallery(dlib_pipeline: LocalPipeline) -> Gallery:
    report = enroll_folder(dlib_pipeline, SAMPLES / "gallery")
    assert not report.skipped
    return report.gallery


@pytest.fixture
def named(dlib_pipeline: LocalPipeline, sample_gallery: Gallery) -> Iterator[LocalPipeline]:
    """The dlib pipeline with the sample gallery attached (detached again afterwards)."""
    dlib_pipeline.recognition.gallery = sample_gallery
    try:
        yield dlib_pipeline
    finally:
        dlib_pipeline.recognition.gallery = Gallery()


# --- the embedder and its crop step ---------------------------------------------------------
def test_services_pick_the_dlib_crop_and_embedder(dlib_pipeline: LocalPipeline) -> None:
    settings = Settings.from_env({"FACEPIPE_EMBEDDER": "dlib"})
    assert isinstance(make_detector(settings).cropper, DlibChipCropper)
    assert isinstance(make_embedder(settings), DlibEmbedder)
    assert settings.effective_match_threshold == DLIB_THRESHOLD
    embedder = dlib_pipeline.recognition.embedder
    assert (embedder.name, embedder.dim) == ("dlib", 128)
    assert embedder.weights_id.startswith("dlib:sha256:")
    assert len(embedder.weights_id.split(":")[-1]) == 16
    assert dlib_pipeline.recognition.threshold == DLIB_THRESHOLD


def test_detection_cuts_aligned_150px_chips_and_embeddings_are_unit_rows(
    dlib_pipeline: LocalPipeline,
) -> None:
    result = dlib_pipeline.run_file(
        SAMPLES / "frames" / "obama-and-biden.jpg", with_embeddings=True
    )
    assert result.status == "ok"
    assert result.models.embedder == "dlib"
    assert result.weights == dlib_pipeline.weights_id
    for face in result.faces:
        assert face.embedding is not None
        vector = np.array(face.embedding)
        assert vector.shape == (128,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    image, _ = dlib_pipeline.detection.decode(_b64(SAMPLES / "astronaut.jpg"))
    frame = dlib_pipeline.detection.image("x", "x", image)
    assert frame.embedder == "dlib"
    assert [f.crop.shape for f in frame.faces] == [(150, 150, 3)]
    assert frame.faces[0].crop.dtype == np.uint8


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_dlib_embedder_refuses_random_weights_and_facenet_crops() -> None:
    with pytest.raises(ConfigError, match="no random weights"):
        DlibEmbedder(weights="random:0")
    with pytest.raises(ValueError, match="150x150x3"):
        DlibEmbedder().embed([np.zeros((160, 160, 3), np.uint8)])
    assert DlibEmbedder().embed([]).shape == (0, 128)


# --- the shipped samples: `make demo` recognises offline -----------------------------------
def test_sample_frames_are_named(named: LocalPipeline) -> None:
    west_wing = named.run_file(SAMPLES / "frames" / "biden-west-wing.jpg")
    assert west_wing.result == ["joe-biden"]
    both = named.run_file(SAMPLES / "frames" / "obama-and-biden.jpg")
    by_left_edge = sorted(both.faces, key=lambda f: f.box[0])
    assert [f.name for f in by_left_edge] == ["barack-obama", "joe-biden"]
    assert all(f.distance is not None and f.distance < DLIB_THRESHOLD for f in both.faces)
    astronaut = named.run_file(SAMPLES / "astronaut.jpg")
    assert astronaut.result == [UNKNOWN]
    assert named.run_file(SAMPLES / "rocket.jpg").status == "no_face"


def test_queue_round_trip_gives_the_in_process_result(named: LocalPipeline) -> None:
    """The chip travels as PNG in the task (lossless), so recognition across the queue names
    and measures exactly as in-process."""
    path = SAMPLES / "frames" / "obama-and-biden.jpg"
    image, _ = named.detection.decode(_b64(path))
    frame = named.detection.image("rt-1", path.name, image)
    task = frame.to_task()
    assert task.embedder == "dlib"
    sink = ListSink()
    _service(named.recognition, sink).prepare(_messages(r1=task.model_dump_json())).finish("r1")
    direct = named.run_file(path)
    assert [f.name for f in sink.results[0].faces] == [f.name for f in direct.faces]
    assert [f.distance for f in sink.results[0].faces] == [f.distance for f in direct.faces]


# --- never mixed ------------------------------------------------------------------------------
def _task(embedder: str | None) -> str:
    body = {
        "request_id": "mixed-1",
        "width": 10,
        "height": 10,
        "faces": [],
        "sent_at": 0.0,
    }
    if embedder is not None:
        body["embedder"] = embedder
    return json.dumps(body)


def test_a_task_cut_for_another_embedder_is_refused(
    dlib_pipeline: LocalPipeline, embedder: FacenetEmbedder
) -> None:
    dlib_service = _service(dlib_pipeline.recognition)
    batch = dlib_service.prepare(_messages(old=_task(None), facenet=_task("vggface2")))
    for record in ("old", "facenet"):
        with pytest.raises(InvalidMessage) as info:
            batch.finish(record)
        assert info.value.message == (
            "task crops were made for vggface2 but this function embeds with dlib; "
            "set FACEPIPE_EMBEDDER the same on both functions"
        )
    facenet_service = _service(Recognition(embedder, Gallery(), 1.1))
    batch = facenet_service.prepare(_messages(dlib=_task("dlib"), old=_task(None)))
    with pytest.raises(InvalidMessage, match="made for dlib but this function embeds with vgg"):
        batch.finish("dlib")
    batch.finish("old")
    assert [r.status for r in batch.summary().results] == ["no_face"]  # facenet crops, as old


def test_old_tasks_default_to_facenet_crops() -> None:
    assert FaceTask.parse_json(_task(None)).embedder == "vggface2"


def test_a_gallery_of_another_embedder_or_dimension_is_refused(
    dlib_pipeline: LocalPipeline, embedder: FacenetEmbedder
) -> None:
    dlib = dlib_pipeline.recognition.embedder
    rows512 = np.eye(2, 512, dtype=np.float32)
    rows128 = np.eye(2, 128, dtype=np.float32)
    with pytest.raises(GalleryError, match="enrolled with the vggface2 embedder") as info:
        Recognition(dlib, Gallery(["a", "b"], rows512, "vggface2"), DLIB_THRESHOLD)
    assert "FACEPIPE_EMBEDDER=dlib" in info.value.message
    with pytest.raises(GalleryError, match="512-d embeddings but the dlib embedder makes 128-d"):
        Recognition(dlib, Gallery(["a", "b"], rows512), DLIB_THRESHOLD)  # an old .pt gallery
    with pytest.raises(GalleryError, match="enrolled with the dlib embedder"):
        Recognition(embedder, Gallery(["a", "b"], rows128, "dlib"), 1.1)
    with pytest.raises(GalleryError, match="128-d embeddings but the vggface2 embedder"):
        Recognition(embedder, Gallery(["a", "b"], rows128), 1.1)
    # the same embedder, and the empty gallery of a fresh stack, are fine
    Recognition(dlib, Gallery(["a", "b"], rows128, "dlib"), DLIB_THRESHOLD)
    Recognition(dlib, Gallery(), DLIB_THRESHOLD)


def test_a_gallery_file_of_another_embedder_stops_the_pipeline(
    sample_gallery: Gallery, tmp_path: Path
) -> None:
    path = tmp_path / "dlib-gallery.npz"
    path.write_bytes(sample_gallery.to_npz_bytes())
    settings = Settings.from_env({}, gallery=str(path), weights="random:0", device="cpu")
    with pytest.raises(GalleryError, match="enrolled with the dlib embedder"):
        LocalPipeline(settings)


def test_eval_cli_on_the_samples(tmp_path: Path) -> None:
    """`facepipe eval` end to end on a pairs file made of the shipped photos."""
    for name, source in {
        "obama.jpg": SAMPLES / "gallery" / "barack-obama" / "official-portrait-2012.jpg",
        "biden.jpg": SAMPLES / "gallery" / "joe-biden" / "official-portrait-2013.jpg",
        "biden-2.jpg": SAMPLES / "frames" / "biden-west-wing.jpg",
        "collins.jpg": SAMPLES / "astronaut.jpg",
    }.items():
        (tmp_path / name).symlink_to(source)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "file_x,file_y,Decision\n"
        "biden.jpg,biden-2.jpg,Yes\n"
        "obama.jpg,biden.jpg,No\n"
        "obama.jpg,collins.jpg,No\n"
        "collins.jpg,biden-2.jpg,No\n"
    )
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("facepipe")),
            "eval",
            "--embedder",
            "dlib",
            "--pairs",
            str(pairs),
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FACEPIPE_")},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary == json.loads(out.read_text())
    assert (summary["embedder"], summary["pairs"], summary["pairs_same"]) == ("dlib", 4, 1)
    assert summary["auc"] == 1.0
    assert summary["accuracy"] == summary["accuracy_at_default"] == 1.0
    assert summary["default_threshold"] == DLIB_THRESHOLD
    assert summary["cosine"] == pytest.approx(1 - summary["threshold"] ** 2 / 2, abs=1e-6)
    assert "best threshold (L2, unit vectors)" in proc.stderr


# --- ../shared/faces ----------------------------------------------------------------------------
def _identities(shared: Path) -> list[tuple[str, str]]:
    with (shared / "identities.csv").open() as fh:
        return [(row["file"], row["identity"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def shared_embeddings(
    dlib_pipeline: LocalPipeline, shared_faces: Path
) -> tuple[list[str], np.ndarray]:
    """Identity and unit embedding of every ../shared/faces photo (each embedded once)."""
    rows = _identities(shared_faces)
    embedded = embed_largest_faces(dlib_pipeline, [shared_faces / f for f, _ in rows])
    assert len(embedded) == len(rows), "a shared photo has no face"
    return [i for _, i in rows], np.stack([embedded[shared_faces / f] for f, _ in rows])


@pytest.mark.shared_data
def test_identification_one_enrolled_photo_per_person(
    dlib_pipeline: LocalPipeline, shared_faces: Path, tmp_path: Path
) -> None:
    """Enrol each person's first photo (identities.csv order) with `enroll_folder`, then name
    every other photo through the pipeline at the default threshold."""
    rows = _identities(shared_faces)
    first: dict[str, str] = {}
    for file, identity in rows:
        first.setdefault(identity, file)
    for identity, file in first.items():
        (tmp_path / identity).mkdir()
        (tmp_path / identity / file).symlink_to(shared_faces / file)
    report = enroll_folder(dlib_pipeline, tmp_path)
    assert not report.skipped, report.skipped
    assert sorted(report.gallery.names) == sorted(first)
    assert report.gallery.embedder == "dlib"
    queries = [(f, i) for f, i in rows if first[i] != f]
    dlib_pipeline.recognition.gallery = report.gallery
    try:
        named = {f: dlib_pipeline.run_file(shared_faces / f).faces[0].name for f, _ in queries}
    finally:
        dlib_pipeline.recognition.gallery = Gallery()
    wrong = {f: (named[f], i) for f, i in queries if named[f] != i}
    accuracy = 1 - len(wrong) / len(queries)
    assert accuracy >= 0.95, f"top-1 {accuracy:.3f} over {len(queries)} photos; wrong: {wrong}"


@pytest.mark.shared_data
def test_a_person_not_enrolled_is_unknown(shared_embeddings: tuple[list[str], np.ndarray]) -> None:
    """Leave each person out of a one-photo-per-person gallery in turn: every photo of theirs
    is `unknown` at the default dlib threshold."""
    identities, vectors = shared_embeddings
    first = {i: identities.index(i) for i in dict.fromkeys(identities)}
    for left_out in first:
        enrolled = [(i, row) for i, row in first.items() if i != left_out]
        gallery = Gallery([i for i, _ in enrolled], vectors[[row for _, row in enrolled]], "dlib")
        theirs = [n for n, i in enumerate(identities) if i == left_out]
        matches = gallery.match(vectors[theirs], DLIB_THRESHOLD)
        assert [m.name for m in matches] == [UNKNOWN] * len(theirs), (
            left_out,
            [(m.closest, m.distance) for m in matches],
        )


@pytest.mark.shared_data
def test_verification_on_master_pairs_at_the_calibrated_threshold(
    dlib_pipeline: LocalPipeline, shared_faces: Path
) -> None:
    summary = evaluate(dlib_pipeline, shared_faces / "master.csv")
    assert summary["pairs"] == 300 and summary["pairs_skipped"] == 0
    assert summary["default_threshold"] == DLIB_THRESHOLD
    assert summary["accuracy_at_default"] >= 0.99, summary
    assert summary["accuracy"] >= 0.99
    assert summary["auc"] >= 0.99
    # the shipped default is the measured one, to two decimals
    assert abs(summary["threshold"] - DLIB_THRESHOLD) <= 0.005, summary
