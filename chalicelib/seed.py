"""First-run data: the first admin (any deployment), demo users and the default models.

Each is made once per deployment, ever (`chalicelib.first_run`): a later container or deploy never makes it again,
even when what it made was deleted since.
"""

from __future__ import annotations

import os

from chalicelib import catalog, first_run
from chalicelib import users as accounts
from chalicelib.db import UserRecord
from chalicelib.settings import get_settings
from chalicelib.validation import UserCreate

FIRST_ADMIN = "first-admin"

_first_admin_checked = False


def _create_first_admin(username: str, password: str) -> None:
    if first_run.marked([FIRST_ADMIN]):
        return  # checked before hashing a password that would not be stored
    if next(iter(UserRecord.scan(limit=1)), None) is not None:
        # Bootstrapped before first-run markers existed: its first admin, if deleted since, stays deleted.
        first_run.mark(FIRST_ADMIN)
        return
    admin = accounts.new_user(UserCreate(username=username, password=password, role="admin"))
    first_run.create_once(FIRST_ADMIN, admin, UserRecord.username.does_not_exist())


def ensure_first_admin() -> None:
    """Create the admin named by ADMIN_USERNAME (password ADMIN_PASSWORD), once per deployment.

    Checked on the first login a container serves, so no deployment step is needed to get in; once done (or
    found done), neither this container nor any later one makes it again.
    """
    global _first_admin_checked
    if _first_admin_checked:
        return
    username, password = os.environ.get("ADMIN_USERNAME"), get_settings().admin_password
    if username and password:
        _create_first_admin(username.lower(), password)
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


_default_models_checked = False


def ensure_default_models() -> None:
    """The default models a deployment has never had, created (`catalog.ensure_default_models`); checked once per
    container by the scheduled sweeper, so a fresh stack on AWS gets its models within a minute of its deploy."""
    global _default_models_checked
    if not _default_models_checked:
        catalog.ensure_default_models()
        _default_models_checked = True
