"""Images a browser uploads straight to S3, and their use as a task's input.

`POST /api/uploads` hands out a presigned POST that S3 itself limits to the declared content type and size, and
an upload id only its uploader can name (`upload:<id>`) in a task. When a task names it, the object is checked
(it exists, it is no larger than declared, it is an image Ark accepts) and copied under the task's own key, so
the task owns its inputs and deleting the task deletes them. The server never fetches anything a user points at.

What is copied is exactly what was checked, and an upload holds one object for all its uses, though S3 cannot
make a presigned POST single-use (its policy has no such condition, and conditional writes, `If-None-Match`, exist
for PUT and multipart uploads, not for POST):
  * the object is read by its ETag: the header read with `IfMatch`, the copy with `CopySourceIfMatch` (a POST in
    between makes S3 answer 412, and the task is refused). moto ignores `CopySourceIfMatch`, so the copy's own ETag
    is compared too: the bucket encrypts with SSE-S3, under which a single-part object's ETag (a POST makes one) is
    the MD5 of its bytes and a copy keeps it;
  * the first task to use an upload pins its ETag (`UploadRecord.used_etag`, written conditionally): once used, an
    upload posted again is refused, so a leaked form cannot change what a later task of its owner gets. Posting
    again before the first use only replaces the owner's own image, which is what the form is for.
An upload may feed several of its owner's tasks, each with a copy of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import ApiError, ValidationFailed
from chalicelib.ids import new_upload_id
from chalicelib.media import storage
from chalicelib.media.inspection import ImageInfo, inspect_image
from chalicelib.media.references import ImageProblem
from chalicelib.resources import MEDIA_BUCKET
from chalicelib.settings import Settings
from chalicelib.store.records import UploadRecord

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


class UploadService:
    def __init__(self, *, s3: Any, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.s3 = s3
        self.settings = settings
        self.clock = clock

    @property
    def bucket(self) -> str:
        if not self.settings.media_bucket:
            raise ApiError("This deployment has no bucket for uploads; send images inline.", status=503,
                           code="uploads_unavailable")
        return self.settings.media_bucket

    def create(self, owner: str, content_type: str, size: int) -> UploadForm:
        """A form for `owner` to upload one image of `content_type`, at most `size` bytes, straight to S3."""
        bucket = self.bucket
        upload_id = new_upload_id()
        key = f"{MEDIA_BUCKET.uploads_prefix}{upload_id}"
        now = self.clock.now()
        # S3 refuses the POST unless the body is at most the declared size and of the declared type.
        form = self.s3.generate_presigned_post(
            Bucket=bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, size]],
            ExpiresIn=UPLOAD_FORM_TTL_S,
        )
        UploadRecord(
            upload_id,
            user_id=owner,
            object_key=key,
            content_type=content_type,
            max_bytes=size,
            created_at=iso(now),
            expires_at_epoch=int(now) + UPLOAD_TTL_S,
        ).save(condition=UploadRecord.upload_id.does_not_exist())
        return UploadForm(upload_id, form["url"], form["fields"], iso(now + UPLOAD_FORM_TTL_S), size)

    def attach(
        self, owner: str, upload_id: str, task_id: str, index: int, image_problem: ImageProblem,
        field: str | None = None,
    ) -> str:
        """Copy the upload to input `index` of the task; returns its `s3://` reference.

        Raises ValidationFailed (naming `field`, by default `images[index]`) when the upload is unknown, another
        user's, expired, not uploaded yet, larger than declared, or not an image Ark accepts for this task.
        """
        field = field or f"images[{index}]"
        record = self._owned(owner, upload_id, field)
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=record.object_key)
        except ClientError as exc:
            raise _invalid(field, f"upload {upload_id!r} has not been uploaded yet") from exc
        size, etag = int(head["ContentLength"]), str(head["ETag"])
        if size > record.max_bytes:
            raise _invalid(field, f"the uploaded file is larger than the {int(record.max_bytes)} bytes declared")
        info = self._inspect(record, size, etag, field)
        if info is None:
            raise _invalid(field, "the uploaded file is not a readable image")
        problem = image_problem(info, size)
        if problem:
            raise _invalid(field, problem)
        self._pin(record, etag, field)
        key = storage.input_key(task_id, index, info.content_type)
        try:
            copied = self.s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": record.object_key},
                CopySourceIfMatch=etag,
                ContentType=info.content_type,
                MetadataDirective="REPLACE",
            )
        except ClientError as exc:
            if _precondition_failed(exc):
                raise _replaced(field, upload_id) from exc
            raise
        if copied["CopyObjectResult"]["ETag"] != etag:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            raise _replaced(field, upload_id)
        return storage.s3_ref(self.bucket, key)

    def _pin(self, record: UploadRecord, etag: str, field: str) -> None:
        """The upload's first use fixes the object it stands for; a later use must find the same one."""
        if record.used_etag == etag:
            return
        try:
            record.update(actions=[UploadRecord.used_etag.set(etag)],
                          condition=UploadRecord.used_etag.does_not_exist() | (UploadRecord.used_etag == etag))
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
            raise _invalid(field, f"upload {record.upload_id!r} was posted again after a task used it; "
                                  "upload the image anew") from exc

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

    def _inspect(self, record: UploadRecord, size: int, etag: str, field: str) -> ImageInfo | None:
        try:
            header = self.s3.get_object(
                Bucket=self.bucket, Key=record.object_key, Range=f"bytes=0-{min(size, HEADER_BYTES) - 1}",
                IfMatch=etag,
            )["Body"].read()
        except ClientError as exc:
            if _precondition_failed(exc):
                raise _replaced(field, record.upload_id) from exc
            raise
        return inspect_image(header)


def _precondition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "PreconditionFailed"


def _replaced(field: str, upload_id: str) -> ValidationFailed:
    return _invalid(field, f"upload {upload_id!r} changed while it was being checked; use it again")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed("1 invalid field(s)", details=[{"field": field, "message": message, "type": "upload"}])
