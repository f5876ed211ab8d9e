"""`make help` lists every documented target (one with a ``## what it does`` comment)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_help_lists_every_documented_target() -> None:
    targets = re.findall(r"^([^\s:#=]+):[^=\n]*## ", (ROOT / "Makefile").read_text(), re.M)
    assert {"bench-e2e", "bench-memory", "image-check", "test"} <= set(targets)
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    shown = [line.split()[0] for line in listed if line.strip()]
    assert shown == targets
