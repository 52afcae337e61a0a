"""`make run`: the whole local stack in the foreground, until SIGINT/SIGTERM.

Order: simulator process (starts in the background), moto, WebSocket gateway's sockets, environment,
tables/queues/bucket, demo data, REST routes, web app, then (once the simulator answers) the SQS event pump
and the scheduler; ready once `GET /api/health` is 200. Each piece registers its own clean-up on one
ExitStack, undone in reverse order on SIGINT/SIGTERM: a new piece is one more `running.enter_context(...)`.
With `ARKFLOW_MOTO_URL` set, the stack uses that moto server instead of starting one, so the app and its
workers can be restarted over the same tables and queues.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType

import boto3
from botocore.config import Config as BotoConfig

from chalicelib.settings import reload_settings
from devstack import bootstrap
from devstack.config import AWS_REGION, StackConfig
from devstack.moto_server import start_moto_server
from devstack.processes import ChildProcess, die_with_parent, serving_in_thread, spawn, wait_until_answers
from devstack.pump import SqsSubscription, pumping
from devstack.rest import STAGE, load_app, make_rest_server
from devstack.scheduler import scheduled_function_names, scheduling
from devstack.webapp import make_web_server
from devstack.ws_gateway import WebSocketGateway

logger = logging.getLogger("devstack")
HEALTH_PATH = "/api/health"
SIMULATOR_READY_PATH = "/_sim/config"
_WATCH_INTERVAL_S = 0.5
# Every lane's pollers, deletes and handlers share one client.
_SQS_CONNECTIONS = 50


class StackError(Exception):
    """The stack cannot start; the message says what to change."""


class StopRequested(BaseException):
    """SIGINT/SIGTERM arrived; a BaseException so no `except Exception` on the way swallows it."""


def _request_stop(signum: int, frame: FrameType | None) -> None:
    # Ignore repeats: the clean-up that follows must not itself be interrupted.
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, signal.SIG_IGN)
    raise StopRequested(signal.Signals(signum).name)


def _check_ports_free(config: StackConfig) -> None:
    wanted = [
        ("ARKFLOW_API_PORT", config.host, config.api_port),
        ("ARKFLOW_WS_PORT", config.host, config.ws_port),
        ("ARKFLOW_WEB_PORT", config.host, config.web_port),
    ]
    if not config.moto_url:
        wanted.append(("MOTO_PORT", config.host, config.moto_port))
    if config.uses_simulator:
        wanted.append(("ARKSIM_PORT", config.sim_host, config.sim_port))
    for setting, host, port in wanted:
        try:
            socket.create_server((host, port)).close()
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise StackError(f"{host}:{port} is in use; choose another port with {setting}=...") from None


def _start_simulator(config: StackConfig) -> ChildProcess:
    env = {**os.environ, "ARKSIM_HOST": config.sim_host, "ARKSIM_PORT": str(config.sim_port)}
    return spawn("Ark simulator", [sys.executable, "-m", "arksim"], env=env)


def _seed_demo_data(config: StackConfig) -> None:
    from devstack.demo import create_demo_data  # reads settings: import once the environment points at moto

    create_demo_data(
        admin=(config.admin.username, config.admin.password),
        accounts=[config.demo],
        default_models=True,
    )


@dataclass(frozen=True)
class RunningStack:
    moto_url: str
    children: list[ChildProcess]
    servers: list[threading.Thread]
    subscriptions: list[SqsSubscription]
    scheduled: list[str]


def start(config: StackConfig, running: ExitStack) -> RunningStack:
    """Start every piece, registering its clean-up on `running` (undone in reverse order)."""
    _check_ports_free(config)
    children: list[ChildProcess] = []
    simulator = None
    if config.uses_simulator:
        simulator = _start_simulator(config)
        running.callback(simulator.stop)
        children.append(simulator)

    moto_url = config.moto_url
    if not moto_url:
        moto = running.enter_context(start_moto_server(config.moto_port, config.host))
        children.append(moto.process)
        moto_url = moto.endpoint_url
    logger.info("moto answers at %s", moto_url)

    # A service-specific endpoint (AWS_ENDPOINT_URL_DYNAMODB, ...) would win over moto's.
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")]:
        del os.environ[name]
    # Bound before the app reads its settings: they carry the gateway's URLs (@connections is on a free port).
    gateway = running.enter_context(WebSocketGateway(config.host, config.ws_port))
    os.environ.update({**config.app_environment(moto_url), **gateway.app_environment()})
    reload_settings()
    bootstrap.create_all(boto3.session.Session(), config.prefix)
    _seed_demo_data(config)
    logger.info("tables, queues, bucket and demo data ready (prefix %s)", config.prefix)

    loaded = load_app()
    gateway.start(loaded.app, loaded.config, STAGE)
    rest_server = make_rest_server(loaded, config.host, config.api_port).server
    # Browsers post uploads straight to the bucket: moto, here.
    web_server = make_web_server(config.host, config.web_port, {**config.web_client_config(), "uploadUrl": moto_url})
    servers = [
        running.enter_context(serving_in_thread(rest_server, "REST API")),
        running.enter_context(serving_in_thread(web_server, "web app")),
    ]

    try:
        if simulator is not None:
            wait_until_answers(
                config.sim_url + SIMULATOR_READY_PATH,
                simulator,
                config.startup_timeout_s,
                lambda response: response.is_success,
            )
        # Workers and schedules start once Ark (simulated or not) can take their calls.
        sqs = boto3.session.Session().client("sqs", config=BotoConfig(max_pool_connections=_SQS_CONNECTIONS))
        pump = running.enter_context(pumping(loaded.app, loaded.config, STAGE, sqs, AWS_REGION))
        running.enter_context(
            scheduling(loaded.app, loaded.config, STAGE, config.schedule_interval_s, AWS_REGION)
        )
        wait_until_answers(
            config.api_url + HEALTH_PATH,
            None,
            config.startup_timeout_s,
            lambda response: response.status_code == 200,
        )
    except (TimeoutError, RuntimeError) as error:
        raise StackError(str(error)) from error
    return RunningStack(
        moto_url, children, servers, pump.subscriptions, scheduled_function_names(loaded.app)
    )


def banner(config: StackConfig, stack: RunningStack) -> str:
    workers = ", ".join(
        f"{subscription.function_name} <- {subscription.queue_name} (up to {subscription.concurrency} at once)"
        for subscription in stack.subscriptions
    )
    schedules = ", ".join(stack.scheduled)
    if schedules:
        schedules += f" (each every {config.schedule_interval_s:g} s)"
    ark = f"{config.ark_base_url}  (simulator; admin API at {config.sim_url}/_sim)"
    if not config.uses_simulator:
        ark = f"{config.ark_base_url}  (real Ark: ARK_API_KEY is set)"
    return "\n".join(
        [
            "arkflow local stack is ready",
            f"  REST API       {config.api_url}  (health: {config.api_url}{HEALTH_PATH})",
            f"  Web app        {config.web_url}",
            f"  WebSocket      {config.ws_url}  (connect with a ticket from POST /api/ws/ticket)",
            f"  Ark            {ark}",
            f"  AWS (moto)     {stack.moto_url}  (resource prefix {config.prefix})",
            f"  SQS workers    {workers or 'none defined'}",
            f"  Schedules      {schedules or 'none defined'}",
            f"  Admin login    {config.admin.username} / {config.admin.password}",
            f"  Demo login     {config.demo.username} / {config.demo.password}",
            "Press Ctrl-C to stop.",
        ]
    )


def _watch(stack: RunningStack) -> int:
    """Block until a child process or server thread dies (the stack is broken: exit 1) or a signal stops us."""
    while True:
        dead = [child.name for child in stack.children if child.has_exited()]
        dead += [server.name for server in stack.servers if not server.is_alive()]
        if dead:
            logger.error("%s stopped unexpectedly; stopping the stack", ", ".join(dead))
            return 1
        time.sleep(_WATCH_INTERVAL_S)


def main() -> int:
    # Our own progress at INFO; libraries (boto, httpx) only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    # Without a terminal stdout is a pipe or file; the banner must still appear at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    # `make run` does not pass SIGTERM on to us: stop cleanly when make itself is gone.
    die_with_parent()
    config = StackConfig.from_environ()
    try:
        with ExitStack() as running:
            try:
                stack = start(config, running)
                print(banner(config, stack))
                return _watch(stack)
            except StopRequested as stop:
                logger.info("%s received; stopping", stop)
                return 0
    except StackError as error:
        print(f"arkflow local stack could not start: {error}", file=sys.stderr)
        return 1
