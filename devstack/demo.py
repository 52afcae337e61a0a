"""The local stack's first data: an admin, demo users and the default models (tests and the bench use it too).

Import it once the environment points at moto: it reads the settings.
"""

from __future__ import annotations

from chalicelib import catalog
from chalicelib.accounts import users


def create_demo_data(
    admin: tuple[str, str] | None = None,
    accounts: list[tuple[str, str, str]] | None = None,
    default_models: bool = True,
) -> None:
    """Idempotent: existing users and models are left as they are. Every default model starts enabled."""
    if admin:
        users.ensure_user(admin[0], admin[1], role="admin")
    for username, password, role in accounts or []:
        users.ensure_user(username, password, role=role)
    if default_models:
        catalog.ensure_default_models(enable_all=True)  # the simulator serves every model
