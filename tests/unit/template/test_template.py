"""Checks on the SAM template (template.yaml) and samconfig.toml.

Runs offline: `sam validate --lint` and `cfn-lint` need neither credentials nor a region, and the
SAM transform to plain CloudFormation is done in-process with samtranslator, so the assertions
are on what CloudFormation would actually create (the Function URL, the event source mapping,
the generated IAM roles).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

from facepipe.stages.ledger import DEFAULT_RETENTION_S

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
BIN = Path(sys.executable).parent
FAKE_IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/facepipe:latest"

IMAGE_FUNCTIONS = ("DetectionFunction", "RecognitionFunction", "IngestFunction")
QUEUES = (
    "RequestQueue",
    "RequestDeadLetterQueue",
    "ResponseQueue",
    "IngestQueue",
    "IngestDeadLetterQueue",
)
OUTPUT_KEYS = {
    "FunctionUrl",
    "RequestQueueUrl",
    "ResponseQueueUrl",
    "DeadLetterQueueUrl",
    "BucketName",
    "DetectionFunctionName",
    "RecognitionFunctionName",
}
PAYLOADS_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/payloads/*"}
GALLERY_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/gallery/*"}
ALBUMS_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/albums/*"}
# S3 ingress (tests/unit/template/test_ingress.py)
INPUT_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/${IngestPrefix}*"}
OUTPUT_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/${OutputPrefix}*"}
BUCKET_ARN = {"Fn::GetAtt": ["DataBucket", "Arn"]}
LEDGER_ARN = {"Fn::GetAtt": ["ResultLedgerTable", "Arn"]}
LEDGER_ACTIONS = {
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
}
# What each function calls on the ledger: detection admits (PutItem), withdraws (DeleteItem),
# checks and reads kept results for /results (BatchGetItem, its only read: no GetItem, no Scan
# or Query) and posts no-face results (claim/complete/release: UpdateItem); the consumers only
# skip finished request_ids and post (UpdateItem keeps the result in the item).
CONSUMER_LEDGER_ACTIONS = {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"}


# --------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------
def load_template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def translate(parameter_values: dict[str, str] | None = None) -> dict[str, Any]:
    """SAM -> CloudFormation, offline (see /work/shared/RECIPES.md)."""
    tpl = load_template()
    # Image functions need an ImageUri before the transform; `sam build` fills it in real life.
    for name in IMAGE_FUNCTIONS:
        tpl["Resources"][name]["Properties"]["ImageUri"] = FAKE_IMAGE_URI
    translator = Translator(
        None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1")
    )
    return translator.translate(
        tpl, parameter_values=parameter_values or {}, get_managed_policy_map=dict
    )


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate()


def resources_of_type(cfn: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == rtype}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_of(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    role_ref = cfn["Resources"][function]["Properties"]["Role"]
    assert role_ref == {"Fn::GetAtt": [f"{function}Role", "Arn"]}, role_ref
    role = cfn["Resources"][f"{function}Role"]
    assert role["Type"] == "AWS::IAM::Role"
    return role


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in role["Properties"].get("Policies", []):
        out.extend(as_list(policy["PolicyDocument"]["Statement"]))
    assert out, "role has no inline statements"
    return out


def grants(role: dict[str, Any]) -> list[tuple[str, Any]]:
    """(action, resource) pairs of the role's Allow statements (Deny ones: see denials)."""
    pairs = []
    for st in statements(role):
        if st["Effect"] == "Deny":
            continue
        assert st["Effect"] == "Allow", st
        assert "NotAction" not in st and "NotResource" not in st, st
        for action in as_list(st["Action"]):
            for resource in as_list(st["Resource"]):
                pairs.append((action, resource))
    return pairs


def denials(role: dict[str, Any]) -> list[dict[str, Any]]:
    """The role's explicit Deny statements."""
    return [st for st in statements(role) if st["Effect"] == "Deny"]


def queue_of(resource: Any) -> str | None:
    """Logical id of the project queue an SQS resource ARN points at, else None."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        target, attr = resource["Fn::GetAtt"]
        return target if target in QUEUES and attr == "Arn" else None
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        # SAM policy templates (SQSPollerPolicy) build the ARN from the queue name.
        sub = resource["Fn::Sub"]
        if isinstance(sub, list) and sub[0].endswith(
            ":sqs:${AWS::Region}:${AWS::AccountId}:${queueName}"
        ):
            target, attr = sub[1]["queueName"]["Fn::GetAtt"]
            return target if target in QUEUES and attr == "QueueName" else None
    return None


def actions_on_queue(role: dict[str, Any], queue: str) -> set[str]:
    return {a for a, r in grants(role) if a.startswith("sqs:") and queue_of(r) == queue}


def actions_on_s3(role: dict[str, Any], arn: dict[str, str]) -> set[str]:
    return {a for a, r in grants(role) if a.startswith("s3:") and r == arn}


def run_tool(
    name: str, *args: str, exe: Path | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """``name ARGS`` (the venv's, unless ``exe`` is given) from the repo root, with
    ``env_vars`` added to the environment."""
    exe = exe or BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", **env_vars)
    return subprocess.run(
        [str(exe), *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def condition_values(
    cfn: dict[str, Any], parameter_values: dict[str, str] | None = None
) -> dict[str, bool]:
    """The template's Conditions evaluated for these parameters (defaults for the others)."""
    params = {k: str(v.get("Default", "")) for k, v in cfn["Parameters"].items()}
    params.update(parameter_values or {})
    conditions = cfn.get("Conditions", {})

    def ev(node: Any) -> Any:
        if not isinstance(node, dict):
            return str(node)
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Condition":
            return ev(conditions[arg])
        if fn == "Fn::Equals":
            return ev(arg[0]) == ev(arg[1])
        if fn == "Fn::Not":
            return not ev(arg[0])
        if fn == "Fn::And":
            return all(ev(a) for a in arg)
        if fn == "Fn::Or":
            return any(ev(a) for a in arg)
        raise AssertionError(f"condition function {fn} not evaluated by this test")

    return {name: bool(ev(c)) for name, c in conditions.items()}


_NO_VALUE = object()


def apply_conditions(value: Any, conditions: dict[str, bool]) -> Any:
    """``value`` as CloudFormation sees it: each Fn::If replaced by its branch, keys whose value
    is AWS::NoValue dropped."""
    if isinstance(value, list):
        items = [apply_conditions(v, conditions) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if value == {"Ref": "AWS::NoValue"}:
        return _NO_VALUE
    if set(value) == {"Fn::If"}:
        name, if_true, if_false = value["Fn::If"]
        return apply_conditions(if_true if conditions[name] else if_false, conditions)
    items = {k: apply_conditions(v, conditions) for k, v in value.items()}
    return {k: v for k, v in items.items() if v is not _NO_VALUE}


def deployed_properties(
    cfn: dict[str, Any], logical_id: str, parameter_values: dict[str, str] | None = None
) -> dict[str, Any]:
    """A resource's Properties after its conditions are applied for these parameters."""
    conditions = condition_values(cfn, parameter_values)
    return apply_conditions(cfn["Resources"][logical_id]["Properties"], conditions)


# --------------------------------------------------------------------------------------------
# linters
# --------------------------------------------------------------------------------------------
def test_sam_validate_lint_is_clean() -> None:
    proc = run_tool("sam", "validate", "--lint", "-t", str(TEMPLATE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_is_clean() -> None:
    proc = run_tool("cfn-lint", str(TEMPLATE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_serverless_rules_are_clean() -> None:
    """awslabs serverless-rules (PyPI cfn-lint-serverless) as `make lint` runs them."""
    pytest.importorskip("cfn_lint_serverless")
    proc = run_tool("cfn-lint", str(TEMPLATE), "-a", "cfn_lint_serverless.rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def checkov_executable() -> Path | None:
    """checkov lives in .venv-checkov (its boto3 pin conflicts with aws-sam-cli's)."""
    for candidate in (os.environ.get("CHECKOV"), ROOT / ".venv-checkov" / "bin" / "checkov"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("checkov")
    return Path(found) if found else None


def test_checkov_is_clean() -> None:
    """No failed check; every skip is justified next to its resource (Metadata.checkov.skip)."""
    exe = checkov_executable()
    if exe is None:
        pytest.skip("checkov is not installed (make install creates .venv-checkov)")
    # cwd=ROOT: checkov reads .checkov.yaml (cloudformation only, --skip-download) from there.
    proc = run_tool(
        "checkov",
        *("-f", "template.yaml", "--output", "json"),
        exe=exe,
        CKV_SKIP_PACKAGE_UPDATE_CHECK="true",
        BC_SKIP_MAPPING="TRUE",
    )
    report = json.loads(proc.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and proc.returncode == 0, failed or proc.stderr
    assert summary["passed"] > 0, summary
    assert summary["parsing_errors"] == 0, summary


def test_every_checkov_skip_is_justified(template: dict[str, Any]) -> None:
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "no checkov skips found: were they moved?"
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), (name, skip)
        assert len(skip.get("comment", "")) > 40, f"{name}: {skip['id']} needs a reason"


# --------------------------------------------------------------------------------------------
# parameters and globals (source template)
# --------------------------------------------------------------------------------------------
def test_every_parameter_is_described_and_its_default_allowed(template: dict[str, Any]) -> None:
    """A default CloudFormation would refuse (outside its own AllowedValues, pattern or range)
    breaks every `sam deploy` that leaves it alone; a parameter without a description is one
    nobody can set."""
    for name, param in template["Parameters"].items():
        assert param.get("Description"), f"{name} has no Description"
        if "Default" not in param:
            continue
        default = param["Default"]
        if "AllowedValues" in param:
            assert str(default) in [str(v) for v in param["AllowedValues"]], name
        if "AllowedPattern" in param:
            assert re.fullmatch(param["AllowedPattern"], str(default)), name
        if param["Type"] == "Number":
            assert param.get("MinValue", default) <= default <= param.get("MaxValue", default), name


def test_parameter_defaults_are_the_code_defaults(template: dict[str, Any]) -> None:
    """A parameter that sets a FACEPIPE_* variable defaults to the setting's own default, so
    a deployed stack and a local run behave alike unless someone chooses otherwise."""
    from facepipe.config import Settings

    defaults = Settings.from_env({})
    params = template["Parameters"]
    assert params["Embedder"]["Default"] == defaults.embedder
    assert float(params["MinFaceProbability"]["Default"]) == defaults.min_face_probability
    assert params["GalleryRefreshSeconds"]["Default"] == defaults.gallery_refresh_seconds
    assert params["IngestPrefix"]["Default"] == defaults.ingest_prefix
    assert params["OutputPrefix"]["Default"] == defaults.output_prefix


def test_embedder_and_threshold_parameters(template: dict[str, Any]) -> None:
    """Every embedder facepipe knows can be chosen, and an empty threshold (the embedder's
    calibrated default) is allowed next to a number."""
    import re

    from facepipe.config import Settings
    from facepipe.identity.embedders import DEFAULT_MATCH_THRESHOLDS

    params = template["Parameters"]
    assert params["Embedder"]["AllowedValues"] == ["vggface2", "casia-webface", "dlib"]
    assert set(params["Embedder"]["AllowedValues"]) == set(DEFAULT_MATCH_THRESHOLDS)
    assert Settings.model_fields["embedder"].default == params["Embedder"]["Default"]
    pattern = re.compile(params["MatchThreshold"]["AllowedPattern"])
    assert all(pattern.match(v) for v in ("", "1.1", "0.39", "1"))
    assert not any(pattern.match(v) for v in ("x", "-1", "1.", " "))


def test_every_log_level_is_one_logging_knows(template: dict[str, Any]) -> None:
    import logging

    allowed = template["Parameters"]["LogLevel"]["AllowedValues"]
    assert all(isinstance(logging.getLevelName(level), int) for level in allowed), allowed


def test_url_auth_parameter_defaults_to_iam_and_warns_about_none(template: dict[str, Any]) -> None:
    param = template["Parameters"]["FunctionUrlAuthType"]
    assert param["Default"] == "AWS_IAM"
    assert param["AllowedValues"] == ["AWS_IAM", "NONE"]
    assert "public" in param["Description"].lower()


def test_globals(template: dict[str, Any]) -> None:
    glob = template["Globals"]["Function"]
    assert glob["Architectures"] == ["x86_64"]
    # X-Ray is opt-in: its SDK import costs ~0.36 s of every cold start.
    assert glob["Tracing"] == {"Ref": "Tracing"}
    assert template["Parameters"]["Tracing"]["Default"] == "PassThrough"
    assert glob["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["IsTracing", "false", "true"]
    }


def test_every_image_function_builds_and_names_a_handler_it_has(template: dict[str, Any]) -> None:
    """Each image function's Dockerfile exists inside its build context, and the handler its
    ImageConfig Command names (the Dockerfile's CMD when there is none) is a function of a
    module in that image's function folder."""
    res = template["Resources"]
    for name in IMAGE_FUNCTIONS:
        meta = res[name]["Metadata"]
        dockerfile = ROOT / meta["DockerContext"] / meta["Dockerfile"]
        assert dockerfile.is_file() and meta.get("DockerTag"), name
        command = res[name]["Properties"].get("ImageConfig", {}).get("Command")
        if command is None:
            cmd = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD")]
            command = json.loads(cmd[-1].removeprefix("CMD").strip())
        module, function = command[0].rsplit(".", 1)
        source = (dockerfile.parent / f"{module}.py").read_text()
        assert re.search(rf"^def {function}\(", source, re.M), (name, command)


# --------------------------------------------------------------------------------------------
# generated CloudFormation
# --------------------------------------------------------------------------------------------
def test_functions_are_image_lambdas(cfn: dict[str, Any]) -> None:
    """Every function is a container image; the detecting ones have the memory the detection
    memory model needs for at least a 1080p frame (else every frame would be refused)."""
    from facepipe.vision.memory_budget import DETECTION_MEMORY, MIN_DETECT_PIXELS

    for name in IMAGE_FUNCTIONS:
        props = cfn["Resources"][name]["Properties"]
        assert props["PackageType"] == "Image"
        assert props["Code"] == {"ImageUri": FAKE_IMAGE_URI}
        assert "Runtime" not in props and "Handler" not in props
        assert props["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}
        if name != "RecognitionFunction":
            assert DETECTION_MEMORY.max_frame_pixels(props["MemorySize"]) >= MIN_DETECT_PIXELS


def test_function_environment(cfn: dict[str, Any]) -> None:
    common = {
        "POWERTOOLS_METRICS_NAMESPACE": "facepipe",
        "POWERTOOLS_TRACE_DISABLED": {"Fn::If": ["IsTracing", "false", "true"]},
        "POWERTOOLS_LOG_LEVEL": {"Ref": "LogLevel"},
        "FACEPIPE_BUCKET": {"Ref": "DataBucket"},
        "FACEPIPE_REQUEST_QUEUE_URL": {"Ref": "RequestQueue"},
        "FACEPIPE_RESPONSE_QUEUE_URL": {"Ref": "ResponseQueue"},
        "FACEPIPE_PAYLOAD_PREFIX": "payloads/",
        "FACEPIPE_MIN_FACE_PROBABILITY": {"Ref": "MinFaceProbability"},
        # both functions: detection cuts the crops the recognition embedder takes
        "FACEPIPE_EMBEDDER": {"Ref": "Embedder"},
    }
    env = {
        name: cfn["Resources"][name]["Properties"]["Environment"]["Variables"]
        for name in IMAGE_FUNCTIONS
    }
    for name, variables in env.items():
        for key, value in common.items():
            assert variables.get(key) == value, (name, key)
    assert env["DetectionFunction"]["POWERTOOLS_SERVICE_NAME"] == "detection"
    assert env["RecognitionFunction"]["POWERTOOLS_SERVICE_NAME"] == "recognition"
    assert env["RecognitionFunction"]["FACEPIPE_GALLERY"] == {
        "Fn::Sub": "s3://${DataBucket}/${GalleryKey}"
    }
    assert env["RecognitionFunction"]["FACEPIPE_MATCH_THRESHOLD"] == {"Ref": "MatchThreshold"}


def test_function_url_auth_type_comes_from_parameter(cfn: dict[str, Any]) -> None:
    urls = resources_of_type(cfn, "AWS::Lambda::Url")
    assert list(urls) == ["DetectionFunctionUrl"]
    props = urls["DetectionFunctionUrl"]["Properties"]
    assert props["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    assert props["TargetFunctionArn"] == {"Ref": "DetectionFunction"}
    # CORS only when CorsAllowOrigins is set (see test_cors_*).
    assert "Cors" not in deployed_properties(cfn, "DetectionFunctionUrl")


def test_public_invoke_permissions_only_when_auth_type_is_none(cfn: dict[str, Any]) -> None:
    # SAM adds no public-invoke permission when AuthType is an intrinsic, so the template
    # creates both permissions itself, conditioned on FunctionUrlAuthType == NONE.
    assert cfn["Conditions"]["IsPublicFunctionUrl"] == {
        "Fn::Equals": [{"Ref": "FunctionUrlAuthType"}, "NONE"]
    }
    permissions = resources_of_type(cfn, "AWS::Lambda::Permission")
    public = {k: v for k, v in permissions.items() if v["Properties"]["Principal"] == "*"}
    for name, perm in public.items():
        assert perm.get("Condition") == "IsPublicFunctionUrl", name
        assert perm["Properties"]["FunctionName"] == {"Ref": "DetectionFunction"}, name
    by_action = {v["Properties"]["Action"]: v["Properties"] for v in public.values()}
    assert set(by_action) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert by_action["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert by_action["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True


def test_transform_with_public_function_url() -> None:
    public = translate({"FunctionUrlAuthType": "NONE"})
    urls = resources_of_type(public, "AWS::Lambda::Url")
    assert urls["DetectionFunctionUrl"]["Properties"]["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    assert len(resources_of_type(public, "AWS::Lambda::Permission")) == 2


def test_event_source_mapping(cfn: dict[str, Any]) -> None:
    mappings = resources_of_type(cfn, "AWS::Lambda::EventSourceMapping")
    by_function = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"] for m in mappings.values()
    }
    assert set(by_function) == {"RecognitionFunction", "IngestFunction"}  # ingress: its own test
    props = by_function["RecognitionFunction"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["RequestQueue", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == {"Ref": "RecognitionBatchSize"}
    assert props["MaximumBatchingWindowInSeconds"] == {"Ref": "RecognitionBatchingWindowSeconds"}
    assert props["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "RecognitionMaximumConcurrency"}
    }


def test_request_queue_redrives_to_dead_letter_queue(cfn: dict[str, Any]) -> None:
    redrive = cfn["Resources"]["RequestQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RequestDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    dlq = cfn["Resources"]["RequestDeadLetterQueue"]["Properties"]
    request = cfn["Resources"]["RequestQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 1209600
    # A message keeps its original enqueue time in the DLQ, so the DLQ must retain longer.
    assert dlq["MessageRetentionPeriod"] > request["MessageRetentionPeriod"]


def test_request_queue_visibility_covers_retries(cfn: dict[str, Any]) -> None:
    timeout = cfn["Resources"]["RecognitionFunction"]["Properties"]["Timeout"]
    max_window = cfn["Parameters"]["RecognitionBatchingWindowSeconds"]["MaxValue"]
    visibility = cfn["Resources"]["RequestQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout + max_window


def test_response_queue_long_polls(cfn: dict[str, Any]) -> None:
    props = cfn["Resources"]["ResponseQueue"]["Properties"]
    assert props["ReceiveMessageWaitTimeSeconds"] == 20
    assert props["VisibilityTimeout"] == 30
    assert props["MessageRetentionPeriod"] == 345600


def test_every_queue_is_encrypted(cfn: dict[str, Any]) -> None:
    queues = resources_of_type(cfn, "AWS::SQS::Queue")
    assert set(queues) == set(QUEUES)
    for name, queue in queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, name


def test_bucket_is_private_encrypted_and_expires_payloads(cfn: dict[str, Any]) -> None:
    buckets = resources_of_type(cfn, "AWS::S3::Bucket")
    assert list(buckets) == ["DataBucket"]
    props = buckets["DataBucket"]["Properties"]

    (sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert sse["BucketKeyEnabled"] is True

    pab = props["PublicAccessBlockConfiguration"]
    for key in (
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ):
        assert pab[key] is True, key
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"

    rules = props["LifecycleConfiguration"]["Rules"]
    assert all(rule["Status"] == "Enabled" for rule in rules)
    payload_rules = [r for r in rules if r.get("Prefix") == "payloads/"]
    assert len(payload_rules) == 1
    # A claim check outlives every task that names it: a task lives at most its queue's
    # retention, then the DLQ's (counted from the first enqueue), and a redrive started on the
    # DLQ's last day puts it back for up to the queue's retention again.
    day = 86400
    resources = cfn["Resources"]
    queue = resources["RequestQueue"]["Properties"]["MessageRetentionPeriod"]
    dlq = resources["RequestDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
    longest = max(queue, dlq) + queue
    assert payload_rules[0]["ExpirationInDays"] * day > longest
    assert longest < DEFAULT_RETENTION_S  # and the ledger remembers each request as long
    assert payload_rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert any(
        r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules
    )
    bucket_wide = [r for r in rules if not r.get("Prefix")]
    assert any(
        r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in bucket_wide
    )


def test_bucket_policy_denies_insecure_transport(cfn: dict[str, Any]) -> None:
    policy = cfn["Resources"]["DataBucketPolicy"]
    assert policy["Type"] == "AWS::S3::BucketPolicy"
    assert policy["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    (st,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Deny"
    assert st["Principal"] == "*"
    assert st["Action"] in ("s3:*", ["s3:*"])
    assert st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    resources = as_list(st["Resource"])
    assert {"Fn::GetAtt": ["DataBucket", "Arn"]} in resources
    assert {"Fn::Sub": "${DataBucket.Arn}/*"} in resources


@pytest.mark.parametrize("function", IMAGE_FUNCTIONS)
def test_role_sqs_and_s3_grants_are_scoped(cfn: dict[str, Any], function: str) -> None:
    role = role_of(cfn, function)
    for action, resource in grants(role):
        assert "*" not in action, action
        service = action.split(":", 1)[0]
        if service == "sqs":
            assert queue_of(resource) in QUEUES, (action, resource)
        elif service == "s3":
            # Objects under payloads/ and gallery/ only; the bucket itself only to list it
            # (what makes a missing key a 404 rather than a 403) and its album versions.
            allowed = (
                (PAYLOADS_ARN, GALLERY_ARN, ALBUMS_ARN, INPUT_ARN, OUTPUT_ARN)
                if action not in ("s3:ListBucket", "s3:ListBucketVersions")
                else (BUCKET_ARN,)
            )
            assert resource in allowed, (action, resource)
        elif service == "dynamodb":
            # The result ledger only: items, never the table's settings or other tables.
            assert resource == LEDGER_ARN, (action, resource)
            assert action in LEDGER_ACTIONS, action
        else:
            pytest.fail(f"{function}: unexpected action {action}")
        assert resource != "*", action


def test_every_bucket_listing_is_confined_to_a_prefix(cfn: dict[str, Any]) -> None:
    """No role may list the whole bucket (every uploaded photo's name, every enrolled person's
    crops folder): each s3:ListBucket grant names the prefixes its function reads."""
    for function in IMAGE_FUNCTIONS:
        for st in statements(role_of(cfn, function)):
            if "s3:ListBucket" not in as_list(st["Action"]):
                continue
            assert as_list(st["Action"]) == ["s3:ListBucket"], (function, st)
            prefixes = as_list(st["Condition"]["StringLike"]["s3:prefix"])
            assert prefixes and all(str(p) not in ("*", "") for p in prefixes), (function, st)


def test_results_by_id_are_served_only_behind_aws_iam(cfn: dict[str, Any]) -> None:
    """On a public URL anyone guessing a request_id could read its result: /results is off."""
    for auth, offered in (("AWS_IAM", "true"), ("NONE", "false")):
        params = {"FunctionUrlAuthType": auth}
        variables = deployed_properties(cfn, "DetectionFunction", params)["Environment"]
        assert variables["Variables"]["FACEPIPE_RESULTS_BY_ID"] == offered, auth


def test_result_ledger_table(cfn: dict[str, Any]) -> None:
    table = cfn["Resources"]["ResultLedgerTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "request_id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    for function in IMAGE_FUNCTIONS:
        variables = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert variables["FACEPIPE_LEDGER_TABLE"] == {"Ref": "ResultLedgerTable"}
    detection = {a for a, r in grants(role_of(cfn, "DetectionFunction")) if r == LEDGER_ARN}
    assert detection == LEDGER_ACTIONS
    for consumer in ("RecognitionFunction", "IngestFunction"):
        actions = {a for a, r in grants(role_of(cfn, consumer)) if r == LEDGER_ARN}
        assert actions == CONSUMER_LEDGER_ACTIONS, consumer


def test_detection_role(cfn: dict[str, Any]) -> None:
    role = role_of(cfn, "DetectionFunction")
    assert actions_on_queue(role, "RequestQueue") == {"sqs:SendMessage"}
    assert actions_on_queue(role, "ResponseQueue") == {"sqs:SendMessage"}
    assert actions_on_queue(role, "RequestDeadLetterQueue") == set()
    actions = {a for a, _ in grants(role)}
    assert not actions & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:DeleteObject"}
    assert actions_on_s3(role, PAYLOADS_ARN) == {"s3:PutObject"}  # it never reads them back
    assert actions_on_s3(role, GALLERY_ARN) == set()
    assert actions_on_s3(role, ALBUMS_ARN) == set()
    managed = " ".join(role["Properties"]["ManagedPolicyArns"])
    assert "SQS" not in managed


def test_recognition_role(cfn: dict[str, Any]) -> None:
    role = role_of(cfn, "RecognitionFunction")
    poll = actions_on_queue(role, "RequestQueue")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= poll
    assert "sqs:SendMessage" not in poll
    assert actions_on_queue(role, "ResponseQueue") == {"sqs:SendMessage"}
    assert actions_on_queue(role, "RequestDeadLetterQueue") == set()
    # The only writes: claim checks of results too large for the queue, S3-ingress results
    # under OutputPrefix and album index shards under albums/ (never gallery/).
    writes = [r for a, r in grants(role) if a == "s3:PutObject"]
    assert sorted(map(str, writes)) == sorted(map(str, [PAYLOADS_ARN, OUTPUT_ARN, ALBUMS_ARN]))
    # Album compaction deletes every version of the parts it merged, under albums/ only.
    assert actions_on_s3(role, ALBUMS_ARN) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
    }
    assert actions_on_s3(role, PAYLOADS_ARN) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert actions_on_s3(role, GALLERY_ARN) == {"s3:GetObject"}
    # ListBucket only so that a missing gallery or manifest is a 404 (a fresh stack), not a 403;
    # ListBucketVersions for albums/ (checked below).
    assert actions_on_s3(role, BUCKET_ARN) == {"s3:ListBucket", "s3:ListBucketVersions"}
    (versions,) = [
        st for st in statements(role) if "s3:ListBucketVersions" in as_list(st["Action"])
    ]
    assert versions["Condition"] == {"StringLike": {"s3:prefix": "albums/*"}}


def test_recognition_consumes_only_the_request_queue(cfn: dict[str, Any]) -> None:
    """SAM attaches AWSLambdaSQSQueueExecutionRole (receive/delete on every queue, "*") to a
    function with an SQS event; an explicit Deny confines those actions to RequestQueue."""
    role = role_of(cfn, "RecognitionFunction")
    managed = role["Properties"]["ManagedPolicyArns"]
    assert any(arn.endswith("/AWSLambdaSQSQueueExecutionRole") for arn in managed), managed
    (deny,) = denials(role)
    assert set(as_list(deny["Action"])) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }
    assert deny["NotResource"] == {"Fn::GetAtt": ["RequestQueue", "Arn"]}
    assert "Resource" not in deny and "Condition" not in deny
    assert denials(role_of(cfn, "DetectionFunction")) == []


def test_gallery_key_stays_readable(template: dict[str, Any]) -> None:
    # The recognition role may only read gallery/*, so the default key must live there.
    assert template["Parameters"]["GalleryKey"]["Default"].startswith("gallery/")


def test_outputs(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert set(outputs) >= OUTPUT_KEYS
    values = {k: outputs[k]["Value"] for k in OUTPUT_KEYS}
    assert values["FunctionUrl"] == {"Fn::GetAtt": ["DetectionFunctionUrl", "FunctionUrl"]}
    assert values["RequestQueueUrl"] == {"Ref": "RequestQueue"}
    assert values["ResponseQueueUrl"] == {"Ref": "ResponseQueue"}
    assert values["DeadLetterQueueUrl"] == {"Ref": "RequestDeadLetterQueue"}
    assert values["BucketName"] == {"Ref": "DataBucket"}
    assert values["DetectionFunctionName"] == {"Ref": "DetectionFunction"}
    assert values["RecognitionFunctionName"] == {"Ref": "RecognitionFunction"}
    for key, value in values.items():
        target = value.get("Ref") or value["Fn::GetAtt"][0]
        assert target in cfn["Resources"], (key, target)


# --------------------------------------------------------------------------------------------
# CORS, logs, alarms and the dashboard
# --------------------------------------------------------------------------------------------
def test_cors_absent_by_default(cfn: dict[str, Any]) -> None:
    assert condition_values(cfn)["HasCorsOrigins"] is False
    assert "Cors" not in deployed_properties(cfn, "DetectionFunctionUrl")


def test_cors_when_origins_are_given() -> None:
    origins = {"CorsAllowOrigins": "https://app.example.com,https://admin.example.com"}
    cfn = translate(origins)
    assert condition_values(cfn, origins)["HasCorsOrigins"] is True
    cors = deployed_properties(cfn, "DetectionFunctionUrl", origins)["Cors"]
    assert cors["AllowOrigins"] == {"Fn::Split": [",", {"Ref": "CorsAllowOrigins"}]}
    assert cors["AllowMethods"] == ["GET", "POST"]  # frames; results by request_id
    # what a SigV4-signing browser client sends
    assert {"content-type", "authorization", "x-amz-date", "x-amz-security-token"} <= set(
        cors["AllowHeaders"]
    )
    assert "AllowCredentials" not in cors


def test_cors_origins_parameter_pattern(template: dict[str, Any]) -> None:
    pattern = re.compile(template["Parameters"]["CorsAllowOrigins"]["AllowedPattern"])
    for ok in ("", "*", "https://a.example", "https://a.example,https://localhost:3000"):
        assert pattern.fullmatch(ok), ok
    for bad in (
        "a.example",
        "https://a.example, https://b.example",
        ",",
        "https://a b",
        "http://a.example",  # a page served over plain HTTP is not a trusted origin
        "https://a.example,http://localhost:3000",
    ):
        assert not pattern.fullmatch(bad), bad


def test_function_log_groups_expire(cfn: dict[str, Any]) -> None:
    # (the optional workers' group: tests/unit/template/test_workers.py)
    groups = {
        k: g
        for k, g in resources_of_type(cfn, "AWS::Logs::LogGroup").items()
        if "Condition" not in g
    }
    by_function = {
        g["Properties"]["LogGroupName"]["Fn::Sub"]: g["Properties"] for g in groups.values()
    }
    # Lambda's own group names, so that Lambda writes into these groups and not new ones.
    assert set(by_function) == {f"/aws/lambda/${{{name}}}" for name in IMAGE_FUNCTIONS}
    for props in by_function.values():
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# logical id -> (namespace, metric, dimension, dimension value, statistic, threshold)
ALARMS = {
    "RequestDeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        {"Fn::GetAtt": ["RequestDeadLetterQueue", "QueueName"]},
        "Maximum",
        0,
    ),
    "IngestDeadLetterQueueAlarm": (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        {"Fn::GetAtt": ["IngestDeadLetterQueue", "QueueName"]},
        "Maximum",
        0,
    ),
    "RequestQueueAgeAlarm": (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "QueueName",
        {"Fn::GetAtt": ["RequestQueue", "QueueName"]},
        "Maximum",
        {"Ref": "RequestAgeAlarmSeconds"},
    ),
    "DetectionErrorsAlarm": (
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        {"Ref": "DetectionFunction"},
        "Sum",
        0,
    ),
    "DetectionFailuresAlarm": (
        "facepipe",
        "RequestsFailed",
        "service",
        "detection",
        "Sum",
        0,
    ),
    "GalleryStaleAlarm": ("facepipe", "GalleryStale", "service", "recognition", "Maximum", 0),
    "DetectionThrottlesAlarm": (
        "AWS/Lambda",
        "Throttles",
        "FunctionName",
        {"Ref": "DetectionFunction"},
        "Sum",
        0,
    ),
    "RecognitionErrorsAlarm": (
        "AWS/Lambda",
        "Errors",
        "FunctionName",
        {"Ref": "RecognitionFunction"},
        "Sum",
        0,
    ),
    "RecognitionThrottlesAlarm": (
        "AWS/Lambda",
        "Throttles",
        "FunctionName",
        {"Ref": "RecognitionFunction"},
        "Sum",
        0,
    ),
}


def test_alarm_set(cfn: dict[str, Any]) -> None:
    assert set(resources_of_type(cfn, "AWS::CloudWatch::Alarm")) == set(ALARMS)


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_alarm_watches_the_right_resource(cfn: dict[str, Any], name: str) -> None:
    namespace, metric, dimension, target, statistic, threshold = ALARMS[name]
    props = cfn["Resources"][name]["Properties"]
    assert props["Namespace"] == namespace
    assert props["MetricName"] == metric
    assert props["Dimensions"] == [{"Name": dimension, "Value": target}]
    assert props["Statistic"] == statistic
    assert props["Threshold"] == threshold
    expected_operator = (
        "GreaterThanThreshold" if threshold == 0 else "GreaterThanOrEqualToThreshold"
    )
    assert props["ComparisonOperator"] == expected_operator
    # An idle queue or function publishes no data points; that is not a failure.
    assert props["TreatMissingData"] == "notBreaching"
    assert props["EvaluationPeriods"] >= 1
    assert props["Period"] in (60, 300)
    assert props["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-")
    assert len(props["AlarmDescription"]) > 40


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_alarm_actions_only_with_a_topic(cfn: dict[str, Any], name: str) -> None:
    assert condition_values(cfn)["HasAlarmTopic"] is False
    quiet = deployed_properties(cfn, name)
    assert "AlarmActions" not in quiet and "OKActions" not in quiet

    topic = {"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:facepipe-alarms"}
    notifying = deployed_properties(translate(topic), name, topic)
    assert notifying["AlarmActions"] == [{"Ref": "AlarmTopicArn"}]
    assert notifying["OKActions"] == [{"Ref": "AlarmTopicArn"}]


def test_alarm_parameters(template: dict[str, Any], cfn: dict[str, Any]) -> None:
    params = template["Parameters"]
    pattern = re.compile(params["AlarmTopicArn"]["AllowedPattern"])
    for ok in (
        "",
        "arn:aws:sns:eu-west-1:123456789012:ops",
        "arn:aws-cn:sns:cn-north-1:123456789012:a.b",
    ):
        assert pattern.fullmatch(ok), ok
    for bad in ("ops", "arn:aws:sqs:eu-west-1:123456789012:ops", "arn:aws:sns:eu-west-1:1:ops"):
        assert not pattern.fullmatch(bad), bad
    # The backlog alarm must not fire on a normal batching window, and must fire before
    # messages expire from the request queue.
    age = params["RequestAgeAlarmSeconds"]
    window = params["RecognitionBatchingWindowSeconds"]["MaxValue"]
    retention = cfn["Resources"]["RequestQueue"]["Properties"]["MessageRetentionPeriod"]
    assert window < age["Default"] < retention
    assert age["MaxValue"] <= retention


# What the functions publish (shared/facepipe/aws/powertools.py, functions/*/app.py), by the
# service dimension Powertools adds from POWERTOOLS_SERVICE_NAME.
APP_METRICS = {
    "detection": {
        "FramesReceived",
        "FacesDetected",
        "FramesWithoutFaces",
        "DetectionLatency",
        "RequestsRejected",
        "RequestsFailed",
        "ResultsAskedFor",
        "ResultsRead",
    },
    "recognition": {
        "FramesRecognized",
        "FacesRecognized",
        "UnknownFaces",
        "RecordsFailed",
        "DuplicatesSkipped",
        "RecognitionLatency",
        "QueueWait",
        "GalleryStale",
    },
    "ingest": {
        "ObjectsIngested",
        "FacesDetected",
        "FramesWithoutFaces",
        "ObjectsRejected",
        "DuplicatesSkipped",
        "RecordsFailed",
        "DetectionLatency",
    },
}
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def dashboard_body(cfn: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The DashboardBody as JSON after Fn::Sub (fake values), and the names it substitutes."""
    props = cfn["Resources"]["PipelineDashboard"]["Properties"]
    text = props["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str), "DashboardBody: Fn::Sub of one string"
    params = cfn["Parameters"]

    def fake(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params and params[name]["Type"] == "Number":
            return str(params[name]["Default"])  # substituted unquoted: a JSON number
        return f"fake-{name.replace('::', '-').replace('.', '-')}"

    body = json.loads(_SUB_VARIABLE.sub(fake, text))
    return body, set(_SUB_VARIABLE.findall(text))


def dashboard_metrics(body: dict[str, Any]) -> set[tuple[str, ...]]:
    """(namespace, metric, dimension, value) of every metric widget line."""
    found = set()
    for widget in body["widgets"]:
        for line in widget["properties"].get("metrics", []):
            fields = [f for f in line if not isinstance(f, dict)]
            assert len(fields) == 4 and "." not in fields, line  # full form, no shorthand
            found.add(tuple(fields))
    return found


def test_dashboard_body_is_json_with_known_references(cfn: dict[str, Any]) -> None:
    dashboards = resources_of_type(cfn, "AWS::CloudWatch::Dashboard")
    assert list(dashboards) == ["PipelineDashboard"]
    body, names = dashboard_body(cfn)
    assert body["widgets"]
    for name in names:
        target = name.split(".")[0]
        assert (
            name.startswith("AWS::") or target in cfn["Resources"] or target in cfn["Parameters"]
        ), name
    # The alarm widget lists every alarm.
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert set(alarm_widget["properties"]["alarms"]) == {f"fake-{name}-Arn" for name in ALARMS}
    for widget in body["widgets"]:
        if widget["type"] == "metric":
            assert widget["properties"]["region"] == "fake-AWS-Region"
            assert widget["properties"].get("title")


def test_dashboard_names_every_app_metric(cfn: dict[str, Any]) -> None:
    found = dashboard_metrics(dashboard_body(cfn)[0])
    for service, names in APP_METRICS.items():
        for name in names:
            assert ("facepipe", name, "service", service) in found, (service, name)
    # A metric added to the code shows up here until it is on the dashboard too.
    sources = [*ROOT.glob("shared/facepipe/aws/*.py"), *ROOT.glob("functions/*/*.py")]
    emitted = {
        m for path in sources for m in re.findall(r'add_metric\(\s*name="(\w+)"', path.read_text())
    }
    assert emitted <= {name for ns, name, *_ in found if ns == "facepipe"}, emitted
    assert emitted == set().union(*APP_METRICS.values())


def test_dashboard_shows_queues_and_functions(cfn: dict[str, Any]) -> None:
    found = dashboard_metrics(dashboard_body(cfn)[0])
    request, dlq, response = (
        f"fake-{q}-QueueName" for q in ("RequestQueue", "RequestDeadLetterQueue", "ResponseQueue")
    )
    for metric in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    ):
        assert ("AWS/SQS", metric, "QueueName", request) in found, metric
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dlq) in found
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", response) in found
    for function in IMAGE_FUNCTIONS:
        for metric in ("Errors", "Throttles"):
            assert ("AWS/Lambda", metric, "FunctionName", f"fake-{function}") in found


def test_dashboard_outputs(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert outputs["DashboardName"]["Value"] == {"Ref": "PipelineDashboard"}
    assert "#dashboards:name=${PipelineDashboard}" in outputs["DashboardUrl"]["Value"]["Fn::Sub"]


# --------------------------------------------------------------------------------------------
# samconfig.toml
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text())


def test_samconfig_default(samconfig: dict[str, Any]) -> None:
    default = samconfig["default"]
    assert default["global"]["parameters"]["stack_name"] == "facepipe"
    deploy = default["deploy"]["parameters"]
    assert deploy["resolve_image_repos"] is True
    assert deploy["resolve_s3"] is True
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["confirm_changeset"] is True
    assert deploy.get("region", "us-east-1") == "us-east-1"
    assert default["build"]["parameters"] == {"cached": True, "parallel": True}
    assert default["validate"]["parameters"]["lint"] is True


def test_samconfig_prod_overrides_are_valid(samconfig: dict[str, Any], template: dict) -> None:
    prod = samconfig["prod"]
    assert prod["global"]["parameters"]["stack_name"] == "facepipe-prod"
    deploy = prod["deploy"]["parameters"]
    assert deploy["resolve_image_repos"] is True
    overrides = dict(item.split("=", 1) for item in shlex.split(deploy["parameter_overrides"]))
    assert overrides["FunctionUrlAuthType"] == "AWS_IAM"
    assert overrides["LogLevel"] == "INFO"
    params = template["Parameters"]
    assert (
        int(overrides["RecognitionMaximumConcurrency"])
        > params["RecognitionMaximumConcurrency"]["Default"]
    )
    for key, value in overrides.items():
        assert key in params, f"unknown parameter {key}"
        spec = params[key]
        if "AllowedValues" in spec:
            assert value in spec["AllowedValues"], (key, value)
        if spec["Type"] == "Number":
            assert spec["MinValue"] <= float(value) <= spec["MaxValue"], (key, value)
