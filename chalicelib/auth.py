"""Passwords, login throttling, bearer tokens and the sessions that make them revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.db import LoginAttemptRecord, SessionRecord, UserRecord
from chalicelib.errors import ApiError, Forbidden, Unauthorized
from chalicelib.settings import Settings, get_settings

TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret

@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    settings = get_settings()
    return PasswordHasher(time_cost=settings.password_hash_time_cost, memory_cost=settings.password_hash_memory_kib)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    # Unknown users are checked against this, so they cost the same argon2 time as a wrong password.
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


INTERNAL_SERVICE = Principal(username="internal-service", role="service")


@dataclass(frozen=True)
class LoginResult:
    token: str
    role: str
    expires_at: str


def _invalid_credentials() -> ApiError:
    return Unauthorized("Invalid username or password.", code="invalid_credentials")


class LoginThrottle:
    """Counts failed logins per username; past the limit, every attempt is refused until the lockout ends."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    def check(self, username: str) -> None:
        now = self.clock.now()
        try:
            record = LoginAttemptRecord.get(username, consistent_read=True)
        except DoesNotExist:
            return
        if record.locked_until_epoch > now:
            retry_after = int(record.locked_until_epoch - now) + 1
            raise ApiError(
                "Too many failed login attempts; try again later.",
                status=429,
                code="too_many_attempts",
                details={"retry_after_seconds": retry_after},
                headers={"Retry-After": str(retry_after)},
            )

    def record_failure(self, username: str) -> None:
        now = int(self.clock.now())
        window_end = now + self.settings.login_lockout_s
        record = LoginAttemptRecord(username)
        try:
            record.update(
                actions=[LoginAttemptRecord.failures.add(1)],
                condition=LoginAttemptRecord.expires_at_epoch > now,
            )
        except UpdateError:
            # No live window (first failure, or the last window ran out): start a fresh one.
            LoginAttemptRecord(username, failures=1, locked_until_epoch=0, expires_at_epoch=window_end).save()
            record.failures = 1
        if record.failures >= self.settings.login_max_failures:
            record.update(
                actions=[
                    LoginAttemptRecord.locked_until_epoch.set(window_end),
                    LoginAttemptRecord.expires_at_epoch.set(window_end),
                ]
            )

    def clear(self, username: str) -> None:
        LoginAttemptRecord(username).delete()


class Authenticator:
    def __init__(self, settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings or get_settings()
        self.clock = clock
        self.throttle = LoginThrottle(self.settings, clock)

    def login(self, username: str, password: str) -> LoginResult:
        self.throttle.check(username)
        try:
            user: UserRecord | None = UserRecord.get(username, consistent_read=True)
        except DoesNotExist:
            user = None
        password_ok = verify_password(user.password_hash if user else _decoy_hash(), password)
        if user is None or not password_ok or user.disabled:
            self.throttle.record_failure(username)
            raise _invalid_credentials()
        self.throttle.clear(username)
        return self._issue(user)

    def _issue(self, user: UserRecord) -> LoginResult:
        now = int(self.clock.now())
        expires = now + self.settings.token_ttl_s
        session_id = secrets.token_urlsafe(24)
        SessionRecord(session_id, username=user.username, expires_at_epoch=expires).save()
        claims = {
            "sub": user.username,
            "sid": session_id,
            "pwv": user.password_version,
            "iat": now,
            "exp": expires,
        }
        token = jwt.encode(claims, self.settings.token_signing_key, algorithm=TOKEN_ALGORITHM)
        return LoginResult(token=token, role=user.role, expires_at=iso(expires))

    def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        if self.settings.internal_service_token and hmac.compare_digest(
            token.encode(), self.settings.internal_service_token.encode()
        ):
            return INTERNAL_SERVICE
        try:
            claims = jwt.decode(
                token,
                self.settings.token_signing_key,
                algorithms=[TOKEN_ALGORITHM],
                options={"require": ["sub", "sid", "pwv", "exp"]},
                leeway=0,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("The token is invalid or expired.", code="invalid_token") from exc
        if claims["exp"] <= self.clock.now():
            raise Unauthorized("The token is invalid or expired.", code="invalid_token")
        try:
            session = SessionRecord.get(claims["sid"], consistent_read=True)
            user = UserRecord.get(claims["sub"], consistent_read=True)
        except DoesNotExist as exc:
            raise Unauthorized("The session has ended; log in again.", code="invalid_token") from exc
        if (
            session.username != user.username
            or session.expires_at_epoch <= self.clock.now()
            or user.disabled
            or user.password_version != claims["pwv"]
        ):
            raise Unauthorized("The session has ended; log in again.", code="invalid_token")
        return Principal(username=user.username, role=user.role, session_id=session.session_id)

    def logout(self, principal: Principal) -> None:
        if principal.session_id:
            SessionRecord(principal.session_id).delete()


def secret_digest(secret: str) -> str:
    """What arkflow stores of a random, single-purpose secret (WebSocket tickets, Ark callback tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("Authentication required: send `Authorization: Bearer <token>`.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Malformed Authorization header: expected `Bearer <token>`.", code="invalid_token")
    return token.strip()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This route is for administrators.")
