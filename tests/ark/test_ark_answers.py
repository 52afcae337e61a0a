"""Hostile or odd Ark answers at the client: schemas, capped error text, deadlines, and Ark's documented texts."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from arksim.errors import MESSAGES, RATE_LIMIT_CODES
from chalicelib.ark.client import VolcImageClient, VolcVideoClient, text_content
from chalicelib.ark.deadline import call_deadline
from chalicelib.ark.errors import (
    MAX_TEXT_BYTES,
    ArkError,
    ArkInvalidResponseError,
    ArkQuotaExhaustedError,
    ArkRateLimitError,
    ArkTransportError,
    error_shown,
    gave_up_error,
    task_error,
    user_message,
)

from .conftest import API_KEY, IMAGE_MODEL, VIDEO_MODEL, Trickler, auth, data_uri

IMAGE_ANSWER = {"model": IMAGE_MODEL, "created": 1_800_000_000,
                "data": [{"url": "https://tos.example/a.jpeg", "size": "2048x2048"}],
                "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
# The oddly shaped 200s of the issue, each a well-formed answer with one field spoilt.
ODD_IMAGE_ANSWERS = {
    "created: null": {**IMAGE_ANSWER, "created": None},
    'data: ["x"]': {**IMAGE_ANSWER, "data": ["x"]},
    "usage: [1]": {**IMAGE_ANSWER, "usage": [1]},
    'error: "boom"': {**IMAGE_ANSWER, "error": "boom"},
    "a URL that is not http(s)": {**IMAGE_ANSWER, "data": [{"url": "javascript:alert(1)", "size": "1x1"}]},
    "more images than Ark makes": {**IMAGE_ANSWER, "data": IMAGE_ANSWER["data"] * 16},
}


def answering(status: int, body: bytes | str | object, headers: dict[str, str] | None = None) -> httpx.Client:
    """An HTTP client whose every request gets this one answer (JSON unless bytes or str are given)."""
    def respond(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes | str):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(respond))


def image_client(status: int, body: Any) -> VolcImageClient:
    return VolcImageClient("https://ark.example/api/v3", API_KEY, http=answering(status, body))


def video_client(status: int, body: Any) -> VolcVideoClient:
    return VolcVideoClient("https://ark.example/api/v3", API_KEY, http=answering(status, body))


# --- answers that do not fit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", list(ODD_IMAGE_ANSWERS.values()), ids=list(ODD_IMAGE_ANSWERS))
def test_an_oddly_shaped_image_answer_is_a_typed_invalid_response(body):
    with image_client(200, body) as client, pytest.raises(ArkInvalidResponseError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "invalid_response"
    assert raised.value.http_status == 200


def test_a_200_that_is_not_json_is_an_invalid_response_not_a_retryable_error():
    with image_client(200, "<html>502 Bad Gateway</html>") as client, \
            pytest.raises(ArkInvalidResponseError) as raised:
        client.create_image_task("a cat")
    assert "Invalid JSON" in raised.value.message


@pytest.mark.parametrize(("call", "body"), [
    (lambda client: client.create_video_task([text_content("waves")]), {"id": None}),
    (lambda client: client.create_video_task([text_content("waves")]), {"task": "cgt-1"}),
    (lambda client: client.get_task_status("cgt-1"), {"id": "cgt-1", "status": None, "created_at": 1}),
    (lambda client: client.get_task_status("cgt-1"), {"id": "cgt-1", "status": "boom", "created_at": 1}),
    (lambda client: client.get_task_status("cgt-1"), {"id": "cgt-1", "status": "failed", "error": "boom",
                                                      "created_at": 1}),
    (lambda client: client.get_task_status("cgt-1"), {"id": "cgt-1", "status": "succeeded", "content": [1],
                                                      "created_at": 1}),
    (lambda client: client.get_task_status("cgt-1"), {"id": "cgt-1", "status": "succeeded", "created_at": 1,
                                                      "usage": [1]}),
    (lambda client: client.list_tasks(), {"items": ["x"], "total": 1}),
    (lambda client: client.list_tasks(), {"items": [{"id": "cgt-1", "status": "queued"}], "total": 1}),
    (lambda client: client.list_tasks(), {"items": [], "total": None}),
    (lambda client: client.cancel_or_delete("cgt-1"), "not json"),
], ids=["create id null", "create without id", "status null", "unknown status", "error string",
        "content list", "usage list", "list of strings", "item without created_at", "total null",
        "delete not json"])
def test_every_video_answer_is_checked_against_its_shape(call: Callable[[VolcVideoClient], Any], body: Any):
    with video_client(200, body) as client, pytest.raises(ArkInvalidResponseError):
        call(client)


def test_what_was_received_is_logged_cut_short_and_without_the_key(caplog):
    caplog.set_level(logging.WARNING)
    body = json.dumps({"model": IMAGE_MODEL, "created": "soon", "echo": f"Bearer {API_KEY}", "pad": "x" * 50_000})
    with image_client(200, body) as client, pytest.raises(ArkInvalidResponseError) as raised:
        client.create_image_task("a cat")
    logged = [record.getMessage() for record in caplog.records if "does not fit" in record.getMessage()]
    assert len(logged) == 1
    assert "created" in raised.value.message and "created" in logged[0]  # what did not fit, and what came
    assert '"echo": "Bearer ***"' in logged[0]
    assert API_KEY not in caplog.text and API_KEY not in str(raised.value)
    assert len(logged[0]) < 2_000


def test_a_key_split_at_the_cut_of_the_logged_answer_does_not_survive(caplog):
    caplog.set_level(logging.WARNING)
    body = "x" * (1000 - len(API_KEY) // 2) + API_KEY + "y" * 100
    with image_client(200, body) as client, pytest.raises(ArkInvalidResponseError):
        client.create_image_task("a cat")
    assert API_KEY[: len(API_KEY) // 2] not in caplog.text


def test_an_answer_larger_than_any_of_arks_is_not_read_into_memory():
    with image_client(200, b"[" * (33 * 1024 * 1024)) as client, pytest.raises(ArkInvalidResponseError) as raised:
        client.create_image_task("a cat")
    assert "longer than" in raised.value.message


def test_an_error_answer_without_arks_envelope_keeps_its_status_class_and_is_logged(caplog):
    caplog.set_level(logging.WARNING)
    with image_client(503, {"error": "boom"}) as client, pytest.raises(ArkError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "HTTP503"
    assert "does not fit Ark's error envelope" in caplog.text and "boom" in caplog.text


def test_the_simulator_spoils_answers_after_doing_the_work(ark):
    ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=["null_values"],
                  fault_endpoints=["tasks.create"])
    with VolcVideoClient(ark.base_url, API_KEY) as client:
        with pytest.raises(ArkInvalidResponseError):
            client.create_video_task([text_content("waves")])
        assert client.list_tasks(model=VIDEO_MODEL).total == 1  # the task was created all the same
    assert ark.stats()["faults"] == {"malformed_answer": 1}


@pytest.mark.parametrize("kind", ["null_values", "scalar_items", "list_objects", "string_error", "not_json"])
def test_each_spoilt_image_answer_of_the_simulator_is_refused(ark, kind):
    ark.configure(malformed_answer_fraction=1.0, malformed_answer_kinds=[kind])
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkInvalidResponseError):
        client.create_image_task("a cat")
    assert ark.stats()["images_generated"] == {IMAGE_MODEL: 1}


# --- Ark's error text: capped where it is parsed ----------------------------------------------------------------

@pytest.mark.parametrize("size", [150_000, 500_000])
def test_a_huge_error_message_is_capped_with_a_marker(size):
    body = {"error": {"code": "InvalidParameter", "message": "é" * size, "param": "", "type": ""}}
    with image_client(400, body) as client, pytest.raises(ArkError) as raised:
        client.create_image_task("a cat")
    message = raised.value.message
    assert len(message.encode()) <= MAX_TEXT_BYTES
    assert message.startswith("éé") and re.search(r"\[… \d+ more bytes cut\]$", message)
    stored = task_error(raised.value.code, raised.value.message)
    assert stored["upstream_message"] == message
    assert len(json.dumps(stored).encode()) < 4 * MAX_TEXT_BYTES


def test_huge_per_image_errors_and_codes_are_capped():
    failed = {"error": {"code": "OutputImageSensitiveContentDetected" * 1000, "message": "m" * 150_000}}
    body = {**IMAGE_ANSWER, "data": [IMAGE_ANSWER["data"][0], *[failed] * 14]}
    with image_client(200, body) as client:
        result = client.create_image_task("a cat", sequential_image_generation="auto")
    assert len(result.errors) == 14
    assert all(len(error.message.encode()) <= MAX_TEXT_BYTES and len(error.code.encode()) <= 128
               for error in result.errors)


def test_a_failed_video_tasks_huge_error_is_capped():
    body = {"id": "cgt-1", "status": "failed", "created_at": 1,
            "error": {"code": "InternalServiceError", "message": "x" * 500_000}}
    with video_client(200, body) as client:
        task = client.get_task_status("cgt-1")
    assert len(task.error.message.encode()) <= MAX_TEXT_BYTES


# --- what users read --------------------------------------------------------------------------------------------

def test_users_read_a_message_of_our_own_for_arks_codes_and_admins_read_arks_text():
    error = ArkError("InvalidEndpointOrModel.NotFound",
                     "The model or endpoint ep-20250101000000-abcde does not exist or you do not have access to it.")
    stored = task_error(error.code, error.message)
    assert stored["code"] == "InvalidEndpointOrModel.NotFound"
    assert "ep-" not in stored["message"] and stored["message"] == user_message("InvalidEndpointOrModel.NotFound")
    assert "ep-" not in json.dumps(error_shown(stored, to_admin=False))
    assert error_shown(stored, to_admin=True)["upstream_message"] == error.message


@pytest.mark.parametrize("code", ["InputImageSensitiveContentDetected.PrivacyInformation", "NotFound.TaskId",
                                  "OutputVideoSensitiveContentDetected.PolicyViolation", "InputVideoRiskDetection",
                                  "SomethingArkAddsLater", *RATE_LIMIT_CODES])
def test_every_code_has_a_message_of_our_own(code):
    message = user_message(code)
    assert message and code not in message and "ep-" not in message


def test_giving_up_names_arks_last_code_and_keeps_its_text_for_admins():
    error = ArkRateLimitError("QuotaExceeded", "The request has exceeded the quota. Request ID: 1")
    stored = gave_up_error(error, 5)
    assert stored["code"] == "upstream_quota_exceeded"
    assert "QuotaExceeded" in stored["message"] and "5 attempts" in stored["message"]
    assert "Request ID" not in stored["message"] and "Request ID: 1" in stored["upstream_message"]


# --- 429 QuotaExceeded, from Ark's documented texts -------------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    (MESSAGES["QuotaExceeded"], ArkRateLimitError),  # too many queued tasks
    ("You have exceeded the 5-hour/weekly/monthly usage quota. It will reset at 2026-01-01 00:00:00.",
     ArkRateLimitError),
    ("A text Ark has not documented.", ArkRateLimitError),  # cannot tell: a 429 bills nothing, so retry
    ("Your account [2100000000] has exhausted its free trial quota for the [doubao-seedream-4-5-251128] model.",
     ArkQuotaExhaustedError),
])
def test_quota_exceeded_is_given_up_only_when_ark_says_the_free_trial_is_used_up(message, expected):
    body = {"error": {"code": "QuotaExceeded", "message": f"{message} Request ID: 2026", "type": "TooManyRequests"}}
    with image_client(429, body) as client, pytest.raises(ArkError) as raised:
        client.create_image_task("a cat")
    assert type(raised.value) is expected


def test_a_full_ark_queue_answers_arks_documented_text_and_is_retryable(ark):
    ark.configure(video_max_queued=1, video_queue_s=60.0)
    with VolcVideoClient(ark.base_url, API_KEY) as client:
        client.create_video_task([text_content("one")])
        with pytest.raises(ArkRateLimitError) as raised:
            client.create_video_task([text_content("two")])
    assert raised.value.code == "QuotaExceeded"
    assert raised.value.message.startswith("The request has exceeded the quota. Request ID: ")


def test_a_used_up_free_trial_is_permanent(ark):
    ark.configure(free_trial_used_up_models=[IMAGE_MODEL])
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkQuotaExhaustedError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "QuotaExceeded"


def documented_text(code: str) -> re.Pattern[str]:
    """Ark's documented message(s) for `code` (its own, its variants', else its family's), as a pattern."""
    family = code.split(".")[0]
    templates = [template for name, template in MESSAGES.items()
                 if name == code or name.startswith(f"{code}.")] or [MESSAGES[family]]
    alternatives = "|".join(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)) for template in templates)
    return re.compile(f"(?:{alternatives}) Request ID: \\S+")


def test_every_error_the_simulator_answers_carries_arks_documented_text(ark):
    ark.configure(inactive_models=["doubao-seedance-1-0-pro-fast-251015"], video_max_queued=0, images_per_minute=1)
    images, tasks = f"{ark.base_url}/images/generations", f"{ark.base_url}/contents/generations/tasks"
    image = {"model": IMAGE_MODEL, "prompt": "a cat"}
    answers = [
        httpx.post(images, json=image, headers={"Authorization": "Basic a2V5"}),
        httpx.post(images, json={**image, "model": "ep-20990101000000-zzzzz"}, headers=auth()),
        httpx.post(tasks, json={"model": "doubao-seedance-1-0-pro-fast-251015", "content": [text_content("a")]},
                   headers=auth()),
        httpx.post(images, json={"model": IMAGE_MODEL}, headers=auth()),
        httpx.post(images, json={**image, "size": "1K"}, headers=auth()),
        httpx.post(images, json={**image, "image": ""}, headers=auth()),
        httpx.post(images, json={**image, "image": data_uri(20, 20).replace("image/png", "image/svg", 1)},
                   headers=auth()),
        httpx.post(images, json={**image, "prompt": "SIM_SENSITIVE_INPUT"}, headers=auth()),
        httpx.post(images, content=b"[]", headers=auth()),
        httpx.post(tasks, json={"model": VIDEO_MODEL, "content": [text_content("a")]}, headers=auth()),
        httpx.get(f"{tasks}/cgt-20990101000000-zzzzz", headers=auth()),
    ]
    assert httpx.post(images, json=image, headers=auth()).status_code == 200
    answers.append(httpx.post(images, json=image, headers=auth()))  # over the images-per-minute limit
    ark.configure(images_per_minute=500, server_error_fraction=1.0)
    answers.append(httpx.post(images, json=image, headers=auth()))
    for code in RATE_LIMIT_CODES:
        ark.configure(server_error_fraction=0.0, rate_limit_fraction=1.0, rate_limit_code=code)
        answers.append(httpx.post(images, json=image, headers=auth()))
    for response in answers:
        error = response.json()["error"]
        assert documented_text(error["code"]).fullmatch(error["message"]), error
    assert {response.json()["error"]["code"] for response in answers} >= {
        "AuthenticationError", "InvalidEndpointOrModel.NotFound", "ModelNotOpen", "MissingParameter",
        "InvalidParameter", "InvalidImageURL.EmptyURL", "InvalidImageURL.InvalidFormat",
        "InputTextSensitiveContentDetected", "QuotaExceeded", "NotFound.TaskId", "ModelAccountIpmRateLimitExceeded",
        "InternalServiceError", *RATE_LIMIT_CODES}


# --- deadlines --------------------------------------------------------------------------------------------------

@pytest.fixture(params=["headers", "body"])
def trickler(request) -> Iterator[Trickler]:
    server = Trickler(request.param, {"id": "cgt-1", "status": "queued", "created_at": 1, "pad": " " * 150})
    yield server  # about 3.5 s for the whole answer
    server.close()


# Every phase may wait a whole second, so only a total deadline stops a trickle.
PATIENT_PHASES = httpx.Timeout(1.0)


def test_a_trickling_server_cannot_stretch_a_status_read_past_its_budget(trickler):
    started = time.monotonic()
    with VolcVideoClient(trickler.base_url, API_KEY, timeout=PATIENT_PHASES, budget_s=0.4) as client, \
            pytest.raises(ArkTransportError) as raised:
        client.get_task_status("cgt-1")
    assert raised.value.code == "RequestTimeout"
    assert time.monotonic() - started < 5 * 0.4


def test_an_enclosing_deadline_bounds_every_call_inside(trickler):
    started = time.monotonic()
    with VolcVideoClient(trickler.base_url, API_KEY, timeout=PATIENT_PHASES) as client, \
            call_deadline(time.monotonic() + 0.4), pytest.raises(ArkTransportError) as raised:
        client.get_task_status("cgt-1")
    assert raised.value.code == "RequestTimeout"
    assert time.monotonic() - started < 5 * 0.4


def test_a_call_with_no_time_left_is_not_sent():
    server = Trickler("body", {"id": "cgt-1", "status": "queued", "created_at": 1})
    try:
        with VolcVideoClient(server.base_url, API_KEY) as client, call_deadline(time.monotonic() - 1), \
                pytest.raises(ArkTransportError) as raised:
            client.get_task_status("cgt-1")
        assert raised.value.code == "RequestTimeout" and server.requests == 0
    finally:
        server.close()
