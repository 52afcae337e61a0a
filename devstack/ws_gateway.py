"""A local stand-in for an API Gateway WebSocket API, calling the app's own `@app.on_ws_*` handlers.

Clients connect to `ws://host:port/?ticket=...`. Each connection gets an API Gateway-style id (with `=` in
it, like the real ones), and its `$connect`, every message (`$default`) and its `$disconnect` become Lambda
events of API Gateway's shape, handed to the handler Chalice registered for that route key. `$connect`
accepts the connection only when its handler answers 2xx; otherwise the handshake fails with that status.

API Gateway's limits hold here too (`GatewayLimits`, scaled down by tests): a message over 128 KB either way is
refused (from a client, the connection closes with 1009; through `@connections`, 413 `PayloadTooLargeException`),
a connection no client message reached for 10 minutes closes with 1001, and so does every connection two hours
after it opened, each with its `$disconnect` (counted on the gateway's `clock`; a test that moves it by hand calls
`close_expired`). As on API Gateway, what the app posts does not count as activity and no pings are sent: a client
that vanished without closing (a half-open connection) ends at the idle timeout. A connection `$connect` accepted
whose handshake then failed (the client went away first) gets its `$disconnect` too, so the app never keeps a
connection the gateway has not got.

The app answers through API Gateway's management API, `POST|GET|DELETE /@connections/{id}`, served here on
an HTTP port of its own (the `websockets` server takes only bodiless GETs), with 410 `GoneException` for a
connection that is not open, so the app's boto3 `apigatewaymanagementapi` client works as on AWS with only
`endpoint_url` differing.

    with WebSocketGateway(host, ws_port) as gateway:
        os.environ.update(gateway.app_environment())   # before the app reads its settings
        gateway.start(app, config, stage)
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chalice.app import Chalice
from chalice.config import Config
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from devstack.lambdas import invoke

logger = logging.getLogger(__name__)

CONNECTIONS_PATH = "/@connections/"
API_ID = "local"
INTERNAL_ERROR = "Internal server error"


def new_connection_id() -> str:
    # API Gateway's ids are 16 characters of base64 ending in `=`; callers must (un)quote them in URLs.
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def _epoch_ms(epoch: float) -> int:
    return int(epoch * 1000)


def _request_time(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{_epoch_ms(epoch) % 1000:03d}Z"


@dataclass(frozen=True)
class GatewayLimits:
    """API Gateway's WebSocket quotas (fixed on AWS); tests scale them down."""

    # One message, either way.
    max_message_bytes: int = 128 * 1024
    # Without a message from the client for this long, the connection closes.
    idle_timeout_s: float = 10 * 60
    # Every connection closes this long after it opened.
    max_connection_s: float = 2 * 3600


@dataclass
class _Client:
    connection_id: str
    connected_at: float
    source_ip: str
    user_agent: str
    # The limits count on the gateway's monotonic clock: a wall-clock jump neither ends nor prolongs a connection.
    opened_monotonic: float
    active_monotonic: float
    socket: ServerConnection | None = None
    last_active_at: float = field(default_factory=time.time)

    def ends_at(self, limits: GatewayLimits) -> float:
        """The time (on the gateway's clock) at which it closes this connection unless the client sends a message."""
        return min(self.active_monotonic + limits.idle_timeout_s, self.opened_monotonic + limits.max_connection_s)


@dataclass
class _Routes:
    app: Chalice
    config: Config | None
    stage: str

    def function_for(self, route_key: str) -> str | None:
        handler = self.app.websocket_handlers.get(route_key)
        return handler.name if handler is not None else None


class WebSocketGateway:
    """Binds both ports at construction; serves once `start` gave it the app; `close` (or the `with` block's
    end) closes every connection (each gets its `$disconnect`) and both listeners."""

    def __init__(self, host: str, port: int, management_port: int = 0, limits: GatewayLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.limits = limits or GatewayLimits()
        self._clock = clock
        self._routes: _Routes | None = None
        self._clients: dict[str, _Client] = {}
        self._opening: dict[ServerConnection, _Client] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        gateway = self

        class Connection(ServerConnection):
            def handshake(self, *args: Any, **kwargs: Any) -> None:
                try:
                    super().handshake(*args, **kwargs)
                except BaseException:
                    gateway._abandon(self)
                    raise
                if self.protocol.state is not State.OPEN:
                    gateway._abandon(self)

        self._ws_server: Server = serve(
            self._serve_connection, host, port, process_request=self._connect, compression=None,
            max_size=self.limits.max_message_bytes, ping_interval=None, create_connection=Connection,
        )
        self._management_server = ThreadingHTTPServer((host, management_port), _management_handler(self))
        self._management_server.daemon_threads = True
        self.port: int = self._ws_server.socket.getsockname()[1]

    @property
    def public_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self._management_server.server_address[1]}"

    @property
    def domain_name(self) -> str:
        return f"{self.host}:{self.port}"

    def app_environment(self) -> dict[str, str]:
        """What the app's settings read to hand out this gateway's URL and post through it."""
        return {"WEBSOCKET_PUBLIC_URL": self.public_url, "WEBSOCKET_MANAGEMENT_URL": self.management_url}

    def start(self, app: Chalice, config: Config | None, stage: str) -> None:
        """Serve with `app`'s WebSocket handlers; `stage` is the Chalice stage whose function settings apply."""
        self._routes = _Routes(app, config, stage)
        for name, server in (("ws-gateway", self._ws_server), ("ws-management", self._management_server)):
            thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        if self._threads:
            # Connections first: their `$disconnect` handlers may still post through the management API.
            self._ws_server.shutdown()
            self._management_server.shutdown()
        else:
            self._ws_server.socket.close()  # never served: a shutdown would wait for a loop that never ran
        self._management_server.server_close()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> WebSocketGateway:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- the WebSocket side --------------------------------------------------------------------------------

    def _connect(self, connection: ServerConnection, request: Request) -> Response | None:
        """The handshake: `$connect` decides, as on API Gateway; nothing is open until it answers 2xx."""
        now = time.time()
        multi: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            multi.setdefault(name, []).append(value)
        source_ip = str(connection.remote_address[0])
        client = _Client(
            connection_id=new_connection_id(),
            connected_at=now,
            source_ip=source_ip,
            user_agent=request.headers.get("User-Agent", ""),
            opened_monotonic=self._clock(),
            active_monotonic=self._clock(),
        )
        event: dict[str, Any] = {
            "headers": {name: values[-1] for name, values in multi.items()} | {"X-Forwarded-For": source_ip},
            "multiValueHeaders": {**multi, "X-Forwarded-For": [source_ip]},
            "requestContext": self._request_context(client, "$connect", "CONNECT", now),
            "isBase64Encoded": False,
        }
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        try:
            result = self._invoke("$connect", event)
        except Exception:
            logger.exception("$connect handler failed")
            return connection.respond(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR + "\n")
        status = int((result or {}).get("statusCode", HTTPStatus.OK))
        if not 200 <= status < 300:
            return connection.respond(status, str((result or {}).get("body") or HTTPStatus(status).phrase) + "\n")
        with self._lock:
            self._opening[connection] = client
        return None

    def _serve_connection(self, connection: ServerConnection) -> None:
        with self._lock:
            client = self._opening.pop(connection)
            client.socket = connection
            self._clients[client.connection_id] = client
        try:
            # An abnormal close ends the connection like a normal one; `$disconnect` gets the code either way.
            with contextlib.suppress(ConnectionClosed):
                while (left_s := client.ends_at(self.limits) - self._clock()) > 0:
                    try:
                        message = connection.recv(timeout=left_s)
                    except TimeoutError:
                        continue
                    client.last_active_at, client.active_monotonic = time.time(), self._clock()
                    self._on_message(client, message)
                connection.close(CloseCode.GOING_AWAY, "Going away")
        finally:
            with self._lock:
                self._clients.pop(client.connection_id, None)
            self._disconnect(client, connection.close_code or CloseCode.ABNORMAL_CLOSURE)

    def close_expired(self) -> list[str]:
        """Close (1001) every connection past its idle timeout or lifetime on the gateway's clock; returns their ids.
        On the real clock each connection's own thread does this in time; a test that drives the clock calls this
        after moving it (a waiting thread cannot see a clock that moves by hand)."""
        now = self._clock()
        with self._lock:
            expired = [client for client in self._clients.values() if client.ends_at(self.limits) <= now]
        for client in expired:
            assert client.socket is not None
            client.socket.close(CloseCode.GOING_AWAY, "Going away")
        return [client.connection_id for client in expired]

    def _abandon(self, connection: ServerConnection) -> None:
        """The handshake failed after `$connect` let the connection in (or before it answered): the app learns the
        connection is gone, as from any other."""
        with self._lock:
            client = self._opening.pop(connection, None)
        if client is not None:
            self._disconnect(client, CloseCode.ABNORMAL_CLOSURE)

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        now = time.time()
        context = self._request_context(client, "$default", "MESSAGE", now, messageId=uuid.uuid4().hex[:16])
        event = {
            "requestContext": context,
            "body": base64.b64encode(message).decode() if isinstance(message, bytes) else message,
            "isBase64Encoded": isinstance(message, bytes),
        }
        try:
            self._invoke("$default", event)
        except Exception:
            # What API Gateway tells a client whose message's integration failed.
            logger.exception("$default handler failed")
            self.post(client.connection_id, json.dumps({
                "message": INTERNAL_ERROR, "connectionId": client.connection_id, "requestId": context["requestId"],
            }).encode())

    def _disconnect(self, client: _Client, close_code: int) -> None:
        now = time.time()
        event = {
            "headers": {"Host": self.domain_name, "X-Forwarded-For": client.source_ip},
            "multiValueHeaders": {"Host": [self.domain_name], "X-Forwarded-For": [client.source_ip]},
            "requestContext": self._request_context(
                client, "$disconnect", "DISCONNECT", now, disconnectStatusCode=close_code, disconnectReason=""
            ),
            "isBase64Encoded": False,
        }
        try:
            self._invoke("$disconnect", event)
        except Exception:
            logger.exception("$disconnect handler failed")

    def _invoke(self, route_key: str, event: dict[str, Any]) -> Any:
        routes = self._routes
        assert routes is not None, "start() was not called"
        function_name = routes.function_for(route_key)
        if function_name is None:
            return None  # API Gateway accepts a connection no `$connect` route checks, and drops the rest
        return invoke(routes.app, routes.config, routes.stage, function_name, event)

    def _request_context(self, client: _Client, route_key: str, event_type: str, now: float,
                         **extra: Any) -> dict[str, Any]:
        request_id = base64.urlsafe_b64encode(secrets.token_bytes(6)).decode()
        routes = self._routes
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now),
            "messageDirection": "IN",
            "stage": routes.config.api_gateway_stage if routes and routes.config else "api",
            "connectedAt": _epoch_ms(client.connected_at),
            "requestTimeEpoch": _epoch_ms(now),
            "identity": {"sourceIp": client.source_ip, "userAgent": client.user_agent},
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": client.connection_id,
            "apiId": API_ID,
            **extra,
        }

    # --- the management API (`@connections`) ---------------------------------------------------------------

    def post(self, connection_id: str, data: bytes) -> bool:
        """Send `data` (as text when it is UTF-8, as API Gateway does); False when the connection is not open."""
        client = self._clients.get(connection_id)
        if client is None or client.socket is None:
            return False
        try:
            client.socket.send(data.decode())
        except UnicodeDecodeError:
            client.socket.send(data)
        except ConnectionClosed:
            return False
        return True

    def info(self, connection_id: str) -> dict[str, Any] | None:
        client = self._clients.get(connection_id)
        if client is None:
            return None
        return {
            "connectedAt": _iso(client.connected_at),
            "identity": {"sourceIp": client.source_ip, "userAgent": client.user_agent},
            "lastActiveAt": _iso(client.last_active_at),
        }

    def disconnect(self, connection_id: str) -> bool:
        client = self._clients.get(connection_id)
        if client is None or client.socket is None:
            return False
        client.socket.close()
        return True


def _management_handler(gateway: WebSocketGateway) -> type[BaseHTTPRequestHandler]:
    class ManagementHandler(BaseHTTPRequestHandler):
        # Keep-alive, as boto3's connection pool expects.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            connection_id = self._connection_id()
            if connection_id is None:
                return
            limit = gateway.limits.max_message_bytes
            if len(data) > limit:
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLargeException",
                            f"Message too long: {len(data)} bytes (at most {limit}).")
            elif gateway.post(connection_id, data):
                self._reply(HTTPStatus.OK)
            else:
                self._gone()

        def do_GET(self) -> None:
            connection_id = self._connection_id()
            if connection_id is None:
                return
            info = gateway.info(connection_id)
            if info is None:
                self._gone()
            else:
                self._reply(HTTPStatus.OK, info)

        def do_DELETE(self) -> None:
            connection_id = self._connection_id()
            if connection_id is None:
                return
            if gateway.disconnect(connection_id):
                self._reply(HTTPStatus.NO_CONTENT)
            else:
                self._gone()

        def _connection_id(self) -> str | None:
            """The id from `[/stage]/@connections/{id}` (boto3 quotes its `=`), or None after answering 404."""
            path = urlsplit(self.path).path
            if CONNECTIONS_PATH not in path:
                self._error(HTTPStatus.NOT_FOUND, "NotFoundException", f"No route {path}.")
                return None
            return unquote(path.rsplit(CONNECTIONS_PATH, 1)[1])

        def _gone(self) -> None:
            # boto3 maps `x-amzn-ErrorType` to `client.exceptions.GoneException`.
            self._error(HTTPStatus.GONE, "GoneException", "The connection is not open.")

        def _error(self, status: HTTPStatus, error_type: str, message: str) -> None:
            self._reply(status, {"message": message}, {"x-amzn-ErrorType": error_type})

        def _reply(self, status: HTTPStatus, body: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    return ManagementHandler

