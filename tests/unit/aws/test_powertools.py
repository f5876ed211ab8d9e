"""Tracing is opt-in: Powertools' Tracer (and its X-Ray SDK import) only when it is on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facepipe.aws.powertools import NoTracer, tracing_enabled


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("false", True), ("true", False), ("TRUE", False), ("1", False)],
)
def test_tracing_follows_powertools_switch(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {"POWERTOOLS_TRACE_DISABLED": value}
    assert tracing_enabled(env) is enabled


def test_no_tracer_leaves_handlers_as_they_are() -> None:
    def handler(event: dict, context: object) -> str:
        return "ok"

    assert NoTracer().capture_lambda_handler(handler) is handler
    assert NoTracer().capture_method(handler) is handler


@pytest.mark.parametrize(("disabled", "xray"), [("true", "False"), ("false", "True")])
def test_xray_sdk_is_imported_only_when_tracing(disabled: str, xray: str) -> None:
    code = (
        "import sys; from facepipe.aws.powertools import tracer; "
        "print(type(tracer).__name__, 'aws_xray_sdk.core' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"POWERTOOLS_TRACE_DISABLED": disabled, "PATH": "/usr/bin:/bin"},
    )
    expected = "NoTracer" if disabled == "true" else "Tracer"
    assert out.stdout.split() == [expected, xray]
