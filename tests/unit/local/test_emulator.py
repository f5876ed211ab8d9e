"""LocalAws builds the template's queues and bucket, with their attributes, in moto."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from facepipe.config import Settings
from facepipe.local.emulator import LocalAws, TemplateError, find_template
from tests.conftest import ROOT

TEMPLATE: dict[str, Any] = yaml_parse((ROOT / "template.yaml").read_text())


def template_resources(kind: str) -> dict[str, Any]:
    return {k: r for k, r in TEMPLATE["Resources"].items() if r["Type"] == kind}


def queue_attributes(aws: LocalAws, logical_id: str) -> dict[str, str]:
    url = aws.queue_urls()[logical_id]
    return dict(aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with LocalAws(ROOT / "template.yaml") as local:
        yield local


def test_every_queue_and_bucket_of_the_template_exists(aws: LocalAws) -> None:
    queues = template_resources("AWS::SQS::Queue")
    buckets = template_resources("AWS::S3::Bucket")
    assert set(queues) == {
        "RequestQueue",
        "RequestDeadLetterQueue",
        "ResponseQueue",
        "IngestQueue",  # S3 ingress
        "IngestDeadLetterQueue",
    }

    urls = aws.sqs.list_queues()["QueueUrls"]
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == sorted(
        f"facepipe-local-{q}" for q in queues
    )
    names = [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]
    assert names == ["facepipe-local-data"] and list(buckets) == ["DataBucket"]
    assert aws.s3.get_bucket_versioning(Bucket="facepipe-local-data")["Status"] == "Enabled"
    assert aws.endpoint_url.startswith("http://127.0.0.1:")


def test_outputs_name_the_emulated_resources(aws: LocalAws) -> None:
    assert aws.outputs == {
        "RequestQueueUrl": aws.queue_urls()["RequestQueue"],
        "ResponseQueueUrl": aws.queue_urls()["ResponseQueue"],
        "DeadLetterQueueUrl": aws.queue_urls()["RequestDeadLetterQueue"],
        "BucketName": "facepipe-local-data",
        "GalleryUri": "s3://facepipe-local-data/gallery/gallery.pt",
        "ResultLedgerTableName": "facepipe-local-ResultLedgerTable",
        "IngestQueueUrl": aws.queue_urls()["IngestQueue"],
        "IngestDeadLetterQueueUrl": aws.queue_urls()["IngestDeadLetterQueue"],
        "IngestPrefix": "input/",
        "OutputPrefix": "output/",
    }
    assert set(aws.outputs) < set(TEMPLATE["Outputs"])
    assert aws.outputs["RequestQueueUrl"].endswith("/facepipe-local-RequestQueue")


def test_the_ledger_table_has_the_templates_key_and_ttl(aws: LocalAws) -> None:
    (logical_id,) = template_resources("AWS::DynamoDB::Table")
    name = aws.outputs["ResultLedgerTableName"]
    table = aws.dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "request_id", "KeyType": "HASH"}]
    ttl = aws.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert logical_id == "ResultLedgerTable"


def test_queue_attributes_are_the_templates(aws: LocalAws) -> None:
    for logical_id, queue in template_resources("AWS::SQS::Queue").items():
        attributes = queue_attributes(aws, logical_id)
        for name in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
        ):
            if name in queue["Properties"]:
                assert attributes[name] == str(queue["Properties"][name]), (logical_id, name)
    assert queue_attributes(aws, "RequestQueue")["VisibilityTimeout"] == "420"
    assert queue_attributes(aws, "ResponseQueue")["ReceiveMessageWaitTimeSeconds"] == "20"


def test_request_queue_redrives_to_the_dlq(aws: LocalAws) -> None:
    policy = json.loads(queue_attributes(aws, "RequestQueue")["RedrivePolicy"])
    dlq_arn = queue_attributes(aws, "RequestDeadLetterQueue")["QueueArn"]
    assert policy["deadLetterTargetArn"] == dlq_arn
    assert int(policy["maxReceiveCount"]) == TEMPLATE["Parameters"]["MaxReceiveCount"]["Default"]


def test_a_message_received_max_receive_count_times_moves_to_the_dlq(aws: LocalAws) -> None:
    url = aws.outputs["RequestQueueUrl"]
    max_receives = TEMPLATE["Parameters"]["MaxReceiveCount"]["Default"]
    aws.sqs.send_message(QueueUrl=url, MessageBody="will fail every time")
    for attempt in range(1, max_receives + 1):
        (message,) = aws.sqs.receive_message(
            QueueUrl=url, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"]
        )["Messages"]
        assert message["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        # A failed batch: no delete; visible again at once instead of after 420 s.
        aws.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    dead = aws.drain(aws.outputs["DeadLetterQueueUrl"], wait_seconds=0)
    assert [m["Body"] for m in dead] == ["will fail every time"]


def test_parameters_override_the_defaults() -> None:
    overrides = {"MaxReceiveCount": "5", "GalleryKey": "gallery/x.npz"}
    with LocalAws(ROOT / "template.yaml", overrides, stack="facepipe-params") as aws:
        policy = json.loads(queue_attributes(aws, "RequestQueue")["RedrivePolicy"])
        assert int(policy["maxReceiveCount"]) == 5
        gallery = aws.function_env("RecognitionFunction")["FACEPIPE_GALLERY"]
        assert gallery == "s3://facepipe-params-data/gallery/x.npz"
    with pytest.raises(TemplateError, match="NoSuchParameter"):
        LocalAws(ROOT / "template.yaml", {"NoSuchParameter": "1"})


def test_recognition_function_env(aws: LocalAws) -> None:
    env = aws.function_env("RecognitionFunction")

    assert env["FACEPIPE_GALLERY"] == "s3://facepipe-local-data/gallery/gallery.pt"
    assert env["FACEPIPE_REQUEST_QUEUE_URL"] == aws.outputs["RequestQueueUrl"]
    assert env["FACEPIPE_RESPONSE_QUEUE_URL"] == aws.outputs["ResponseQueueUrl"]
    assert env["FACEPIPE_BUCKET"] == "facepipe-local-data"
    assert env["FACEPIPE_MATCH_THRESHOLD"] == ""  # the embedder's default
    assert env["FACEPIPE_EMBEDDER"] == "vggface2"
    assert env["FACEPIPE_MIN_FACE_PROBABILITY"] == "0.95"
    assert env["FACEPIPE_PAYLOAD_PREFIX"] == "payloads/"
    assert env["FACEPIPE_LEDGER_TABLE"] == "facepipe-local-ResultLedgerTable"
    assert env["FACEPIPE_ENDPOINT_URL"] == aws.endpoint_url
    assert env["POWERTOOLS_SERVICE_NAME"] == "recognition"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "3008"
    # Everything the function reads is a valid setting.
    settings = Settings.from_env(env)
    assert settings.gallery == env["FACEPIPE_GALLERY"]
    assert settings.endpoint_url == aws.endpoint_url


def test_detection_function_env_and_code(aws: LocalAws) -> None:
    env = aws.function_env("DetectionFunction")
    assert env["POWERTOOLS_SERVICE_NAME"] == "detection"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "2048"
    assert "FACEPIPE_GALLERY" not in env
    assert env["FACEPIPE_REQUEST_QUEUE_URL"] == aws.outputs["RequestQueueUrl"]
    assert aws.function_dir("DetectionFunction") == ROOT / "functions" / "detection"
    assert aws.function_dir("RecognitionFunction") == ROOT / "functions" / "recognition"
    assert aws.function_handler("DetectionFunction") == "app.handler"
    # S3 ingress: the same image and folder, another handler module (ImageConfig Command)
    assert aws.function_dir("IngestFunction") == ROOT / "functions" / "detection"
    assert aws.function_handler("IngestFunction") == "ingest_app.handler"
    with pytest.raises(TemplateError, match="not a function"):
        aws.function_env("RequestQueue")


def test_intrinsics_resolve_getatt_and_sub(aws: LocalAws) -> None:
    policy = TEMPLATE["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]
    resources = aws.intrinsics.evaluate(policy["Statement"][0]["Resource"])
    assert resources == ["arn:aws:s3:::facepipe-local-data", "arn:aws:s3:::facepipe-local-data/*"]
    payloads = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/payloads/*"}
    assert aws.intrinsics.resolve(payloads) == "arn:aws:s3:::facepipe-local-data/payloads/*"
    with pytest.raises(TemplateError, match="DetectionFunction"):
        aws.intrinsics.resolve({"Ref": "DetectionFunction"})


def test_conditions_and_fn_if_follow_parameters() -> None:
    """The template's conditions (here IsTracing) pick each branch of ``Fn::If``."""
    traced = LocalAws(ROOT / "template.yaml", {"Tracing": "Active"}, stack="facepipe-cond")
    default = LocalAws(ROOT / "template.yaml", stack="facepipe-cond")
    choice = {"Fn::If": ["IsTracing", "false", "true"]}
    assert traced.intrinsics.resolve(choice) == "false"
    assert default.intrinsics.resolve(choice) == "true"
    assert default.intrinsics.condition("HasAlarmTopic") is False
    nested = {"Fn::Not": [{"Fn::Or": [{"Condition": "IsTracing"}, {"Condition": "HasAlarmTopic"}]}]}
    default.intrinsics.conditions["Neither"] = nested
    assert default.intrinsics.condition("Neither") is True
    with pytest.raises(TemplateError, match="not defined"):
        default.intrinsics.condition("Missing")


def test_find_template_searches_upward() -> None:
    assert find_template(ROOT / "functions" / "detection") == ROOT / "template.yaml"


def test_stop_shuts_the_server_down() -> None:
    with LocalAws(ROOT / "template.yaml", stack="facepipe-stop") as aws:
        sqs = aws.client("sqs")
        assert len(sqs.list_queues(QueueNamePrefix="facepipe-stop-")["QueueUrls"]) == 5
        port = int(aws.endpoint_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_one_stack_at_a_time_per_process_and_a_clean_slate_after(aws: LocalAws) -> None:
    # moto's state is per process: a second LocalAws of the same stack would share the queues.
    with pytest.raises(TemplateError, match="already exists"):
        LocalAws(ROOT / "template.yaml").start()
    assert len(aws.sqs.list_queues()["QueueUrls"]) == 5  # the failed start removed only its own
    with LocalAws(ROOT / "template.yaml", stack="facepipe-other") as other:
        other.sqs.send_message(QueueUrl=other.outputs["RequestQueueUrl"], MessageBody="x")
        other.s3.put_object(Bucket=other.outputs["BucketName"], Key="gallery/g.pt", Body=b"g")
    # Stopping deleted its queues and (versioned) bucket, not ours.
    assert sorted(u.rsplit("/", 1)[1] for u in aws.sqs.list_queues()["QueueUrls"]) == [
        "facepipe-local-IngestDeadLetterQueue",
        "facepipe-local-IngestQueue",
        "facepipe-local-RequestDeadLetterQueue",
        "facepipe-local-RequestQueue",
        "facepipe-local-ResponseQueue",
    ]
    assert [b["Name"] for b in aws.s3.list_buckets()["Buckets"]] == ["facepipe-local-data"]
