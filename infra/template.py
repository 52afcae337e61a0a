"""The CloudFormation merged over Chalice's output: every resource Chalice does not make, and what it cannot set.

Built from `chalicelib.resources` (tables, queues, bucket) and from the template Chalice generated for the app as it
is now, so functions added to `app.py` (schedules, WebSocket handlers) get their environment and permissions
without a change here, and a lane whose handler does not exist yet is not half-declared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chalice.utils import to_cfn_resource_name

from chalicelib import observability, resources
from chalicelib.resources import LANES, MEDIA_BUCKET, QUEUES, TABLES, WEBHOOK_DELIVERY, Lane, Queue, Table
from infra.stages import API_GATEWAY_STAGE, Stage

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
API_HANDLER_ENTRY = "app.app"
MEDIA_BUCKET_ID = "MediaBucket"
MEDIA_LOG_BUCKET_ID = "MediaAccessLogBucket"
ALARM_TOPIC_ID = "AlarmTopic"
ALARM_KEY_ID = "AlarmTopicKey"
REST_API_ID = "RestAPI"
REST_API_LOGS_ID = "RestAPIAccessLogs"
WEBSOCKET_API_ID = "WebsocketAPI"
WEBSOCKET_STAGE_ID = "WebsocketAPIStage"
WEBSOCKET_DEPLOYMENT_ID = "WebsocketAPIDeployment"
WEBSOCKET_API_LOGS_ID = "WebsocketAPIAccessLogs"
# API Gateway's own errors (unknown route, throttling, oversized payload...) in the app's error shape.
GATEWAY_ERROR_BODY = '{"error": {"code": "$context.error.responseType", "message": $context.error.messageString}}'
# ...readable by the web app: these bodies carry no user data and requests carry no cookies, so any origin may
# read them (a gateway response cannot echo only the allowed origins, as the app's own CORS does).
GATEWAY_ERROR_HEADERS = {
    "gatewayresponse.header.Content-Type": "'application/json'",
    "gatewayresponse.header.Access-Control-Allow-Origin": "'*'",
}
# The AWS-managed SQS key: explicit encryption with no key policy to keep (nothing but our functions uses the queues).
SQS_KMS_KEY = "alias/aws/sqs"
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTimeEpoch",
        "routeOrPath": "$context.routeKey$context.resourcePath",
        "method": "$context.httpMethod",
        "status": "$context.status",
        "error": "$context.error.responseType",
        "integrationStatus": "$context.integrationStatus",
        "latencyMs": "$context.responseLatency",
        "connectionId": "$context.connectionId",
        "eventType": "$context.eventType",
    },
    separators=(",", ":"),
)

PARAMETERS: dict[str, Any] = {
    "CorsOrigins": {
        "Type": "String",
        "MinLength": 1,
        "Description": "Comma-separated origins of the web app (CORS for the API and for browser uploads to S3).",
    },
    "WsAllowedOrigins": {
        "Type": "String",
        "Default": "",
        "Description": "Comma-separated origins allowed to open the WebSocket (empty: the origins in CorsOrigins; "
        "* allows any).",
    },
    "AdminUsername": {
        "Type": "String",
        "Default": "admin",
        "Description": "The first administrator, created on the first login (password: ADMIN_PASSWORD in the secret).",
    },
    "AlarmNotificationTopic": {
        "Type": "String",
        "Default": "",
        "Description": "ARN of an SNS topic of your own that every alarm notifies too (on-call paging, chat); empty: "
        "only the stack's own alarm topic.",
    },
    "ArkInputsSigningSecret": {
        "Type": "String",
        "Default": "",
        "Description": "Name of the Secrets Manager secret holding the long-term key that signs the inputs Ark fetches "
        "later (docs/storage.md); empty: none (the lanes sign them with their role, and such links may expire first).",
    },
}
HAS_INPUTS_SIGNER = "HasArkInputsSigningSecret"
HAS_NOTIFICATION_TOPIC = "HasAlarmNotificationTopic"
CONDITIONS: dict[str, Any] = {
    HAS_INPUTS_SIGNER: {"Fn::Not": [{"Fn::Equals": [{"Ref": "ArkInputsSigningSecret"}, ""]}]},
    HAS_NOTIFICATION_TOPIC: {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmNotificationTopic"}, ""]}]},
}


def checkov_skips(*skips: tuple[str, str]) -> dict[str, Any]:
    """A resource's `Metadata` naming the checkov checks it does not follow, each with the reason why."""
    return {"Metadata": {"checkov": {"skip": [{"id": check, "comment": reason} for check, reason in skips]}}}


NO_CUSTOMER_KEY = "Encrypted at rest with an AWS-owned or AWS-managed key; a customer-managed key adds cost and a " \
    "key policy to keep, and nothing here needs its separate control or audit trail."
# The failure-rate alarm's window (`Stage.failure_rate_windows` of them in a row breach).
FAILURE_RATE_PERIOD_S = 5 * 60
NO_VPC = "Reaches only AWS APIs and Ark over HTTPS; a VPC would add NAT cost and cold-start latency and no isolation."
NO_KEY_FOR_ENVIRONMENT = "No secret is in the environment: secrets are read at run time from Secrets Manager. " \
    "Lambda encrypts the environment at rest with its AWS-managed key."
LOG_GROUP_KEY = "Encrypted by CloudWatch Logs with its own key; a customer-managed key adds cost and a key policy " \
    "to keep, and the logs hold no secret."


def table_id(table: Table) -> str:
    return "Table" + to_cfn_resource_name(table.logical_name)


def _queue_resource_name(queue: Queue) -> str:
    return ("Lane" if isinstance(queue, Lane) else "") + to_cfn_resource_name(queue.name)


def queue_id(queue: Queue) -> str:
    return f"{_queue_resource_name(queue)}Queue"


def dead_letter_queue_id(queue: Queue) -> str:
    return f"{_queue_resource_name(queue)}DeadLetterQueue"


def lane_function_id(queue: Queue) -> str:
    """The function consuming the queue (a lane's worker, or another queue's consumer)."""
    return to_cfn_resource_name(queue.handler_name)


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _arn(service: str, resource: str) -> dict[str, str]:
    return _sub(f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


# --- resources beyond Chalice ------------------------------------------------------------------------------


def table_resource(table: Table, stage: Stage) -> dict[str, Any]:
    properties = table.create_table_args(stage.prefix)
    properties["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    properties["SSESpecification"] = {"SSEEnabled": True}
    if table.ttl_attribute:
        properties["TimeToLiveSpecification"] = {"AttributeName": table.ttl_attribute, "Enabled": True}
    return {
        "Type": "AWS::DynamoDB::Table",
        **_retention(stage),
        **checkov_skips(("CKV_AWS_119", NO_CUSTOMER_KEY)),
        "Properties": properties,
    }


def lane_resources(lane: Queue, stage: Stage) -> dict[str, Any]:
    """A queue (a lane's or another), its DLQ and the DLQ's alarm."""
    dlq = dead_letter_queue_id(lane)
    encryption = {"KmsMasterKeyId": SQS_KMS_KEY, "KmsDataKeyReusePeriodSeconds": 3600}
    return {
        dlq: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": lane.dlq_name(stage.prefix),
                # The longest SQS keeps anything: time to look at what failed and redrive it.
                "MessageRetentionPeriod": 14 * 24 * 3600,
                **encryption,
            },
        },
        queue_id(lane): {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": lane.queue_name(stage.prefix),
                "VisibilityTimeout": lane.visibility_timeout_s,
                "RedrivePolicy": lane.redrive_policy({"Fn::GetAtt": [dlq, "Arn"]}),
                **encryption,
            },
        },
        f"{dlq}Alarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"Messages of the {lane.name} {'lane' if isinstance(lane, Lane) else 'queue'} "
                                    "reached its dead-letter queue.",
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                **alarm_actions(),
            },
        },
    }


def alarm_actions() -> dict[str, Any]:
    """Every alarm tells the stack's topic, and the `AlarmNotificationTopic` given, when it fires and when it ends."""
    topics = {"Fn::If": [HAS_NOTIFICATION_TOPIC, [{"Ref": ALARM_TOPIC_ID}, {"Ref": "AlarmNotificationTopic"}],
                         [{"Ref": ALARM_TOPIC_ID}]]}
    return {"AlarmActions": topics, "OKActions": topics}


# The model alarms' ids: one alarm of each kind watches every model, those an admin adds later included.
FAILURE_RATE_ALARM_ID = "ModelFailureRateAlarm"
CIRCUIT_OPEN_ALARM_ID = "ModelCircuitOpenAlarm"


def per_model_query(stage: Stage, statistic: str, metric: str) -> str:
    """A Metrics Insights query of one time series per model (each a contributor of its alarm, named by its
    `model_id`): models live in a table, alarms in the stack, so no alarm may name a model. The schema is exactly
    the model dimension the app publishes (`chalicelib.observability`)."""
    namespace = stage.prefix  # the functions' `ARKFLOW_PREFIX`, which names their metrics' namespace
    # Made of the template's own names alone (no input reaches it): S608's injection does not apply.
    return (f'SELECT {statistic}({metric}) FROM SCHEMA("{namespace}", {observability.MODEL_DIMENSION}) '  # noqa: S608
            f"GROUP BY {observability.MODEL_DIMENSION} ORDER BY {statistic}() DESC")


def model_alarms(stage: Stage) -> dict[str, Any]:
    """For every model, from the metrics `chalicelib.observability` publishes: too many of its finished tasks
    failed for 15 minutes, or its circuit is open (Ark keeps refusing it). One Metrics Insights alarm of each kind,
    whose contributors are the models (docs/design.md, "Observability")."""
    windows = stage.failure_rate_windows
    return {
        FAILURE_RATE_ALARM_ID: {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": f"More than {stage.failure_rate_threshold:.0%} of a model's finished tasks failed, in "
                                f"each of {windows} five-minute windows in a row (the alarm's contributors name the "
                                "models).",
            # Each finished task publishes its failed share, 1 or 0: a window's average is its failure rate. A
            # window without a finished task has no value and does not breach, so a rate needs a task in every one
            # of the windows: a model with one failure now and then never alarms.
            "Metrics": [{"Id": "rate", "Label": "failure rate", "ReturnData": True, "Period": FAILURE_RATE_PERIOD_S,
                         "Expression": per_model_query(stage, "AVG", observability.TASK_FAILED_SHARE)}],
            "EvaluationPeriods": windows,
            "DatapointsToAlarm": windows,
            "Threshold": stage.failure_rate_threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            **alarm_actions(),
        }},
        CIRCUIT_OPEN_ALARM_ID: {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": "A model's circuit is open: Ark kept refusing or failing its calls, and its tasks wait "
                                "(the alarm's contributors name the models).",
            "Metrics": [{"Id": "circuit", "Label": "circuit open", "ReturnData": True, "Period": 60,
                         "Expression": per_model_query(stage, "MAX", observability.CIRCUIT_OPEN)}],
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            # The breaker reports its state when it changes and while lanes consult it: between reports the alarm
            # keeps the state it has (an open circuit with no traffic stays alarmed until it closes).
            "TreatMissingData": "ignore",
            **alarm_actions(),
        }},
    }


def alarm_resources(stage: Stage) -> dict[str, Any]:
    """The alarm topic, encrypted with a key of its own: CloudWatch may not use the AWS-managed SNS key."""
    return {
        ALARM_KEY_ID: {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": f"Encrypts the {stage.prefix} alarm topic.",
                "EnableKeyRotation": True,
                "PendingWindowInDays": 7,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountAdministers",
                            "Effect": "Allow",
                            "Principal": {"AWS": _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                            "Action": "kms:*",
                            "Resource": "*",
                        },
                        {
                            "Sid": "CloudWatchAlarmsPublish",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                        },
                    ],
                },
            },
        },
        ALARM_TOPIC_ID: {
            "Type": "AWS::SNS::Topic",
            "Properties": {"TopicName": f"{stage.prefix}-alarms", "KmsMasterKeyId": {"Ref": ALARM_KEY_ID}},
        },
    }


def bucket_name(stage: Stage, logical_name: str = MEDIA_BUCKET.logical_name) -> str:
    """A bucket's name, for `Fn::Sub`: bucket names are global, the account and region keep them unique."""
    return f"{stage.prefix}-{logical_name}-${{AWS::AccountId}}-${{AWS::Region}}"


def _bucket_basics() -> dict[str, Any]:
    return {
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    }


def _tls_only(bucket_id: str) -> dict[str, Any]:
    return {
        "Sid": "DenyPlainHttp",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "s3:*",
        "Resource": [{"Fn::GetAtt": [bucket_id, "Arn"]}, _sub(f"${{{bucket_id}.Arn}}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


NO_VERSIONING = (
    "CKV_AWS_21",
    "Deleting a task must delete its images and videos (versions would keep them); every object expires anyway.",
)
ACCESS_LOG_DAYS = 90


def bucket_resources(stage: Stage) -> dict[str, Any]:
    media = bucket_name(stage)
    return {
        MEDIA_BUCKET_ID: {
            "Type": "AWS::S3::Bucket",
            **_retention(stage),
            **checkov_skips(NO_VERSIONING),
            "Properties": {
                "BucketName": _sub(media),
                **_bucket_basics(),
                "LoggingConfiguration": {
                    "DestinationBucketName": {"Ref": MEDIA_LOG_BUCKET_ID},
                    "LogFilePrefix": "media/",
                },
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "expire-everything",
                            "Status": "Enabled",
                            "ExpirationInDays": MEDIA_BUCKET.expire_days,
                            "AbortIncompleteMultipartUpload": {
                                "DaysAfterInitiation": MEDIA_BUCKET.abort_incomplete_multipart_days
                            },
                        },
                        {
                            "Id": "expire-unused-uploads",
                            "Status": "Enabled",
                            "Prefix": MEDIA_BUCKET.uploads_prefix,
                            "ExpirationInDays": MEDIA_BUCKET.uploads_expire_days,
                        },
                    ]
                },
                # Browsers upload reference images straight to S3 with a presigned POST, and read results.
                "CorsConfiguration": {
                    "CorsRules": [
                        {
                            "AllowedMethods": ["POST", "GET", "HEAD"],
                            "AllowedOrigins": {"Fn::Split": [",", {"Ref": "CorsOrigins"}]},
                            "AllowedHeaders": ["*"],
                            "MaxAge": 3000,
                        }
                    ]
                },
            },
        },
        f"{MEDIA_BUCKET_ID}Policy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": MEDIA_BUCKET_ID},
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [_tls_only(MEDIA_BUCKET_ID)]},
            },
        },
        MEDIA_LOG_BUCKET_ID: {
            "Type": "AWS::S3::Bucket",
            **_retention(stage),
            **checkov_skips(
                ("CKV_AWS_18", "The media bucket's access-log target: logging it would log its own log deliveries."),
                ("CKV_AWS_21", "Access logs are written once by S3 and expire; nothing edits them."),
            ),
            "Properties": {
                "BucketName": _sub(bucket_name(stage, f"{MEDIA_BUCKET.logical_name}-logs")),
                **_bucket_basics(),
                "LifecycleConfiguration": {
                    "Rules": [{"Id": "expire-logs", "Status": "Enabled", "ExpirationInDays": ACCESS_LOG_DAYS}]
                },
            },
        },
        f"{MEDIA_LOG_BUCKET_ID}Policy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": MEDIA_LOG_BUCKET_ID},
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        _tls_only(MEDIA_LOG_BUCKET_ID),
                        {
                            "Sid": "ServerAccessLogs",
                            "Effect": "Allow",
                            "Principal": {"Service": "logging.s3.amazonaws.com"},
                            "Action": "s3:PutObject",
                            "Resource": _sub(f"${{{MEDIA_LOG_BUCKET_ID}.Arn}}/media/*"),
                            "Condition": {
                                "ArnLike": {"aws:SourceArn": _sub(f"arn:${{AWS::Partition}}:s3:::{media}")},
                                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                            },
                        },
                    ],
                },
            },
        },
    }


def access_log_group(stage: Stage, name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        **checkov_skips(("CKV_AWS_158", LOG_GROUP_KEY)),
        "Properties": {"LogGroupName": name, "RetentionInDays": stage.log_retention_days},
    }


def _retention(stage: Stage) -> dict[str, str]:
    policy = "Retain" if stage.retain_data else "Delete"
    return {"DeletionPolicy": policy, "UpdateReplacePolicy": policy}


def retained_resource_ids(stage: Stage) -> list[str]:
    """What outlives the stack (and what a re-created stack imports back): tables and buckets, in `prod`."""
    if not stage.retain_data:
        return []
    return [table_id(table) for table in TABLES] + [MEDIA_BUCKET_ID, MEDIA_LOG_BUCKET_ID]


# --- permissions -------------------------------------------------------------------------------------------

TABLE_READS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan",
               "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable"]
TABLE_WRITES = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
QUEUE_SENDS = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage", "sqs:ChangeMessageVisibility"]
QUEUE_CONSUMES = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
# Presigning needs no call, but a presigned link works only while its signer may do what it names.
PRESIGN = ("s3:GetObject",)
RESULTS_COPY = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")


@dataclass(frozen=True)
class Access:
    """What one function may use; its role allows that and nothing else."""

    reads: tuple[Table, ...] = ()
    writes: tuple[Table, ...] = ()
    # Sending to lane queues: enqueueing, redelivery, and the message of a task a released slot was handed to.
    sends_to_lanes: bool = False
    # Sending to the webhook queue: a task change its webhook subscribes to (any function that changes tasks), and
    # the delivery's own retries.
    sends_webhooks: bool = False
    # The queue (a lane's or another) that is the function's event source.
    consumes: Queue | None = None
    # Reading, and replaying from, every queue's dead-letter queue (the admin routes, `chalicelib.admin.dlq`).
    redrives_dead_letters: bool = False
    media: tuple[str, ...] = ()
    lists_media: bool = False
    # The stage's Secrets Manager secret (Ark key, signing key, first admin's password).
    reads_secret: bool = False
    # Sends Ark a task's inputs, signing those too large to go inline with the long-term key of the secret named
    # by the `ArkInputsSigningSecret` parameter (`chalicelib.media.storage.ark_input_signer`).
    signs_ark_inputs: bool = False
    # Posting to (and closing) the stack's own WebSocket connections.
    posts_to_connections: bool = False


# Whatever changes a task's state also releases slots, refunds quota (and records the refund on the audit trail),
# tells the owner's open connections and writes the metrics' roll-ups (Ark's errors as they come; finished tasks by
# the sweeper's batches, or by a delete of one not counted yet).
_TRANSITIONS = (resources.TASKS, resources.SLOTS, resources.QUOTA, resources.AUDIT, resources.CONNECTIONS,
                resources.METRICS)


def _lane_access(lane: Lane) -> Access:
    # A video lane records which task owns each Ark task it creates or adopts (`chalicelib.video`).
    owners = (resources.ARK_TASK_OWNERS,) if lane.task_type == "video" else ()
    return Access(reads=(resources.MODELS,), writes=(*_TRANSITIONS, *owners), sends_to_lanes=True, consumes=lane,
                  media=RESULTS_COPY, lists_media=True, reads_secret=True, signs_ark_inputs=True,
                  posts_to_connections=True, sends_webhooks=True)


# Keyed by Chalice's logical id of each function of `app.py`; a function missing here fails packaging.
FUNCTION_ACCESS: dict[str, Access] = {
    "APIHandler": Access(
        writes=TABLES, sends_to_lanes=True, media=("s3:GetObject", "s3:PutObject", "s3:DeleteObject"),
        lists_media=True, reads_secret=True, posts_to_connections=True, sends_webhooks=True,
        redrives_dead_letters=True,
    ),
    **{lane_function_id(lane): _lane_access(lane) for lane in LANES},
    "VideoPoller": Access(reads=(resources.MODELS,), writes=_TRANSITIONS, sends_to_lanes=True, media=PRESIGN,
                          reads_secret=True, posts_to_connections=True, sends_webhooks=True),
    # It also creates the default models a deployment has never had (`chalicelib.store.first_run`).
    "Sweeper": Access(writes=(*_TRANSITIONS, resources.MODELS, resources.MARKERS), sends_to_lanes=True,
                      media=PRESIGN, reads_secret=True, posts_to_connections=True, sends_webhooks=True),
    # Reads the task it posts (presigning its results), signs with its owner's secret (made at the first webhook
    # of a user who never read it), claims and records each attempt, and queues the next one. The body's estimates
    # read the model's recent figures (`chalicelib.metrics.figures`).
    lane_function_id(WEBHOOK_DELIVERY): Access(reads=(resources.TASKS, resources.METRICS, resources.SLOTS),
                                               writes=(resources.WEBHOOK_SECRETS, resources.WEBHOOK_DELIVERIES),
                                               consumes=WEBHOOK_DELIVERY, sends_webhooks=True, media=PRESIGN),
    # Redeems a single-use ticket (read and delete it), checks that the session it was issued to is still live
    # (its session and account), and records the connection: nothing else.
    "WebsocketConnect": Access(reads=(resources.USERS, resources.SESSIONS),
                               writes=(resources.WS_TICKETS, resources.CONNECTIONS)),
    "WebsocketMessage": Access(posts_to_connections=True),
    "WebsocketDisconnect": Access(writes=(resources.CONNECTIONS,)),
}


def _table_arns(tables: tuple[Table, ...], stage: Stage) -> list[Any]:
    arns: list[Any] = []
    for table in tables:
        name = table.physical_name(stage.prefix)
        arns.append(_arn("dynamodb", f"table/{name}"))
        if table.indexes:
            arns.append(_arn("dynamodb", f"table/{name}/index/*"))
    return arns


def secret_arn(stage: Stage) -> dict[str, str]:
    # Secrets Manager appends six random characters to a secret's name in its ARN.
    return _arn("secretsmanager", f"secret:{stage.secret_name}-??????")


def _log_statement(stage: Stage, function_name: str) -> dict[str, Any]:
    return {
        "Sid": "Logs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": _arn("logs", f"log-group:/aws/lambda/{function_name}:*"),
    }


def base_policy(stage: Stage) -> dict[str, Any]:
    """`.chalice/policy-<stage>.json`: what Chalice puts on every role before the merge template replaces each
    role's policy with its function's own (`function_policy`): logging only."""
    return {"Version": "2012-10-17", "Statement": [_log_statement(stage, f"{stage.prefix}-*")]}


def function_policy(stage: Stage, function_name: str, access: Access) -> dict[str, Any]:
    statements = [_log_statement(stage, function_name)]
    read_only = tuple(table for table in access.reads if table not in access.writes)
    if read_only:
        statements.append({"Sid": "ReadTables", "Effect": "Allow", "Action": TABLE_READS,
                           "Resource": _table_arns(read_only, stage)})
    if access.writes:
        statements.append({"Sid": "WriteTables", "Effect": "Allow", "Action": TABLE_READS + TABLE_WRITES,
                           "Resource": _table_arns(access.writes, stage)})
    if access.sends_to_lanes:
        statements.append({"Sid": "SendToLanes", "Effect": "Allow", "Action": QUEUE_SENDS,
                           "Resource": [_arn("sqs", lane.queue_name(stage.prefix)) for lane in LANES]})
    if access.sends_webhooks:
        statements.append({"Sid": "SendWebhooks", "Effect": "Allow", "Action": QUEUE_SENDS,
                           "Resource": _arn("sqs", WEBHOOK_DELIVERY.queue_name(stage.prefix))})
    if access.consumes:
        statements.append({"Sid": "ConsumeLane", "Effect": "Allow", "Action": QUEUE_CONSUMES,
                           "Resource": _arn("sqs", access.consumes.queue_name(stage.prefix))})
    if access.redrives_dead_letters:
        statements.append({"Sid": "RedriveDeadLetters", "Effect": "Allow",
                           "Action": ["sqs:GetQueueUrl", *QUEUE_CONSUMES],
                           "Resource": [_arn("sqs", queue.dlq_name(stage.prefix)) for queue in QUEUES]})
    if access.media:
        statements.append({"Sid": "MediaObjects", "Effect": "Allow", "Action": list(access.media),
                           "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{bucket_name(stage)}/*")})
    if access.lists_media:
        statements.append({"Sid": "MediaListing", "Effect": "Allow", "Action": ["s3:ListBucket"],
                           "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{bucket_name(stage)}")})
    if access.reads_secret:
        statements.append({"Sid": "ReadSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                           "Resource": secret_arn(stage)})
    if access.signs_ark_inputs:
        statements.append({"Fn::If": [HAS_INPUTS_SIGNER, {
            "Sid": "ReadInputsSigningSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": _arn("secretsmanager", "secret:${ArkInputsSigningSecret}-??????"),
        }, {"Ref": "AWS::NoValue"}]})
    if access.posts_to_connections:
        statements.append({
            "Sid": "WebSocketConnections",
            "Effect": "Allow",
            "Action": ["execute-api:ManageConnections"],
            "Resource": _arn("execute-api", f"${{{WEBSOCKET_API_ID}}}/{API_GATEWAY_STAGE}/*/@connections/*"),
        })
    if stage.tracing:
        # X-Ray's write actions take no resource.
        statements.append({"Sid": "Tracing", "Effect": "Allow",
                           "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


# --- what the merge template changes in Chalice's resources ------------------------------------------------


def functions(chalice_template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in chalice_template["Resources"].items():
        if resource["Type"] == SERVERLESS_FUNCTION:
            yield logical_id, resource["Properties"]


def _event_types(properties: dict[str, Any]) -> set[str]:
    return {event["Type"] for event in properties.get("Events", {}).values()}


def function_environment(
    stage: Stage, properties: dict[str, Any], has_websocket: bool, access: Access
) -> dict[str, Any]:
    is_api = properties["Handler"] == API_HANDLER_ENTRY
    environment: dict[str, Any] = {
        "ARKFLOW_PREFIX": stage.prefix,
        "RESULTS_BUCKET": {"Ref": MEDIA_BUCKET_ID},
        "CORS_ORIGINS": {"Ref": "CorsOrigins"},
        "WS_ALLOWED_ORIGINS": {"Ref": "WsAllowedOrigins"},
        # `chalicelib.observability`: JSON lines for CloudWatch Logs, and X-Ray where the stage traces.
        "LOG_FORMAT": "json",
        "POWERTOOLS_TRACE_DISABLED": "false" if stage.tracing else "true",
    }
    if access.reads_secret:
        # The secret's name only: its values are read at run time (`chalicelib.secret_store`).
        environment["ARKFLOW_SECRET_ID"] = stage.secret_name
    if access.signs_ark_inputs:
        environment["ARK_INPUTS_SIGNING_SECRET"] = {"Ref": "ArkInputsSigningSecret"}
    if is_api:
        environment["ADMIN_USERNAME"] = {"Ref": "AdminUsername"}
    else:
        # The REST API's definition refers to the API handler, so only the other functions can refer back.
        environment["PUBLIC_API_URL"] = _sub(
            f"https://${{{REST_API_ID}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{API_GATEWAY_STAGE}"
        )
    if has_websocket:
        host = f"${{{WEBSOCKET_API_ID}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{API_GATEWAY_STAGE}"
        environment["WEBSOCKET_MANAGEMENT_URL"] = _sub(f"https://{host}")
        environment["WEBSOCKET_PUBLIC_URL"] = _sub(f"wss://{host}")
    return environment


def lane_event_overrides(lane: Queue, properties: dict[str, Any]) -> dict[str, Any]:
    """Point the lane's event source at its queue here, and turn on partial batch failures (Chalice can't)."""
    sqs_events = [name for name, event in properties.get("Events", {}).items() if event["Type"] == "SQS"]
    if len(sqs_events) != 1:
        raise ValueError(f"lane {lane.name!r}: expected one SQS event source on {lane.handler_name}, got {sqs_events}")
    return {
        sqs_events[0]: {
            "Properties": {
                "Queue": {"Fn::GetAtt": [queue_id(lane), "Arn"]},
                "BatchSize": lane.batch_size,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": lane.maximum_concurrency},
            }
        }
    }


SYNCHRONOUS = (
    "CKV_AWS_116",
    "Invoked synchronously (API Gateway, or an SQS event source whose queue has its own dead-letter queue): "
    "a function's dead-letter queue only ever receives failed asynchronous invocations.",
)
SCHEDULED = (
    "CKV_AWS_116",
    "A scheduled run is a fresh scan of what is due; a failed schedule event carries nothing to replay, and the "
    "next run comes a minute later.",
)
SCALES_WITH_USERS = (
    "CKV_AWS_115",
    "Serves users and browsers and must scale with them; the account's concurrency bounds it, and reserving "
    "some would take it from the lanes and the account's unreserved pool.",
)


def _function_checkov_skips(properties: dict[str, Any], is_lane: bool) -> dict[str, Any]:
    event_types = _event_types(properties)
    skips = [("CKV_AWS_117", NO_VPC), ("CKV_AWS_173", NO_KEY_FOR_ENVIRONMENT)]
    skips.append(SCHEDULED if "Schedule" in event_types else SYNCHRONOUS)
    if not is_lane and "Schedule" not in event_types:
        skips.append(SCALES_WITH_USERS)
    return checkov_skips(*skips)


def function_overrides(
    stage: Stage, logical_id: str, properties: dict[str, Any], has_websocket: bool
) -> dict[str, Any]:
    access = FUNCTION_ACCESS.get(logical_id)
    if access is None:
        raise ValueError(f"{logical_id}: declare what it may use in infra.template.FUNCTION_ACCESS")
    overrides: dict[str, Any] = {
        "FunctionName": f"{stage.prefix}-{logical_id}",
        "Environment": {"Variables": function_environment(stage, properties, has_websocket, access)},
        "Tracing": "Active" if stage.tracing else "PassThrough",
    }
    if access.consumes is not None:
        overrides["Events"] = lane_event_overrides(access.consumes, properties)
    elif "SQS" in _event_types(properties):
        raise ValueError(f"{logical_id} consumes SQS but is no consumer of chalicelib.resources.QUEUES")
    if "Schedule" in _event_types(properties):
        # One run at a time; a run that could not start within a minute is dropped, since the next one is due.
        overrides["ReservedConcurrentExecutions"] = 1
        overrides["EventInvokeConfig"] = {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}
    return overrides


def rest_api_overrides(stage: Stage) -> dict[str, Any]:
    skips = [("CKV_AWS_120", "Answers are per user and change by the second (task states): a cache would serve "
              "stale ones to the wrong caller.")]
    if not stage.tracing:
        skips.append(("CKV_AWS_73", "Tracing is off in the development stage (cost and noise); prod traces."))
    return {
        **checkov_skips(*skips),
        "Properties": {
            "TracingEnabled": stage.tracing,
            "AccessLogSetting": {
                "DestinationArn": {"Fn::GetAtt": [REST_API_LOGS_ID, "Arn"]},
                "Format": ACCESS_LOG_FORMAT,
            },
            "DefinitionBody": {
                "x-amazon-apigateway-gateway-responses": {
                    response_type: {
                        "responseTemplates": {"application/json": GATEWAY_ERROR_BODY},
                        "responseParameters": GATEWAY_ERROR_HEADERS,
                    }
                    for response_type in ("DEFAULT_4XX", "DEFAULT_5XX")
                }
            },
        },
    }


def merge_template(stage: Stage, chalice_template: dict[str, Any]) -> dict[str, Any]:
    """The merge template for `chalice package --merge-template`, given Chalice's template of the same app."""
    chalice_resources = chalice_template["Resources"]
    has_websocket = WEBSOCKET_API_ID in chalice_resources

    resources_: dict[str, Any] = {
        **alarm_resources(stage),
        **{table_id(table): table_resource(table, stage) for table in TABLES},
        **bucket_resources(stage),
        **model_alarms(stage),
    }
    for queue in QUEUES:
        resources_ |= lane_resources(queue, stage)

    log_groups = {
        logical_id.removesuffix("LogGroup").lower(): logical_id
        for logical_id, resource in chalice_resources.items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    for logical_id, properties in functions(chalice_template):
        function_name = f"{stage.prefix}-{logical_id}"
        # Chalice names the API handler's log group after `ApiHandler`, a resource that does not exist; with a
        # fixed function name every log group is named directly (and exists before the function first logs).
        log_group = log_groups.get(logical_id.lower())
        if log_group:
            resources_[log_group] = {
                **checkov_skips(("CKV_AWS_158", LOG_GROUP_KEY)),
                "Properties": {"LogGroupName": f"/aws/lambda/{function_name}"},
            }
        resources_[logical_id] = {
            **_function_checkov_skips(properties, logical_id in {lane_function_id(queue) for queue in QUEUES}),
            "Properties": function_overrides(stage, logical_id, properties, has_websocket),
        }
        role = properties.get("Role", {}).get("Fn::GetAtt", [None])[0]
        if role:
            policy = function_policy(stage, function_name, FUNCTION_ACCESS[logical_id])
            resources_[role] = {
                "Properties": {"Policies": [{"PolicyName": f"{logical_id}Policy", "PolicyDocument": policy}]}
            }

    if REST_API_ID in chalice_resources:
        resources_[REST_API_ID] = rest_api_overrides(stage)
        resources_[REST_API_LOGS_ID] = access_log_group(stage, f"/aws/apigateway/{stage.prefix}-rest-access")
    if has_websocket:
        resources_[WEBSOCKET_STAGE_ID] = {
            "Properties": {
                "AccessLogSettings": {
                    "DestinationArn": {"Fn::GetAtt": [WEBSOCKET_API_LOGS_ID, "Arn"]},
                    "Format": ACCESS_LOG_FORMAT,
                }
            }
        }
        resources_[WEBSOCKET_API_LOGS_ID] = access_log_group(stage, f"/aws/apigateway/{stage.prefix}-websocket-access")

    outputs: dict[str, Any] = {
        "MediaBucketName": {"Value": {"Ref": MEDIA_BUCKET_ID}},
        "AlarmTopicArn": {"Value": {"Ref": ALARM_TOPIC_ID}},
    }
    for queue in QUEUES:
        outputs[queue_id(queue) + "Url"] = {"Value": {"Ref": queue_id(queue)}}
    return {"Parameters": PARAMETERS, "Conditions": CONDITIONS, "Resources": resources_, "Outputs": outputs}


def with_websocket_deployment_per_routes(template: dict[str, Any]) -> dict[str, Any]:
    """Name the WebSocket API's deployment after its routes and integrations.

    A deployment is a snapshot taken when it is created, and CloudFormation creates one only for a new logical id:
    under Chalice's fixed id, a route added later would never reach the stage. (The REST API's deployment is
    already named after its definition by SAM.)
    """
    resources_ = template["Resources"]
    if WEBSOCKET_DEPLOYMENT_ID not in resources_:
        return template
    routes = {
        logical_id: resource
        for logical_id, resource in sorted(resources_.items())
        if resource["Type"] in ("AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Integration")
    }
    digest = hashlib.sha256(json.dumps(routes, sort_keys=True).encode()).hexdigest()[:10]
    deployment_id = f"{WEBSOCKET_DEPLOYMENT_ID}{digest}"
    resources_[deployment_id] = resources_.pop(WEBSOCKET_DEPLOYMENT_ID)
    resources_[WEBSOCKET_STAGE_ID]["Properties"]["DeploymentId"] = {"Ref": deployment_id}
    return template
