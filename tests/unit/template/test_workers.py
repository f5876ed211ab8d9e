"""The optional ECS worker service in template.yaml (EnableWorkers), transformed offline.

Off by default: every worker resource carries the WorkersEnabled condition, the recognition
function keeps its SQS event, and the local stack (which reads the template) is unchanged. On:
the service runs the recognition image with `facepipe worker --stage recognition`, its task role
holds exactly the recognition function's grants, and it scales on backlog per running task.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from facepipe.cli.main import build_parser
from facepipe.config import Settings
from facepipe.local.emulator import LocalAws
from facepipe.local.stack import LocalStack
from tests.conftest import ROOT
from tests.unit.template.test_template import (
    as_list,
    condition_values,
    deployed_properties,
    load_template,
    queue_of,
    role_of,
    statements,
    translate,
)

WORKERS_ON = {
    "EnableWorkers": "true",
    "WorkerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/recognition:v1",
    "WorkerSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "WorkerSecurityGroupIds": "sg-0123456789abcdef0",
}
WORKER_RESOURCES = {
    "WorkerCluster": "AWS::ECS::Cluster",
    "WorkerLogGroup": "AWS::Logs::LogGroup",
    "WorkerExecutionRole": "AWS::IAM::Role",
    "WorkerTaskRole": "AWS::IAM::Role",
    "WorkerTaskDefinition": "AWS::ECS::TaskDefinition",
    "WorkerService": "AWS::ECS::Service",
    "WorkerScalableTarget": "AWS::ApplicationAutoScaling::ScalableTarget",
    "WorkerScalingPolicy": "AWS::ApplicationAutoScaling::ScalingPolicy",
}


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate(WORKERS_ON)


def test_workers_are_off_by_default() -> None:
    template = load_template()
    assert template["Parameters"]["EnableWorkers"]["Default"] == "false"
    cfn = translate()
    assert condition_values(cfn)["WorkersEnabled"] is False
    for name, kind in WORKER_RESOURCES.items():
        assert cfn["Resources"][name]["Type"] == kind
        assert cfn["Resources"][name]["Condition"] == "WorkersEnabled", name
    for key in ("WorkerClusterName", "WorkerServiceName"):
        assert cfn["Outputs"][key]["Condition"] == "WorkersEnabled"
    # every resource that mentions a worker is conditional (nothing half-built when off)
    for name, resource in cfn["Resources"].items():
        if name.startswith("Worker"):
            assert resource.get("Condition") == "WorkersEnabled", name


def test_workers_replace_the_recognition_event_source(cfn: dict[str, Any]) -> None:
    (mapping,) = [
        r
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "RecognitionFunction"}
    ]
    assert mapping["Properties"]["Enabled"] == {"Fn::If": ["WorkersEnabled", False, True]}


def test_workers_need_an_image_and_a_network() -> None:
    rule = load_template()["Rules"]["WorkersNeedImageAndNetwork"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EnableWorkers"}, "true"]}
    described = " ".join(a["AssertDescription"] for a in rule["Assertions"])
    for name in ("WorkerImageUri", "WorkerSubnetIds", "WorkerSecurityGroupIds"):
        assert name in described


def test_task_runs_the_recognition_image_as_a_worker(cfn: dict[str, Any]) -> None:
    task = deployed_properties(cfn, "WorkerTaskDefinition", WORKERS_ON)
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["WorkerExecutionRole", "Arn"]}
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["WorkerTaskRole", "Arn"]}
    (container,) = task["ContainerDefinitions"]
    assert container["Image"] == {"Ref": "WorkerImageUri"}
    assert container["EntryPoint"] + container["Command"] == [
        "facepipe",
        "worker",
        "--stage",
        "recognition",
    ]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    # the recognition function's environment (same queues, bucket, ledger, model, gallery)
    assert env["POWERTOOLS_SERVICE_NAME"] == "recognition"
    assert env["FACEPIPE_REQUEST_QUEUE_URL"] == {"Ref": "RequestQueue"}
    assert env["FACEPIPE_RESPONSE_QUEUE_URL"] == {"Ref": "ResponseQueue"}
    assert env["FACEPIPE_LEDGER_TABLE"] == {"Ref": "ResultLedgerTable"}
    assert env["FACEPIPE_EMBEDDER"] == {"Ref": "Embedder"}
    assert env["FACEPIPE_GALLERY"] == {"Fn::Sub": "s3://${DataBucket}/${GalleryKey}"}
    assert env["FACEPIPE_WORKER_HEALTH_PORT"] == "8080"
    assert "127.0.0.1:8080/healthz" in " ".join(container["HealthCheck"]["Command"])
    assert container["StopTimeout"] >= 25  # FACEPIPE_WORKER_GRACE_SECONDS' default fits in
    group = deployed_properties(cfn, "WorkerLogGroup", WORKERS_ON)
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    logs = container["LogConfiguration"]
    assert logs["LogDriver"] == "awslogs"
    assert logs["Options"]["awslogs-group"] == {"Ref": "WorkerLogGroup"}


def _grants(role: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for policy in role["Properties"]["Policies"]:
        for st in as_list(policy["PolicyDocument"]["Statement"]):
            assert st["Effect"] == "Allow" and "NotResource" not in st, st
            for action in as_list(st["Action"]):
                pairs.extend((action, r) for r in as_list(st["Resource"]))
    return pairs


def _data_statements(role: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The role's Allow statements on S3 and DynamoDB, without their Sids, in a stable order."""
    found = []
    for st in statements(role):
        actions = tuple(sorted(as_list(st["Action"])))
        if st["Effect"] == "Allow" and actions[0].split(":")[0] in ("s3", "dynamodb"):
            resources = tuple(sorted(str(r) for r in as_list(st["Resource"])))
            found.append((actions, resources, str(st.get("Condition"))))
    return sorted(found)


def test_task_role_has_only_the_recognition_grants(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["WorkerTaskRole"]
    (principal,) = as_list(role["Properties"]["AssumeRolePolicyDocument"]["Statement"])
    assert principal["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert "ManagedPolicyArns" not in role["Properties"]
    grants = _grants(role)
    sqs = {(a, queue_of(r)) for a, r in grants if a.startswith("sqs:")}
    assert sqs == {
        ("sqs:ReceiveMessage", "RequestQueue"),
        ("sqs:DeleteMessage", "RequestQueue"),
        ("sqs:ChangeMessageVisibility", "RequestQueue"),
        ("sqs:GetQueueAttributes", "RequestQueue"),
        ("sqs:SendMessage", "ResponseQueue"),
    }
    # Its S3 and ledger grants are the recognition function's, statement for statement
    # (conditions included: listing confined to the gallery and albums prefixes).
    function = role_of(cfn, "RecognitionFunction")
    assert _data_statements(role) == _data_statements(function)
    assert {a.split(":")[0] for a, _ in grants} == {"sqs", "s3", "dynamodb"}


def test_execution_role_only_pulls_and_logs(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["WorkerExecutionRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [
        {
            "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
            "AmazonECSTaskExecutionRolePolicy"
        }
    ]
    assert "Policies" not in role


def test_service_runs_in_the_given_subnets(cfn: dict[str, Any]) -> None:
    service = deployed_properties(cfn, "WorkerService", WORKERS_ON)
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == {"Ref": "WorkerSubnetIds"}
    assert network["SecurityGroups"] == {"Ref": "WorkerSecurityGroupIds"}
    assert network["AssignPublicIp"] == {"Ref": "WorkerAssignPublicIp"}
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == {"Ref": "WorkerMinTasks"}
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]["Rollback"] is True
    cluster = deployed_properties(cfn, "WorkerCluster", WORKERS_ON)
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_scaling_tracks_backlog_per_running_task(cfn: dict[str, Any]) -> None:
    target = deployed_properties(cfn, "WorkerScalableTarget", WORKERS_ON)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        {"Ref": "WorkerMinTasks"},
        {"Ref": "WorkerMaxTasks"},
    )
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    policy = deployed_properties(cfn, "WorkerScalingPolicy", WORKERS_ON)
    assert policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == {"Ref": "WorkerBacklogPerTask"}
    queries = {q["Id"]: q for q in config["CustomizedMetricSpecification"]["Metrics"]}
    backlog = queries["backlog"]["MetricStat"]["Metric"]
    assert (backlog["Namespace"], backlog["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert backlog["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["RequestQueue", "QueueName"]}}
    ]
    tasks = queries["tasks"]["MetricStat"]["Metric"]
    assert (tasks["Namespace"], tasks["MetricName"]) == (
        "ECS/ContainerInsights",
        "RunningTaskCount",
    )
    assert queries["backlog_per_task"]["Expression"] == "backlog / tasks"
    assert [q["Id"] for q in queries.values() if q["ReturnData"]] == ["backlog_per_task"]
    params = load_template()["Parameters"]
    assert params["WorkerMinTasks"]["MinValue"] >= 1  # the divisor is never 0


# --- the local stack reads the same template ------------------------------------------------------
def test_local_aws_skips_resources_and_outputs_whose_condition_is_false() -> None:
    off = LocalAws(stack="facepipe-workers-off")
    on = LocalAws(parameters=WORKERS_ON, stack="facepipe-workers-on")
    assert "WorkerCluster" not in off.resources("AWS::ECS::Cluster")
    assert "WorkerCluster" in on.resources("AWS::ECS::Cluster")
    with off:
        assert "WorkerClusterName" not in off.outputs
        assert "RequestQueueUrl" in off.outputs


@pytest.mark.parametrize(("enable", "consumed"), [("false", True), ("true", False)])
def test_the_local_stack_runs_the_recognition_poller_only_without_workers(
    enable: str, consumed: bool
) -> None:
    stack = LocalStack(
        Settings.from_env({}),
        parameters={"EnableWorkers": enable},
        stack=f"facepipe-plan-{enable}",
    )
    with stack.aws:
        _, mappings = stack._plan()
    assert ("RecognitionFunction" in {m["function"] for m in mappings}) is consumed


def test_the_recognition_image_has_the_worker_command(cfn: dict[str, Any]) -> None:
    """The task overrides the image's awslambdaric entry point with the library's console
    script, which the image installs with the library (no Dockerfile of its own)."""
    scripts = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["facepipe"] == "facepipe.cli.main:main"
    dockerfile = (ROOT / "functions" / "recognition" / "Dockerfile").read_text()
    assert 'pip install "/tmp/shared[dlib,vectors]"' in dockerfile  # the library, so `facepipe`
    (container,) = cfn["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["EntryPoint"][0] == "facepipe"
    args = build_parser().parse_args([*container["EntryPoint"][1:], *container["Command"]])
    assert args.command == "worker" and args.setting_stage == "recognition"
