"""The stage's secrets, read at run time from Secrets Manager and never put in Lambda's configuration.

The secret (`ARKFLOW_SECRET_ID`) is one JSON object (`ARK_API_KEY`, `TOKEN_SIGNING_KEY`, `ADMIN_PASSWORD`, ...).
A container keeps its copy for `SECRET_TTL_S` at most, then reads the secret again: a value changed in Secrets
Manager reaches every warm container within that time, with no deploy. Read through `chalicelib.settings`, whose
secret settings take an environment variable of the same name first (the laptop and the tests have no secret).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

SECRET_TTL_S = 300.0
# Secrets Manager failing while a copy is held: keep the copy and ask again after this long, rather than fail
# every request of a healthy container.
RETRY_AFTER_FAILURE_S = 10.0


class SecretUnavailable(RuntimeError):
    """The secret could not be read, or lacks a required key: the request fails rather than run without it."""


def _secretsmanager() -> Any:
    from chalicelib import aws  # aws reads settings, which read secrets through this module

    return aws.client("secretsmanager")


class SecretStore:
    def __init__(
        self,
        secret_id: str,
        client: Callable[[], Any] = _secretsmanager,
        ttl_s: float = SECRET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self._client = client
        self._ttl_s = ttl_s
        self._clock = clock
        self._values: dict[str, Any] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def get(self, key: str, required: bool = True) -> str:
        with self._lock:
            if self._values is None or self._clock() - self._read_at >= self._ttl_s:
                self._refresh()
            assert self._values is not None
            value = self._values.get(key)
        if isinstance(value, str) and value:
            return value
        if required:
            raise SecretUnavailable(f"the secret {self.secret_id!r} has no value for {key!r}")
        return ""

    def _refresh(self) -> None:
        try:
            response = self._client().get_secret_value(SecretId=self.secret_id)
            values = json.loads(response["SecretString"])
            if not isinstance(values, dict):
                raise ValueError("the secret is not a JSON object")
        except (BotoCoreError, ClientError, KeyError, ValueError) as error:
            if self._values is None:
                raise SecretUnavailable(f"could not read the secret {self.secret_id!r}: {error}") from None
            log.warning("could not re-read the secret %s, keeping the copy held: %s", self.secret_id, error)
            self._read_at = self._clock() - self._ttl_s + RETRY_AFTER_FAILURE_S
            return
        self._values = values
        self._read_at = self._clock()


@cache
def store(secret_id: str) -> SecretStore:
    """The container's one store per secret (its copy is shared by every settings object)."""
    return SecretStore(secret_id)


def reset() -> None:
    """Forget every copy held (tests, and the local stack when it points at another moto)."""
    store.cache_clear()
