"""Images a browser uploads straight to S3, and their use as a task's input.

`POST /api/uploads` hands out a presigned POST that S3 itself limits to the declared content type and size, and
an upload id only its uploader can name (`upload:<id>`) in a task. When a task names it, the object is checked
(it exists, it is no larger than declared, it is an image Ark accepts) and copied under the task's own key, so
the task owns its inputs and deleting the task deletes them. The server never fetches anything a user points at.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist

from chalicelib import media
from chalicelib.auth import Principal
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import UploadRecord
from chalicelib.errors import ApiError, ValidationFailed
from chalicelib.images import ImageInfo, inspect_image
from chalicelib.resources import MEDIA_BUCKET
from chalicelib.settings import Settings, get_settings
from chalicelib.validation import ImageProblem, UploadRequest

# Long enough for a slow connection to send 30 MB, short enough that a leaked form is soon useless.
UPLOAD_FORM_TTL_S = 15 * 60
# An upload can be named by tasks for a day; the bucket's lifecycle removes the object after that.
UPLOAD_TTL_S = MEDIA_BUCKET.uploads_expire_days * 24 * 3600
# Enough of the file for its format and pixel size, large metadata blocks included.
HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadForm:
    upload_id: str
    url: str
    fields: dict[str, str]
    expires_at: str
    max_bytes: int

    def body(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "ref": f"upload:{self.upload_id}",
            "url": self.url,
            "fields": self.fields,
            "expires_at": self.expires_at,
            "max_bytes": self.max_bytes,
        }


def new_upload_id() -> str:
    return secrets.token_hex(16)


class UploadService:
    def __init__(self, *, s3: Any, settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.s3 = s3
        self.settings = settings or get_settings()
        self.clock = clock

    @property
    def bucket(self) -> str:
        if not self.settings.media_bucket:
            raise ApiError("This deployment has no bucket for uploads; send images inline.", status=503,
                           code="uploads_unavailable")
        return self.settings.media_bucket

    def create(self, principal: Principal, request: UploadRequest) -> UploadForm:
        bucket = self.bucket
        upload_id = new_upload_id()
        key = f"{MEDIA_BUCKET.uploads_prefix}{upload_id}"
        now = self.clock.now()
        # S3 refuses the POST unless the body is at most the declared size and of the declared type.
        form = self.s3.generate_presigned_post(
            Bucket=bucket,
            Key=key,
            Fields={"Content-Type": request.content_type},
            Conditions=[{"Content-Type": request.content_type}, ["content-length-range", 1, request.size]],
            ExpiresIn=UPLOAD_FORM_TTL_S,
        )
        UploadRecord(
            upload_id,
            user_id=principal.user_id,
            object_key=key,
            content_type=request.content_type,
            max_bytes=request.size,
            created_at=iso(now),
            expires_at_epoch=int(now) + UPLOAD_TTL_S,
        ).save(condition=UploadRecord.upload_id.does_not_exist())
        return UploadForm(upload_id, form["url"], form["fields"], iso(now + UPLOAD_FORM_TTL_S), request.size)

    def attach(
        self, owner: str, upload_id: str, task_id: str, index: int, image_problem: ImageProblem
    ) -> str:
        """Copy the upload to input `index` of the task; returns its `s3://` reference.

        Raises ValidationFailed (naming `images[index]`) when the upload is unknown, another user's, expired,
        not uploaded yet, larger than declared, or not an image Ark accepts for this task.
        """
        field = f"images[{index}]"
        record = self._owned(owner, upload_id, field)
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=record.object_key)
        except ClientError as exc:
            raise _invalid(field, f"upload {upload_id!r} has not been uploaded yet") from exc
        size = int(head["ContentLength"])
        if size > record.max_bytes:
            raise _invalid(field, f"the uploaded file is larger than the {int(record.max_bytes)} bytes declared")
        info = self._inspect(record.object_key, size)
        if info is None:
            raise _invalid(field, "the uploaded file is not a readable image")
        problem = image_problem(info, size)
        if problem:
            raise _invalid(field, problem)
        key = media.input_key(task_id, index, info.content_type)
        self.s3.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": record.object_key},
            ContentType=info.content_type,
            MetadataDirective="REPLACE",
        )
        return media.s3_ref(self.bucket, key)

    def _owned(self, owner: str, upload_id: str, field: str) -> UploadRecord:
        try:
            record = UploadRecord.get(upload_id, consistent_read=True)
        except DoesNotExist:
            record = None
        # Another user's upload looks exactly like one that does not exist.
        if record is None or record.user_id != owner:
            raise _invalid(field, f"unknown upload {upload_id!r}")
        if record.expires_at_epoch <= self.clock.now():
            raise _invalid(field, f"upload {upload_id!r} has expired; upload the image again")
        return record

    def _inspect(self, key: str, size: int) -> ImageInfo | None:
        header = self.s3.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes=0-{min(size, HEADER_BYTES) - 1}"
        )["Body"].read()
        return inspect_image(header)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed("1 invalid field(s)", details=[{"field": field, "message": message, "type": "upload"}])
