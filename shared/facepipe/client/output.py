"""Writing results as they come: JSON lines (completion or send order) and annotated images.

Example:
    >>> writer = ResultWriter(print, order=["demo.a", "demo.b"], ordered=True)  # doctest: +SKIP
    >>> report = poller.poll(writer.order, timeout=60, on_result=writer.add)  # doctest: +SKIP
    >>> writer.finish()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facepipe.client.annotate import write_annotated
from facepipe.client.results import Received
from facepipe.client.sources import read_frame
from facepipe.errors import FacepipeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where a request_id's pixels came from: a file, and for a video the frame number and its
    time in the video (seconds)."""

    source: str
    frame: int | None = None
    time_s: float | None = None

    def video_keys(self) -> dict[str, Any]:
        """What a video frame's result line adds: ``source``, ``frame`` and ``time_s``."""
        if self.frame is None:
            return {}
        return {"source": self.source, "frame": self.frame, "time_s": self.time_s}


def result_line(received: Received, origin: Origin | None = None) -> str:
    """The result as the stack posted it, on one line; a video frame's gains where in the video
    it is (:meth:`Origin.video_keys`)."""
    body = received.body.strip()
    extra = origin.video_keys() if origin is not None else {}
    if not extra and "\n" not in body:
        return body
    return json.dumps({**json.loads(body), **extra})


class ResultWriter:
    """Hands each result line to ``write`` and, with ``annotate``, saves the annotated image.

    Args:
        write: prints one line (e.g. ``print`` or ``tqdm.write``).
        order: the request_ids in send order.
        ordered: write in ``order`` (holding back results that arrive early) instead of as they
            arrive.
        annotate: folder for ``<request_id>.jpg`` images with the faces drawn.
        origins: request_id → :class:`Origin`, to read the pixels again for ``annotate``.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        order: Iterable[str] = (),
        ordered: bool = False,
        annotate: Path | None = None,
        origins: Mapping[str, Origin] | None = None,
    ) -> None:
        self.write = write
        self.order = list(order)
        self.ordered = ordered
        self.annotate = annotate
        self.origins = dict(origins or {})
        self.annotated = 0
        self._held: dict[str, str] = {}
        self._next = 0

    def add(self, received: Received) -> None:
        if self.annotate is not None:
            self._annotate(received)
        line = result_line(received, self.origins.get(received.result.request_id))
        if not self.ordered:
            self.write(line)
            return
        self._held[received.result.request_id] = line
        while self._next < len(self.order) and self.order[self._next] in self._held:
            self.write(self._held.pop(self.order[self._next]))
            self._next += 1

    def finish(self) -> None:
        """Write what is still held back (results after a missing one), in order."""
        for request_id in self.order[self._next :]:
            if request_id in self._held:
                self.write(self._held.pop(request_id))
        self._next = len(self.order)

    def _annotate(self, received: Received) -> None:
        assert self.annotate is not None
        request_id = received.result.request_id
        origin = self.origins.get(request_id)
        if origin is None:
            logger.warning("%s: not annotated: its source file is not known", request_id)
            return
        try:
            write_annotated(self.annotate, read_frame(origin.source, origin.frame), received.result)
        except (FacepipeError, OSError) as exc:
            logger.warning("%s: not annotated: %s", request_id, getattr(exc, "message", exc))
            return
        self.annotated += 1
