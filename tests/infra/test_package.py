"""`make package` builds a valid, deployable stack whose lanes, queues, tables and permissions are what the
platform relies on: checked on the template CloudFormation would receive."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import lint_file

from chalicelib.resources import LANES, MEDIA_BUCKET, QUEUES, TABLES
from infra import package as packaging
from infra.stages import STAGES, chalice_config
from infra.template import (
    GATEWAY_ERROR_BODY,
    lane_function_id,
    queue_id,
    table_id,
    with_websocket_deployment_per_routes,
)
from tests.infra.conftest import PACKAGED, resources_of

pytestmark = PACKAGED


@pytest.mark.abuse
def test_committed_chalice_config_matches_infra() -> None:
    assert packaging.stale_config_files() == []
    config_text = (packaging.CHALICE_DIR / "config.json").read_text()
    for secret in ("ARK_API_KEY", "TOKEN_SIGNING_KEY", "ADMIN_PASSWORD"):
        assert secret not in config_text


@pytest.mark.abuse
def test_each_lane_function_is_packaged_with_its_timeout_memory_and_reserved_concurrency(
    templates: dict[str, dict[str, Any]]
) -> None:
    """What Lambda is given, read from the packaged templates (not from the config they were made from); every
    queue's consumer alike."""
    for stage, template in templates.items():
        resources = template["Resources"]
        for lane in QUEUES:
            function = resources[lane_function_id(lane)]["Properties"]
            assert (function["Timeout"], function["MemorySize"], function["ReservedConcurrentExecutions"]) == (
                lane.lambda_timeout_s, lane.lambda_memory_mb, lane.reserved_concurrency), (stage, lane.name)
    for stage in chalice_config()["stages"].values():
        assert "environment_variables" not in stage  # the local stack loads `dev`: see infra/stages.py


def test_templates_pass_cfn_lint(packaged: dict[str, Path]) -> None:
    for path in packaged.values():
        findings = [f"{match.rule.id} {match.message} (line {match.linenumber})" for match in lint_file(path)]
        assert findings == [], path


@pytest.mark.abuse
def test_every_lane_function_has_reserved_concurrency_and_reports_batch_item_failures(prod: dict[str, Any]) -> None:
    for lane in QUEUES:
        function = prod["Resources"][lane_function_id(lane)]["Properties"]
        reserved = function["ReservedConcurrentExecutions"]
        assert reserved == lane.reserved_concurrency
        [event] = function["Events"].values()
        assert event["Type"] == "SQS"
        source = event["Properties"]
        assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert 2 <= source["ScalingConfig"]["MaximumConcurrency"] <= reserved
        assert source["Queue"] == {"Fn::GetAtt": [queue_id(lane), "Arn"]}


@pytest.mark.abuse
def test_every_consumed_queue_has_a_dead_letter_queue_and_a_long_enough_visibility(prod: dict[str, Any]) -> None:
    queues = resources_of(prod, "AWS::SQS::Queue")
    consumers = {}
    for function in resources_of(prod, "AWS::Serverless::Function").values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                consumers[event["Properties"]["Queue"]["Fn::GetAtt"][0]] = function["Properties"]
    assert set(consumers) == {queue_id(queue) for queue in QUEUES}
    for queue_name, function in consumers.items():
        queue = queues[queue_name]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
        redrive = queue["RedrivePolicy"]
        dead_letter_queue = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert dead_letter_queue in queues and "RedrivePolicy" not in queues[dead_letter_queue]["Properties"]
        assert redrive["maxReceiveCount"] >= 5


def _comparable(definition: dict[str, Any]) -> dict[str, Any]:
    return {
        "keys": sorted((key["AttributeName"], key["KeyType"]) for key in definition["KeySchema"]),
        "attributes": sorted(
            (attribute["AttributeName"], attribute["AttributeType"])
            for attribute in definition["AttributeDefinitions"]
        ),
        "indexes": sorted(
            (index["IndexName"], tuple((key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]))
            for index in definition.get("GlobalSecondaryIndexes", [])
        ),
    }


def test_tables_match_the_ones_the_local_stack_creates(prod: dict[str, Any], aws_resources: None) -> None:
    dynamodb = boto3.client("dynamodb")
    local_prefix = os.environ["ARKFLOW_PREFIX"]
    declared = resources_of(prod, "AWS::DynamoDB::Table")
    assert set(declared) == {table_id(table) for table in TABLES}
    for table in TABLES:
        properties = declared[table_id(table)]["Properties"]
        local = dynamodb.describe_table(TableName=table.physical_name(local_prefix))["Table"]
        assert _comparable(properties) == _comparable(local), table.logical_name
        assert properties["TableName"] == table.physical_name(STAGES["prod"].prefix)
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        local_ttl = dynamodb.describe_time_to_live(TableName=local["TableName"])["TimeToLiveDescription"]
        if table.ttl_attribute:
            assert properties["TimeToLiveSpecification"] == {"AttributeName": table.ttl_attribute, "Enabled": True}
            assert local_ttl["AttributeName"] == table.ttl_attribute
        else:
            assert "TimeToLiveSpecification" not in properties
        assert declared[table_id(table)]["DeletionPolicy"] == "Retain"


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of every role, a conditional one (`Fn::If`) as it is when its condition holds."""
    statements = []
    for role in resources_of(template, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            statements += policy["PolicyDocument"]["Statement"]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return [statement["Fn::If"][1] if "Fn::If" in statement else statement for statement in statements]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_iam_statement_allows_every_action_or_every_resource(prod: dict[str, Any]) -> None:
    statements = _statements(prod)
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = _listed(statement["Action"])
        for action in actions:
            assert action != "*" and not action.endswith(":*"), statement
        # X-Ray's write actions take no resource: the only statement on "*".
        if "*" in _listed(statement["Resource"]):
            assert set(actions) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, statement
    every_function_role = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]
        for function in resources_of(prod, "AWS::Serverless::Function").values()
    }
    assert every_function_role <= set(resources_of(prod, "AWS::IAM::Role"))


def _role_text(template: dict[str, Any], function_id: str) -> str:
    role = template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return json.dumps(template["Resources"][role]["Properties"]["Policies"])


def test_each_function_role_allows_only_what_that_function_uses(prod: dict[str, Any]) -> None:
    functions = resources_of(prod, "AWS::Serverless::Function")
    roles = [function["Properties"]["Role"]["Fn::GetAtt"][0] for function in functions.values()]
    assert len(set(roles)) == len(functions)  # no role shared
    connect = _role_text(prod, "WebsocketConnect")
    # It re-checks the ticket's session and account: it reads those tables, and writes only tickets and connections.
    for table in ("ws-tickets", "connections", "users", "sessions"):
        assert f"table/arkflow-prod-{table}" in connect
    writes = next(statement for statement in _statements({"Resources": {
        "r": prod["Resources"][prod["Resources"]["WebsocketConnect"]["Properties"]["Role"]["Fn::GetAtt"][0]]
    }}) if "dynamodb:PutItem" in statement["Action"])
    assert "users" not in json.dumps(writes["Resource"]) and "sessions" not in json.dumps(writes["Resource"])
    for absent in ("table/arkflow-prod-tasks", "s3:", "sqs:", "secretsmanager:", "execute-api:"):
        assert absent not in connect, absent
    message = _role_text(prod, "WebsocketMessage")
    assert "dynamodb:" not in message and "execute-api:ManageConnections" in message
    for lane in LANES:
        worker = _role_text(prod, lane_function_id(lane))
        assert "table/arkflow-prod-users" not in worker and "table/arkflow-prod-sessions" not in worker
        assert "secretsmanager:GetSecretValue" in worker
        # It receives only from its own queue (other lanes' queues only take its sends).
        consume = next(statement for statement in _statements({"Resources": {
            "r": prod["Resources"][prod["Resources"][lane_function_id(lane)]["Properties"]["Role"]["Fn::GetAtt"][0]]
        }}) if "sqs:ReceiveMessage" in statement["Action"])
        assert json.dumps(consume["Resource"]).count("lane-") == 1
        assert lane.queue_name("arkflow-prod") in json.dumps(consume["Resource"])
    for logs in (_role_text(prod, function_id) for function_id in functions):
        assert "log-group:/aws/lambda/arkflow-prod-*" not in logs  # its own log group only


def test_secrets_stay_in_secrets_manager_and_are_named_only_where_needed(templates: dict[str, Any]) -> None:
    for stage, template in templates.items():
        text = json.dumps(template)
        assert "resolve:secretsmanager" not in text
        for name in ("ARK_API_KEY", "TOKEN_SIGNING_KEY", "ADMIN_PASSWORD"):
            assert f'"{name}"' not in text
        functions = resources_of(template, "AWS::Serverless::Function")
        readers = {
            function_id for function_id, function in functions.items()
            if "ARKFLOW_SECRET_ID" in function["Properties"]["Environment"]["Variables"]
        }
        assert readers == {"APIHandler", "VideoPoller", "Sweeper", *(lane_function_id(lane) for lane in LANES)}
        for function_id in functions:
            allowed = "secretsmanager:GetSecretValue" in _role_text(template, function_id)
            assert allowed == (function_id in readers), function_id
            if allowed:
                assert f"secret:arkflow-{stage}/app-secrets-??????" in _role_text(template, function_id)


def test_media_bucket_is_private_expires_objects_and_allows_browser_uploads(prod: dict[str, Any]) -> None:
    bucket = prod["Resources"]["MediaBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("ExpirationInDays") == MEDIA_BUCKET.expire_days and "Prefix" not in rule for rule in rules)
    assert any(rule.get("Prefix") == MEDIA_BUCKET.uploads_prefix for rule in rules)
    [cors] = bucket["CorsConfiguration"]["CorsRules"]
    assert "POST" in cors["AllowedMethods"]


def test_gateway_errors_use_the_app_error_shape_and_are_readable_by_the_browser(prod: dict[str, Any]) -> None:
    responses = prod["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}  # every throttle, 413, 502/504 and unknown route
    for response in responses.values():
        assert response["responseTemplates"]["application/json"] == GATEWAY_ERROR_BODY
        assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    # What API Gateway substitutes: the type bare, the message as a quoted JSON string.
    rendered = GATEWAY_ERROR_BODY.replace("$context.error.responseType", "MISSING_AUTHENTICATION_TOKEN").replace(
        "$context.error.messageString", json.dumps("Missing Authentication Token")
    )
    assert json.loads(rendered) == {
        "error": {"code": "MISSING_AUTHENTICATION_TOKEN", "message": "Missing Authentication Token"}
    }


def test_websocket_deployment_changes_with_its_routes_only(prod: dict[str, Any]) -> None:
    deployments = resources_of(prod, "AWS::ApiGatewayV2::Deployment")
    [deployment_id] = deployments
    stage = prod["Resources"]["WebsocketAPIStage"]["Properties"]
    assert stage["DeploymentId"] == {"Ref": deployment_id}
    assert set(deployments[deployment_id]["DependsOn"]) == set(resources_of(prod, "AWS::ApiGatewayV2::Route"))

    def renamed(template: dict[str, Any]) -> str:
        [renamed_id] = resources_of(with_websocket_deployment_per_routes(template), "AWS::ApiGatewayV2::Deployment")
        return renamed_id

    def as_chalice_made_it() -> dict[str, Any]:
        template = json.loads(json.dumps(prod))
        template["Resources"]["WebsocketAPIDeployment"] = template["Resources"].pop(deployment_id)
        return template

    assert renamed(as_chalice_made_it()) == deployment_id  # same routes, same deployment: nothing redeployed
    with_route = as_chalice_made_it()
    with_route["Resources"]["WebsocketPingRoute"] = {
        "Type": "AWS::ApiGatewayV2::Route",
        "Properties": {"ApiId": {"Ref": "WebsocketAPI"}, "RouteKey": "ping"},
    }
    assert renamed(with_route) != deployment_id  # a new route: a new deployment, so the stage serves it
