"""`make bench`: the queue lanes under load, end to end, with every figure from one run.

The real handlers run as on AWS, locally: the locked moto server (atomic conditional writes), the Ark simulator
over HTTP, the REST routes (task intake and Ark's callbacks), the SQS event pump (Lambda-shaped records, each
lane at its reserved concurrency) and the scheduler (video poller, sweeper). Figures:

  * images: simulator latency L = 1 s, C = 4, N = 40 submitted at once: max in flight at Ark, makespan
  * videos: 3 s at Ark, C = 3, N = 12: max running at Ark, makespan
  * fairness: user A submits 40 images, then user B one (max_running_per_user set): B's wait after A starts
  * Ark status reads per video task, with callbacks and without
  * DynamoDB and SQS requests per image and per video task (a botocore `before-call` hook), beside the minimum

    python -m scripts.bench                    # every figure
    python -m scripts.bench --quick            # the image scenario and the video one with callbacks: requests per task
    python -m scripts.bench --scaling 40 160   # the scaling series alone, at these N
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from chalicelib.resources import DEFAULT_MODELS, LANES, MEDIA_BUCKET
from chalicelib.settings import get_settings

BENCH_SCHEDULE_S = 1.0
# The sweeper's rate on AWS (`@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweeper")`): the metrics' roll-up's.
SWEEPER_PERIOD_ON_AWS_S = 60.0
BENCH_ORIGIN = "http://127.0.0.1:8080"
SUBMIT_THREADS = 16
ADMIN = ("admin", "bench-admin-pass")
USER_A, USER_B = ("alice", "alice-pass"), ("bob", "bob-pass")
IMAGE_MODEL, VIDEO_MODEL = "seedream-4.5", "seedance-1.0-pro"
UPSTREAM = {model.model_id: model.upstream_model for model in DEFAULT_MODELS}
IMAGE_L_S, IMAGE_C, IMAGE_N = 1.0, 4, 40
VIDEO_T_S, VIDEO_C, VIDEO_N = 3.0, 3, 12
POLL_INTERVAL_WITH_CALLBACKS_S, POLL_INTERVAL_WITHOUT_S = 2.0, 1.0
FAIRNESS_CAP = 3
# The users' task creation rate limit: the largest, far above the scenarios' submissions.
BENCH_REQUESTS_PER_MINUTE = 10_000
# Logins here measure nothing: the cheapest argon2 parameters.
CHEAP_PASSWORD_HASHING = dict(zip(("PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_MEMORY_KIB"), ("1", "1024"), strict=True))
# What one task's lane work needs at the least (derivation in the README's lanes section); intake (auth reads,
# the rate limit's counter, one transaction, one SendMessage) and the sweeper are shown apart. Receive/delete are
# the event source's.
LANE_MINIMUM = {
    "image": {"dynamodb": 6, "sqs": 0},  # get task, get model, acquire, claim, result, release
    # get task, get model, acquire, claim, own Ark's id, submitted; callback: get, end, release
    "video": {"dynamodb": 9, "sqs": 0},
}
# The parts that work for a task of each kind. The video poller runs on its schedule whatever the images do (its
# reads are per run, shown under "all parts"): an image's lane work is its worker's.
# `metrics` is what the batched roll-up costs per finished task (`chalicelib.metrics.rollup`: the marks' reads and
# the transactions that count them, many tasks each), named apart to show what the counters cost, and counted in the
# lane work.
LANE_PARTS = {"image": ("worker", "metrics"), "video": ("worker", "callback", "video_poller", "metrics")}
# The image scenario again at growing backlogs: the cost per task must stay flat (docs/design.md, "Parked tasks").
SCALING_NS = (40, 160, 640)
LANE_CONCURRENCY_IMAGE = next(lane.reserved_concurrency for lane in LANES if lane.name == "image")


# --- AWS request counting ------------------------------------------------------------------------------------


@dataclass
class RequestCounter:
    """Counts every botocore call by (service, who) where `who` is the part of the system that made it."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Estimated capacity units by ("wcu" | "rcu", who): `capacity_units`.
    capacity: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)

    def install(self) -> None:
        import botocore.session

        counter = self
        original = botocore.session.Session.create_client

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-call", counter.on_call)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]

    def on_call(self, model: Any, params: Any = None, **_: Any) -> None:
        service = model.service_model.service_name
        who = self.who(model.name)
        units = capacity_units(model.name, _request_fields(params or {})) if service == "dynamodb" else {}
        with self.lock:
            self.counts[(service, who)] += 1
            for kind, value in units.items():
                self.capacity[(kind, who)] += value

    def who(self, operation: str) -> str:
        tagged = getattr(self.local, "tag", None)
        if tagged:
            return tagged
        thread = threading.current_thread().name
        if operation in ("ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes") or thread.startswith("pump"):
            return "event_source"  # Lambda's event source mapping does these on AWS, not our code
        if thread.startswith("lambda-"):
            return "worker"
        if thread.startswith("schedule-"):
            return thread.removeprefix("schedule-")
        return "api"

    @contextmanager
    def tagged(self, tag: str) -> Iterator[None]:
        outer, self.local.tag = getattr(self.local, "tag", None), tag
        try:
            yield
        finally:
            self.local.tag = outer

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.counts)

    def capacity_snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.capacity)


def _request_fields(request: dict[str, Any]) -> dict[str, Any]:
    """The fields of a DynamoDB call as `before-call` sees it: serialised, in the JSON body of the request."""
    body = request.get("body")
    try:
        fields = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return {}
    return fields if isinstance(fields, dict) else {}


# On-demand capacity of one request, for items up to 1 KB (arkflow's tasks and slot records are that small): a write
# is 1 WCU, a strongly consistent read 1 RCU and an eventually consistent one (a query of an index) 0.5, and a
# transaction 2 units per item (a condition check is 2 read units).
def capacity_units(operation: str, params: dict[str, Any]) -> dict[str, float]:
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return {"wcu": 1.0}
    if operation == "GetItem":
        return {"rcu": 1.0 if params.get("ConsistentRead") else 0.5}
    if operation in ("Query", "Scan"):
        return {"rcu": 1.0 if params.get("ConsistentRead") else 0.5}
    if operation == "TransactWriteItems":
        items = params.get("TransactItems", [])
        checks = sum(1 for item in items if "ConditionCheck" in item)
        return {"wcu": 2.0 * (len(items) - checks), "rcu": 2.0 * checks}
    if operation == "TransactGetItems":
        return {"rcu": 2.0 * len(params.get("TransactItems", []))}
    if operation == "BatchWriteItem":
        return {"wcu": float(sum(len(requests) for requests in params.get("RequestItems", {}).values()))}
    if operation == "BatchGetItem":
        return {"rcu": float(sum(len(keys.get("Keys", [])) for keys in params.get("RequestItems", {}).values()))}
    return {}


# --- the stack -------------------------------------------------------------------------------------------------


@dataclass
class Transitions:
    """Every published transition with its time (the app's own state machine listeners)."""

    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listener(self, task: Any) -> None:
        with self.lock:
            self.seen.setdefault(task.task_id, {}).setdefault(task.status, time.monotonic())

    def at(self, task_id: str, status: str) -> float | None:
        with self.lock:
            return self.seen.get(task_id, {}).get(status)

    def wait_terminal(self, task_ids: list[str], timeout_s: float) -> float:
        """Monotonic time the last of them ended."""
        deadline = time.monotonic() + timeout_s
        terminal = ("succeeded", "failed", "cancelled", "expired")
        while True:
            ends = [next((self.at(task_id, status) for status in terminal if self.at(task_id, status)), None)
                    for task_id in task_ids]
            if all(ends):
                return max(end for end in ends if end)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(1 for end in ends if not end)} tasks did not finish in {timeout_s} s")
            time.sleep(0.02)

    def handoffs(self, task_ids: list[str], concurrency: int) -> list[float]:
        """Seconds from each slot's release to the next start (the k-th end frees the slot of the k+C-th start)."""
        starts = sorted(time for task_id in task_ids if (time := self.at(task_id, "running")))
        ends = sorted(time for task_id in task_ids if (time := self.at(task_id, "succeeded")))
        return [start - end for start, end in zip(starts[concurrency:], ends, strict=False)]

    def durations(self, task_ids: list[str]) -> list[float]:
        """Seconds each task spent running (holding its slot)."""
        return [end - start for task_id in task_ids
                if (start := self.at(task_id, "running")) and (end := self.at(task_id, "succeeded"))]

    def first_start(self, task_ids: list[str]) -> float:
        return min(start for task_id in task_ids if (start := self.at(task_id, "running")))

    def statuses(self, task_ids: list[str]) -> Counter[str]:
        with self.lock:
            return Counter(status for task_id in task_ids for status in self.seen.get(task_id, {})
                           if status not in ("queued", "running"))


class SimulatorProcess:
    """The Ark simulator in its own process, as Ark is to the app (no GIL shared with the workers)."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url
        self.base_url = f"{root_url}/api/v3"
        self._admin = httpx.Client(base_url=f"{root_url}/_sim", timeout=10.0)

    @classmethod
    def start(cls, stack: ExitStack) -> SimulatorProcess:
        from devstack.processes import spawn, wait_until_answers
        from devstack.stack import SIMULATOR_READY_PATH
        from devstack.testing import free_port

        port = free_port()
        settings = {"IMAGE_LATENCY_S": IMAGE_L_S, "VIDEO_QUEUE_S": 0, "VIDEO_RUN_S": VIDEO_T_S,
                    "CALLBACK_RETRY_DELAY_S": 0.2}
        env = {**os.environ, "ARKSIM_HOST": "127.0.0.1", "ARKSIM_PORT": str(port),
               **{f"ARKSIM_{name}": str(value) for name, value in settings.items()}}
        child = spawn("Ark simulator", [sys.executable, "-m", "arksim"], env=env)
        stack.callback(child.stop)
        simulator = cls(f"http://127.0.0.1:{port}")
        wait_until_answers(simulator.root_url + SIMULATOR_READY_PATH, child, 30.0)
        stack.callback(simulator._admin.close)
        return simulator

    def stats(self) -> dict[str, Any]:
        return dict(self._admin.get("/stats").raise_for_status().json())

    def reset(self) -> None:
        self._admin.post("/reset").raise_for_status()


class Bench:
    def __init__(self, stack: ExitStack) -> None:
        from devstack.config import AWS_REGION, FAKE_AWS_CREDENTIALS
        from devstack.moto_server import start_moto_server
        from devstack.testing import free_port
        from devstack.ws_gateway import WebSocketGateway

        self.counter = RequestCounter()
        self.counter.install()
        self.moto = stack.enter_context(start_moto_server())
        # One WebSocket client per user stays connected, so every change pays the publisher's reads as on AWS.
        self.gateway = stack.enter_context(WebSocketGateway("127.0.0.1", 0))
        self.ark = SimulatorProcess.start(stack)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.prefix = f"arkflow-bench-{uuid.uuid4().hex[:6]}"
        os.environ.update(
            {**FAKE_AWS_CREDENTIALS, **CHEAP_PASSWORD_HASHING},
            AWS_ENDPOINT_URL=self.moto.endpoint_url, AWS_DEFAULT_REGION=AWS_REGION, ARKFLOW_PREFIX=self.prefix,
            ARK_BASE_URL=self.ark.base_url, ARK_API_KEY="bench-key", PUBLIC_API_URL=self.api_url,
            VIDEO_POLL_INTERVAL_SECONDS=str(POLL_INTERVAL_WITH_CALLBACKS_S),
            RESULTS_BUCKET=MEDIA_BUCKET.physical_name(self.prefix),
            ARK_RESULT_HOSTS=self.ark.base_url.removesuffix("/api/v3"),  # results are copied from the simulator
            WS_ALLOWED_ORIGINS=BENCH_ORIGIN, **self.gateway.app_environment(),
        )
        for name in ("ADMIN_USERNAME", "ADMIN_PASSWORD"):
            os.environ.pop(name, None)
        self._reconfigure(endpoints_changed=True)

        import boto3
        from chalice.local import ChaliceRequestHandler

        from chalicelib.store import statemachine
        from devstack import bootstrap
        from devstack.demo import create_demo_data
        from devstack.processes import serving_in_thread
        from devstack.pump import pumping
        from devstack.rest import STAGE, load_app, make_rest_server
        from devstack.scheduler import scheduling

        bootstrap.create_all(boto3.session.Session(), self.prefix)
        create_demo_data(admin=ADMIN, accounts=[(*USER_A, "user"), (*USER_B, "user")], default_models=True)
        loaded = load_app()
        # One access-log line per request would bury the figures.
        ChaliceRequestHandler.log_message = lambda *args, **kwargs: None  # type: ignore[method-assign]
        self.transitions = Transitions()
        statemachine.listeners.append(self.transitions.listener)
        self._tag_callbacks()
        stack.enter_context(serving_in_thread(make_rest_server(loaded, "127.0.0.1", self.api_port).server, "rest"))
        self.gateway.start(loaded.app, loaded.config, STAGE)
        self._pumping = lambda: pumping(loaded.app, loaded.config, STAGE, boto3.session.Session().client("sqs"),
                                        AWS_REGION)
        stack.enter_context(scheduling(loaded.app, loaded.config, STAGE, BENCH_SCHEDULE_S, AWS_REGION))
        self.http = httpx.Client(base_url=self.api_url, timeout=30.0)
        stack.callback(self.http.close)
        self.tokens = {user[0]: self._login(user) for user in (ADMIN, USER_A, USER_B)}
        for user in (USER_A, USER_B):  # a scenario submits hundreds of tasks within seconds
            self.configure_user(user, requests_per_minute=BENCH_REQUESTS_PER_MINUTE)
        for user in (USER_A, USER_B):
            self._watch(stack, user)

    def _watch(self, stack: ExitStack, user: tuple[str, str]) -> None:
        """Connect a WebSocket client for `user` and read (and drop) what it is sent, as a browser tab would."""
        from websockets.sync.client import connect

        ticket = self.http.post("/api/ws/ticket", headers={"Authorization": f"Bearer {self.tokens[user[0]]}"})
        socket = stack.enter_context(connect(ticket.raise_for_status().json()["url"], origin=BENCH_ORIGIN,
                                             open_timeout=10))

        def read() -> None:
            try:
                for _ in socket:
                    pass
            except Exception:  # the socket closes when the bench ends
                return

        threading.Thread(target=read, name=f"ws-client-{user[0]}", daemon=True).start()

    @staticmethod
    def _reconfigure(endpoints_changed: bool = False) -> None:
        """Settings from the environment again; workers and services are rebuilt and warmed before use (with new
        endpoints, as a new container: nothing cached is kept)."""
        from chalicelib import wiring
        from chalicelib.settings import reload_settings

        if endpoints_changed:
            wiring.new_container()
        else:
            reload_settings()
            wiring.install(None)
        services = wiring.current()
        for lane in LANES:
            services.lane_worker(lane.name)  # builds its HTTP and AWS clients now, not inside a measured run
        _ = services.video_status

    def _tag_callbacks(self) -> None:
        """Ark's callbacks are served by the REST threads: name them apart from task intake."""
        from chalicelib.video.status import VideoStatus

        original = VideoStatus.on_callback
        counter = self.counter

        def on_callback(service: Any, *args: Any, **kwargs: Any) -> Any:
            with counter.tagged("callback"):
                return original(service, *args, **kwargs)

        VideoStatus.on_callback = on_callback  # type: ignore[method-assign]

        from chalicelib.live import LiveUpdates

        original_publish = LiveUpdates.publish

        def publish(publisher: Any, *args: Any, **kwargs: Any) -> Any:
            with counter.tagged("publisher"):
                return original_publish(publisher, *args, **kwargs)

        LiveUpdates.publish = publish  # type: ignore[method-assign]

        from chalicelib.metrics import rollup

        # The metrics' roll-up runs in the sweeper, on its schedule: a minute on AWS, a second here. Run each second
        # it would read the marks twice as often as the tasks end and cost many times what it costs on AWS, so it
        # runs here at the sweeper's rate on AWS, and once more at the end of each scenario (`roll_up`), whose
        # requests are the `metrics` part of the lane work, spread over the scenario's tasks.
        applying = rollup.apply_due
        last_run = [-math.inf]

        def roll_up() -> Any:
            with counter.tagged("metrics"):
                last_run[0] = time.monotonic()
                return applying()

        def scheduled_roll_up(*args: Any, **kwargs: Any) -> Any:
            if time.monotonic() - last_run[0] < SWEEPER_PERIOD_ON_AWS_S:
                return rollup.RollupReport()
            return roll_up()

        rollup.apply_due = scheduled_roll_up  # type: ignore[assignment]
        self.roll_up: Callable[[], Any] = roll_up

    def _login(self, user: tuple[str, str]) -> str:
        response = self.http.post("/api/users/login", json={"username": user[0], "password": user[1]})
        response.raise_for_status()
        return response.json()["token"]

    def configure_user(self, user: tuple[str, str], **changes: Any) -> None:
        response = self.http.put(f"/api/admin/users/{user[0]}", json=changes,
                                 headers={"Authorization": f"Bearer {self.tokens[ADMIN[0]]}"})
        response.raise_for_status()

    def configure_model(self, model_id: str, **changes: Any) -> None:
        response = self.http.put(f"/api/admin/models/{model_id}", json=changes,
                                 headers={"Authorization": f"Bearer {self.tokens[ADMIN[0]]}"})
        response.raise_for_status()

    def submit(self, user: tuple[str, str], bodies: list[dict[str, Any]]) -> list[str]:
        headers = {"Authorization": f"Bearer {self.tokens[user[0]]}"}

        def post(body: dict[str, Any]) -> str:
            response = self.http.post("/api/tasks", json=body, headers=headers)
            response.raise_for_status()
            return str(response.json()["id"])

        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            return list(pool.map(post, bodies))

    @contextmanager
    def lanes_running(self) -> Iterator[float]:
        """The lanes' event pump, started on tasks already queued; yields the (monotonic) start time."""
        with self._pumping():
            yield time.monotonic()

    def quiet(self) -> None:
        """Wait until no lane message is left, so one scenario's stragglers never count in the next."""
        from chalicelib import aws, queues

        deadline = time.monotonic() + 60
        for lane in LANES:
            url = queues.queue_url(aws.sqs(), lane.name)
            while time.monotonic() < deadline:
                attributes = aws.sqs().get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                  "ApproximateNumberOfMessagesNotVisible",
                                                  "ApproximateNumberOfMessagesDelayed"])["Attributes"]
                if not any(int(value) for value in attributes.values()):
                    break
                time.sleep(0.2)
        self.ark.reset()


# --- scenarios -------------------------------------------------------------------------------------------------


def image_body(index: int) -> dict[str, Any]:
    return {"type": "image", "model_id": IMAGE_MODEL, "prompt": f"bench image {index}"}


def video_body(index: int) -> dict[str, Any]:
    return {"type": "video", "model_id": VIDEO_MODEL, "prompt": f"bench video {index}", "params": {"duration": 2}}


def per_task(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], tasks: int) -> dict[str, Any]:
    delta = after - before
    table: dict[str, dict[str, float]] = {}
    for (service, who), count in delta.items():
        table.setdefault(service, {})[who] = round(count / tasks, 2)
    return table


def run_images(bench: Bench, n: int = IMAGE_N) -> dict[str, Any]:
    bench.configure_model(IMAGE_MODEL, concurrency=IMAGE_C, max_running_per_user=None)
    before, capacity_before = bench.counter.snapshot(), bench.counter.capacity_snapshot()
    ids = bench.submit(USER_A, [image_body(index) for index in range(n)])
    with bench.lanes_running() as started:
        finished = bench.transitions.wait_terminal(ids, timeout_s=120 + 2 * n * IMAGE_L_S / IMAGE_C)
    rolled = bench.roll_up().applied
    stats = bench.ark.stats()
    requests = per_task(before, bench.counter.snapshot(), n)
    ideal = math.ceil(n / IMAGE_C) * IMAGE_L_S
    return {
        "n": n,
        "capacity": per_task(capacity_before, bench.counter.capacity_snapshot(), n),
        "outcomes": dict(bench.transitions.statuses(ids)),
        "max_in_flight": stats["max_in_flight"].get(UPSTREAM[IMAGE_MODEL]),
        "ark_calls": sum(stats["calls"].get("images.generate", {}).values()),
        "makespan_s": finished - started,
        "ideal_s": ideal,
        "handoffs": bench.transitions.handoffs(ids, IMAGE_C),
        "running": bench.transitions.durations(ids),
        "first_start_s": bench.transitions.first_start(ids) - started,
        "requests": requests,
        "rolled_up_at_the_end": rolled,
    }


def run_videos(bench: Bench, n: int, callbacks: bool) -> dict[str, Any]:
    poll_interval = POLL_INTERVAL_WITH_CALLBACKS_S if callbacks else POLL_INTERVAL_WITHOUT_S
    os.environ.update(PUBLIC_API_URL=bench.api_url if callbacks else "",
                      VIDEO_POLL_INTERVAL_SECONDS=str(poll_interval))
    bench._reconfigure()
    safety_interval = get_settings().poll_interval_with_callbacks_s
    bench.configure_model(VIDEO_MODEL, concurrency=VIDEO_C)
    before = bench.counter.snapshot()
    ids = bench.submit(USER_A, [video_body(index) for index in range(n)])
    with bench.lanes_running() as started:
        finished = bench.transitions.wait_terminal(ids, timeout_s=180)
    rolled = bench.roll_up().applied
    stats = bench.ark.stats()
    ideal = math.ceil(n / VIDEO_C) * VIDEO_T_S
    return {
        "outcomes": dict(bench.transitions.statuses(ids)),
        "max_running": stats["max_running"].get(UPSTREAM[VIDEO_MODEL]),
        "creates": sum(stats["calls"].get("tasks.create", {}).values()),
        "status_reads_per_task": sum(stats["calls"].get("tasks.get", {}).values()) / n,
        # With callbacks: the terminal callback's read, a poll due before the running callback arrived, and the
        # safety net's polls after it (the interval of a video whose callbacks arrive, as in production).
        "read_bound": 2 + math.floor(VIDEO_T_S / safety_interval) if callbacks
        else math.ceil(VIDEO_T_S / poll_interval) + 1,
        "poll_interval_s": poll_interval,
        "safety_interval_s": safety_interval,
        "makespan_s": finished - started,
        "ideal_s": ideal,
        "handoffs": bench.transitions.handoffs(ids, VIDEO_C),
        "running": bench.transitions.durations(ids),
        "first_start_s": bench.transitions.first_start(ids) - started,
        "requests": per_task(before, bench.counter.snapshot(), n),
        "rolled_up_at_the_end": rolled,
    }


def run_fairness(bench: Bench) -> dict[str, Any]:
    bench.configure_model(IMAGE_MODEL, concurrency=IMAGE_C, max_running_per_user=FAIRNESS_CAP)
    a_ids = bench.submit(USER_A, [image_body(index) for index in range(IMAGE_N)])
    (b_id,) = bench.submit(USER_B, [image_body(999)])
    with bench.lanes_running():
        bench.transitions.wait_terminal([*a_ids, b_id], timeout_s=180)
    bench.roll_up()  # its tasks' counts are not the next scenario's
    first_a_start = bench.transitions.first_start(a_ids)
    b_start = bench.transitions.at(b_id, "running") or math.inf
    return {"b_wait_after_a_started_s": b_start - first_a_start, "bound_s": 2 * IMAGE_L_S,
            "max_running_per_user": FAIRNESS_CAP}


# --- report ----------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"median {ordered[len(ordered) // 2]:.2f}s, max {ordered[-1]:.2f}s"


def check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def lane_share(parts: dict[str, float], *extra: str, kind: str = "image") -> float:
    return sum(count for who, count in parts.items() if who in (*LANE_PARTS[kind], *extra))


def scaling_line(run: dict[str, Any]) -> str:
    dynamodb, capacity = run["requests"].get("dynamodb", {}), run["capacity"]
    return (f"scaling images N={run['n']} C={IMAGE_C} L={IMAGE_L_S:g}s: makespan "
            f"{run['makespan_s'] / run['ideal_s']:.3f} x ideal, dynamodb {lane_share(dynamodb):.2f} per task "
            f"(lane work), {lane_share(dynamodb, 'publisher'):.2f} with publisher, capacity "
            f"{lane_share(capacity.get('wcu', {}), 'publisher'):.2f} WCU "
            f"{lane_share(capacity.get('rcu', {}), 'publisher'):.2f} RCU per task, sqs "
            f"{lane_share(run['requests'].get('sqs', {})):.2f} per task, max in flight {run['max_in_flight']}")


def requests_lines(kind: str, requests: dict[str, Any]) -> list[str]:
    lines = []
    for service in ("dynamodb", "sqs"):
        parts = requests.get(service, {})
        lane = lane_share(parts, kind=kind)
        detail = ", ".join(f"{who} {count:g}" for who, count in sorted(parts.items()))
        lines.append(f"  {kind} task, {service}: lane work {lane:.2f} (design minimum {LANE_MINIMUM[kind][service]})"
                     f"; all parts [{detail}]")
    return lines


def quick(bench: Bench) -> list[str]:
    """The image scenario and the video one with callbacks, for their requests per task (a minute's run)."""
    images = run_images(bench)
    bench.quiet()
    videos = run_videos(bench, VIDEO_N, callbacks=True)
    return ["", f"images N={IMAGE_N}: outcomes {images['outcomes']}; videos N={VIDEO_N} (callbacks on): outcomes "
            f"{videos['outcomes']}; counted by the roll-up at the end: {images['rolled_up_at_the_end']} images, "
            f"{videos['rolled_up_at_the_end']} videos",
            *requests_lines("image", images["requests"]), *requests_lines("video", videos["requests"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the image scenario and the video one with callbacks (requests per task)")
    parser.add_argument("--scaling", type=int, nargs="+", metavar="N",
                        help="run only the scaling series, at these N (the whole run: 40 160 640)")
    arguments = parser.parse_args(argv)
    if arguments.scaling:
        return scaling_only(arguments.scaling)
    with ExitStack() as stack:
        print("starting moto (locked per service), the Ark simulator, REST routes, SQS pump and scheduler ...",
              flush=True)
        bench = Bench(stack)
        if arguments.quick:
            print("\n".join(quick(bench)))
            return 0
        images = run_images(bench)
        bench.quiet()
        videos = run_videos(bench, VIDEO_N, callbacks=True)
        bench.quiet()
        polled = run_videos(bench, 6, callbacks=False)
        bench.quiet()
        os.environ["PUBLIC_API_URL"] = bench.api_url
        bench._reconfigure()
        fairness = run_fairness(bench)
        scaling = []
        for n in SCALING_NS:
            bench.quiet()
            scaling.append(run_images(bench, n))

    image_ratio = images["makespan_s"] / images["ideal_s"]
    video_ratio = videos["makespan_s"] / videos["ideal_s"]
    lines = [
        "",
        f"images  L={IMAGE_L_S:g}s C={IMAGE_C} N={IMAGE_N}: outcomes {images['outcomes']}, "
        f"Ark calls {images['ark_calls']}",
        f"  max in flight at Ark {images['max_in_flight']} (must equal C={IMAGE_C}: "
        f"{check(images['max_in_flight'] == IMAGE_C)})",
        f"  makespan {images['makespan_s']:.2f}s = {image_ratio:.3f} x ceil(N/C)*L={images['ideal_s']:g}s "
        f"(bound 1.25: {check(image_ratio <= 1.25)})",
        f"  (all {IMAGE_N} queued when the lane's workers start; makespan from then to the last end)",
        f"  first start {images['first_start_s']:.2f}s after the workers started; running (slot held) "
        f"{spread(images['running'])}; slot released -> next task running: {spread(images['handoffs'])}",
        f"videos  T={VIDEO_T_S:g}s C={VIDEO_C} N={VIDEO_N} (callbacks on): outcomes {videos['outcomes']}, "
        f"creates {videos['creates']}",
        f"  max running at Ark {videos['max_running']} (must equal C={VIDEO_C}: "
        f"{check(videos['max_running'] == VIDEO_C)})",
        f"  makespan {videos['makespan_s']:.2f}s = {video_ratio:.3f} x ceil(N/C)*T={videos['ideal_s']:g}s "
        f"(bound 1.25: {check(video_ratio <= 1.25)})",
        f"  first start {videos['first_start_s']:.2f}s after the workers started; running (slot held) "
        f"{spread(videos['running'])}; slot released -> next task running: {spread(videos['handoffs'])}",
        f"fairness: B's task started {fairness['b_wait_after_a_started_s']:.2f}s after A's first "
        f"(bound 2L={fairness['bound_s']:g}s, max_running_per_user={FAIRNESS_CAP}: "
        f"{check(fairness['b_wait_after_a_started_s'] <= fairness['bound_s'])})",
        f"Ark status reads per video task: {videos['status_reads_per_task']:.2f} with callbacks "
        f"(poll interval {videos['poll_interval_s']:g}s, {videos['safety_interval_s']:g}s once callbacks arrive; "
        f"bound 2+floor(T/{videos['safety_interval_s']:g}s)={videos['read_bound']}: "
        f"{check(videos['status_reads_per_task'] <= videos['read_bound'])}), "
        f"{polled['status_reads_per_task']:.2f} without (poll interval {polled['poll_interval_s']:g}s, "
        f"T={VIDEO_T_S:g}s; bound ceil(T/interval)+1={polled['read_bound']}: "
        f"{check(polled['status_reads_per_task'] <= polled['read_bound'])})",
        "AWS requests per task (botocore before-call hook). api = intake (auth reads, the rate limit's counter, one"
        " transaction, one send);"
        " event_source = Lambda's own receive/delete; sweeper = per-run cost, spread over the tasks; metrics = the"
        " batched roll-up at the sweeper's rate on AWS and once at each scenario's end (in the lane work):",
        *requests_lines("image", images["requests"]),
        *requests_lines("video", videos["requests"]),
        "  video task without callbacks (polled):",
        *requests_lines("video", polled["requests"]),
        f"scaling series (lane concurrency {LANE_CONCURRENCY_IMAGE} as deployed; capacity estimated for items up to "
        "1 KB; lane work = worker, callbacks, poller; sqs = ours, not the event source's):",
        *(scaling_line(run) for run in scaling),
    ]
    print("\n".join(lines))
    return 0


def scaling_only(ns: list[int]) -> int:
    """The scaling series alone (a quicker look at the makespan and the requests per task)."""
    with ExitStack() as stack:
        bench = Bench(stack)
        os.environ["PUBLIC_API_URL"] = bench.api_url
        bench._reconfigure()
        lines = []
        for n in ns:
            bench.quiet()
            run = run_images(bench, n)
            lines += [scaling_line(run), f"  outcomes {run['outcomes']}, Ark calls {run['ark_calls']}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
