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

from chalicelib.resources import LANES, MEDIA_BUCKET, TABLES
from infra import package as packaging
from infra.stages import STAGES, chalice_config
from infra.template import GATEWAY_ERROR_BODY, dead_letter_queue_id, lane_function_id, queue_id, table_id

pytestmark = pytest.mark.xdist_group("infra-package")  # one packaging run per worker, shared by these tests


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("build")
    return {name: packaging.package(stage, out) for name, stage in STAGES.items()}


@pytest.fixture(scope="module")
def prod(templates: dict[str, Path]) -> dict[str, Any]:
    return json.loads(templates["prod"].read_text())


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == resource_type}


@pytest.mark.abuse
def test_committed_chalice_config_matches_infra() -> None:
    assert packaging.stale_config_files() == []
    config_text = (packaging.CHALICE_DIR / "config.json").read_text()
    for secret in ("ARK_API_KEY", "TOKEN_SIGNING_KEY", "ADMIN_PASSWORD"):
        assert secret not in config_text


@pytest.mark.abuse
def test_config_gives_each_lane_function_its_timeout_memory_and_reserved_concurrency() -> None:
    for stage in chalice_config()["stages"].values():
        for lane in LANES:
            function = stage["lambda_functions"][lane.handler_name]
            assert function["lambda_timeout"] == lane.lambda_timeout_s
            assert function["lambda_memory_size"] == lane.lambda_memory_mb
            assert function["reserved_concurrency"] == lane.reserved_concurrency
        assert "environment_variables" not in stage  # the local stack loads `dev`: see infra/stages.py


def test_templates_pass_cfn_lint(templates: dict[str, Path]) -> None:
    for path in templates.values():
        findings = [f"{match.rule.id} {match.message} (line {match.linenumber})" for match in lint_file(path)]
        assert findings == [], path


@pytest.mark.abuse
def test_every_lane_function_has_reserved_concurrency_and_reports_batch_item_failures(prod: dict[str, Any]) -> None:
    for lane in LANES:
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
    assert set(consumers) == {queue_id(lane) for lane in LANES}
    for queue_name, function in consumers.items():
        queue = queues[queue_name]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
        redrive = queue["RedrivePolicy"]
        dead_letter_queue = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert dead_letter_queue in queues and "RedrivePolicy" not in queues[dead_letter_queue]["Properties"]
        assert redrive["maxReceiveCount"] >= 5


def test_every_dead_letter_queue_has_a_depth_alarm(prod: dict[str, Any]) -> None:
    alarmed = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in resources_of(prod, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert alarmed == {dead_letter_queue_id(lane) for lane in LANES}


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
    statements = []
    for role in resources_of(template, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            statements += policy["PolicyDocument"]["Statement"]
    for policy in resources_of(template, "AWS::IAM::Policy").values():
        statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_no_iam_statement_allows_every_action_or_every_resource(prod: dict[str, Any]) -> None:
    statements = _statements(prod)
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            assert action != "*" and not action.endswith(":*"), statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in resources, statement
    every_function_role = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]
        for function in resources_of(prod, "AWS::Serverless::Function").values()
    }
    assert every_function_role <= set(resources_of(prod, "AWS::IAM::Role"))


def test_secrets_come_from_secrets_manager_and_only_where_needed(prod: dict[str, Any]) -> None:
    functions = resources_of(prod, "AWS::Serverless::Function")
    api = functions["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert api["TOKEN_SIGNING_KEY"].startswith("{{resolve:secretsmanager:arkflow-prod/")
    assert api["ARK_API_KEY"].startswith("{{resolve:secretsmanager:arkflow-prod/")
    for lane in LANES:
        variables = functions[lane_function_id(lane)]["Properties"]["Environment"]["Variables"]
        assert variables["ARK_API_KEY"].startswith("{{resolve:secretsmanager:")
        assert "TOKEN_SIGNING_KEY" not in variables
        assert variables["ARKFLOW_PREFIX"] == "arkflow-prod"


def test_media_bucket_is_private_expires_objects_and_allows_browser_uploads(prod: dict[str, Any]) -> None:
    bucket = prod["Resources"]["MediaBucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("ExpirationInDays") == MEDIA_BUCKET.expire_days and "Prefix" not in rule for rule in rules)
    assert any(rule.get("Prefix") == MEDIA_BUCKET.uploads_prefix for rule in rules)
    [cors] = bucket["CorsConfiguration"]["CorsRules"]
    assert "POST" in cors["AllowedMethods"]


def test_gateway_errors_use_the_app_error_shape(prod: dict[str, Any]) -> None:
    responses = prod["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for response in responses.values():
        assert response["responseTemplates"]["application/json"] == GATEWAY_ERROR_BODY
    # What API Gateway substitutes: the type bare, the message as a quoted JSON string.
    rendered = GATEWAY_ERROR_BODY.replace("$context.error.responseType", "MISSING_AUTHENTICATION_TOKEN").replace(
        "$context.error.messageString", json.dumps("Missing Authentication Token")
    )
    assert json.loads(rendered) == {
        "error": {"code": "MISSING_AUTHENTICATION_TOKEN", "message": "Missing Authentication Token"}
    }
