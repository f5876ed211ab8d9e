"""``facepipe invoke``: placeholder registered by the RIE runner module."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    return None
