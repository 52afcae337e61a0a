"""Each user's webhook signing secret (Standard Webhooks' `whsec_<base64>`): made at its first read (or the first
webhook sent), replaced by a rotation, after which the secret it replaced goes on signing beside the new one for
`PREVIOUS_SECRET_LIFETIME_S`, so a receiver can move to the new secret without missing a webhook.

The secrets are the users' own to read (`GET /api/webhooks/secret`), so they are kept as they are, in a table of
their own (encrypted at rest, as every table is) that only the API and the delivery function may read; no log line,
task or other body ever carries one.
"""

from __future__ import annotations

import base64
import math
import secrets

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.store.records import WebhookSecretRecord
from chalicelib.store.writes import condition_failed

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, no secret
# Standard Webhooks asks for 24 to 64 random bytes.
SECRET_BYTES = 32
PREVIOUS_SECRET_LIFETIME_S = 24 * 3600


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookSecrets:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock

    def current(self, user_id: str) -> str:
        """The user's secret, made now if the user has none yet."""
        return self._record(user_id).secret

    def rotate(self, user_id: str) -> str:
        """A new secret; the one it replaces keeps signing for PREVIOUS_SECRET_LIFETIME_S (a secret replaced before
        stops at once: two secrets sign at most)."""
        record = self._record(user_id)
        fresh = new_secret()
        now = self.clock.now()
        try:
            record.update(actions=[
                WebhookSecretRecord.secret.set(fresh),
                WebhookSecretRecord.previous_secret.set(record.secret),
                WebhookSecretRecord.previous_until.set(math.ceil(now + PREVIOUS_SECRET_LIFETIME_S)),
                WebhookSecretRecord.rotated_at.set(iso(now)),
            ], condition=WebhookSecretRecord.secret == record.secret)
        except UpdateError as error:
            if not condition_failed(error):
                raise
            # A parallel rotation won: its secret is the new one, and the one both replaced still signs.
            return self._read(user_id).secret
        return fresh

    def signing(self, user_id: str) -> list[str]:
        """The secrets a webhook is signed with now: the current one, then the one it replaced while that lasts."""
        record = self._record(user_id)
        keys = [record.secret]
        if record.previous_secret and (record.previous_until or 0) > self.clock.now():
            keys.append(record.previous_secret)
        return keys

    def _record(self, user_id: str) -> WebhookSecretRecord:
        try:
            return self._read(user_id)
        except DoesNotExist:
            pass
        record = WebhookSecretRecord(user_id, secret=new_secret(), created_at=iso(self.clock.now()))
        try:
            record.save(condition=WebhookSecretRecord.user_id.does_not_exist())
        except PutError as error:
            if not condition_failed(error):
                raise
            return self._read(user_id)  # a parallel first read made it
        return record

    @staticmethod
    def _read(user_id: str) -> WebhookSecretRecord:
        return WebhookSecretRecord.get(user_id, consistent_read=True)
