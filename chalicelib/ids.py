"""arkflow's identifiers: how new ones are made, their formats, and path parameters checked against them.

Every id is checked against its format before anything is read with it: DynamoDB refuses keys over 2,048 bytes
(1,024 for sort keys) with an error moto never raises, and a value outside its format names nothing.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.errors import NotFound
from chalicelib.resources import QUEUES

# A prefix and 128 random bits in lower-case base32 (`new_task_id`, `new_user_id`).
TASK_ID_PATTERN = r"^tsk_[a-z2-7]{26}$"
USER_ID_PATTERN = r"^usr_[a-z2-7]{26}$"
USER_ID_PREFIX = "usr_"
KEY_ID_PATTERN = r"^key_[a-z2-7]{26}$"
MODEL_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,63}$"
USERNAME_PATTERN = r"^[a-z0-9_.-]{3,64}$"

_TASK_ID = re.compile(TASK_ID_PATTERN)


def _random_id(prefix: str) -> str:
    return prefix + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def new_task_id() -> str:
    # 128 random bits: ids can be shared in URLs without being guessable.
    return _random_id("tsk_")


def new_user_id() -> str:
    # 128 random bits: an account's identity is never reused, whatever happens to its name.
    return _random_id(USER_ID_PREFIX)


def new_key_id() -> str:
    return _random_id("key_")


def new_upload_id() -> str:
    return secrets.token_hex(16)


def is_task_id(value: str) -> bool:
    return _TASK_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class PathParameter:
    """A route's path parameter: what it names, its format, and its canonical form."""

    kind: str
    pattern: re.Pattern[str]
    canonical: Callable[[str], str] = str


PATH_PARAMETERS = {
    "task_id": PathParameter("task", _TASK_ID),
    "model_id": PathParameter("model", re.compile(MODEL_ID_PATTERN)),
    # Usernames are case-insensitive: `/api/admin/users/Demo` is demo.
    "username": PathParameter("user", re.compile(USERNAME_PATTERN), str.lower),
    "key_id": PathParameter("key", re.compile(KEY_ID_PATTERN)),
    # A queue of `chalicelib.resources` by name (a lane, or `webhook-delivery`): the dead letters' routes.
    "lane": PathParameter("lane", re.compile("^(" + "|".join(re.escape(queue.name) for queue in QUEUES) + ")$")),
}


def path_parameter(name: str, value: str) -> str:
    """`value` of path parameter `name` in canonical form; 404 before any read when it is outside its format
    (such a value names no task, model or user, and must never reach DynamoDB)."""
    parameter = PATH_PARAMETERS.get(name)
    if parameter is None:
        return value
    canonical = parameter.canonical(value)
    if parameter.pattern.fullmatch(canonical) is None:
        raise NotFound(f"No such {parameter.kind}.", code=f"{parameter.kind}_not_found")
    return canonical
