"""Fault injection, account limits and the observability counters of the simulator."""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from arksim.config import SimConfig
from arksim.testing import running_simulator
from tests.polling import wait_for

from .conftest import FAST, IMAGE_MODEL, START, VIDEO_MODEL, auth

IMAGES = "/images/generations"
TASKS = "/contents/generations/tasks"


def generate(ark, prompt: str = "a cat", timeout: float = 30.0, **fields: Any) -> httpx.Response:
    return httpx.post(f"{ark.base_url}{IMAGES}", json={"model": IMAGE_MODEL, "prompt": prompt, **fields},
                      headers=auth(), timeout=timeout)


def test_injected_rate_limits_use_the_endpoints_code_or_a_chosen_one(ark):
    ark.configure(rate_limit_fraction=1.0, retry_after_s=3)
    response = generate(ark)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "ModelAccountIpmRateLimitExceeded"
    assert response.headers["Retry-After"] == "3"
    ark.configure(rate_limit_code="ServerOverloaded")
    assert generate(ark).json()["error"]["code"] == "ServerOverloaded"
    assert ark.stats()["faults"] == {"rate_limit": 2}


def test_injected_server_errors(ark):
    ark.configure(server_error_fraction=1.0)
    response = generate(ark)
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "InternalServiceError", "param": "", "type": "InternalServerError",
        "message": response.json()["error"]["message"],
    }


def test_injected_timeouts_hang_past_the_clients_read_timeout(ark):
    ark.configure(timeout_fraction=1.0, timeout_hang_s=2.0)
    with pytest.raises(httpx.ReadTimeout):
        generate(ark, timeout=0.3)


def test_injected_slow_responses_still_succeed(ark):
    ark.configure(slow_fraction=1.0, slow_extra_s=0.4)
    started = time.monotonic()
    assert generate(ark).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_faults_apply_only_to_the_chosen_endpoints(ark):
    ark.configure(server_error_fraction=1.0, fault_endpoints=["tasks.create"])
    assert generate(ark).status_code == 200
    body = {"model": VIDEO_MODEL, "content": [{"type": "text", "text": "a cat"}]}
    assert httpx.post(f"{ark.base_url}{TASKS}", json=body, headers=auth()).status_code == 500


def test_a_fault_seed_replays_the_same_faults(ark):
    def run() -> list[int]:
        ark.configure(server_error_fraction=0.5, fault_seed=1234)
        return [generate(ark).status_code for _ in range(12)]

    first = run()
    assert set(first) == {200, 500}
    assert run() == first


def test_an_internal_error_stops_the_rest_of_a_group(ark):
    ark.configure(image_internal_error_fraction=1.0)
    response = generate(ark, sequential_image_generation="auto")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalServiceError"


def test_output_moderation_per_image_keeps_the_group_going(ark):
    ark.configure(output_sensitive_fraction=1.0)
    response = generate(ark, prompt="three views of a cat", sequential_image_generation="auto",
                        sequential_image_generation_options={"max_images": 3})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "OutputImageSensitiveContentDetected"
    assert ark.stats()["faults"] == {"output_sensitive": 3}


def test_images_per_minute_is_a_sliding_window_on_the_clock(ark):
    ark.configure(images_per_minute=3)
    assert generate(ark, prompt="2 images of a cat", sequential_image_generation="auto",
                    sequential_image_generation_options={"max_images": 2}).status_code == 200
    assert generate(ark).status_code == 200
    limited = generate(ark)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "ModelAccountIpmRateLimitExceeded"
    ark.advance(60)
    assert generate(ark).status_code == 200


def test_latency_does_not_serialize_requests_and_in_flight_is_measured(ark):
    ark.configure(image_latency_s=1.0)
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda _: generate(ark).status_code, range(6)))
    assert codes == [200] * 6
    stats = ark.stats()
    assert stats["max_in_flight"] == {IMAGE_MODEL: 6}  # served side by side, not one at a time
    assert stats["in_flight"] == {}
    assert stats["calls"]["images.generate"] == {IMAGE_MODEL: 6}


def test_a_concurrency_limit_answers_inflight_batchsize_exceeded(ark):
    ark.configure(image_latency_s=0.5, image_max_in_flight=2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: generate(ark), range(4)))
    codes = sorted(response.status_code for response in responses)
    assert codes == [200, 200, 429, 429]
    limited = [response for response in responses if response.status_code == 429]
    assert {response.json()["error"]["code"] for response in limited} == {"InflightBatchsizeExceeded"}


def test_stats_count_calls_per_endpoint_model_and_status_and_reset(ark):
    generate(ark)
    generate(ark, model="doubao-seedream-4-0-250828", size="1K")
    httpx.get(f"{ark.base_url}{TASKS}", headers=auth())
    generate(ark, size="1K")
    stats = ark.stats()
    assert stats["calls"]["images.generate"] == {IMAGE_MODEL: 2, "doubao-seedream-4-0-250828": 1}
    assert stats["statuses"]["images.generate"] == {"200": 2, "400": 1}
    assert stats["calls"]["tasks.list"] == {"-": 1}
    assert stats["images_generated"] == {IMAGE_MODEL: 1, "doubao-seedream-4-0-250828": 1}
    ark.reset()
    assert ark.stats()["calls"] == {}


def test_reset_everything_forgets_tasks_and_results(ark):
    url = generate(ark).json()["data"][0]["url"]
    ark.reset(everything=True)
    assert httpx.get(url).status_code == 404


def test_config_is_readable_and_rejects_unknown_fields_and_bad_values(ark):
    assert ark.config()["images_per_minute"] is None  # each model's own limit
    for change in ({"no_such_field": 1}, {"rate_limit_fraction": 2}, {"fault_endpoints": ["images.edit"]}):
        response = httpx.put(f"{ark.admin_url}/config", json=change)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidConfig"


def test_a_configured_key_is_the_only_one_accepted(ark):
    ark.configure(api_key="only-this")
    assert generate(ark).status_code == 401
    response = httpx.post(f"{ark.base_url}{IMAGES}", json={"model": IMAGE_MODEL, "prompt": "a cat"},
                          headers=auth("only-this"))
    assert response.status_code == 200


def test_configuration_from_the_environment():
    config = SimConfig.from_env({
        "ARKSIM_IMAGE_LATENCY_S": "0.25",
        "ARKSIM_SERVER_ERROR_FRACTION": "0.1",
        "ARKSIM_FAULT_ENDPOINTS": '["tasks.create"]',
        "ARKSIM_ENDPOINTS": '{"ep-20250101000000-abcde": "doubao-seedance-1-0-pro-250528"}',
        "ARKSIM_IGNORE_UNSUPPORTED_FIELDS": '["seedance-1.0-pro"]',
        "ARKSIM_VIDEO_MAX_RUNNING": "3",
    })
    assert (config.image_latency_s, config.server_error_fraction) == (0.25, 0.1)
    assert config.fault_endpoints == ["tasks.create"]
    assert config.endpoints == {"ep-20250101000000-abcde": VIDEO_MODEL}
    assert (config.ignore_unsupported_fields, config.video_max_running) == (["seedance-1.0-pro"], 3)
    assert SimConfig.from_env({}) == SimConfig()


def test_running_simulator_ignores_the_environment(monkeypatch):
    monkeypatch.setitem(os.environ, "ARKSIM_SERVER_ERROR_FRACTION", "1.0")
    with running_simulator(**FAST) as ark:
        assert generate(ark).status_code == 200


def test_stream_sends_one_event_per_image_then_completed_and_done(ark):
    ark.configure(output_sensitive_marker="SKIP-FIRST")
    response = generate(ark, prompt="SKIP-FIRST set of 3", stream=True, sequential_image_generation="auto",
                        sequential_image_generation_options={"max_images": 3})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert events == ["image_generation.partial_failed", "image_generation.partial_succeeded",
                      "image_generation.partial_succeeded", "image_generation.completed"]
    assert response.text.rstrip().endswith("data: [DONE]")
    assert '"generated_images": 2' in response.text


def test_an_injected_stream_error_ends_the_stream_with_a_request_level_error_event(ark):
    ark.configure(stream_error_fraction=1.0)
    response = generate(ark, prompt="a set of 3 cats", stream=True, sequential_image_generation="auto")
    events = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert events == ["image_generation.partial_succeeded", "error"]
    error = json.loads(response.text.split("event: error\ndata: ")[1].split("\n")[0])
    assert (error["type"], error["error"]["code"]) == ("error", "InternalServiceError")
    assert error["error"]["message"].endswith(f"Request ID: {response.headers['X-Client-Request-Id']}")
    assert "[DONE]" not in response.text
    assert ark.stats()["faults"] == {"stream_error": 1}


def test_x_should_retry_is_sent_on_error_answers_when_set(ark):
    assert "x-should-retry" not in generate(ark, prompt="").headers
    ark.configure(should_retry_header="false", server_error_fraction=1.0)
    assert generate(ark).headers["x-should-retry"] == "false"
    ark.configure(should_retry_header="true", server_error_fraction=0.0)
    assert generate(ark, prompt="").headers["x-should-retry"] == "true"
    assert "x-should-retry" not in generate(ark).headers  # only on errors


@pytest.mark.parametrize(("code", "text"), [
    ("InputImageSensitiveContentDetected.PrivacyInformation",
     "The request failed because the input image may contain real person."),
    ("InputImageSensitiveContentDetected.PolicyViolation",
     "The request failed because the input image may be related to copyright restrictions."),
    ("InputVideoSensitiveContentDetected", "The request failed because the input video may contain sensitive "
                                           "information."),
    ("InputTextSensitiveContentDetected", "The request failed because the input text may contain sensitive "
                                          "information."),
])
def test_a_moderation_marker_refuses_the_request_with_arks_documented_text(ark, code, text):
    for response in (generate(ark, prompt=f"a cat SIM_MODERATION:{code}"),
                     httpx.post(f"{ark.base_url}{TASKS}", headers=auth(), json={
                         "model": VIDEO_MODEL, "content": [{"type": "text", "text": f"SIM_MODERATION:{code} a cat"}]})):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["type"]) == (code, "BadRequest")
        assert error["message"] == f"{text} Request ID: {response.headers['X-Client-Request-Id']}"


def test_a_content_security_failure_names_the_request_inside_its_text(ark):
    response = generate(ark, prompt="SIM_MODERATION:ContentSecurityDetectionError")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "ContentSecurityDetectionError"
    assert error["message"].startswith(f"Internal error. ARK Request ID: {response.headers['X-Client-Request-Id']};")
    assert "CSD RequestId: " in error["message"]


def test_output_moderation_variants_fail_the_first_image_or_the_video(ark):
    body = generate(ark, prompt="two views SIM_MODERATION:OutputImageSensitiveContentDetected.DeepFake",
                    sequential_image_generation="auto").json()
    assert body["data"][0]["error"] == {
        "code": "OutputImageSensitiveContentDetected.DeepFake",
        "message": "The request failed because the output image may contain counterfeit documents or credentials."}
    assert "url" in body["data"][1]
    task_id = httpx.post(f"{ark.base_url}{TASKS}", headers=auth(), json={
        "model": VIDEO_MODEL, "resolution": "480p", "duration": 2,
        "content": [{"type": "text", "text": "SIM_MODERATION:OutputVideoSensitiveContentDetected.PolicyViolation"}],
    }).json()["id"]
    task = wait_for(lambda: (found := httpx.get(f"{ark.base_url}{TASKS}/{task_id}", headers=auth()).json())
                    ["status"] == "failed" and found)
    assert task["error"]["code"] == "OutputVideoSensitiveContentDetected.PolicyViolation"
    assert task["error"]["message"].endswith("output video may be related to copyright restrictions.")


def test_an_unknown_moderation_code_is_no_fault(ark):
    assert generate(ark, prompt="SIM_MODERATION:NoSuchCode").status_code == 200


def test_task_ids_carry_the_creation_time_in_beijing(frozen_ark):
    response = httpx.post(f"{frozen_ark.base_url}{TASKS}", headers=auth(),
                          json={"model": VIDEO_MODEL, "content": [{"type": "text", "text": "a cat"}]})
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(START + 8 * 3600))
    assert re.fullmatch(rf"cgt-{stamp}-[a-z0-9]{{5}}", response.json()["id"])
