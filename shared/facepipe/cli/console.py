"""Keeping stdout for a command's data when in-process functions print to it too."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def reserve_stdout() -> TextIO:
    """The real stdout, kept for the command's data lines; fd 1 then points at stderr, so
    whatever the functions or libraries print (Powertools logs and metrics in-process) lands on
    stderr."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return real
