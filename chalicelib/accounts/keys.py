"""API keys: long-lived credentials a user's own backend sends as `Authorization: Bearer ak_...`.

A key is `ak_` and 256 random bits, shown once, when it is made; arkflow keeps only its SHA-256 (a fast hash is
right for a secret of that entropy: no guess can be tested offline faster than the key space allows). A request's
key is found with one consistent read by that hash, then its account is read as a session's is
(`chalicelib.accounts.auth`): the account must exist under the key's user id (not a new one with the name), be
enabled, and still list the key's hash. A revoked key fails at once; an expired one from its expiry on.

Each account's record holds the hashes of its keys: creating a key adds its hash there in the transaction that
writes the key, on the condition that the account is the same and holds fewer than `MAX_KEYS_PER_USER`, so
parallel creations cannot pass the bound; revoking removes both in one transaction. Listing and revoking read
the account's record and its keys, consistently (no index lags behind a new or revoked key).

What a key may do is its scopes (`chalicelib.api.http` checks them per route); docs/api.md, "API keys".
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.expressions.condition import size
from pynamodb.transactions import TransactWrite

from chalicelib.accounts.auth import API_KEY_PREFIX, Principal, secret_digest
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import ApiError, Conflict, NotFound, Unauthorized
from chalicelib.ids import new_key_id
from chalicelib.schemas import KeyCreate, KeyCreated, KeyList, KeyListed
from chalicelib.store import writes
from chalicelib.store.records import ApiKeyRecord, UserRecord, optional_int

KEY_SECRET_BYTES = 32
# `ak_` and the urlsafe base64 of KEY_SECRET_BYTES: anything else is no key of arkflow's and is never looked up.
_KEY_FORMAT = re.compile(API_KEY_PREFIX + r"[A-Za-z0-9_-]{43}")
# How much of a key listings show: enough to tell keys apart, nothing near enough to guess one.
SHOWN_PREFIX_CHARS = len(API_KEY_PREFIX) + 6
MAX_KEYS_PER_USER = 20
# `last_used_at` is written at most this often per key, so a busy key costs no write per request.
LAST_USED_RESOLUTION_S = 60
DAY_S = 24 * 3600
# What each scope brings with it.
IMPLIED_SCOPES = {"tasks:write": frozenset({"tasks:read"})}


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a key has: its own and the ones they imply."""
    own = frozenset(scopes)
    return own.union(*(IMPLIED_SCOPES.get(scope, frozenset()) for scope in own))


def _invalid_key() -> ApiError:
    # One answer for every dead key (unknown, revoked, expired, its account gone or disabled): it tells nothing.
    return Unauthorized("The API key is invalid, expired or revoked.", code="invalid_api_key")


def _key_not_found() -> ApiError:
    return NotFound("No such key.", code="key_not_found")


class ApiKeys:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock

    # --- a key's owner ----------------------------------------------------------------------------------------

    def create(self, owner: Principal, request: KeyCreate) -> KeyCreated:
        now = self.clock.now()
        key = API_KEY_PREFIX + secrets.token_urlsafe(KEY_SECRET_BYTES)
        expires = int(now) + request.expires_in_days * DAY_S if request.expires_in_days is not None else None
        record = ApiKeyRecord(
            secret_digest(key), key_id=new_key_id(), user_id=owner.user_id, username=owner.username,
            name=request.name, scopes=list(request.scopes), prefix=key[:SHOWN_PREFIX_CHARS], created_at=iso(now),
            expires_at_epoch=expires,
        )

        def write(transaction: TransactWrite) -> None:
            transaction.save(record, condition=ApiKeyRecord.key_hash.does_not_exist())
            transaction.update(
                UserRecord(owner.username),
                actions=[UserRecord.api_key_hashes.add({record.key_hash})],
                condition=(UserRecord.user_id == owner.user_id) & (
                    UserRecord.api_key_hashes.does_not_exist() | (size(UserRecord.api_key_hashes) < MAX_KEYS_PER_USER)
                ),
            )

        try:
            writes.write_transaction(write)
        except TransactWriteError as exc:
            if not writes.condition_failed(exc):
                raise
            if _account(owner) is None:  # deleted meanwhile
                raise Unauthorized("The account no longer exists; log in again.", code="invalid_token") from exc
            raise Conflict(f"An account holds at most {MAX_KEYS_PER_USER} API keys; delete one first.",
                           code="key_limit_reached", details={"max_keys": MAX_KEYS_PER_USER}) from exc
        return KeyCreated(id=record.key_id, key=key, name=record.name, scopes=record.scopes,
                          created_at=record.created_at, expires_at=_iso_or_none(expires))

    def list(self, owner: Principal) -> KeyList:
        keys = sorted(self._owned(owner), key=lambda record: (record.created_at, record.key_id), reverse=True)
        return KeyList(keys=[_listed(record) for record in keys])

    def revoke(self, owner: Principal, key_id: str) -> None:
        """Delete the owner's key `key_id` (404 for any other key): the next request with it gets 401."""
        record = next((record for record in self._owned(owner) if record.key_id == key_id), None)
        if record is None:
            raise _key_not_found()

        def write(transaction: TransactWrite) -> None:
            transaction.delete(record, condition=ApiKeyRecord.user_id == owner.user_id)
            transaction.update(UserRecord(owner.username),
                               actions=[UserRecord.api_key_hashes.delete({record.key_hash})],
                               condition=UserRecord.user_id == owner.user_id)

        try:
            writes.write_transaction(write)
        except TransactWriteError as exc:
            if not writes.condition_failed(exc):
                raise
            raise _key_not_found() from exc  # revoked by a parallel request, or the account deleted meanwhile

    def _owned(self, owner: Principal) -> list[ApiKeyRecord]:
        user = _account(owner)
        hashes = sorted(user.api_key_hashes or ()) if user is not None else []
        return list(ApiKeyRecord.batch_get(hashes, consistent_read=True))

    # --- a request with a key ---------------------------------------------------------------------------------

    def authenticate(self, key: str) -> Principal:
        if _KEY_FORMAT.fullmatch(key) is None:
            raise _invalid_key()
        key_hash = secret_digest(key)
        try:
            record = ApiKeyRecord.get(key_hash, consistent_read=True)
            user = UserRecord.get(record.username, consistent_read=True)
        except DoesNotExist as exc:
            raise _invalid_key() from exc
        now = self.clock.now()
        if (
            (record.expires_at_epoch is not None and record.expires_at_epoch <= now)
            or not user.user_id
            or user.user_id != record.user_id
            or user.disabled
            or key_hash not in (user.api_key_hashes or ())
        ):
            raise _invalid_key()
        self._note_use(record, now)
        return Principal(user_id=user.user_id, username=user.username, role=user.role, key_id=record.key_id,
                         scopes=granted(record.scopes), requests_per_minute=optional_int(user.requests_per_minute))

    @staticmethod
    def _note_use(record: ApiKeyRecord, now: float) -> None:
        """Record `last_used_at` if the last record of it is a minute old (one write per key per minute at most,
        whatever the number of requests in parallel)."""
        due = int(now) - LAST_USED_RESOLUTION_S
        if record.last_used_epoch is not None and record.last_used_epoch > due:
            return
        try:
            record.update(
                actions=[ApiKeyRecord.last_used_epoch.set(int(now))],
                # Revoked meanwhile: the update must not write the key's item back.
                condition=ApiKeyRecord.key_hash.exists() & (
                    ApiKeyRecord.last_used_epoch.does_not_exist() | (ApiKeyRecord.last_used_epoch <= due)),
            )
        except UpdateError as exc:
            if not writes.condition_failed(exc):
                raise


def forget_keys_of(user: UserRecord) -> None:
    """Delete the items of a deleted account's keys (dead already: no account lists them any more)."""
    for key_hash in user.api_key_hashes or ():
        ApiKeyRecord(key_hash).delete()


def _account(owner: Principal) -> UserRecord | None:
    try:
        user = UserRecord.get(owner.username, consistent_read=True)
    except DoesNotExist:
        return None
    return user if user.user_id == owner.user_id else None


def _iso_or_none(epoch: float | None) -> str | None:
    return iso(epoch) if epoch is not None else None


def _listed(record: ApiKeyRecord) -> KeyListed:
    return KeyListed(id=record.key_id, name=record.name, scopes=list(record.scopes), prefix=record.prefix,
                     created_at=record.created_at, last_used_at=_iso_or_none(record.last_used_epoch),
                     expires_at=_iso_or_none(record.expires_at_epoch))
