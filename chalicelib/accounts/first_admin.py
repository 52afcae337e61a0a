"""The first administrator of a deployment: made once, ever (`chalicelib.store.first_run`), even if deleted since.

It is checked on the first login a container serves, so no deployment step is needed to get in.
"""

from __future__ import annotations

import os
from functools import cache

from chalicelib.accounts import users
from chalicelib.schemas import UserCreate
from chalicelib.settings import get_settings
from chalicelib.store import first_run
from chalicelib.store.records import UserRecord

FIRST_ADMIN = "first-admin"


def _create_first_admin(username: str, password: str) -> None:
    if first_run.marked([FIRST_ADMIN]):
        return  # checked before hashing a password that would not be stored
    if next(iter(UserRecord.scan(limit=1)), None) is not None:
        # Bootstrapped before first-run markers existed: its first admin, if deleted since, stays deleted.
        first_run.mark(FIRST_ADMIN)
        return
    admin = users.new_user(UserCreate(username=username, password=password, role="admin"))
    first_run.create_once(FIRST_ADMIN, admin, UserRecord.username.does_not_exist())


@cache
def ensure_first_admin() -> None:
    """Create the admin named by ADMIN_USERNAME (password ADMIN_PASSWORD), once per deployment.

    Once done (or found done), neither this container (the call is cached once it returns) nor any later one makes
    it again.
    """
    username, password = os.environ.get("ADMIN_USERNAME"), get_settings().admin_password
    if username and password:
        _create_first_admin(username.lower(), password)
