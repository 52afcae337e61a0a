"""User accounts: create, update, delete, list. Passwords are stored only as argon2 hashes."""

from __future__ import annotations

import secrets
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.auth import Principal, hash_password
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import UserRecord
from chalicelib.errors import Conflict, NotFound
from chalicelib.validation import UserCreate, UserUpdate


def user_body(user: UserRecord) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def get_user(username: str) -> UserRecord:
    try:
        return UserRecord.get(username, consistent_read=True)
    except DoesNotExist as exc:
        raise NotFound(f"No user named {username!r}.") from exc


def create_user(request: UserCreate, clock: Clock = SYSTEM_CLOCK) -> UserRecord:
    now = iso(clock.now())
    user = UserRecord(
        request.username,
        password_hash=hash_password(request.password),
        role=request.role,
        disabled=request.disabled,
        # Random, not 1: tokens of a deleted user must not come back to life when the name is used again.
        password_version=secrets.randbits(31),
        created_at=now,
        updated_at=now,
    )
    try:
        user.save(condition=UserRecord.username.does_not_exist())
    except PutError as exc:
        raise Conflict(f"A user named {request.username!r} already exists.", code="user_exists") from exc
    return user


def update_user(actor: Principal, username: str, request: UserUpdate, clock: Clock = SYSTEM_CLOCK) -> UserRecord:
    user = get_user(username)
    if username == actor.username and (request.disabled or (request.role and request.role != "admin")):
        raise Conflict("Administrators cannot disable or demote themselves.", code="self_lockout")
    actions = [UserRecord.updated_at.set(iso(clock.now()))]
    if request.role is not None:
        actions.append(UserRecord.role.set(request.role))
    if request.disabled is not None:
        actions.append(UserRecord.disabled.set(request.disabled))
    if request.password is not None:
        actions.append(UserRecord.password_hash.set(hash_password(request.password)))
        actions.append(UserRecord.password_version.add(1))
    user.update(actions=actions, condition=UserRecord.username.exists())
    return user


def delete_user(actor: Principal, username: str) -> None:
    if username == actor.username:
        raise Conflict("Administrators cannot delete themselves.", code="self_lockout")
    user = get_user(username)
    user.delete()


def list_users() -> list[UserRecord]:
    # The user table is small (people, not tasks); a scan is the right tool here.
    return sorted(UserRecord.scan(), key=lambda user: user.username)


def ensure_user(username: str, password: str, role: str = "user", clock: Clock = SYSTEM_CLOCK) -> bool:
    """Create the user unless it exists; True when created. Used to seed the first admin and demo users."""
    try:
        UserRecord.get(username, consistent_read=True)
        return False  # skip hashing a password that would not be stored
    except DoesNotExist:
        pass
    try:
        create_user(UserCreate(username=username, password=password, role=role), clock)
    except Conflict:
        return False
    return True
