"""First-run data: the first admin (any deployment), demo users and the default models (local stack)."""

from __future__ import annotations

import os

from chalicelib import catalog
from chalicelib import users as accounts
from chalicelib.settings import get_settings

_first_admin_checked = False


def ensure_first_admin() -> None:
    """Create the admin named by ADMIN_USERNAME/ADMIN_PASSWORD once, if it does not exist yet.

    Checked once per process, on the first login, so no deployment step is needed to get in.
    """
    global _first_admin_checked
    if _first_admin_checked:
        return
    username, password = os.environ.get("ADMIN_USERNAME"), get_settings().admin_password
    if username and password:
        accounts.ensure_user(username, password, role="admin")
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
