"""Which embedder a command recognises with: offline by default, the same rule everywhere.

``run``, ``local up``, ``gallery enroll``, ``album index|find``, ``bench`` and the demo take it:

1. the embedder the user asked for (``FACEPIPE_EMBEDDER``/``--embedder``, or
   ``FACEPIPE_WEIGHTS``/``--weights``), as asked;
2. else the embedder the gallery or album was made with (its file records it): matching against
   it needs that embedder, whatever the default is;
3. else VGGFace2 when its weights load, and when they do not, the offline ``dlib`` embedder
   (real recognition, its model ships with face-recognition-models), announced on stderr.

An embedder that was asked for (or recorded) and cannot load is an error whose message names
the choices. The deployed functions and the worker take none of this: a service recognises with
exactly what it is configured with.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from facepipe.config import Settings
from facepipe.errors import WeightsUnavailable

if TYPE_CHECKING:
    from facepipe.identity.embedders import Embedder

OFFLINE_EMBEDDER = "dlib"
_CHOSEN = frozenset({"embedder", "weights"})


@dataclass(frozen=True)
class Choice:
    """The settings to run with (``embedder`` set when it was chosen here) and the loaded
    embedder, so a caller in this process need not load it twice."""

    settings: Settings
    embedder: Embedder


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` name, loaded (:class:`WeightsUnavailable` when it cannot be)."""
    from facepipe.app.wiring import make_embedder

    return make_embedder(settings)


def choose_embedder(
    settings: Settings,
    recorded: str | None = None,
    *,
    recorded_by: str = "the gallery",
    say: Callable[[str], None] | None = None,
) -> Choice:
    """The embedder to run with under the rule of this module.

    Args:
        recorded: the embedder the gallery or album at hand was made with, if it says.
        recorded_by: what recorded it, for the message (``"album 'party'"``).
        say: where the one line about a choice goes (default: stderr).
    """
    say = say or _stderr
    if not settings.model_fields_set & _CHOSEN and recorded and recorded != settings.embedder:
        settings = settings.model_copy(update={"embedder": recorded})
        say(f"facepipe: using the {recorded} embedder, which {recorded_by} was made with")
    try:
        return Choice(settings, load_embedder(settings))
    except WeightsUnavailable as exc:
        if settings.model_fields_set & _CHOSEN or recorded:
            raise
        offline = settings.model_copy(update={"embedder": OFFLINE_EMBEDDER})
        try:
            embedder = load_embedder(offline)
        except WeightsUnavailable as offline_exc:
            raise WeightsUnavailable(
                f"{exc.message} The offline dlib embedder is not available either: "
                f"{offline_exc.message}"
            ) from exc
        say(
            f"facepipe: the {settings.embedder} weights are not available: recognising with the "
            "offline dlib embedder (choose with --embedder or FACEPIPE_EMBEDDER)"
        )
        return Choice(offline, embedder)


def for_speed(settings: Settings, *, say: Callable[[str], None] | None = None) -> Settings:
    """The benches' rule: weight values do not change speed, so without the real weights (and
    with none asked for) they measure with seeded random ones, and say so."""
    if settings.model_fields_set & _CHOSEN:
        return settings
    try:
        load_embedder(settings)
    except WeightsUnavailable:
        (say or _stderr)(
            f"bench: the {settings.embedder} weights are not available: measuring with seeded "
            "random weights (random:0; values do not change speed, so the timings hold, "
            "but no name means anything)"
        )
        return settings.model_copy(update={"weights": "random:0"})
    return settings


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
