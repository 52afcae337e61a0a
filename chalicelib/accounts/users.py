"""User accounts: create, update, delete, list. Passwords are stored only as argon2 hashes.

Accounts are addressed by username (admin routes, login) and own everything by their user id, which is never
reused: a new account with a deleted account's name starts with nothing of it.
"""

from __future__ import annotations

import secrets

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from chalicelib.accounts.auth import Principal, SocketCloser, ensure_user_id, hash_password
from chalicelib.accounts.keys import forget_keys_of
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import Conflict, NotFound, ValidationFailed
from chalicelib.ids import new_user_id
from chalicelib.schemas import UserCreate, UserUpdate
from chalicelib.store.records import UserRecord
from chalicelib.store.writes import condition_failed


def get_user(username: str) -> UserRecord:
    try:
        return UserRecord.get(username, consistent_read=True)
    except DoesNotExist as exc:
        raise NotFound(f"No user named {username!r}.", code="user_not_found") from exc


def new_user(request: UserCreate, clock: Clock = SYSTEM_CLOCK) -> UserRecord:
    """The record of a new account, not yet saved: a fresh user id and the password's hash."""
    now = iso(clock.now())
    return UserRecord(
        request.username,
        user_id=new_user_id(),
        password_hash=hash_password(request.password),
        role=request.role,
        disabled=request.disabled,
        # Random, not 1: tokens of a deleted user must not come back to life when the name is used again.
        password_version=secrets.randbits(31),
        requests_per_minute=request.requests_per_minute,
        created_at=now,
        updated_at=now,
    )


def create_user(request: UserCreate, clock: Clock = SYSTEM_CLOCK) -> UserRecord:
    user = new_user(request, clock)
    try:
        user.save(condition=UserRecord.username.does_not_exist())
    except PutError as exc:
        if not condition_failed(exc):  # only a false condition says the name is taken
            raise
        raise Conflict(f"A user named {request.username!r} already exists.", code="user_exists") from exc
    return user


def update_user(actor: Principal, username: str, request: UserUpdate, sockets: SocketCloser,
                clock: Clock = SYSTEM_CLOCK) -> UserRecord:
    """Disabling the account or changing its password ends its sessions (every request re-reads the account)
    and closes the WebSocket connections they opened; so does demoting an admin (its connections get admins'
    events: `chalicelib.live`)."""
    user = get_user(username)
    demoted = user.role == "admin" and request.role is not None and request.role != "admin"
    if ensure_user_id(user) == actor.user_id and (request.disabled or (request.role and request.role != "admin")):
        raise Conflict("Administrators cannot disable or demote themselves.", code="self_lockout")
    actions = [UserRecord.updated_at.set(iso(clock.now()))]
    if request.role is not None:
        actions.append(UserRecord.role.set(request.role))
    if request.disabled is not None:
        actions.append(UserRecord.disabled.set(request.disabled))
    if request.password is not None:
        actions.append(UserRecord.password_hash.set(hash_password(request.password)))
        actions.append(UserRecord.password_version.add(1))
    if "requests_per_minute" in request.model_fields_set:
        limit = request.requests_per_minute
        actions.append(UserRecord.requests_per_minute.set(limit) if limit is not None
                       else UserRecord.requests_per_minute.remove())
    try:
        user.update(actions=actions, condition=UserRecord.user_id == user.user_id)
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        raise NotFound(f"No user named {username!r}.", code="user_not_found") from exc  # deleted meanwhile
    if request.disabled or request.password is not None or demoted:
        sockets.disconnect_user(str(user.user_id))
    return user


def delete_user(actor: Principal, username: str, sockets: SocketCloser) -> None:
    """Delete the account; its sessions end with it (they name its user id, which no new account gets) and its
    WebSocket connections are closed. Its tasks stay, owned by the id, for admins to see or delete."""
    user = get_user(username)
    user_id = ensure_user_id(user)
    if user_id == actor.user_id:
        raise Conflict("Administrators cannot delete themselves.", code="self_lockout")
    try:
        user.delete(condition=UserRecord.user_id == user_id)
    except DeleteError as exc:
        if not condition_failed(exc):
            raise
        raise NotFound(f"No user named {username!r}.", code="user_not_found") from exc
    sockets.disconnect_user(user_id)
    forget_keys_of(user)


def listing_owner(username: str | None, user_id: str | None) -> str | None:
    """The account whose tasks an admin listing filters by (None: everyone's). A username names the account that
    holds it now (404 if none); a user id may name a deleted account too."""
    if username is not None and user_id is not None:
        raise ValidationFailed("1 invalid field(s)", details=[
            {"field": "user_id", "message": "give user or user_id, not both", "type": "user_filter"}])
    if username is not None:
        return ensure_user_id(get_user(username))
    return user_id


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
