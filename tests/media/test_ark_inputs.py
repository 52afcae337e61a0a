"""A task's stored input images as Ark gets them: inline where they fit, so nothing expires while Ark may still
fetch them (a video's inputs, until its `execution_expires_after`); beyond that, URLs signed to outlive that."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from PIL import Image

from chalicelib import secret_store
from chalicelib.ark.limits import VIDEO_MAX_EXPIRES_AFTER
from chalicelib.media import storage
from chalicelib.settings import get_settings, reload_settings
from chalicelib.store.records import TaskRecord
from chalicelib.video.submit import Submission
from tests.api_client import Api
from tests.factories import DEMO

SIGNER_KEY_ID = "AKIAARKINPUTSSIGNER1"
ROTATED_KEY_ID = "AKIAARKINPUTSSIGNER2"


def frame(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 360), color).save(buffer, format="PNG")
    return buffer.getvalue()


def video_task(api: Api, *frames: bytes) -> TaskRecord:
    images = [f"data:image/png;base64,{base64.b64encode(data).decode()}" for data in frames]
    body = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves", "images": images,
            "params": {"duration": 5}}
    response = api.request("POST", "/api/tasks", body, as_user=DEMO)
    assert response.status_code == 201, response.body
    return TaskRecord.get(response.data["id"], consistent_read=True)


def sent_images(task: TaskRecord) -> list[str]:
    content = Submission.of(task, boto3.client("s3"), get_settings()).body["content"]
    return [item["image_url"]["url"] for item in content if item["type"] == "image_url"]


def test_a_videos_stored_frames_reach_ark_inline(api: Api) -> None:
    first, last = frame((10, 20, 30)), frame((200, 100, 0))
    task = video_task(api, first, last)
    assert all(storage.is_s3_ref(ref) for ref in task.images)

    assert sent_images(task) == [storage.data_uri("image/png", first), storage.data_uri("image/png", last)]


@pytest.fixture
def signing_secret(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    key = {"access_key_id": SIGNER_KEY_ID, "secret_access_key": "long-term-secret-key-of-the-inputs-user"}
    secret = boto3.client("secretsmanager").create_secret(Name="ark-inputs-signer", SecretString=json.dumps(key))
    monkeypatch.setenv("ARK_INPUTS_SIGNING_SECRET", secret["ARN"])
    reload_settings()
    yield secret["ARN"]
    monkeypatch.delenv("ARK_INPUTS_SIGNING_SECRET")
    reload_settings()


def test_frames_too_large_to_send_inline_are_signed_by_the_long_term_key_past_arks_longest_window(
    api: Api, signing_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, last = frame((10, 20, 30)), frame((200, 100, 0))
    task = video_task(api, first, last)
    monkeypatch.setattr(storage, "ARK_INLINE_BYTES", len(storage.data_uri("image/png", first)))

    inline, signed = sent_images(task)

    assert inline == storage.data_uri("image/png", first)
    query = parse_qs(urlsplit(signed).query)
    assert query["X-Amz-Credential"][0].startswith(f"{SIGNER_KEY_ID}/")
    assert int(query["X-Amz-Expires"][0]) > VIDEO_MAX_EXPIRES_AFTER
    assert "X-Amz-Security-Token" not in query  # a long-term key: nothing temporary for the URL to die with


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def signer_key_id(task: TaskRecord) -> str:
    [signed] = sent_images(task)
    return parse_qs(urlsplit(signed).query)["X-Amz-Credential"][0].split("/")[0]


def test_a_rotated_signing_key_reaches_a_warm_container_through_the_secret_store(
    api: Api, signing_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signer's key is read like every runtime secret: one copy per container for `SECRET_TTL_S` at most, and
    the copy held while Secrets Manager fails."""
    clock = Clock()
    store = secret_store.SecretStore(signing_secret, clock=clock)
    monkeypatch.setattr(secret_store, "store", lambda secret_id: store if secret_id == signing_secret else None)
    task = video_task(api, frame((10, 20, 30)))
    monkeypatch.setattr(storage, "ARK_INLINE_BYTES", 0)
    assert signer_key_id(task) == SIGNER_KEY_ID

    secrets = boto3.client("secretsmanager")
    secrets.put_secret_value(SecretId=signing_secret, SecretString=json.dumps(
        {"access_key_id": ROTATED_KEY_ID, "secret_access_key": "the-rotated-secret-key"}))
    clock.now += secret_store.SECRET_TTL_S - 1
    assert signer_key_id(task) == SIGNER_KEY_ID
    clock.now += 1
    assert signer_key_id(task) == ROTATED_KEY_ID

    secrets.delete_secret(SecretId=signing_secret, ForceDeleteWithoutRecovery=True)
    clock.now += secret_store.SECRET_TTL_S
    assert signer_key_id(task) == ROTATED_KEY_ID


def test_without_a_long_term_key_an_oversized_frame_is_signed_by_the_function_and_that_is_logged(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    task = video_task(api, frame((10, 20, 30)))
    monkeypatch.setattr(storage, "ARK_INLINE_BYTES", 0)

    with caplog.at_level(logging.WARNING, logger="chalicelib.media"):
        [signed] = sent_images(task)

    assert signed.startswith("https://") and storage.split_s3_ref(task.images[0])[1] in signed
    assert "may expire before Ark fetches it" in caplog.text
