"""The Ark clients against the simulator over real HTTP, and against Ark-documented bodies it does not produce."""

from __future__ import annotations

import io
import logging
import socket

import httpx
import pytest
from PIL import Image

from chalicelib.ark.client import (
    VolcImageClient,
    VolcVideoClient,
    image_content,
    text_content,
)
from chalicelib.ark.errors import (
    ArkAuthError,
    ArkError,
    ArkInvalidRequestError,
    ArkNotFoundError,
    ArkPermanentError,
    ArkQuotaExhaustedError,
    ArkRateLimitError,
    ArkRetryableError,
    ArkSensitiveContentError,
    ArkServerError,
    ArkTransportError,
    parse_retry_after,
    task_error,
    user_message,
)
from chalicelib.settings import Settings
from tests.polling import wait_for

from .conftest import API_KEY, VIDEO_MODEL, data_uri


def fixture_client(status: int, body: object, headers: dict[str, str] | None = None) -> VolcImageClient:
    """A client whose Ark answers one canned response, shaped as docs/ark.md describes it."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body, headers=headers))
    return VolcImageClient("https://ark.example/api/v3", API_KEY, http=httpx.Client(transport=transport))


def ark_error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": f"{message} Request ID: 2025", "param": "", "type": ""}}


# --- images -----------------------------------------------------------------------------------------------------

def test_image_generation_returns_urls_that_serve_jpegs_of_the_requested_size(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client:
        result = client.create_image_task("a lighthouse at dusk", size="2560x1440")
    assert [image.size for image in result.images] == ["2560x1440"]
    assert result.errors == []
    assert result.usage.generated_images == 1
    assert result.usage.output_tokens == 2560 * 1440 // 256
    download = httpx.get(result.images[0].url)
    assert download.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(download.content)) as image:
        assert (image.format, image.size) == ("JPEG", (2560, 1440))


def test_group_generation_reports_per_image_errors_and_keeps_the_rest(ark):
    ark.configure(output_sensitive_marker="FORBIDDEN")
    with VolcImageClient(ark.base_url, API_KEY) as client:
        result = client.create_image_task("FORBIDDEN comic strip of 4 panels", images=[data_uri(64, 64)],
                                          sequential_image_generation="auto", max_images=4)
    assert len(result.images) == 3
    assert [(error.index, error.code) for error in result.errors] == [(0, "OutputImageSensitiveContentDetected")]
    assert result.usage.generated_images == 3


def test_reference_images_and_b64_response_format_are_sent(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client:
        result = client.create_image_task("restyle", images=[data_uri(64, 64)], size="2K",
                                          response_format="b64_json", watermark=False)
    assert result.images[0].url is None
    assert result.images[0].b64_json


def test_invalid_parameters_are_permanent_and_carry_arks_code_and_message(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkInvalidRequestError) as raised:
        client.create_image_task("a cat", size="1K")
    error = raised.value
    assert isinstance(error, ArkPermanentError)
    assert error.code == "InvalidParameter"
    assert error.http_status == 400
    assert "`size`" in error.message
    assert task_error(error.code, error.message) == {
        "code": "InvalidParameter", "message": user_message("InvalidParameter"), "upstream_message": error.message}


def test_input_moderation_is_a_permanent_sensitive_content_error(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkSensitiveContentError) as raised:
        client.create_image_task("SIM_SENSITIVE_INPUT portrait")
    assert raised.value.code == "InputTextSensitiveContentDetected"


def test_output_moderation_of_the_only_image_is_a_permanent_sensitive_content_error(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkSensitiveContentError) as raised:
        client.create_image_task("SIM_SENSITIVE_OUTPUT portrait")
    assert raised.value.code == "OutputImageSensitiveContentDetected"


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(ark, caplog):
    ark.configure(api_key="the-right-key")
    caplog.set_level(logging.DEBUG)
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkAuthError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "AuthenticationError"
    assert raised.value.http_status == 401
    assert API_KEY not in str(raised.value)
    assert API_KEY not in caplog.text


def test_unknown_model_is_not_found(ark):
    with VolcImageClient(ark.base_url, API_KEY) as client, pytest.raises(ArkNotFoundError) as raised:
        client.create_image_task("a cat", model="doubao-seedream-9-9-999999")
    assert raised.value.code == "InvalidEndpointOrModel.NotFound"


def test_rate_limit_is_retryable_and_honours_retry_after(ark):
    ark.configure(images_per_minute=1, retry_after_s=7)
    with VolcImageClient(ark.base_url, API_KEY) as client:
        client.create_image_task("first")
        with pytest.raises(ArkRateLimitError) as raised:
            client.create_image_task("second")
    assert isinstance(raised.value, ArkRetryableError)
    assert raised.value.code == "ModelAccountIpmRateLimitExceeded"
    assert raised.value.retry_after == 7


def test_server_errors_are_retryable_and_never_retried_by_the_client(ark):
    ark.configure(server_error_fraction=1.0)
    with VolcVideoClient(ark.base_url, API_KEY) as client, pytest.raises(ArkServerError) as raised:
        client.create_video_task([text_content("a cat")])
    assert raised.value.code == "InternalServiceError"
    assert raised.value.http_status == 500
    assert ark.stats()["calls"]["tasks.create"] == {VIDEO_MODEL: 1}


def test_a_timeout_is_a_retryable_transport_error(ark):
    ark.configure(timeout_fraction=1.0, timeout_hang_s=3.0)
    timeout = httpx.Timeout(connect=1.0, read=0.2, write=1.0, pool=1.0)
    with VolcImageClient(ark.base_url, API_KEY, timeout=timeout) as client, \
            pytest.raises(ArkTransportError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "RequestTimeout"
    assert raised.value.http_status is None


def test_a_refused_connection_is_a_retryable_transport_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with VolcVideoClient(f"http://127.0.0.1:{port}/api/v3", API_KEY) as client, \
            pytest.raises(ArkTransportError) as raised:
        client.get_task_status("cgt-20250101000000-abcde")
    assert raised.value.code == "ConnectionError"
    assert API_KEY not in str(raised.value)


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (429, "QuotaExceeded", "Your account [2100000000] has exhausted its free trial quota for the "
                           "[doubao-seedream-4-5-251128] model.", ArkQuotaExhaustedError),
    (429, "SetLimitExceeded", "Your account has reached the inference limit you set.", ArkQuotaExhaustedError),
    (403, "AccountOverdueError", "Your account is overdue.", ArkQuotaExhaustedError),
    (403, "OperationDenied.ServiceNotOpen", "The service is not activated.", ArkAuthError),
    (401, "InvalidAccountStatus", "The account is frozen.", ArkAuthError),
    (429, "ServerOverloaded", "The service is overloaded.", ArkRateLimitError),
    (429, "InflightBatchsizeExceeded", "Too many requests in flight.", ArkRateLimitError),
    (400, "InvalidEndpoint.ClosedEndpoint", "The endpoint is closed.", ArkServerError),
    (400, "ContentSecurityDetectionError", "Content security check failed.", ArkServerError),
    (400, "InputImageSensitiveContentDetected.PrivacyInformation", "Real person.", ArkSensitiveContentError),
    (400, "OutputVideoSensitiveContentDetected.PolicyViolation", "Copyright.", ArkSensitiveContentError),
    (400, "InputTextRiskDetection", "Risk found.", ArkSensitiveContentError),
    (404, "ModelNotOpen", "Activate the model first.", ArkNotFoundError),
    (503, "ServiceUnavailable", "Try later.", ArkServerError),
])
def test_documented_error_codes_map_to_the_right_class(status, code, message, expected):
    with fixture_client(status, ark_error(code, message)) as client, pytest.raises(expected) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == code
    assert raised.value.message.startswith(message)


def test_a_200_that_carries_only_a_top_level_error_raises():
    body = {"model": "doubao-seedream-4-5-251128", "created": 1, "data": [],
            "error": {"code": "InternalServiceError", "message": "internal error"}}
    with fixture_client(200, body) as client, pytest.raises(ArkServerError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "InternalServiceError"


def test_an_internal_failure_mid_group_keeps_the_images_already_made():
    body = {"model": "doubao-seedream-4-5-251128", "created": 1,
            "data": [{"url": "https://tos.example/1.jpeg", "size": "2048x2048"},
                     {"error": {"code": "InternalServiceError", "message": "stopped"}}],
            "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}
    with fixture_client(200, body) as client:
        result = client.create_image_task("a cat", sequential_image_generation="auto")
    assert [image.url for image in result.images] == ["https://tos.example/1.jpeg"]
    assert result.errors[0].index == 1


def test_retry_after_as_http_date_and_non_json_errors():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412460.0) == 20.0
    assert parse_retry_after("soon") is None
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    client = VolcImageClient("https://ark.example/api/v3", API_KEY, http=httpx.Client(transport=transport))
    with pytest.raises(ArkServerError) as raised:
        client.create_image_task("a cat")
    assert raised.value.code == "HTTP502"


def test_a_key_echoed_by_the_server_is_redacted():
    with fixture_client(400, ark_error("InvalidParameter", f"bad header Bearer {API_KEY}")) as client, \
            pytest.raises(ArkError) as raised:
        client.create_image_task("a cat")
    assert API_KEY not in str(raised.value)
    assert "***" in raised.value.message


# --- video ------------------------------------------------------------------------------------------------------

def test_video_task_create_get_list_and_delete(ark):
    ark.configure(video_run_s=0.3)
    with VolcVideoClient(ark.base_url, API_KEY) as client:
        task_id = client.create_video_task(
            [text_content("a paper boat"), image_content(data_uri(640, 360), "first_frame")],
            resolution="480p", duration=3, seed=7, camera_fixed=True, watermark=False, return_last_frame=True,
        )
        done = wait_for(lambda: (task := client.get_task_status(task_id)).status == "succeeded" and task)
        assert (done.id, done.model, done.resolution, done.ratio) == (task_id, VIDEO_MODEL, "480p", "16:9")
        assert (done.duration, done.frames, done.seed, done.error) == (3, None, 7, None)
        assert done.usage.completion_tokens == 864 * 480 * 24 * 3 // 1024
        assert httpx.get(done.video_url).headers["content-type"] == "video/mp4"
        assert httpx.get(done.last_frame_url).headers["content-type"] == "image/png"
        assert done.updated_at >= done.created_at

        other = client.create_video_task([text_content("another")], frames=57)
        page = client.list_tasks(page_num=1, page_size=10, task_ids=[task_id, other])
        assert page.total == 2
        assert [task.id for task in page.items] == [other, task_id]  # newest first
        assert client.list_tasks(status="succeeded", model=VIDEO_MODEL, task_ids=[task_id]).total == 1

        client.cancel_or_delete(task_id)
        with pytest.raises(ArkNotFoundError):
            client.get_task_status(task_id)


def test_deleting_a_running_task_is_refused(ark):
    ark.configure(video_run_s=30.0)
    with VolcVideoClient(ark.base_url, API_KEY) as client:
        task_id = client.create_video_task([text_content("long")])
        wait_for(lambda: client.get_task_status(task_id).status == "running")
        with pytest.raises(ArkInvalidRequestError):
            client.cancel_or_delete(task_id)


def test_a_failed_video_task_carries_its_error(ark):
    with VolcVideoClient(ark.base_url, API_KEY) as client:
        task_id = client.create_video_task([text_content("SIM_SENSITIVE_OUTPUT fight scene")])
        failed = wait_for(lambda: (task := client.get_task_status(task_id)).status == "failed" and task)
    assert failed.error.code == "OutputVideoSensitiveContentDetected"
    assert failed.video_url is None


def test_from_settings_uses_the_configured_base_url_and_key(ark):
    settings = Settings(ark_base_url=ark.base_url, ark_api_key=API_KEY)
    with VolcVideoClient.from_settings(settings) as client:
        assert client.list_tasks().total == 0


def test_a_missing_key_is_refused_before_any_call():
    with pytest.raises(ValueError, match="ARK_API_KEY"):
        VolcImageClient("https://ark.example/api/v3", "")
