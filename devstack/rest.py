"""The Chalice app's HTTP routes, served the way `chalice local` serves them (threaded, same authorizers/CORS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.deploy.validate import validate_routes
from chalice.local import LocalDevServer, ThreadedHTTPServer

from devstack.processes import REPO_ROOT

STAGE = "dev"


@dataclass(frozen=True)
class LoadedApp:
    factory: CLIFactory
    config: Config

    @property
    def app(self) -> Chalice:
        return self.config.chalice_app


def load_app(project_dir: Path = REPO_ROOT, stage: str = STAGE) -> LoadedApp:
    """Import `app.py` with the stage's environment variables applied to this process, as `chalice local` does."""
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    # Rejects routes `chalice deploy` would reject, so they fail here and not at deploy time.
    validate_routes(config.chalice_app.routes)
    return LoadedApp(factory, config)


def make_rest_server(loaded: LoadedApp, host: str, port: int) -> LocalDevServer:
    """Bound and listening; `.server` is its threaded HTTP server (parallel requests run in parallel)."""
    # socketserver's default backlog of 5 resets connections under a burst of parallel clients.
    ThreadedHTTPServer.request_queue_size = 256
    return loaded.factory.create_local_server(loaded.app, loaded.config, host, port)
