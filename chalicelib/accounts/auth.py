"""Account identity, passwords, login throttling, bearer tokens and the sessions that make them revocable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.errors import ApiError, Forbidden, Unauthorized
from chalicelib.ids import new_user_id
from chalicelib.settings import Settings, get_settings
from chalicelib.store.records import LoginAttemptRecord, SessionRecord, UserRecord, optional_int
from chalicelib.store.writes import condition_failed

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


def ensure_user_id(user: UserRecord) -> str:
    """The account's user id, giving it one first if it was made before accounts had ids (once: conditional)."""
    if user.user_id:
        return user.user_id
    try:
        user.update(actions=[UserRecord.user_id.set(new_user_id())],
                    condition=UserRecord.username.exists() & UserRecord.user_id.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise
        user.refresh(consistent_read=True)  # given one meanwhile (or deleted: then DoesNotExist)
    assert user.user_id
    return user.user_id


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. `user_id` owns things (tasks, quotas, uploads, sockets); `username` is the
    account's current name, which admin routes address and which may belong to a new account tomorrow."""

    user_id: str
    username: str
    role: str
    session_id: str | None = None
    # Set when the request came with an API key (`chalicelib.accounts.keys`): the key's id and what it may do
    # (implied scopes included). A login session is limited by no scope.
    key_id: str | None = None
    scopes: frozenset[str] | None = None
    # The account's task creations per minute (`chalicelib.store.rate_limit`); None: the default.
    requests_per_minute: int | None = None

    @property
    def is_admin(self) -> bool:
        # An administrator's powers come with a login session only, never with an API key.
        return self.role == "admin" and self.key_id is None

    def may(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


INTERNAL_SERVICE = Principal(user_id="svc_internal", username="internal-service", role="service")


# What every API key starts with: an `Authorization: Bearer ak_...` is a key, anything else a session token.
API_KEY_PREFIX = "ak_"


class KeyAuthenticator(Protocol):
    """Who an API key acts for (`chalicelib.accounts.keys.ApiKeys`); raises `Unauthorized` for a dead key."""

    def authenticate(self, key: str) -> Principal: ...


class SocketCloser(Protocol):
    """Ends open WebSocket connections (`chalicelib.live.LiveUpdates`): all of a user's, or one session's."""

    def disconnect_user(self, user_id: str, session_id: str | None = None) -> int: ...


@dataclass(frozen=True)
class LoginResult:
    token: str
    role: str
    expires_at: str


def _invalid_credentials() -> ApiError:
    return Unauthorized("Invalid username or password.", code="invalid_credentials")


def _session_ended() -> ApiError:
    return Unauthorized("The session has ended; log in again.", code="invalid_token")


def source_key(address: str | None) -> str:
    """What the throttle counts a client by: its IPv4 address, or its IPv6 /64 (one subscriber's block, which
    a client can rotate through freely); "unknown" when API Gateway gave none."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class TooManyAttempts(ApiError):
    def __init__(self, retry_after_s: float) -> None:
        retry_after = max(1, int(retry_after_s) + 1)
        super().__init__(
            "Too many failed login attempts; try again later.",
            status=429,
            code="too_many_attempts",
            details={"retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(frozen=True)
class Attempt:
    """One admitted login attempt: the counter windows it was counted in (None: that counter did not apply)."""

    username: str
    source: str
    pair_window_end: int
    user_window_end: int | None


# A source that logged into an account is spared that account's per-username limit for this long.
KNOWN_SOURCE_TTL_S = 30 * 24 * 3600


class LoginThrottle:
    """Counts every login attempt before its password is checked, in DynamoDB with conditional writes, so
    parallel guesses cannot exceed a limit; a successful login gives its attempt back.

    Two counters, each a window of `login_lockout_s` from its first attempt: per (username, source address)
    at most `login_max_failures` attempts (strict), per username at most `login_max_failures_per_user` from
    all sources together (loose, against guessing from many addresses). A source that logged into the account
    within `KNOWN_SOURCE_TTL_S` is held to its own pair counter only, so guesses from elsewhere cannot lock the
    account's owner out. See docs/api.md.
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    @staticmethod
    def _pair_key(username: str, source: str) -> str:
        return f"pair#{username}#{source}"

    @staticmethod
    def _user_key(username: str) -> str:
        return f"user#{username}"

    @staticmethod
    def _known_key(username: str, source: str) -> str:
        return f"known#{username}#{source}"

    def admit(self, username: str, address: str | None) -> Attempt:
        """Count one attempt; raises `TooManyAttempts` (counting nothing) when a limit is reached."""
        source = source_key(address)
        pair_key = self._pair_key(username, source)
        pair_window_end = self._take(pair_key, self.settings.login_max_failures)
        if self._is_known(username, source):
            return Attempt(username, source, pair_window_end, None)
        try:
            user_window_end = self._take(self._user_key(username), self.settings.login_max_failures_per_user)
        except TooManyAttempts:
            self._give_back(pair_key, pair_window_end)
            raise
        return Attempt(username, source, pair_window_end, user_window_end)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the pair starts afresh, the username's counter gets this attempt back, and
        the source is known to the account from now on."""
        LoginAttemptRecord(self._pair_key(attempt.username, attempt.source)).delete()
        if attempt.user_window_end is not None:
            self._give_back(self._user_key(attempt.username), attempt.user_window_end)
        expires = int(self.clock.now()) + KNOWN_SOURCE_TTL_S
        LoginAttemptRecord(self._known_key(attempt.username, attempt.source), failures=0,
                           expires_at_epoch=expires).save()

    def _is_known(self, username: str, source: str) -> bool:
        try:
            record = LoginAttemptRecord.get(self._known_key(username, source), consistent_read=True)
        except DoesNotExist:
            return False
        return record.expires_at_epoch > self.clock.now()

    def _take(self, key: str, limit: int) -> int:
        """Count one attempt on `key`'s live window (or start one); the window's end. Raises when full."""
        for _ in range(4):
            now = int(self.clock.now())
            record = LoginAttemptRecord(key)
            try:
                record.update(
                    actions=[LoginAttemptRecord.failures.add(1)],
                    condition=(LoginAttemptRecord.expires_at_epoch > now) & (LoginAttemptRecord.failures < limit),
                )
                return int(record.expires_at_epoch)
            except UpdateError as exc:
                if not condition_failed(exc):
                    raise
            # No live window, or a full one: read which (another attempt may start a window meanwhile).
            try:
                current: LoginAttemptRecord | None = LoginAttemptRecord.get(key, consistent_read=True)
            except DoesNotExist:
                current = None
            if current is not None and current.expires_at_epoch > now:
                if current.failures >= limit:
                    raise TooManyAttempts(current.expires_at_epoch - now)
                continue  # a window another attempt just started, with room left
            window_end = now + self.settings.login_lockout_s
            try:
                LoginAttemptRecord(key, failures=1, expires_at_epoch=window_end).save(
                    condition=LoginAttemptRecord.throttle_key.does_not_exist()
                    | (LoginAttemptRecord.expires_at_epoch <= now)
                )
                return window_end
            except PutError as exc:
                if not condition_failed(exc):
                    raise
        # Every round lost a race to other attempts on this key: refuse, as a full window would.
        raise TooManyAttempts(1)

    def _give_back(self, key: str, window_end: int) -> None:
        """Undo one counted attempt, if its window is still the one counting (else there is nothing to undo)."""
        try:
            LoginAttemptRecord(key).update(
                actions=[LoginAttemptRecord.failures.add(-1)],
                condition=(LoginAttemptRecord.expires_at_epoch == window_end) & (LoginAttemptRecord.failures > 0),
            )
        except UpdateError as exc:
            if not condition_failed(exc):
                raise


class Authenticator:
    def __init__(self, settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK,
                 keys: KeyAuthenticator | None = None) -> None:
        self.settings = settings or get_settings()
        self.clock = clock
        self.throttle = LoginThrottle(self.settings, clock)
        self.keys = keys  # None: API keys are refused

    def login(self, username: str, password: str, source_address: str | None = None) -> LoginResult:
        attempt = self.throttle.admit(username, source_address)  # counted before the check: see LoginThrottle
        try:
            user: UserRecord | None = UserRecord.get(username, consistent_read=True)
        except DoesNotExist:
            user = None
        password_ok = verify_password(user.password_hash if user else _decoy_hash(), password)
        if user is None or not password_ok or user.disabled:
            raise _invalid_credentials()
        self.throttle.succeeded(attempt)
        return self._issue(user)

    def _issue(self, user: UserRecord) -> LoginResult:
        user_id = ensure_user_id(user)
        now = int(self.clock.now())
        expires = now + self.settings.token_ttl_s
        session_id = secrets.token_urlsafe(24)
        SessionRecord(session_id, username=user.username, user_id=user_id,
                      password_version=int(user.password_version), expires_at_epoch=expires).save()
        claims = {
            "sub": user_id,
            "sid": session_id,
            "pwv": int(user.password_version),
            "iat": now,
            "exp": expires,
        }
        token = jwt.encode(claims, self.settings.token_signing_key, algorithm=TOKEN_ALGORITHM)
        return LoginResult(token=token, role=user.role, expires_at=iso(expires))

    def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        if token.startswith(API_KEY_PREFIX):
            if self.keys is None:
                raise Unauthorized("API keys are not accepted here.", code="invalid_api_key")
            return self.keys.authenticate(token)
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
        if claims["exp"] <= self.clock.now() or not isinstance(claims["sid"], str):
            raise Unauthorized("The token is invalid or expired.", code="invalid_token")
        live = self._live_session(claims["sid"], claims["sub"])
        if live is None or claims["pwv"] != live[1]:
            raise _session_ended()
        return live[0]

    def session_principal(self, session_id: str, user_id: str) -> Principal | None:
        """Who session `session_id` acts for, if it is live and still `user_id`'s: the session exists and has
        not expired, the account exists under that id (not a new one with the name), is enabled, and its
        password has not changed since the login. None otherwise."""
        live = self._live_session(session_id, user_id)
        return live[0] if live else None

    def _live_session(self, session_id: str, user_id: str) -> tuple[Principal, int] | None:
        """The session's principal and the password version it was opened with, when it is live."""
        try:
            session = SessionRecord.get(session_id, consistent_read=True)
            user = UserRecord.get(session.username, consistent_read=True)
        except DoesNotExist:
            return None
        if (
            not user.user_id
            or session.user_id != user.user_id
            or user_id != user.user_id
            or session.expires_at_epoch <= self.clock.now()
            or user.disabled
            or session.password_version != user.password_version
        ):
            return None
        principal = Principal(user_id=user.user_id, username=user.username, role=user.role,
                              session_id=session.session_id, requests_per_minute=optional_int(user.requests_per_minute))
        return principal, int(user.password_version)

    def logout(self, principal: Principal, sockets: SocketCloser) -> None:
        """End the session, and the WebSocket connections opened with its tickets."""
        if principal.session_id:
            SessionRecord(principal.session_id).delete()
            sockets.disconnect_user(principal.user_id, session_id=principal.session_id)


def secret_digest(secret: str) -> str:
    """What arkflow stores of a random, single-purpose secret (WebSocket tickets; Ark callback tokens of old)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def signed_token(signing_key: str, purpose: str, subject: str) -> str:
    """A token only the holder of the stage's signing key can make for `subject`, checked with no lookup. Each
    purpose signs with a key of its own (derived from the signing key), so no token of one passes for another."""
    purpose_key = hmac.new(signing_key.encode(), f"arkflow {purpose}".encode(), hashlib.sha256).digest()
    mac = hmac.new(purpose_key, subject.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


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
