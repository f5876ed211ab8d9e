"""The detection function's cold start imports only what the Function URL handler uses (#7).

The architecture (which layer may import which) is import-linter's, in ``make lint``; this test
keeps the one rule it cannot see, because the wiring imports recognition's code inside the
factories that build recognition: ``functions/detection/app.py`` is imported in a fresh process,
as Lambda's init does, with the environment it needs, and ``sys.modules`` must hold none of the
code of the stages it does not run (S3 ingress, recognition: everything of ``facepipe.identity``
but the registry the settings read), of the worker, nor Powertools' batch utilities. The same
process then imports ``ingest_app.py`` to show the S3 ingress handler still has all it needs. The
init runs without garbage collection and ends with its objects frozen out of later collections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

DETECTION = ROOT / "functions" / "detection"
# Packages and modules (with their submodules) the Function URL function does not use.
NOT_AT_COLD_START = (
    "aws_lambda_powertools.utilities.batch",
    "facepipe.worker",
    "facepipe.stages.ingest",
    "facepipe.stages.recognize",
    "facepipe.identity",
    "facepipe.app.stores",
)
ALLOWED = ("facepipe.identity", "facepipe.identity.embedders")  # the settings' thresholds
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "detection",
    "FACEPIPE_REQUEST_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/requests",
    "FACEPIPE_RESPONSE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/responses",
    "FACEPIPE_BUCKET": "facepipe-data",
}
SCRIPT = f"""
import gc, json, sys
import app
collector = {{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
loaded = sorted(
    name for name in sys.modules
    if any(name == m or name.startswith(m + ".") for m in {NOT_AT_COLD_START!r})
    and name not in {ALLOWED!r}
)
import ingest_app
print(json.dumps({{"loaded": loaded, "ingest": callable(ingest_app.handler), "gc": collector,
                   "url": callable(app.handler)}}))
"""


def test_detection_app_imports_no_batch_utilities_nor_recognition_modules() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env.update(ENV)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=DETECTION,  # as in the image: the handler modules in the task root
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == [], "imported by the detection function's cold start"
    # The init ran without garbage collection and left its objects frozen (torch's alone are
    # some 10**5 tracked objects), with the collector back on for the requests.
    collector = answer.pop("gc")
    assert collector["enabled"] is True
    assert collector["frozen"] > 100_000, collector
    assert answer == {"loaded": [], "ingest": True, "url": True}
