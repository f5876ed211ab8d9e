"""Local AWS from ``template.yaml``: the stack's queues, bucket and table in a moto server.

The resources are read from the template, not written out a second time: every
``AWS::SQS::Queue``, ``AWS::S3::Bucket`` (with its EventBridge notifications) and
``AWS::DynamoDB::Table``, and every ``AWS::Events::Rule`` on the default bus (the S3 ingress
rule: moto itself then delivers the bucket's matching object events to the rule's queue), is
created with its properties, in dependency order
(the dead-letter queue before the queue whose ``RedrivePolicy`` names it). A tiny evaluator of
the intrinsics the template uses (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If`` over its
conditions) resolves parameters to their defaults (or to ``parameters`` given here) and
resources to what moto created, so :meth:`LocalAws.function_env` returns the environment each
function would get in AWS.

Example:
    >>> with LocalAws() as aws:  # doctest: +SKIP
    ...     env = aws.function_env("RecognitionFunction")
    ...     env["FACEPIPE_GALLERY"]
    's3://facepipe-local-data/gallery/gallery.pt'
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3

from facepipe.errors import ConfigError
from facepipe.lifecycle import Service

DEFAULT_STACK = "facepipe-local"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
QUEUE = "AWS::SQS::Queue"
BUCKET = "AWS::S3::Bucket"
TABLE = "AWS::DynamoDB::Table"
RULE = "AWS::Events::Rule"  # S3 ingress: the bucket's events to the ingest queue
FUNCTION = "AWS::Serverless::Function"
DEFAULT_HANDLER = "app.handler"  # the images' CMD (ImageConfig.Command overrides it)

# CloudFormation AWS::SQS::Queue properties that are SQS queue attributes of the same name.
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


class TemplateError(Exception):
    """The template uses something this local emulator cannot evaluate."""


def bucket_name(stack: str, logical_id: str) -> str:
    """The local name of a bucket the template leaves unnamed: ``<stack>-<logical id without
    "Bucket">``, lower case.

    >>> bucket_name("facepipe-local", "DataBucket")
    'facepipe-local-data'
    """
    return f"{stack}-{logical_id.removesuffix('Bucket') or logical_id}".lower()


def find_template(start: Path | None = None, name: str = "template.yaml") -> Path:
    """The nearest ``template.yaml`` in ``start`` (default: the cwd) or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise TemplateError(f"no {name} in {here} or any parent folder: run from the repository")


def load_template(path: Path) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # aws-sam-cli ships samtranslator

    template = yaml_parse(path.read_text())
    if not isinstance(template, dict) or "Resources" not in template:
        raise TemplateError(f"{path} is not a CloudFormation/SAM template")
    return template


def _text(value: Any) -> str:
    """A CloudFormation scalar as the string a property or env var receives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _references(value: Any) -> set[str]:
    """Logical ids (and parameter names) that ``value`` refers to through intrinsics."""
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    if set(value) == {"Ref"}:
        return {str(value["Ref"])}
    if set(value) == {"Fn::GetAtt"}:
        return {str(value["Fn::GetAtt"][0])}
    if set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        return {m.split(".")[0] for m in _SUB_VARIABLE.findall(text)}
    return set().union(*(_references(v) for v in value.values())) if value else set()


class Intrinsics:
    """Evaluates ``Ref``/``Fn::GetAtt``/``Fn::Sub``/``Fn::If`` over parameters, the template's
    conditions and created resources.

    ``resources`` maps a logical id to its attributes; ``"Ref"`` is what ``!Ref`` returns.
    """

    def __init__(
        self,
        parameters: Mapping[str, str],
        stack: str,
        conditions: Mapping[str, Any] | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.conditions = dict(conditions or {})
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": stack,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.resources: dict[str, dict[str, str]] = {}

    def ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        return self.get_att(name, "Ref")

    def get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.resources[logical_id][attribute]
        except KeyError:
            raise TemplateError(
                f"{logical_id}.{attribute} is not emulated locally (only SQS queues, S3 "
                "buckets, DynamoDB tables and parameters are)"
            ) from None

    def sub(self, text: str, variables: Mapping[str, Any] | None = None) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if variables and name in variables:
                return self.resolve(variables[name])
            if "." in name and name.split(".")[0] not in self.pseudo:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return _SUB_VARIABLE.sub(one, text)

    def evaluate(self, value: Any) -> Any:
        """``value`` with every intrinsic replaced by its value (structure kept)."""
        if isinstance(value, list):
            return [self.evaluate(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            logical_id, attribute = target.split(".", 1) if isinstance(target, str) else target
            return self.get_att(logical_id, attribute)
        if set(value) == {"Fn::Sub"}:
            arg = value["Fn::Sub"]
            return self.sub(arg) if isinstance(arg, str) else self.sub(arg[0], arg[1])
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.evaluate(when_true if self.condition(name) else when_false)
        if len(value) == 1 and next(iter(value)).startswith("Fn::"):
            raise TemplateError(f"intrinsic {next(iter(value))} is not emulated locally")
        return {k: self.evaluate(v) for k, v in value.items()}

    def resolve(self, value: Any) -> str:
        return _text(self.evaluate(value))

    def condition(self, name: str) -> bool:
        """The template condition ``name`` (``Fn::Equals``/``Not``/``And``/``Or``/``Condition``
        over parameters)."""
        if name not in self.conditions:
            raise TemplateError(f"condition {name} is not defined in the template")
        return self._truth(self.conditions[name])

    def _truth(self, value: Any) -> bool:
        if isinstance(value, dict) and len(value) == 1:
            ((op, args),) = value.items()
            if op == "Fn::Equals":
                return self.resolve(args[0]) == self.resolve(args[1])
            if op == "Fn::Not":
                return not self._truth(args[0])
            if op == "Fn::And":
                return all(self._truth(a) for a in args)
            if op == "Fn::Or":
                return any(self._truth(a) for a in args)
            if op == "Condition":
                return self.condition(args)
        raise TemplateError(f"condition {value!r} is not emulated locally")


def announced_objects(body: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], str, str]]:
    """(bucket, key, the object's dict, its ETag field, its version id field) of each object an
    EventBridge event or an S3 event notification announces."""
    if "detail" in body:
        detail = body["detail"]
        yield (
            detail["bucket"]["name"],
            detail["object"]["key"],
            detail["object"],
            "etag",
            "version-id",
        )
        return
    for record in body.get("Records", []):
        obj = record["s3"]["object"]
        yield record["s3"]["bucket"]["name"], unquote_plus(obj["key"]), obj, "eTag", "versionId"


class LocalAws(Service):
    """A moto server on 127.0.0.1 holding the template's SQS queues, S3 bucket and DynamoDB
    tables.

    Args:
        template: the SAM template; default: ``template.yaml`` found from the cwd upward.
        parameters: parameter overrides (strings, as CloudFormation passes them); the others
            take their ``Default``.
        stack: stack name; queues are ``<stack>-<LogicalId>``, buckets ``<stack>-<name>``
            (``DataBucket`` → ``facepipe-local-data``).
        quiet: silence the moto server's per-request log lines.

    After ``__enter__``: ``endpoint_url``, ``outputs`` (the template Outputs that refer only to
    emulated resources, e.g. ``RequestQueueUrl``, ``BucketName``), ``sqs``, ``s3`` and
    ``dynamodb`` clients.
    Nothing is written to ``os.environ``.
    """

    def __init__(
        self,
        template: str | Path | None = None,
        parameters: Mapping[str, str] | None = None,
        *,
        stack: str = DEFAULT_STACK,
        quiet: bool = True,
    ) -> None:
        self.template_path = Path(template) if template else find_template()
        self.template = load_template(self.template_path)
        self.stack = stack
        declared = self.template.get("Parameters", {})
        unknown = set(parameters or {}) - set(declared)
        if unknown:
            raise TemplateError(f"unknown template parameters: {', '.join(sorted(unknown))}")
        values = {k: _text(p["Default"]) for k, p in declared.items() if "Default" in p}
        values.update({k: _text(v) for k, v in (parameters or {}).items()})
        self.intrinsics = Intrinsics(values, stack, self.template.get("Conditions"))
        self.quiet = quiet
        self.endpoint_url = ""
        self.outputs: dict[str, str] = {}
        self.sqs: Any = None
        self.s3: Any = None
        self.dynamodb: Any = None
        self.events: Any = None
        self._server: Any = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        if self.quiet:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        with contextlib.redirect_stdout(io.StringIO()):  # moto prints a banner on stdout
            self._server.start()
        try:
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            self.sqs = self.client("sqs")
            self.s3 = self.client("s3")
            self.dynamodb = self.client("dynamodb")
            self.events = self.client("events")
            self._create_resources()
            self.outputs = self._outputs()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            self._delete_resources()
        finally:
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        """A boto3 client for the emulator (explicit dummy credentials, no env needed)."""
        return boto3.session.Session().client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, region_name=REGION, **DUMMY_CREDENTIALS
        )

    # --- resources ---------------------------------------------------------------------------
    def resources(self, *types: str) -> dict[str, dict[str, Any]]:
        """The template's resources of these types that the stack would create: one whose
        ``Condition`` is false for these parameters is not there (e.g. the workers' ECS
        resources unless ``EnableWorkers=true``)."""
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource.get("Type") in types and self._created(resource)
        }

    def _created(self, resource_or_output: Mapping[str, Any]) -> bool:
        condition = resource_or_output.get("Condition")
        return condition is None or self.intrinsics.condition(str(condition))

    def _creation_order(self) -> Iterator[tuple[str, dict[str, Any]]]:
        pending = self.resources(QUEUE, BUCKET, TABLE, RULE)
        done: set[str] = set()
        while pending:
            ready = [
                logical_id
                for logical_id, resource in pending.items()
                if not (_references(resource.get("Properties", {})) & set(pending)) - done
            ]
            if not ready:
                raise TemplateError(f"circular references between {', '.join(sorted(pending))}")
            for logical_id in ready:
                done.add(logical_id)
                yield logical_id, pending.pop(logical_id)

    def _create_resources(self) -> None:
        for logical_id, resource in self._creation_order():
            properties = resource.get("Properties", {})
            if resource["Type"] == QUEUE:
                self._create_queue(logical_id, properties)
            elif resource["Type"] == TABLE:
                self._create_table(logical_id, properties)
            elif resource["Type"] == RULE:
                self._create_rule(logical_id, properties)
            else:
                self._create_bucket(logical_id, properties)

    def _create_queue(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        name = self.intrinsics.resolve(properties.get("QueueName", f"{self.stack}-{logical_id}"))
        attributes = {}
        for key in _QUEUE_ATTRIBUTES:
            if key in properties:
                value = self.intrinsics.evaluate(properties[key])
                attributes[key] = json.dumps(value) if isinstance(value, dict) else _text(value)
        try:
            self.sqs.get_queue_url(QueueName=name)
            self._already_exists(f"queue {name}")
        except self.sqs.exceptions.QueueDoesNotExist:
            pass
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.intrinsics.resources[logical_id] = {
            "Ref": url,
            "QueueUrl": url,
            "QueueName": name,
            "Arn": arn["Attributes"]["QueueArn"],
        }

    def _create_bucket(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        default = bucket_name(self.stack, logical_id)
        name = self.intrinsics.resolve(properties.get("BucketName", default))
        if name in {b["Name"] for b in self.s3.list_buckets()["Buckets"]}:
            self._already_exists(f"bucket {name}")
        self.s3.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
        versioning = properties.get("VersioningConfiguration")
        if versioning:
            status = self.intrinsics.resolve(versioning["Status"])
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        notifications = self.intrinsics.evaluate(properties.get("NotificationConfiguration", {}))
        eventbridge = notifications.get("EventBridgeConfiguration", {})
        if _text(eventbridge.get("EventBridgeEnabled", False)) == "true":
            # moto then sends the bucket's object events to its EventBridge rules (below).
            self.s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        self.intrinsics.resources[logical_id] = {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
        }

    def _create_table(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        """The table with its keys and TTL; billing, encryption and backups are AWS's business."""
        name = self.intrinsics.resolve(properties.get("TableName", f"{self.stack}-{logical_id}"))
        if name in self.dynamodb.list_tables()["TableNames"]:
            self._already_exists(f"table {name}")
        self.dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=self.intrinsics.evaluate(properties["AttributeDefinitions"]),
            KeySchema=self.intrinsics.evaluate(properties["KeySchema"]),
            BillingMode="PAY_PER_REQUEST",
        )
        ttl = self.intrinsics.evaluate(properties.get("TimeToLiveSpecification"))
        if ttl and ttl.get("Enabled") in (True, "true"):
            self.dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        self.intrinsics.resources[logical_id] = {
            "Ref": name,
            "TableName": name,
            "Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
        }

    def _create_rule(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        """An EventBridge rule on the default bus with its pattern and targets (the ingest
        queue): moto matches the bucket's events against it and sends them to the targets."""
        props = self.intrinsics.evaluate(dict(properties))
        name = str(props.get("Name", f"{self.stack}-{logical_id}"))
        bus = str(props.get("EventBusName", "default"))
        if bus != "default":
            raise TemplateError(f"{logical_id}: only rules on the default event bus are emulated")
        arn = self.events.put_rule(
            Name=name,
            EventPattern=json.dumps(props["EventPattern"]),
            State=str(props.get("State", "ENABLED")),
        )["RuleArn"]
        targets = [
            {
                k: v
                for k, v in target.items()
                if k in ("Id", "Arn", "RetryPolicy", "DeadLetterConfig")
            }
            for target in props.get("Targets", [])
        ]
        if targets:
            self.events.put_targets(Rule=name, Targets=targets)
        self.intrinsics.resources[logical_id] = {"Ref": name, "RuleName": name, "Arn": arn}

    def _already_exists(self, what: str) -> None:
        raise TemplateError(
            f"{what} already exists: moto keeps one state per process, so two LocalAws with the "
            f"same stack ({self.stack}) cannot run at once in one process; pass another stack="
        )

    def _delete_resources(self) -> None:
        """Delete what :meth:`start` created: moto's state outlives its server in this process,
        and the next LocalAws must start from an empty stack."""
        for attributes in self.intrinsics.resources.values():
            if "QueueUrl" in attributes:
                self.sqs.delete_queue(QueueUrl=attributes["QueueUrl"])
            elif "TableName" in attributes:
                self.dynamodb.delete_table(TableName=attributes["TableName"])
            elif "RuleName" in attributes:
                rule = attributes["RuleName"]
                ids = [t["Id"] for t in self.events.list_targets_by_rule(Rule=rule)["Targets"]]
                if ids:
                    self.events.remove_targets(Rule=rule, Ids=ids)
                self.events.delete_rule(Name=rule)
            elif "Arn" in attributes and attributes["Arn"].startswith("arn:aws:s3:::"):
                bucket = attributes["Ref"]
                pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
                for page in pages:
                    versions = page.get("Versions", []) + page.get("DeleteMarkers", [])
                    if versions:
                        self.s3.delete_objects(
                            Bucket=bucket,
                            Delete={
                                "Objects": [
                                    {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions
                                ]
                            },
                        )
                self.s3.delete_bucket(Bucket=bucket)
        self.intrinsics.resources.clear()

    def _outputs(self) -> dict[str, str]:
        outputs = {}
        for key, output in self.template.get("Outputs", {}).items():
            if not self._created(output):
                continue
            try:
                outputs[key] = self.intrinsics.resolve(output["Value"])
            except TemplateError:
                continue  # refers to something not emulated here (functions, their URL)
        return outputs

    # --- functions ---------------------------------------------------------------------------
    def _function(self, logical_id: str) -> dict[str, Any]:
        resource = self.template["Resources"].get(logical_id)
        if not resource or resource.get("Type") != FUNCTION:
            functions = ", ".join(self.resources(FUNCTION))
            raise TemplateError(f"{logical_id} is not a function of the template ({functions})")
        return dict(resource.get("Properties", {}))

    def function_env(self, logical_id: str) -> dict[str, str]:
        """The environment ``logical_id`` gets in AWS, pointed at this emulator.

        The template's Globals.Function variables, then the function's own, resolved; plus what
        Lambda itself sets (region, function name, memory size) and the local extras: the
        endpoint override, dummy credentials and tracing off (no X-Ray daemon here).
        """
        properties = self._function(logical_id)
        globals_ = self.template.get("Globals", {}).get("Function", {})
        variables: dict[str, Any] = {}
        for source in (globals_, properties):
            variables.update(source.get("Environment", {}).get("Variables", {}))
        env = {name: self.intrinsics.resolve(value) for name, value in variables.items()}
        memory = properties.get("MemorySize", globals_.get("MemorySize", 128))
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=f"{self.stack}-{logical_id}",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=self.intrinsics.resolve(memory),
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID=DUMMY_CREDENTIALS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=DUMMY_CREDENTIALS["aws_secret_access_key"],
            FACEPIPE_ENDPOINT_URL=self.endpoint_url,
            POWERTOOLS_TRACE_DISABLED="true",
        )
        return env

    def function_dir(self, logical_id: str) -> Path:
        """The folder of the function's Dockerfile (its handler modules), from the template
        Metadata."""
        metadata = self.template["Resources"][logical_id].get("Metadata", {})
        self._function(logical_id)
        if "Dockerfile" not in metadata:
            raise TemplateError(f"{logical_id} has no Metadata.Dockerfile to locate its code")
        context = self.template_path.parent / metadata.get("DockerContext", ".")
        return (context / metadata["Dockerfile"]).parent.resolve()

    def function_handler(self, logical_id: str) -> str:
        """``ImageConfig.Command`` of the function, else the images' CMD ``app.handler``."""
        command = self._function(logical_id).get("ImageConfig", {}).get("Command")
        return str(command[0]) if command else DEFAULT_HANDLER

    # --- queues ------------------------------------------------------------------------------
    def drain(self, queue_url: str, *, wait_seconds: int = 1) -> list[dict[str, Any]]:
        """Receive (10 at a time, with their attributes) and delete every message, until empty."""
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            messages.extend(batch)

    def redrive(self, dead_letter_url: str, source_url: str) -> int:
        """Move every message of a dead-letter queue back to its source queue, with its body and
        message attributes, as SQS's message move task does (``aws sqs
        start-message-move-task``, which moto does not have); the number moved."""
        moved = 0
        for message in self.drain(dead_letter_url, wait_seconds=0):
            attributes = {
                name: {k: v for k, v in value.items() if k in ("DataType", "StringValue")}
                for name, value in message.get("MessageAttributes", {}).items()
            }
            self.sqs.send_message(
                QueueUrl=source_url, MessageBody=message["Body"], MessageAttributes=attributes
            )
            moved += 1
        return moved

    # --- buckets -----------------------------------------------------------------------------
    def expire_objects(self, logical_id: str, now: datetime) -> list[str]:
        """Apply the bucket's lifecycle expiration rules of the template as S3 would at ``now``
        (moto stores the rules but never applies them): current objects under a rule's prefix
        older than its ``ExpirationInDays`` are deleted (a delete marker on a versioned bucket).
        Returns the keys expired. Tests move ``now`` days ahead instead of waiting."""
        properties = self.template["Resources"][logical_id]["Properties"]
        rules = self.intrinsics.evaluate(properties.get("LifecycleConfiguration", {}))
        bucket = self.intrinsics.resources[logical_id]["Ref"]
        expired: list[str] = []
        for rule in rules.get("Rules", []):
            days = rule.get("ExpirationInDays")
            if rule.get("Status") != "Enabled" or days is None:
                continue
            prefix = str(rule.get("Prefix", ""))
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if now - obj["LastModified"] >= timedelta(days=int(days)):
                        self.s3.delete_object(Bucket=bucket, Key=obj["Key"])
                        expired.append(obj["Key"])
        return expired

    def upload_announced(self, event: dict[str, Any], path: Path) -> dict[str, Any]:
        """Upload ``path`` to each object the event's records announce (in the local bucket, which
        must be the one they name) and return the event with each object's ETag, and version id
        where it names one, those of the upload, as S3 would have sent them."""
        from facepipe.stages.ingest import objects_in_message

        data = path.read_bytes()
        bucket = self.outputs["BucketName"]
        records = []
        for record in event.get("Records", []):
            objects_in_message(record["body"])  # a clear error for a body that is no S3 event
            body = json.loads(record["body"])
            for name, key, obj, etag_field, version_field in announced_objects(body):
                if name != bucket:
                    raise ConfigError(
                        f"the event names bucket {name!r}; the local stack's is {bucket!r}: edit "
                        "the event's bucket name"
                    )
                put = self.s3.put_object(Bucket=bucket, Key=key, Body=data)
                obj[etag_field] = put["ETag"].strip('"')
                if version_field in obj:
                    obj[version_field] = put.get("VersionId")
            records.append({**record, "body": json.dumps(body)})
        # The uploads made S3 announce them on the ingest queue too: the event file stands for that.
        self.drain(self.outputs["IngestQueueUrl"], wait_seconds=1)
        return {**event, "Records": records}

    def queue_urls(self) -> dict[str, str]:
        """Logical id → URL of every emulated queue, in template order."""
        created = self.intrinsics.resources
        return {logical_id: created[logical_id]["QueueUrl"] for logical_id in self.resources(QUEUE)}
