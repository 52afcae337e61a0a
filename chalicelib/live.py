"""Live task updates over API Gateway WebSockets: tickets, connections and the publisher.

A browser asks `POST /api/ws/ticket` (authenticated) for a single-use ticket valid for a minute and opens the
socket with `?ticket=...`, so no long-lived token travels in a URL (API Gateway and proxies log those).
`$connect` redeems the ticket, checks that the session which asked for it is still live (a user disabled,
deleted or logged out within the minute gets no socket) and stores the connection under its user id and
session, so ending the session or the account closes it (`disconnect_user`). After every task change the state
machine writes, the publisher posts `{"type": "task_update", ...}` to each open connection of the task's owner
through API Gateway's management API (`@connections`), which works from any Lambda, unlike
`app.websocket_api.send`, which works only inside WebSocket handlers.

Admins' connections are also stored a second time under one shared owner, `ADMINS` (the same record shape, the
connection id with `ADMIN_SUFFIX`): what the fleet does (`{"type": "circuit", ...}` when a model's circuit
changes) goes to every connection of an admin with one query.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, ValidationError
from pynamodb.exceptions import DeleteError, DoesNotExist

from chalicelib.accounts.auth import Authenticator, Principal, secret_digest
from chalicelib.api.bodies import TaskBodies
from chalicelib.clock import SYSTEM_CLOCK, Clock, iso
from chalicelib.settings import Settings, get_settings
from chalicelib.store import statemachine
from chalicelib.store.records import ConnectionRecord, TaskRecord, WsTicketRecord
from chalicelib.store.writes import condition_failed

logger = logging.getLogger(__name__)

TICKET_TTL_S = 60
# API Gateway closes every WebSocket two hours after it opened, whatever happens on it.
CONNECTION_TTL_S = 2 * 3600
# A task's change this soon after its previous one goes to the connections that one read (docs/design.md, "Parked
# tasks": what a task costs): a connection opened in between gets the task from the listing its connect asks for.
FOLLOW_UP_S = 0.5
# Task body fields every update carries, then those it carries only when they have a value.
UPDATE_FIELDS = ("id", "status", "version", "updated_at")
OPTIONAL_UPDATE_FIELDS = ("queue_position", "eta_s", "progress", "result_urls", "video_url", "last_frame_url", "error")
# A finished task's price, carried once it has one (a cost of 0 included): its owner sees it arrive live.
COST_FIELDS = ("cost", "currency", "usage")
# API Gateway refuses to send a message over 128 KB (`PayloadTooLargeException`): the watcher would never see it.
MAX_MESSAGE_BYTES = 128 * 1024
# An `invalid_message` reply names at most this many problems, each field path cut to this length: a reply never
# grows with what a client sends.
MAX_REPLY_PROBLEMS, MAX_REPLY_FIELD_CHARS = 5, 64
# A slow or unreachable gateway must not hold a worker up for long: a missed update is refetched on reconnect.
_MANAGEMENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})

WsResponse = dict[str, Any]

# The owner under which every admin connection is stored once more, and the suffix of that copy's id.
ADMINS, ADMIN_SUFFIX = "#admins", "#admin"


@dataclass(frozen=True)
class Ticket:
    ticket: str
    url: str | None
    expires_at: str


@dataclass(frozen=True)
class TicketHolder:
    """Whom a redeemed ticket was issued to: the account (by id) and the login session that asked."""

    user_id: str
    session_id: str


class Tickets:
    """Single-use tickets: the table holds only their hashes, and redeeming one deletes it conditionally."""

    def __init__(self, settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings or get_settings()
        self.clock = clock

    def issue(self, principal: Principal) -> Ticket:
        ticket = secrets.token_urlsafe(32)
        expires = math.ceil(self.clock.now() + TICKET_TTL_S)
        WsTicketRecord(secret_digest(ticket), user_id=principal.user_id, session_id=principal.session_id,
                       expires_at_epoch=expires).save()
        base_url = self.settings.websocket_public_url
        return Ticket(ticket=ticket, url=f"{base_url}?ticket={ticket}" if base_url else None, expires_at=iso(expires))

    def redeem(self, ticket: str) -> TicketHolder | None:
        """Whom the ticket was issued to, the first time it is redeemed before it expires; else None."""
        try:
            record = WsTicketRecord.get(secret_digest(ticket), consistent_read=True)
        except DoesNotExist:
            return None
        try:
            # Of two connects racing with one ticket, only the one whose delete finds it still there wins.
            record.delete(condition=WsTicketRecord.ticket_hash.exists())
        except DeleteError as error:
            if not condition_failed(error):  # the store failed: the connect fails, nothing says the ticket was used
                raise
            return None
        if record.expires_at_epoch <= self.clock.now() or not record.session_id:
            return None  # expired, or issued before tickets named their session (they live a minute)
        return TicketHolder(record.user_id, record.session_id)


class Connections:
    """Open WebSocket connections by user. TTL deletion is lazy, so reads skip (and delete) expired ones."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock

    def open(self, connection_id: str, user_id: str, session_id: str | None = None) -> None:
        now = self.clock.now()
        ConnectionRecord(
            connection_id,
            user_id=user_id,
            session_id=session_id,
            connected_at=iso(now),
            expires_at_epoch=math.ceil(now + CONNECTION_TTL_S),
        ).save()

    def open_for_admins(self, connection_id: str, session_id: str | None) -> None:
        self.open(connection_id + ADMIN_SUFFIX, ADMINS, session_id)

    def leave_admins(self, connection_id: str) -> None:
        """Forget the connection's copy among the admins' (its user is no longer one)."""
        ConnectionRecord(connection_id + ADMIN_SUFFIX).delete()

    def close(self, connection_id: str) -> None:
        """Forget the connection (and its copy among the admins', if it has one)."""
        connection_id = connection_id.removesuffix(ADMIN_SUFFIX)
        ConnectionRecord(connection_id).delete()
        ConnectionRecord(connection_id + ADMIN_SUFFIX).delete()

    def of_user(self, user_id: str, session_id: str | None = None) -> list[str]:
        """The user's live connections (only those opened by `session_id`, when given)."""
        live: list[str] = []
        for record in ConnectionRecord.by_user.query(user_id):
            if record.expires_at_epoch <= self.clock.now():
                self.close(record.connection_id)
            elif session_id is None or record.session_id == session_id:
                live.append(record.connection_id)
        return live


@cache
def management_client(endpoint_url: str) -> Any:
    """boto3's `apigatewaymanagementapi` client for one WebSocket API stage (or the local gateway)."""
    return boto3.session.Session().client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint_url,
        region_name=get_settings().region,
        config=_MANAGEMENT_CONFIG,
    )


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def post_to_connection(client: Any, connection_id: str, message: bytes) -> bool:
    """Send an encoded message; False when the connection is gone (closed, or never known to the gateway)."""
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=message)
    except client.exceptions.GoneException:
        return False
    return True


class ClientMessage(BaseModel):
    """What a client may send: `{"action": "ping"}` (keeps the connection from API Gateway's idle timeout)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["ping"]


def reply_to(body: str | None) -> dict[str, Any]:
    try:
        ClientMessage.model_validate_json(body or "")
    except ValidationError as error:
        return {
            "type": "error",
            "error": {
                "code": "invalid_message",
                "message": 'Messages are JSON objects: {"action": "ping"}.',
                "details": [{"field": (".".join(map(str, item["loc"])) or "body")[:MAX_REPLY_FIELD_CHARS],
                             "message": item["msg"]}
                            for item in error.errors(include_url=False)[:MAX_REPLY_PROBLEMS]],
            },
        }
    return {"type": "pong"}


def _refused(status: int, reason: str) -> WsResponse:
    return {"statusCode": status, "body": reason}


class LiveUpdates:
    """The WebSocket routes (`$connect`, `$default`, `$disconnect`) and the task update publisher."""

    def __init__(
        self,
        bodies: TaskBodies,
        *,
        settings: Settings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        client_for: Callable[[str], Any] = management_client,
    ) -> None:
        self.bodies = bodies
        self.settings = settings or get_settings()
        self.tickets = Tickets(self.settings, clock)
        self.connections = Connections(clock)
        self.sessions = Authenticator(self.settings, clock)
        self._client_for = client_for
        # task id -> (monotonic time, its owner's connections) of its last publish: a change that follows within
        # FOLLOW_UP_S (the results copy right after the success) goes to the same connections, read once.
        self._last_publish: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._last_publish_lock = threading.Lock()

    # --- WebSocket routes (events as API Gateway sends them to Lambda) -------------------------------------

    def connect(self, event: dict[str, Any]) -> WsResponse:
        """Accept with a valid unused ticket and an allowed Origin (when one is sent); nothing stored otherwise."""
        headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            return _refused(403, "Origin not allowed.")
        ticket = (event.get("queryStringParameters") or {}).get("ticket")
        if not ticket:
            return _refused(401, "A ticket is required: POST /api/ws/ticket, then connect with ?ticket=.")
        holder = self.tickets.redeem(ticket)
        if holder is None:
            return _refused(401, "The ticket is invalid, used or expired.")
        principal = self.sessions.session_principal(holder.session_id, holder.user_id)
        if principal is None:
            return _refused(401, "The session this ticket was issued to has ended; log in again.")
        connection_id = event["requestContext"]["connectionId"]
        self.connections.open(connection_id, holder.user_id, holder.session_id)
        if principal.role == "admin":
            self.connections.open_for_admins(connection_id, holder.session_id)
        # Once more after storing it: an account disabled (or a session ended) between the check and the write
        # found no connection to close, so this one must not open; an admin demoted meanwhile found none either,
        # so this one opens as the user's only, never among the admins'.
        again = self.sessions.session_principal(holder.session_id, holder.user_id)
        if again is None:
            self.connections.close(connection_id)
            return _refused(401, "The session this ticket was issued to has ended; log in again.")
        if principal.role == "admin" and again.role != "admin":
            self.connections.leave_admins(connection_id)
        return {"statusCode": 200}

    def message(self, event: dict[str, Any]) -> WsResponse:
        context = event["requestContext"]
        # On AWS the handler may answer through its own stage's endpoint; locally only the setting points right.
        endpoint = self.settings.websocket_management_url or f"https://{context['domainName']}/{context['stage']}"
        try:
            post_to_connection(self._client_for(endpoint), context["connectionId"], encode(reply_to(event.get("body"))))
        except (BotoCoreError, ClientError):
            logger.warning("could not answer WebSocket connection %s", context["connectionId"], exc_info=True)
        return {"statusCode": 200}

    def disconnect(self, event: dict[str, Any]) -> WsResponse:
        self.connections.close(event["requestContext"]["connectionId"])
        return {"statusCode": 200}

    # --- closing a user's or a session's connections ----------------------------------------------------------

    def disconnect_user(self, user_id: str, session_id: str | None = None) -> int:
        """Close the user's open connections (only those `session_id` opened, when given) and forget them; how
        many were closed. A connection the gateway no longer knows is only forgotten."""
        connection_ids = self.connections.of_user(user_id, session_id)
        endpoint = self.settings.websocket_management_url
        client = self._client_for(endpoint) if endpoint and connection_ids else None
        closed = 0
        for connection_id in connection_ids:
            if client is not None:
                try:
                    client.delete_connection(ConnectionId=connection_id)
                    closed += 1
                except client.exceptions.GoneException:
                    pass
                except (BotoCoreError, ClientError):
                    logger.warning("could not close WebSocket connection %s", connection_id, exc_info=True)
            # Forgotten even when the gateway could not be reached: nothing is published to it any more.
            self.connections.close(connection_id)
        return closed

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.settings.ws_allowed_origins
        return origin in allowed or "*" in allowed

    # --- publishing ----------------------------------------------------------------------------------------

    def update_body(self, task: TaskRecord) -> dict[str, Any]:
        """The task's API body cut down to what changes: URLs are presigned now, as a GET would make them."""
        body = self.bodies.body(task, with_queue_position=task.status == statemachine.QUEUED)
        update = {field: body[field] for field in UPDATE_FIELDS}
        update.update({field: body[field] for field in OPTIONAL_UPDATE_FIELDS if body.get(field)})
        update.update({field: body[field] for field in COST_FIELDS if body.get(field) is not None})
        return update

    def update_message(self, task: TaskRecord) -> bytes:
        """The `task_update` message, encoded. Whatever the task holds (long error text, many long result URLs),
        it fits one API Gateway message: when the whole update would not, only what every update carries goes,
        with `"truncated": true` telling the client to read the rest with `GET /api/tasks/{id}`."""
        update = self.update_body(task)
        message = encode({"type": "task_update", "data": update})
        if len(message) <= MAX_MESSAGE_BYTES:
            return message
        logger.warning("the update of task %s (%d bytes) is sent truncated", task.task_id, len(message))
        trimmed = {field: update[field] for field in UPDATE_FIELDS}
        return encode({"type": "task_update", "data": {**trimmed, "truncated": True}})

    def publish(self, task: TaskRecord) -> None:
        """Post the task's update to every open connection of its owner. Never raises: the change is written
        already, and no watcher's socket may undo or block it; a gone connection is deleted."""
        endpoint = self.settings.websocket_management_url
        if not endpoint:
            return  # no WebSocket API in this deployment
        try:
            connection_ids = self._connections_for(task)
            if not connection_ids:
                return
            message = self.update_message(task)
            client = self._client_for(endpoint)
            for connection_id in connection_ids:
                self._deliver(client, connection_id, message)
        except Exception:
            logger.exception("could not publish the update of task %s", task.task_id)

    def publish_circuit(self, model_id: str, circuit: dict[str, Any]) -> None:
        """Tell every admin connection that a model's circuit changed. Never raises."""
        endpoint = self.settings.websocket_management_url
        if not endpoint:
            return
        try:
            connection_ids = [copy.removesuffix(ADMIN_SUFFIX) for copy in self.connections.of_user(ADMINS)]
            if not connection_ids:
                return
            message = encode({"type": "circuit", "data": {"model_id": model_id, "circuit": circuit}})
            client = self._client_for(endpoint)
            for connection_id in connection_ids:
                self._deliver(client, connection_id, message)
        except Exception:
            logger.exception("could not publish the circuit of model %s", model_id)

    def _connections_for(self, task: TaskRecord) -> list[str]:
        now = time.monotonic()
        with self._last_publish_lock:
            last = self._last_publish.pop(task.task_id, None)
            while self._last_publish and next(iter(self._last_publish.values()))[0] < now - FOLLOW_UP_S:
                self._last_publish.popitem(last=False)
        connection_ids = last[1] if last is not None and now - last[0] <= FOLLOW_UP_S else \
            self.connections.of_user(task.user_id)
        with self._last_publish_lock:
            self._last_publish[task.task_id] = (now, connection_ids)
        return connection_ids

    def _deliver(self, client: Any, connection_id: str, message: bytes) -> None:
        try:
            delivered = post_to_connection(client, connection_id, message)
        except (BotoCoreError, ClientError):
            logger.warning("could not post to WebSocket connection %s", connection_id, exc_info=True)
            return
        if not delivered:
            self.connections.close(connection_id)
