"""What CloudFormation really builds from the packaged SAM templates: each stage translated offline with
aws-sam-translator (the library behind CloudFormation's `AWS::Serverless` transform), then read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chalicelib.resources import QUEUES
from infra import deploy
from infra.template import GATEWAY_ERROR_BODY, lane_function_id, queue_id
from tests.infra.conftest import PACKAGED, resources_of, shared_once

pytestmark = PACKAGED
TRANSLATOR = Path(__file__).resolve().parents[2] / "infra" / "sam_translate.py"


@pytest.fixture(scope="session")
def translated(packaged: dict[str, Path], scan_python: Path, tmp_path_factory: pytest.TempPathFactory,
               ) -> dict[str, dict[str, Any]]:
    def translate(out: Path) -> None:
        for stage, path in packaged.items():
            uploaded, _ = deploy.with_uploaded_artifacts(json.loads(path.read_text()), path.parent, "artifacts", stage)
            source = out / f"{stage}-sam.json"
            source.write_text(json.dumps(uploaded))
            subprocess.run([str(scan_python), str(TRANSLATOR), str(source), str(out / f"{stage}-cfn.json"),
                            "CorsOrigins=https://app.example"], check=True, capture_output=True, text=True)

    out = shared_once(tmp_path_factory, "sam-translated", translate)
    return {stage: json.loads((out / f"{stage}-cfn.json").read_text()) for stage in packaged}


def test_nothing_serverless_is_left(translated: dict[str, dict[str, Any]]) -> None:
    for template in translated.values():
        assert not [name for name, res in template["Resources"].items() if res["Type"].startswith("AWS::Serverless")]
        assert {res["Properties"]["Runtime"] for res in resources_of(template, "AWS::Lambda::Function").values()} == {
            "python3.13"
        }


def test_each_lane_gets_one_event_source_mapping_on_its_queue(translated: dict[str, dict[str, Any]]) -> None:
    for template in translated.values():
        mappings = list(resources_of(template, "AWS::Lambda::EventSourceMapping").values())
        assert len(mappings) == len(QUEUES)
        for lane in QUEUES:
            [mapping] = [m["Properties"] for m in mappings
                         if m["Properties"]["FunctionName"] == {"Ref": lane_function_id(lane)}]
            assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_id(lane), "Arn"]}
            assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert mapping["BatchSize"] == lane.batch_size
            assert mapping["ScalingConfig"] == {"MaximumConcurrency": lane.maximum_concurrency}


def test_invoke_permissions_name_their_own_api_or_rule(translated: dict[str, dict[str, Any]]) -> None:
    for template in translated.values():
        permissions = [p["Properties"] for p in resources_of(template, "AWS::Lambda::Permission").values()]
        by_function: dict[str, list[dict[str, Any]]] = {}
        for permission in permissions:
            by_function.setdefault(json.dumps(permission["FunctionName"]), []).append(permission)
            assert "SourceArn" in permission, permission  # nobody else's API or rule may invoke it
        api = by_function[json.dumps({"Ref": "APIHandler"})]
        assert {p["Principal"] for p in api} == {"apigateway.amazonaws.com"}
        assert all("RestAPI" in json.dumps(p["SourceArn"]) for p in api)
        for handler in ("WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect"):
            [permission] = by_function[json.dumps({"Ref": handler})]
            assert "WebsocketAPI" in json.dumps(permission["SourceArn"])
        for schedule in ("VideoPoller", "Sweeper"):
            [permission] = [p for p in permissions if json.dumps({"Ref": schedule}) in json.dumps(p["FunctionName"])
                            or schedule in json.dumps(p["FunctionName"])]
            assert permission["Principal"] == "events.amazonaws.com"
        rules = resources_of(template, "AWS::Events::Rule")
        assert sorted(rule["Properties"]["ScheduleExpression"] for rule in rules.values()) == ["rate(1 minute)"] * 2
        configs = resources_of(template, "AWS::Lambda::EventInvokeConfig")
        assert len(configs) == 2 and all(c["Properties"]["MaximumRetryAttempts"] == 0 for c in configs.values())


def test_rest_stage_logs_traces_per_stage_and_answers_gateway_errors_with_cors(
    translated: dict[str, dict[str, Any]],
) -> None:
    for stage, template in translated.items():
        [rest_stage] = resources_of(template, "AWS::ApiGateway::Stage").values()
        properties = rest_stage["Properties"]
        assert properties["StageName"] == "api"
        assert properties["TracingEnabled"] is (stage == "prod")
        assert properties["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["RestAPIAccessLogs", "Arn"]}
        [api] = resources_of(template, "AWS::ApiGateway::RestApi").values()
        responses = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
        for response in responses.values():
            assert response["responseTemplates"]["application/json"] == GATEWAY_ERROR_BODY
            assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"


def test_websocket_stage_serves_a_deployment_of_every_route(translated: dict[str, dict[str, Any]]) -> None:
    for template in translated.values():
        [stage] = resources_of(template, "AWS::ApiGatewayV2::Stage").values()
        deployment_id = stage["Properties"]["DeploymentId"]["Ref"]
        deployment = template["Resources"][deployment_id]
        assert set(deployment["DependsOn"]) == set(resources_of(template, "AWS::ApiGatewayV2::Route"))
        assert stage["Properties"]["AccessLogSettings"]["DestinationArn"] == {
            "Fn::GetAtt": ["WebsocketAPIAccessLogs", "Arn"]
        }
        routes = resources_of(template, "AWS::ApiGatewayV2::Route").values()
        assert {route["Properties"]["RouteKey"] for route in routes} == {"$connect", "$default", "$disconnect"}
