"""The CloudFormation merged over Chalice's output: every resource Chalice does not make, and what it cannot set.

Built from `chalicelib.resources` (tables, lanes, bucket) and from the template Chalice generated for the app as it
is now, so functions added to `app.py` (schedules, WebSocket handlers) get their environment and permissions
without a change here, and a lane whose handler does not exist yet is not half-declared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chalice.utils import to_cfn_resource_name

from chalicelib.resources import LANES, MEDIA_BUCKET, TABLES, Lane, Table
from infra.stages import API_GATEWAY_STAGE, Stage

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
API_HANDLER_ENTRY = "app.app"
MEDIA_BUCKET_ID = "MediaBucket"
ALARM_TOPIC_ID = "AlarmTopic"
REST_API_ID = "RestAPI"
WEBSOCKET_API_ID = "WebsocketAPI"
# API Gateway's own errors (unknown route, throttling, oversized payload...) in the app's error shape.
GATEWAY_ERROR_BODY = '{"error": {"code": "$context.error.responseType", "message": $context.error.messageString}}'

PARAMETERS: dict[str, Any] = {
    "CorsOrigins": {
        "Type": "String",
        "MinLength": 1,
        "Description": "Comma-separated origins of the web app (CORS for the API and for browser uploads to S3).",
    },
    "WsAllowedOrigins": {
        "Type": "String",
        "Default": "",
        "Description": "Comma-separated origins allowed to open the WebSocket (empty: any origin).",
    },
    "AdminUsername": {
        "Type": "String",
        "Default": "admin",
        "Description": "The first administrator, created on the first login (password: ADMIN_PASSWORD in the secret).",
    },
}


def table_id(table: Table) -> str:
    return "Table" + to_cfn_resource_name(table.logical_name)


def queue_id(lane: Lane) -> str:
    return f"Lane{to_cfn_resource_name(lane.name)}Queue"


def dead_letter_queue_id(lane: Lane) -> str:
    return f"Lane{to_cfn_resource_name(lane.name)}DeadLetterQueue"


def lane_function_id(lane: Lane) -> str:
    return to_cfn_resource_name(lane.handler_name)


def secret_reference(stage: Stage, key: str) -> str:
    # Resolved by CloudFormation at deploy time; the value never appears in the repository or the template.
    return f"{{{{resolve:secretsmanager:{stage.secret_name}:SecretString:{key}}}}}"


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
    return {"Type": "AWS::DynamoDB::Table", **_retention(stage), "Properties": properties}


def lane_resources(lane: Lane, stage: Stage) -> dict[str, Any]:
    dlq = dead_letter_queue_id(lane)
    return {
        dlq: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": lane.dlq_name(stage.prefix),
                # The longest SQS keeps anything: time to look at what failed and redrive it.
                "MessageRetentionPeriod": 14 * 24 * 3600,
                "SqsManagedSseEnabled": True,
            },
        },
        queue_id(lane): {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": lane.queue_name(stage.prefix),
                "VisibilityTimeout": lane.visibility_timeout_s,
                "RedrivePolicy": lane.redrive_policy({"Fn::GetAtt": [dlq, "Arn"]}),
                "SqsManagedSseEnabled": True,
            },
        },
        f"{dlq}Alarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"Messages of the {lane.name} lane reached its dead-letter queue.",
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": ALARM_TOPIC_ID}],
                "OKActions": [{"Ref": ALARM_TOPIC_ID}],
            },
        },
    }


def _bucket_name(stage: Stage) -> str:
    """The media bucket's name, for `Fn::Sub`: bucket names are global, the account and region keep them unique."""
    return f"{MEDIA_BUCKET.physical_name(stage.prefix)}-${{AWS::AccountId}}-${{AWS::Region}}"


def bucket_resources(stage: Stage) -> dict[str, Any]:
    return {
        MEDIA_BUCKET_ID: {
            "Type": "AWS::S3::Bucket",
            **_retention(stage),
            "Properties": {
                "BucketName": _sub(_bucket_name(stage)),
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
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
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyPlainHttp",
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Action": "s3:*",
                            "Resource": [
                                {"Fn::GetAtt": [MEDIA_BUCKET_ID, "Arn"]},
                                _sub(f"${{{MEDIA_BUCKET_ID}.Arn}}/*"),
                            ],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
            },
        },
    }


def _retention(stage: Stage) -> dict[str, str]:
    policy = "Retain" if stage.retain_data else "Delete"
    return {"DeletionPolicy": policy, "UpdateReplacePolicy": policy}


# --- permissions -------------------------------------------------------------------------------------------


def app_policy(stage: Stage) -> dict[str, Any]:
    """What every arkflow function may do: named actions on this stage's own tables, queues and bucket.

    Written to `.chalice/policy-<stage>.json`, which Chalice puts on each function's role. ARNs use only
    pseudo parameters, so the policy is valid with or without the merge template.
    """
    table_arns: list[Any] = []
    for table in TABLES:
        name = table.physical_name(stage.prefix)
        table_arns.append(_arn("dynamodb", f"table/{name}"))
        if table.indexes:
            table_arns.append(_arn("dynamodb", f"table/{name}/index/*"))
    queue_arns = [
        _arn("sqs", name) for lane in LANES for name in (lane.queue_name(stage.prefix), lane.dlq_name(stage.prefix))
    ]
    bucket = _bucket_name(stage)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": _arn("logs", f"log-group:/aws/lambda/{stage.prefix}-*:*"),
            },
            {
                "Sid": "Tables",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:ConditionCheckItem",
                    "dynamodb:Query",
                    "dynamodb:Scan",
                ],
                "Resource": table_arns,
            },
            {
                "Sid": "LaneQueues",
                "Effect": "Allow",
                "Action": [
                    "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes",
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                ],
                "Resource": queue_arns,
            },
            {
                "Sid": "MediaObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/*"),
            },
            {
                "Sid": "MediaListing",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}"),
            },
        ],
    }


def websocket_policy(role_ids: list[str]) -> dict[str, Any]:
    """Posting to the stack's own WebSocket connections (the API exists only once the app has handlers)."""
    return {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "websocket-connections",
            "Roles": [{"Ref": role} for role in role_ids],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["execute-api:ManageConnections"],
                        "Resource": _arn(
                            "execute-api", f"${{{WEBSOCKET_API_ID}}}/{API_GATEWAY_STAGE}/*/@connections/*"
                        ),
                    }
                ],
            },
        },
    }


# --- what the merge template changes in Chalice's resources ------------------------------------------------


def functions(chalice_template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in chalice_template["Resources"].items():
        if resource["Type"] == SERVERLESS_FUNCTION:
            yield logical_id, resource["Properties"]


def _event_types(properties: dict[str, Any]) -> set[str]:
    return {event["Type"] for event in properties.get("Events", {}).values()}


def function_environment(stage: Stage, properties: dict[str, Any], has_websocket: bool) -> dict[str, Any]:
    is_api = properties["Handler"] == API_HANDLER_ENTRY
    event_types = _event_types(properties)
    environment: dict[str, Any] = {
        "ARKFLOW_PREFIX": stage.prefix,
        "RESULTS_BUCKET": {"Ref": MEDIA_BUCKET_ID},
        "CORS_ORIGINS": {"Ref": "CorsOrigins"},
        "WS_ALLOWED_ORIGINS": {"Ref": "WsAllowedOrigins"},
    }
    if is_api:
        environment |= {
            "TOKEN_SIGNING_KEY": secret_reference(stage, "TOKEN_SIGNING_KEY"),
            "ADMIN_USERNAME": {"Ref": "AdminUsername"},
            "ADMIN_PASSWORD": secret_reference(stage, "ADMIN_PASSWORD"),
        }
    else:
        # The REST API's definition refers to the API handler, so only the other functions can refer back.
        environment["PUBLIC_API_URL"] = _sub(
            f"https://${{{REST_API_ID}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{API_GATEWAY_STAGE}"
        )
    # The API cancels videos at Ark, lanes and schedules call it; WebSocket handlers never do.
    if is_api or event_types & {"SQS", "Schedule"}:
        environment["ARK_API_KEY"] = secret_reference(stage, "ARK_API_KEY")
    if has_websocket:
        host = f"${{{WEBSOCKET_API_ID}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{API_GATEWAY_STAGE}"
        environment["WEBSOCKET_MANAGEMENT_URL"] = _sub(f"https://{host}")
        environment["WEBSOCKET_PUBLIC_URL"] = _sub(f"wss://{host}")
    return environment


def lane_event_overrides(lane: Lane, properties: dict[str, Any]) -> dict[str, Any]:
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


def merge_template(stage: Stage, chalice_template: dict[str, Any]) -> dict[str, Any]:
    """The merge template for `chalice package --merge-template`, given Chalice's template of the same app."""
    chalice_resources = chalice_template["Resources"]
    has_websocket = WEBSOCKET_API_ID in chalice_resources
    lanes_by_function = {lane_function_id(lane): lane for lane in LANES}

    resources: dict[str, Any] = {
        ALARM_TOPIC_ID: {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"{stage.prefix}-alarms"}},
        **{table_id(table): table_resource(table, stage) for table in TABLES},
        **bucket_resources(stage),
    }
    for lane in LANES:
        resources |= lane_resources(lane, stage)

    log_groups = {
        logical_id.removesuffix("LogGroup").lower(): logical_id
        for logical_id, resource in chalice_resources.items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    roles: list[str] = []
    for logical_id, properties in functions(chalice_template):
        function_name = f"{stage.prefix}-{logical_id}"
        # Chalice names the API handler's log group after `ApiHandler`, a resource that does not exist; with a
        # fixed function name every log group is named directly (and exists before the function first logs).
        log_group = log_groups.get(logical_id.lower())
        if log_group:
            resources[log_group] = {"Properties": {"LogGroupName": f"/aws/lambda/{function_name}"}}
        overrides: dict[str, Any] = {
            "FunctionName": function_name,
            "Environment": {"Variables": function_environment(stage, properties, has_websocket)},
        }
        lane = lanes_by_function.get(logical_id)
        if lane is not None:
            overrides["Events"] = lane_event_overrides(lane, properties)
        elif "SQS" in _event_types(properties):
            raise ValueError(f"{logical_id} consumes SQS but is no lane of chalicelib.resources.LANES")
        resources[logical_id] = {"Properties": overrides}
        role = properties.get("Role", {}).get("Fn::GetAtt", [None])[0]
        if role:
            roles.append(role)

    if has_websocket and roles:
        resources["WebsocketConnectionsPolicy"] = websocket_policy(roles)
    if REST_API_ID in chalice_resources:
        resources[REST_API_ID] = {
            "Properties": {
                "DefinitionBody": {
                    "x-amazon-apigateway-gateway-responses": {
                        response_type: {
                            "responseTemplates": {"application/json": GATEWAY_ERROR_BODY},
                            "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
                        }
                        for response_type in ("DEFAULT_4XX", "DEFAULT_5XX")
                    }
                }
            }
        }

    outputs: dict[str, Any] = {
        "MediaBucketName": {"Value": {"Ref": MEDIA_BUCKET_ID}},
        "AlarmTopicArn": {"Value": {"Ref": ALARM_TOPIC_ID}},
    }
    for lane in LANES:
        outputs[queue_id(lane) + "Url"] = {"Value": {"Ref": queue_id(lane)}}
    return {"Parameters": PARAMETERS, "Resources": resources, "Outputs": outputs}
