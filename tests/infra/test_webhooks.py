"""What each packaged stage deploys for webhooks: the delivery queue with its dead-letter queue, the function that
consumes it, and no stage that lets a webhook reach the machine it runs on."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.resources import WEBHOOK_DELIVERY
from chalicelib.settings import Settings
from infra.stages import STAGES
from tests.infra import iam
from tests.infra.conftest import PACKAGED, resources_of

pytestmark = PACKAGED


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_deployed_stage_lets_webhooks_reach_loopback(templates: dict[str, Any], stage: str) -> None:
    template = iam.Template(templates[stage], {"CorsOrigins": "https://app.example.com"})
    for function in template.functions():
        assert "WEBHOOK_ALLOW_LOOPBACK" not in template.environment(function), function
    assert Settings().webhook_allow_loopback is False  # what a function without the variable reads


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_delivery_queue_has_a_dead_letter_queue_and_its_own_consumer(templates: dict[str, Any],
                                                                           stage: str) -> None:
    template = templates[stage]
    prefix = STAGES[stage].prefix
    queues = {resource["Properties"]["QueueName"]: (name, resource["Properties"])
              for name, resource in resources_of(template, "AWS::SQS::Queue").items()}
    dlq_id, _ = queues[WEBHOOK_DELIVERY.dlq_name(prefix)]
    queue_id, queue = queues[WEBHOOK_DELIVERY.queue_name(prefix)]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                                      "maxReceiveCount": WEBHOOK_DELIVERY.max_receives}
    assert queue["VisibilityTimeout"] >= 6 * WEBHOOK_DELIVERY.lambda_timeout_s

    [consumer] = [properties for properties in resources_of(template, "AWS::Serverless::Function").values()
                  if properties["Properties"]["Handler"] == f"app.{WEBHOOK_DELIVERY.handler_name}"]
    [event] = consumer["Properties"]["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert consumer["Properties"]["Timeout"] == WEBHOOK_DELIVERY.lambda_timeout_s
