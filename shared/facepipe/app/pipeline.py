"""Both stages in one process, no queues: what ``facepipe run`` uses to check models on photos.

The same :class:`Detection` and :class:`Recognition` objects the Lambdas use, minus the queue hop
(crops stay in memory, so results are identical to the PNG round trip by construction).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from facepipe.app.embedder_choice import choose_embedder
from facepipe.app.wiring import load_gallery, make_detector, make_embedder
from facepipe.config import Settings
from facepipe.errors import FacepipeError
from facepipe.messages import ErrorInfo, Result, new_request_id
from facepipe.stages.detect import Detection, _ms
from facepipe.stages.recognize import Recognition
from facepipe.vision.frames import decode_image

if TYPE_CHECKING:
    from facepipe.identity.embedders import Embedder
    from facepipe.identity.gallery import Matcher


class LocalPipeline:
    """Example:
    >>> pipe = LocalPipeline(Settings.from_env(weights="random:0"))
    >>> pipe.run_file("samples/astronaut.jpg").status
    'ok'
    """

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        gallery: Matcher | None = None,
    ) -> None:
        """``embedder``/``gallery``: already loaded ones (else loaded from ``settings``)."""
        self.settings = settings
        self.detection = Detection(settings, make_detector(settings))
        self.recognition = Recognition(
            embedder or make_embedder(settings),
            gallery if gallery is not None else load_gallery(settings),
            settings.effective_match_threshold,
            top_k=settings.top_k,
        )

    @classmethod
    def offline_default(
        cls, settings: Settings, recorded: str | None = None, *, recorded_by: str = ""
    ) -> LocalPipeline:
        """The pipeline a command runs, its embedder chosen by :mod:`~facepipe.app.embedder_choice`:
        the one asked for, else the one the gallery (or ``recorded_by``, e.g. an album) was made
        with, else VGGFace2 or, without its weights, the offline dlib embedder."""
        gallery = load_gallery(settings)
        if gallery.embedder and not recorded:
            recorded, recorded_by = gallery.embedder, f"the gallery {settings.gallery}"
        choice = choose_embedder(settings, recorded, recorded_by=recorded_by or "the gallery")
        return cls(choice.settings, embedder=choice.embedder, gallery=gallery)

    @property
    def weights_id(self) -> str:
        return self.recognition.embedder.weights_id

    def run_bytes(
        self,
        data: bytes,
        filename: str = "",
        request_id: str | None = None,
        *,
        with_embeddings: bool = False,
    ) -> Result:
        request_id = request_id or new_request_id()
        start = time.perf_counter()
        try:
            image = decode_image(
                data, max_pixels=self.settings.max_pixels, formats=self.settings.accepted_formats
            )
        except FacepipeError as exc:
            return Result(
                request_id=request_id,
                filename=filename,
                status="error",
                error=ErrorInfo(code=exc.code, message=exc.message),
            )
        decode_ms = _ms(start)
        frame = self.detection.image(request_id, filename, image)
        frame.timings_ms["decode"] = decode_ms
        if not frame.faces:
            return frame.no_face_result()
        return self.recognition.recognize([frame], with_embeddings=with_embeddings)[0]

    def run_file(self, path: str | Path, *, with_embeddings: bool = False) -> Result:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            return Result(
                request_id=new_request_id(),
                filename=str(path),
                status="error",
                error=ErrorInfo(code="unreadable_file", message=f"cannot read {path}: {exc}"),
            )
        return self.run_bytes(data, str(path), with_embeddings=with_embeddings)
