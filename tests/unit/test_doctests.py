"""The runnable examples in the docstrings of the library's pure modules are true (the others
need models or AWS and are marked ``+SKIP`` where they appear)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "facepipe.vision.memory_budget",
    "facepipe.aws.clients",
    "facepipe.stages.detect",
    "facepipe.stages.ingest",
    "facepipe.config",
    "facepipe.messages",
    "facepipe.vision.frames",
    "facepipe.client.http",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
