"""The recognition stage: queue tasks → one forward pass over every crop → one result each.

``Recognition`` is the pure part (frames with crops → results). ``RecognitionService`` adds the
queue semantics: each record is parsed on its own, so one poisoned record fails only itself,
while all good records' crops are embedded together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facepipe.errors import (
    ConfigError,
    EmbedderMismatch,
    FacepipeError,
    GalleryError,
    InvalidMessage,
)
from facepipe.identity.album_stores import Albums
from facepipe.identity.albums import AlbumEntry
from facepipe.identity.embedders import EMBEDDERS, Embedder, embed_splitting
from facepipe.identity.gallery import DEFAULT_TOP_K, Matcher
from facepipe.messages import (
    AlbumMatch,
    AlbumOutcome,
    ErrorInfo,
    FaceCrop,
    FacePayload,
    FaceResult,
    FaceTask,
    Models,
    PersonMatch,
    Reply,
    Result,
    readable_reply,
    readable_request_id,
)
from facepipe.stages.batch import Message, RecognitionSummary
from facepipe.stages.detect import FrameFaces, _ms
from facepipe.stages.ledger import FinalResults
from facepipe.vision.crops import crop_from_b64, crop_sides
from facepipe.vision.detector import DetectedFace

_log = logging.getLogger(__name__)


class Recognition:
    """Embeds and names the faces of many frames at once.

    Args:
        embedder: an :class:`~facepipe.identity.embedders.Embedder` (``embed(crops) -> (N, dim)``).
        gallery: known people; empty means every face is ``unknown``. A gallery made with
            another embedder (or of another dimension) is refused with a ``GalleryError``.
        threshold: L2 distance above which a face is ``unknown``.
        top_k: people listed per face (``matches``), best first.
        source: when given, :meth:`recognize` asks it for the gallery before every batch
            (:class:`GallerySource` reloads a new version of the stored gallery).
    """

    def __init__(
        self,
        embedder: Embedder,
        gallery: Matcher,
        threshold: float,
        *,
        top_k: int = DEFAULT_TOP_K,
        source: GallerySource | None = None,
    ) -> None:
        check_gallery_embedder(gallery, embedder)
        self.embedder = embedder
        self.gallery = gallery
        self.threshold = threshold
        self.top_k = top_k
        self.source = source
        self.splits = 0  # batches split after running out of memory

    def recognize(
        self, frames: Sequence[FrameFaces], *, with_embeddings: bool = False
    ) -> list[Result]:
        if self.source is not None:
            self.gallery = self.source.current()
        crops = [face.crop for frame in frames for face in frame.faces]
        start = time.perf_counter()
        embeddings = embed_splitting(self.embedder, crops, self._split)
        embed_ms = _ms(start)
        start = time.perf_counter()
        matches = self.gallery.match(embeddings, self.threshold, self.top_k) if len(crops) else []
        match_ms = _ms(start)
        results, offset = [], 0
        for frame in frames:
            n = len(frame.faces)
            faces = [
                FaceResult(
                    box=[round(v, 2) for v in face.box],
                    probability=round(face.probability, 6),
                    landmarks=[[round(x, 2), round(y, 2)] for x, y in face.landmarks],
                    name=m.name,
                    distance=None if m.distance is None else round(m.distance, 6),
                    similarity=None if m.similarity is None else round(m.similarity, 6),
                    matches=[
                        PersonMatch(
                            name=p.name,
                            similarity=round(p.similarity, 6),
                            distance=round(p.distance, 6),
                        )
                        for p in m.matches
                    ],
                    embedding=[float(v) for v in emb] if with_embeddings else None,
                )
                for face, m, emb in zip(
                    frame.faces,
                    matches[offset : offset + n],
                    embeddings[offset : offset + n],
                    strict=True,
                )
            ]
            offset += n
            timings = dict(frame.timings_ms)
            if frame.sent_at is not None:
                timings["queue_wait"] = round(max(0.0, time.time() - frame.sent_at) * 1000, 3)
            timings.update(embed=embed_ms, match=match_ms, batch_faces=float(len(crops)))
            results.append(
                Result(
                    request_id=frame.request_id,
                    filename=frame.filename,
                    status="ok" if faces else "no_face",
                    width=frame.width,
                    height=frame.height,
                    faces=faces,
                    result=[f.name for f in faces],
                    models=Models(embedder=self.embedder.name),
                    weights=self.embedder.weights_id,
                    timings_ms=timings,
                    output_key=frame.output_key,
                    faces_dropped=frame.faces_dropped or None,
                    reply=frame.reply,
                )
            )
        return results

    def _split(self, size: int) -> None:
        self.splits += 1
        _log.warning("out of memory embedding %d crops: embedding them in two halves", size)


def check_gallery_embedder(gallery: Matcher, embedder: Embedder) -> None:
    """Refuse to match a gallery whose rows another embedder made: its distances mean nothing."""
    made_with = gallery.embedder
    if made_with and made_with != embedder.name:
        raise GalleryError(
            f"the gallery was enrolled with the {made_with} embedder but this function embeds "
            f"with {embedder.name}: re-enrol it with FACEPIPE_EMBEDDER={embedder.name}, or set "
            f"FACEPIPE_EMBEDDER={made_with} on both functions"
        )
    dimension = gallery.dimension
    if len(gallery) and dimension != embedder.dim:
        raise GalleryError(
            f"the gallery holds {dimension}-d embeddings but the {embedder.name} embedder makes "
            f"{embedder.dim}-d ones: it was enrolled with another embedder; re-enrol it with "
            f"FACEPIPE_EMBEDDER={embedder.name}"
        )


class GalleryLoader(Protocol):
    """A stored gallery (``facepipe.app.wiring.ServedGallery``): a tag that changes with every new
    version, and the gallery itself; ``missing_ok=False`` makes a missing one an error."""

    def tag(self) -> str: ...

    def load(self, *, missing_ok: bool = True) -> Matcher: ...


class GallerySource:
    """The gallery to match against, picking up a new stored version without a redeploy.

    The gallery is loaded here (at the function's init: errors propagate). :meth:`current` then
    looks at the store's tag (S3 ``HeadObject`` ETags) at most every ``refresh_seconds`` (0:
    every call) and reloads when it changed. A reload that fails keeps the gallery in use, logs
    a warning and sets :attr:`stale` (the reason; the ``GalleryStale`` metric and its alarm
    read it): a gallery that is gone (deleted), corrupt or refused (``check`` raising
    ``GalleryError``) is not tried again until the object changes; any other error is retried
    at the next check. A deleted gallery never becomes an empty one.

    Example:
        >>> source = GallerySource(ServedGallery(settings), 60)  # doctest: +SKIP
        >>> gallery = source.current()  # doctest: +SKIP
    """

    def __init__(
        self,
        loader: GalleryLoader,
        refresh_seconds: float = 60,
        *,
        check: Callable[[Matcher], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loader = loader
        self.refresh_seconds = refresh_seconds
        self.check = check
        self.clock = clock
        self._tag = loader.tag()
        self._gallery = loader.load()
        self._checked = clock()
        self.reloads = 0
        self.stale: str | None = None  # why the gallery served is not the stored one, if so

    def current(self) -> Matcher:
        now = self.clock()
        if now - self._checked < self.refresh_seconds:
            return self._gallery
        self._checked = now
        try:
            tag = self.loader.tag()
        except Exception as exc:
            _log.warning("cannot check the gallery for a new version: %r", exc)
            return self._gallery
        if tag == self._tag:
            return self._gallery
        try:
            gallery = self.loader.load(missing_ok=False)
            if self.check is not None:
                self.check(gallery)
        except GalleryError as exc:
            _log.warning("new gallery refused, keeping the loaded one: %s", exc.message)
            self._tag = tag  # tried once per version: a broken object stays broken
            self.stale = exc.message
            return self._gallery
        except Exception as exc:
            _log.warning("gallery reload failed, keeping the loaded one: %r", exc)
            self.stale = f"reload failed: {exc!r}"
            return self._gallery
        _log.info("gallery reloaded: %d rows", len(gallery))
        self._gallery, self._tag = gallery, tag
        self.reloads += 1
        self.stale = None
        return gallery


def frame_from_task(
    task: FaceTask, faces: Sequence[FaceCrop], sides: tuple[int, int] | None = None
) -> FrameFaces:
    """A queue task (with its faces, inline or fetched) → the in-memory frame; with ``sides``
    (:func:`~facepipe.vision.crops.crop_sides`) crops of another size are refused before
    decoding."""
    return FrameFaces(
        request_id=task.request_id,
        filename=task.filename,
        width=task.width,
        height=task.height,
        faces=[
            DetectedFace(
                box=(f.box[0], f.box[1], f.box[2], f.box[3]),
                probability=f.probability,
                landmarks=tuple((p[0], p[1]) for p in f.landmarks),
                crop=crop_from_b64(f.crop_png, sides),
            )
            for f in faces
        ],
        timings_ms=dict(task.timings_ms),
        sent_at=task.sent_at,
        embedder=task.embedder,
        album=task.album,
        output_key=task.output_key,
        faces_dropped=task.faces_dropped or 0,
        reply=task.reply,
    )


class PayloadStore(Protocol):
    """Claim-check storage (S3 in AWS): a request's objects live under ``key_for(id, "")``."""

    def key_for(self, request_id: str, name: str) -> str: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


@dataclass
class Outcome:
    """What became of one message: its task (when it parsed) and result, or the error."""

    request_id: str | None = None  # as far as it could be read (for the log and the refusal)
    reply: Reply = "queue"  # how its result is delivered, as far as it could be read
    task: FaceTask | None = None
    result: Result | None = None
    error: Exception | None = None
    duplicate: bool = False  # the request's final result is already out: post nothing
    # Its own request's claim-check object, deleted once the message is done (never one a task
    # names outside its request's prefix: that is not recognition's to delete).
    payload_key: str | None = None


def parse_message(message: Message) -> Outcome:
    """The message read once: its task and request_id, or the refusal (the error, with the
    request_id still readable from the attribute or the body's start, so that a malformed
    message can be answered with its request's ``error`` result, delivered as its ``reply``
    asks when that can be read too)."""
    try:
        task = FaceTask.parse_json(message.body)
    except InvalidMessage as exc:
        return Outcome(
            request_id=readable_request_id(message.body, message.request_id),
            reply=readable_reply(message.body),
            error=exc,
        )
    return Outcome(request_id=task.request_id, reply=task.reply, task=task)


class RecognitionBatch:
    """A recognition batch after its shared forward pass (:class:`~facepipe.stages.batch.Batch`):
    :meth:`finish` posts one message's result, and a message whose result cannot be posted
    fails alone."""

    def __init__(
        self,
        outcomes: Mapping[str, Outcome],
        sink: FinalResults,
        payloads: PayloadStore | None,
        gallery_stale: str | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.sink = sink
        self.payloads = payloads
        self.report = RecognitionSummary(
            duplicates=sum(o.duplicate for o in outcomes.values()), gallery_stale=gallery_stale
        )

    def finish(self, message_id: str) -> None:
        """Post the message's result (nothing for a duplicate); raises (→ partial batch
        failure) when it cannot."""
        outcome = self.outcomes[message_id]
        if outcome.duplicate:
            self._drop_payload(outcome)
            return
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None  # no task: a malformed message's error result
        posted = self.sink.send_result(outcome.result)  # False: the ledger had it
        self._drop_payload(outcome)
        if posted:
            self.report.results.append(outcome.result)
        else:
            self.report.duplicates += 1

    def _drop_payload(self, outcome: Outcome) -> None:
        """The message is done (posted, or a duplicate): its claim-check object is not needed."""
        if outcome.payload_key and self.payloads is not None:
            try:
                self.payloads.delete(outcome.payload_key)
            except Exception:  # the result is out; the bucket's lifecycle rule is the backstop
                _log.warning("could not delete claim-check payload", exc_info=True)

    def log_keys(self, message_id: str) -> dict[str, Any]:
        outcome = self.outcomes.get(message_id)
        return {"request_id": None if outcome is None else outcome.request_id}

    def summary(self) -> RecognitionSummary:
        return self.report


class RecognitionService:
    """Queue messages → :class:`RecognitionBatch` (one forward pass for all good messages)."""

    def __init__(
        self,
        recognition: Recognition,
        sink: FinalResults,
        payloads: PayloadStore | None = None,
        albums: Albums | None = None,
    ) -> None:
        self.recognition = recognition
        self.sink = sink
        self.payloads = payloads
        self.albums = albums

    def _frame(self, task: FaceTask) -> FrameFaces:
        """The task's frame, its crops inline or fetched from its claim check; refuses a task
        for another embedder and crops of another size."""
        embedder = self.recognition.embedder.name
        if task.embedder not in EMBEDDERS:
            raise InvalidMessage(
                f"the task names no known embedder (one of {', '.join(EMBEDDERS)}); tasks are "
                "written by the detection function"
            )
        if task.embedder != embedder:
            raise EmbedderMismatch(
                f"task crops were made for {task.embedder} but this function embeds with "
                f"{embedder}; set FACEPIPE_EMBEDDER the same on both functions"
            )
        faces: Sequence[FaceCrop] = task.faces
        if task.payload_key:
            if self.payloads is None:
                raise ConfigError("task has a payload_key but no payload store is configured")
            key = self._own_payload(task)
            if key is None:
                home = self.payloads.key_for(task.request_id, "")
                raise InvalidMessage(
                    f"payload_key is not under {home}, where detection puts this request's "
                    "claim checks"
                )
            payload = FacePayload.parse_json(self.payloads.get(key), key)  # PayloadMissing
            if payload.request_id != task.request_id:
                raise InvalidMessage(f"payload {key} belongs to another request")
            faces = payload.faces
        frame = frame_from_task(task, faces, crop_sides(embedder))
        if len({face.crop.shape for face in frame.faces}) > 1:
            raise InvalidMessage("the task's face crops differ in size; one task's crops share one")
        return frame

    def _own_payload(self, task: FaceTask) -> str | None:
        """The task's claim-check key when it lies under its own request's prefix (a task may
        not make recognition read or delete anything else)."""
        key = task.payload_key
        if not key or self.payloads is None:
            return None
        return key if key.startswith(self.payloads.key_for(task.request_id, "")) else None

    @staticmethod
    def _refuse(outcome: Outcome, exc: Exception) -> None:
        """A message that cannot be recognised. A permanent problem (a malformed message, a
        missing claim check) whose request_id can still be read becomes that request's final
        ``error`` result; anything else (no readable request_id, a transient S3 error, a
        deployment mismatch) fails the message: retried, then dead-lettered."""
        request_id = outcome.request_id
        if isinstance(exc, InvalidMessage) and exc.permanent and request_id is not None:
            _log.warning("malformed message %s: error result (%s)", request_id, exc.code)
            error = ErrorInfo(code=exc.code, message=exc.message)
            outcome.result = Result(
                request_id=request_id, status="error", error=error, reply=outcome.reply
            )
            outcome.task = outcome.error = None
            return
        if not isinstance(exc, FacepipeError):
            _log.warning("record failed: %r", exc)
        outcome.error = exc

    def prepare(self, messages: Sequence[Message]) -> RecognitionBatch:
        """Each message parsed once (:func:`parse_message`); those whose request already has
        its final result (the sink's ledger says so: a redelivered or repeated message) are
        dropped before any work, their own claim checks deleted; the rest embedded together."""
        outcomes = {m.message_id: parse_message(m) for m in messages}
        readable = [o.request_id for o in outcomes.values() if o.request_id is not None]
        finished = self.sink.finished(readable) if readable else set()
        loaded: list[tuple[str, FrameFaces]] = []
        for message_id, outcome in outcomes.items():
            task = outcome.task
            if outcome.request_id in finished:
                outcome.duplicate, outcome.error = True, None
                outcome.payload_key = self._own_payload(task) if task is not None else None
            elif task is None:  # refused as it was parsed
                assert outcome.error is not None
                self._refuse(outcome, outcome.error)
            else:
                try:
                    loaded.append((message_id, self._frame(task)))
                except Exception as exc:
                    self._refuse(outcome, exc)
                else:
                    outcome.payload_key = task.payload_key  # its own: _frame checked
        # One forward pass per crop size: a single one unless a producer sent odd crops.
        groups: dict[tuple[int, ...], list[tuple[str, FrameFaces]]] = {}
        for message_id, frame in loaded:
            shape = frame.faces[0].crop.shape if frame.faces else ()
            groups.setdefault(shape, []).append((message_id, frame))
        for group in groups.values():
            frames = [frame for _, frame in group]
            in_albums = any(frame.album for frame in frames)
            try:
                results = self.recognition.recognize(frames, with_embeddings=in_albums)
                if in_albums:
                    self._albums(frames, results)
            except Exception as exc:  # every message of the group fails (and is retried)
                _log.exception("recognition failed for %d records", len(group))
                for message_id, _ in group:
                    outcomes[message_id].error = exc
                continue
            for (message_id, _), result in zip(group, results, strict=True):
                outcomes[message_id].result = result
        source = self.recognition.source
        return RecognitionBatch(
            outcomes, self.sink, self.payloads, source.stale if source is not None else None
        )

    def _albums(self, frames: Sequence[FrameFaces], results: Sequence[Result]) -> None:
        """Album frames: ``index`` adds the batch's faces as one new shard per album; ``find``
        searches the album with the frame's largest face. Embeddings never leave the function."""
        embedder = self.recognition.embedder.name
        to_index: dict[str, list[tuple[Result, list[AlbumEntry]]]] = {}
        for frame, result in zip(frames, results, strict=True):
            album = frame.album
            vectors = [np.asarray(f.embedding, np.float32) for f in result.faces]
            for face in result.faces:
                face.embedding = None
            if album is None or result.status != "ok":
                continue
            if self.albums is None:
                _album_error(result, "album_unavailable", "albums are not configured here")
            elif album.mode == "index":
                photo = frame.filename or frame.request_id
                entries = [
                    AlbumEntry(photo, f.box, v, frame.request_id)
                    for f, v in zip(result.faces, vectors, strict=True)
                ]
                to_index.setdefault(album.name, []).append((result, entries))
            else:
                try:
                    hits = self.albums.find(
                        album.name,
                        vectors[0],
                        threshold=self.recognition.threshold,
                        embedder=embedder,
                    )
                except FacepipeError as exc:
                    _album_error(result, exc.code, exc.message)
                    continue
                result.album = AlbumOutcome(
                    name=album.name,
                    mode="find",
                    matches=[AlbumMatch(**hit.__dict__) for hit in hits],
                )
        for name, items in to_index.items():
            assert self.albums is not None
            try:
                self.albums.add(name, [e for _, entries in items for e in entries], embedder)
            except FacepipeError as exc:
                for result, _ in items:
                    _album_error(result, exc.code, exc.message)
                continue
            for result, entries in items:
                result.album = AlbumOutcome(name=name, mode="index", indexed=len(entries))


def _album_error(result: Result, code: str, message: str) -> None:
    """An album operation that cannot be done is the frame's final answer, not a retry."""
    result.status = "error"
    result.error = ErrorInfo(code=code, message=message)
