"""The web app's static files, plus a `/config.json` telling them where this stack's API and WebSocket are, served
with the Content-Security-Policy the app is built for (`content_security_policy`; web/README.md says what a
deployed host must send)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.processes import REPO_ROOT

WEB_ROOT = REPO_ROOT / "web"
CLIENT_CONFIG_PATH = "/config.json"
logger = logging.getLogger(__name__)


# Where the app may connect besides its own origin: the REST API, the WebSocket and the bucket uploads are posted to.
CONNECT_ORIGIN_KEYS = ("apiBaseUrl", "wsUrl", "uploadUrl")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(client_config: Mapping[str, str]) -> str:
    """No script but the app's own files (none inline, no eval), no plugins, no framing, and connections only to
    the origins its configuration names. Images and videos come from wherever results and reference links live."""
    connect = ["'self'", *dict.fromkeys(_origin(client_config[key]) for key in CONNECT_ORIGIN_KEYS
                                        if client_config.get(key))]
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src * data: blob:",
        "media-src * blob:",
        f"connect-src {' '.join(connect)}",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


class WebAppHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, client_config: bytes, security_policy: str, **kwargs: Any) -> None:
        self.client_config = client_config
        self.security_policy = security_policy
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self._serves_client_config():
            self._send_client_config(with_body=True)
        else:
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._serves_client_config():
            self._send_client_config(with_body=False)
        else:
            super().do_HEAD()

    def end_headers(self) -> None:
        # Edits to web/ show up on the next reload.
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", self.security_policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("web %s - %s", self.address_string(), format % args)

    def _serves_client_config(self) -> bool:
        return self.path.split("?", 1)[0] == CLIENT_CONFIG_PATH

    def _send_client_config(self, with_body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.client_config)))
        self.end_headers()
        if with_body:
            self.wfile.write(self.client_config)


def make_web_server(
    host: str, port: int, client_config: dict[str, str], web_root: Path = WEB_ROOT
) -> ThreadingHTTPServer:
    """Bound and listening; run `serve_forever()` in a thread, `shutdown()` from another."""
    handler = partial(
        WebAppHandler, client_config=json.dumps(client_config).encode(),
        security_policy=content_security_policy(client_config), directory=str(web_root),
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
