"""The web app's static files, plus a `/config.json` telling them where this stack's API and WebSocket are."""

from __future__ import annotations

import json
import logging
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.processes import REPO_ROOT

WEB_ROOT = REPO_ROOT / "web"
CLIENT_CONFIG_PATH = "/config.json"
logger = logging.getLogger(__name__)


class WebAppHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, client_config: bytes, **kwargs: Any) -> None:
        self.client_config = client_config
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
        WebAppHandler, client_config=json.dumps(client_config).encode(), directory=str(web_root)
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
