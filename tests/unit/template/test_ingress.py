"""S3 ingress in the template: the generated CloudFormation (offline SAM transform) of the ingest
function, its queues, the EventBridge rule, the queue policy and the least-privilege grants."""

from __future__ import annotations

import re
from typing import Any

import pytest

from facepipe.local.emulator import _references
from tests.unit.template.test_template import (
    INPUT_ARN,
    OUTPUT_ARN,
    PAYLOADS_ARN,
    actions_on_queue,
    as_list,
    denials,
    grants,
    resources_of_type,
    role_of,
    translate,
)

INGEST_QUEUE_ARN = {"Fn::GetAtt": ["IngestQueue", "Arn"]}
INGEST_DLQ_ARN = {"Fn::GetAtt": ["IngestDeadLetterQueue", "Arn"]}


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate()


def props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(cfn["Resources"][logical_id]["Properties"])


def test_ingest_function_is_the_detection_image_with_its_own_handler(
    cfn: dict[str, Any],
) -> None:
    function = props(cfn, "IngestFunction")
    assert function["PackageType"] == "Image"
    assert function["ImageConfig"] == {"Command": ["ingest_app.handler"]}
    assert (function["MemorySize"], function["Timeout"]) == (2048, 60)
    variables = function["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "ingest"
    assert variables["FACEPIPE_INGEST_PREFIX"] == {"Ref": "IngestPrefix"}
    assert variables["FACEPIPE_OUTPUT_PREFIX"] == {"Ref": "OutputPrefix"}
    assert variables["FACEPIPE_REQUEST_QUEUE_URL"] == {"Ref": "RequestQueue"}
    metadata = cfn["Resources"]["IngestFunction"]["Metadata"]
    detection = cfn["Resources"]["DetectionFunction"]["Metadata"]
    assert metadata["Dockerfile"] == detection["Dockerfile"] == "functions/detection/Dockerfile"
    recognition = props(cfn, "RecognitionFunction")["Environment"]["Variables"]
    assert recognition["FACEPIPE_OUTPUT_PREFIX"] == {"Ref": "OutputPrefix"}


def test_ingest_event_source_reports_partial_failures(cfn: dict[str, Any]) -> None:
    (mapping,) = [
        m["Properties"]
        for m in resources_of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": "IngestFunction"}
    ]
    assert mapping["EventSourceArn"] == INGEST_QUEUE_ARN
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == {"Ref": "IngestBatchSize"}
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "IngestMaximumConcurrency"}}


def test_ingest_queue_redrives_and_outlasts_retries(cfn: dict[str, Any]) -> None:
    queue = props(cfn, "IngestQueue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": INGEST_DLQ_ARN,
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert queue["VisibilityTimeout"] >= 6 * props(cfn, "IngestFunction")["Timeout"]
    dlq = props(cfn, "IngestDeadLetterQueue")
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]


def test_bucket_events_reach_the_queue_through_the_rule(cfn: dict[str, Any]) -> None:
    bucket = props(cfn, "DataBucket")
    assert bucket["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert "BucketName" not in bucket  # still CloudFormation-named: no replacement on update
    rule = props(cfn, "IngestRule")
    assert rule["State"] == "ENABLED" and rule["EventBusName"] == "default"
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [{"Ref": "DataBucket"}]},
            "object": {"key": [{"prefix": {"Ref": "IngestPrefix"}}]},
        },
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == INGEST_QUEUE_ARN
    assert target["DeadLetterConfig"] == {"Arn": INGEST_DLQ_ARN}  # undeliverable: not lost


def test_queue_policy_admits_only_the_rule_and_no_cycle(cfn: dict[str, Any]) -> None:
    policy = props(cfn, "IngestQueuePolicy")
    assert policy["Queues"] == [{"Ref": "IngestQueue"}, {"Ref": "IngestDeadLetterQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == [INGEST_QUEUE_ARN, INGEST_DLQ_ARN]
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["IngestRule", "Arn"]}}
    }
    # The bucket refers to nothing of the ingress: the policy -> rule -> bucket chain is acyclic.
    assert not _references(props(cfn, "DataBucket")) & {"IngestQueue", "IngestQueuePolicy"}
    assert "DependsOn" not in cfn["Resources"]["DataBucket"]


def test_ingest_role_is_least_privilege(cfn: dict[str, Any]) -> None:
    role = role_of(cfn, "IngestFunction")
    assert actions_on_queue(role, "RequestQueue") == {"sqs:SendMessage"}
    assert actions_on_queue(role, "ResponseQueue") == {"sqs:SendMessage"}
    poll = actions_on_queue(role, "IngestQueue")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= poll and "sqs:SendMessage" not in poll
    s3 = {(a, str(r)) for a, r in grants(role) if a.startswith("s3:")}
    assert {(a, r) for a, r in s3 if r == str(INPUT_ARN)} == {
        ("s3:GetObject", str(INPUT_ARN)),
        ("s3:GetObjectVersion", str(INPUT_ARN)),
    }
    assert [r for a, r in grants(role) if a == "s3:PutObject"] == [OUTPUT_ARN, PAYLOADS_ARN]
    assert not any(a in ("s3:DeleteObject", "s3:PutObject") and r == INPUT_ARN for a, r in s3)
    (deny,) = denials(role)
    assert deny["NotResource"] == INGEST_QUEUE_ARN


def test_only_ingest_reads_uploads_and_only_ingress_writers_write_results(
    cfn: dict[str, Any],
) -> None:
    readers = {
        function
        for function in ("DetectionFunction", "RecognitionFunction", "IngestFunction")
        for action, resource in grants(role_of(cfn, function))
        if resource == INPUT_ARN
    }
    writers = {
        function
        for function in ("DetectionFunction", "RecognitionFunction", "IngestFunction")
        for action, resource in grants(role_of(cfn, function))
        if resource == OUTPUT_ARN and action == "s3:PutObject"
    }
    assert readers == {"IngestFunction"}
    assert writers == {"IngestFunction", "RecognitionFunction"}


def test_prefix_parameters_and_rules(cfn: dict[str, Any]) -> None:
    parameters = cfn["Parameters"]
    assert parameters["IngestPrefix"]["Default"] == "input/"
    assert parameters["OutputPrefix"]["Default"] == "output/"
    pattern = re.compile(parameters["IngestPrefix"]["AllowedPattern"])
    for ok in ("input/", "photos-2026/", "a/"):
        assert pattern.fullmatch(ok), ok
    for bad in ("input", "/input/", "a/b/", "", "Input/"):
        assert not pattern.fullmatch(bad), bad
    assertions = cfn["Rules"]["IngressPrefixesAreDistinct"]["Assertions"]
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "IngestPrefix"}, {"Ref": "OutputPrefix"}]}]} in [
        a["Assert"] for a in assertions
    ]


def test_ingress_outputs_and_alarm(cfn: dict[str, Any]) -> None:
    outputs = {k: v["Value"] for k, v in cfn["Outputs"].items()}
    assert outputs["IngestQueueUrl"] == {"Ref": "IngestQueue"}
    assert outputs["IngestDeadLetterQueueUrl"] == {"Ref": "IngestDeadLetterQueue"}
    assert outputs["IngestFunctionName"] == {"Ref": "IngestFunction"}
    assert outputs["IngestPrefix"] == {"Ref": "IngestPrefix"}
    assert outputs["OutputPrefix"] == {"Ref": "OutputPrefix"}
    alarm = props(cfn, "IngestDeadLetterQueueAlarm")
    assert as_list(alarm["Dimensions"])[0]["Value"] == {
        "Fn::GetAtt": ["IngestDeadLetterQueue", "QueueName"]
    }
