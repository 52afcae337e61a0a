"""Browser uploads: a presigned POST limited to the declared type and size, usable in a task by its uploader only."""

from __future__ import annotations

import base64
import io
import json
import os

import boto3
import pytest
import requests
from PIL import Image

from chalicelib.errors import ValidationFailed
from chalicelib.media import storage
from chalicelib.media.inspection import reference_image_problem
from chalicelib.media.uploads import UPLOAD_TTL_S, UploadService
from chalicelib.settings import get_settings
from tests.api_client import Api
from tests.clocks import FrozenClock
from tests.factories import DEMO, OTHER, principal_of

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "a red fox in snow"}
VIDEO_TASK = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves", "params": {"duration": 5}}


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def request_upload(api: Api, user=DEMO, content_type: str = "image/png", size: int = 100_000):
    return api.request("POST", "/api/uploads", {"content_type": content_type, "size": size}, as_user=user)


def post_file(form: dict, data: bytes) -> None:
    """What the browser does with the form: a multipart POST straight to S3 (moto intercepts it)."""
    response = requests.post(form["url"], data=form["fields"], files={"file": ("image", data)}, timeout=10)
    assert response.status_code in (200, 201, 204), response.text


def upload(api: Api, data: bytes, user=DEMO, declared: int | None = None) -> str:
    response = request_upload(api, user, size=declared or len(data))
    assert response.status_code == 201, response.body
    post_file(response.data, data)
    return response.data["ref"]


def test_upload_form_is_limited_to_the_declared_type_and_size(api: Api) -> None:
    response = request_upload(api, size=123_456)
    assert response.status_code == 201, response.body
    body = response.data
    assert len(body["upload_id"]) == 32 and all(ch in "0123456789abcdef" for ch in body["upload_id"])
    assert body["ref"] == f"upload:{body['upload_id']}"
    policy = json.loads(base64.b64decode(body["fields"]["policy"]))
    assert ["content-length-range", 1, 123_456] in policy["conditions"]
    assert {"Content-Type": "image/png"} in policy["conditions"]
    assert body["fields"]["key"].endswith(body["upload_id"])


def test_upload_request_is_validated(api: Api) -> None:
    too_big = request_upload(api, size=31 * 1024 * 1024)
    assert too_big.status_code == 400
    assert too_big.data["error"]["details"][0]["field"] == "size"
    not_an_image = request_upload(api, content_type="application/pdf")
    assert not_an_image.status_code == 400
    assert not_an_image.data["error"]["details"][0]["field"] == "content_type"
    assert api.request("POST", "/api/uploads", {"content_type": "image/png", "size": 10}).status_code == 401


def test_a_task_uses_its_users_upload_through_a_copy_under_the_task(api: Api) -> None:
    data = png()
    ref = upload(api, data)
    created = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [ref]}, as_user=DEMO)
    assert created.status_code == 201, created.body
    task_id = created.data["id"]

    shown = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data["images"]
    assert len(shown) == 1 and f"tasks/{task_id}/inputs/0.png" in shown[0] and "Signature" in shown[0]
    s3 = boto3.client("s3")
    bucket = os.environ["RESULTS_BUCKET"]
    stored = s3.get_object(Bucket=bucket, Key=f"tasks/{task_id}/inputs/0.png")
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "image/png"


def test_another_users_upload_is_unknown_and_nothing_is_created(api: Api) -> None:
    ref = upload(api, png(), user=OTHER)
    created = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [ref]}, as_user=DEMO)
    assert created.status_code == 400
    [detail] = created.data["error"]["details"]
    assert detail["field"] == "images[0]" and "unknown upload" in detail["message"]
    assert api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"] == []


def test_an_upload_must_exist_fit_its_declared_size_and_be_an_acceptable_image(api: Api) -> None:
    never_sent = request_upload(api).data["ref"]
    larger_than_declared = upload(api, png(), declared=100)  # S3 enforces this; the server checks again
    not_an_image = upload(api, b"%PDF-1.4 not an image at all")
    too_small_for_video = upload(api, png(64, 64))  # Seedance wants each side above 300 px
    cases = [
        (IMAGE_TASK, never_sent, "has not been uploaded"),
        (IMAGE_TASK, larger_than_declared, "larger than the 100 bytes declared"),
        (IMAGE_TASK, not_an_image, "not a readable image"),
        (VIDEO_TASK, too_small_for_video, "each side must be strictly between"),
        (IMAGE_TASK, "upload:" + "0" * 32, "unknown upload"),
    ]
    for task, ref, expected in cases:
        response = api.request("POST", "/api/tasks", {**task, "images": [ref]}, as_user=DEMO)
        assert response.status_code == 400, (ref, response.body)
        assert expected in response.data["error"]["details"][0]["message"], response.data


def test_an_expired_upload_cannot_be_used(seeded: None) -> None:
    clock = FrozenClock()
    s3 = boto3.client("s3")
    service = UploadService(s3=s3, settings=get_settings(), clock=clock)
    demo = principal_of(DEMO)
    form = service.create(demo.user_id, "image/png", 50_000)
    post_file(form.body(), png())
    ref = service.attach(demo.user_id, form.upload_id, "tsk_one", 0, reference_image_problem)
    assert storage.split_s3_ref(ref)[1] == "tasks/tsk_one/inputs/0.png"

    clock.advance(UPLOAD_TTL_S + 1)
    with pytest.raises(ValidationFailed) as refused:
        service.attach(demo.user_id, form.upload_id, "tsk_two", 0, reference_image_problem)
    assert "expired" in refused.value.details[0]["message"]


def html_page() -> bytes:
    return b"<html><body><script>alert(document.cookie)</script></body></html>"


class PostingAgainAfterInspection:
    """An S3 client on which the upload's form is posted again (with `data`) right after the server inspected the
    object and before it copies it."""

    def __init__(self, form: dict, data: bytes) -> None:
        self._s3 = boto3.client("s3")
        self._form, self._data = form, data

    def __getattr__(self, name: str):
        return getattr(self._s3, name)

    def get_object(self, **kwargs):
        answer = self._s3.get_object(**kwargs)
        if self._data is not None:
            post_file(self._form, self._data)
            self._data = None
        return answer


def test_what_is_copied_is_exactly_the_object_that_was_inspected(seeded: None) -> None:
    real_s3 = boto3.client("s3")
    demo = principal_of(DEMO)
    form = UploadService(s3=real_s3, settings=get_settings()).create(demo.user_id, "image/png", 50_000).body()
    post_file(form, png())
    racing = UploadService(s3=PostingAgainAfterInspection(form, html_page() + b" " * 100), settings=get_settings())

    with pytest.raises(ValidationFailed) as refused:
        racing.attach(demo.user_id, form["upload_id"], "tsk_raced", 0, reference_image_problem)

    assert "changed while it was being checked" in refused.value.details[0]["message"]
    listing = real_s3.list_objects_v2(Bucket=os.environ["RESULTS_BUCKET"], Prefix="tasks/tsk_raced/")
    assert listing.get("KeyCount", 0) == 0


def test_an_upload_feeds_several_tasks_of_its_owner_but_a_form_posted_again_after_use_is_refused(api: Api) -> None:
    data = png()
    response = request_upload(api, size=len(data))
    form = response.data
    post_file(form, data)
    first = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [form["ref"]]}, as_user=DEMO)
    second = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [form["ref"]]}, as_user=DEMO)
    assert first.status_code == second.status_code == 201, (first.body, second.body)
    s3, bucket = boto3.client("s3"), os.environ["RESULTS_BUCKET"]
    for created in (first, second):  # each its own copy
        assert s3.get_object(Bucket=bucket, Key=f"tasks/{created.data['id']}/inputs/0.png")["Body"].read() == data

    other = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 20, 20)).save(other, format="PNG")
    assert other.getvalue() != data and len(other.getvalue()) <= len(data)
    post_file(form, other.getvalue())  # the same form, a different image: within its 15 minutes S3 takes it
    third = api.request("POST", "/api/tasks", {**IMAGE_TASK, "images": [form["ref"]]}, as_user=DEMO)

    assert third.status_code == 400
    assert "posted again after a task used it" in third.data["error"]["details"][0]["message"]
    assert s3.get_object(Bucket=bucket, Key=f"tasks/{first.data['id']}/inputs/0.png")["Body"].read() == data
