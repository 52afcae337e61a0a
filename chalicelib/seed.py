"""First-run data: the first admin (any deployment), demo users and the default models (local stack).

A deployment's first-run steps run once each, ever: `run_once` records each step in the `first-run` table with
a conditional write, so a later container (or a later deploy) never repeats it, even when what it made is gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import catalog
from chalicelib import users as accounts
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import FirstRunRecord, UserRecord

FIRST_ADMIN = "first-admin"

_first_admin_checked = False


def has_run(step: str) -> bool:
    try:
        FirstRunRecord.get(step, consistent_read=True)
    except DoesNotExist:
        return False
    return True


def run_once(step: str, action: Callable[[], object], clock: Clock = SYSTEM_CLOCK) -> bool:
    """Run `action` unless this deployment has done `step` already, then record it; True when it ran.

    `action` must be idempotent: two containers starting at once may both run it before either records the
    step (recording first would lose the step for good if the container died before acting).
    """
    if has_run(step):
        return False
    action()
    try:
        FirstRunRecord(step, done_at=iso(clock.now())).save(condition=FirstRunRecord.item.does_not_exist())
    except PutError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
    return True


def _create_first_admin(username: str, password: str) -> None:
    # A deployment that has accounts was bootstrapped already (before first-run steps were recorded): its first
    # admin, if deleted since, stays deleted.
    if next(iter(UserRecord.scan(limit=1)), None) is None:
        accounts.ensure_user(username, password, role="admin")


def ensure_first_admin() -> None:
    """Create the admin named by ADMIN_USERNAME/ADMIN_PASSWORD, once per deployment.

    Checked on the first login a container serves, so no deployment step is needed to get in; once done (or
    found done), neither this container nor any later one looks again.
    """
    global _first_admin_checked
    if _first_admin_checked:
        return
    username, password = os.environ.get("ADMIN_USERNAME"), os.environ.get("ADMIN_PASSWORD")
    if username and password:
        run_once(FIRST_ADMIN, lambda: _create_first_admin(username.lower(), password))
    _first_admin_checked = True


def seed(
    admin: tuple[str, str] | None = None,
    users: list[tuple[str, str, str]] | None = None,
    default_models: bool = True,
) -> None:
    """Idempotent: existing users and models are left as they are."""
    if admin:
        accounts.ensure_user(admin[0], admin[1], role="admin")
    for username, password, role in users or []:
        accounts.ensure_user(username, password, role=role)
    if default_models:
        catalog.ensure_default_models()
