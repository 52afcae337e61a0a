"""The whole lifecycle in one process, for the model: in-process moto, the Chalice app through its test client, the
lane workers, the poller and the sweeper, and the Ark simulator, all on one clock that only the model moves.

`Environment` is made once per test (moto, tables, seeded users, logins: the slow part) and hands out a fresh
`World` per Hypothesis example: the tables are put back as seeded, the queues and the bucket emptied, and a new
simulator and clock made. The code under test is the deployed code, wired as `app.py` wires it; the test seams are
those it already has (clients, settings and clocks it takes), plus patches of process-wide singletons:
`chalicelib.clock.SYSTEM_CLOCK.now` (what the routes read), moto's SQS clock (visibility timeouts follow the
model's clock), the container's wiring (`chalicelib.wiring.install`: the routes use the world's services), and
`ids.new_task_id` (ids in a fixed order, so an example replays exactly).

What the model checks is read straight from moto's in-memory tables (`Tables`): no DynamoDB call of its own, so
the faults it injects and the system's operation counts see only the system's own calls.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.sqs.models import sqs_backends

import arksim.video
from arksim.clock import SimClock
from arksim.config import SimConfig
from arksim.simulator import Simulator
from chalicelib import aws, ids, queues, wiring
from chalicelib.ark import client as ark_client
from chalicelib.ark import deadline as ark_deadline
from chalicelib.ark.client import VIDEO_TIMEOUT, VolcImageClient, VolcVideoClient
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.lanes import images as lane_images
from chalicelib.lanes import worker as lane_worker
from chalicelib.lanes.waits import Waker
from chalicelib.media.downloads import Downloads, ResultHosts
from chalicelib.resources import LANES, MEDIA_BUCKET, lane_named
from chalicelib.settings import Settings, get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.records import ModelRecord, QuotaRecord, SlotRecord, TaskRecord
from chalicelib.wiring import Wiring
from tests.api_client import Api
from tests.conftest import reconfigure
from tests.factories import ADMIN, DEMO, OTHER
from tests.lifecycle.faults import Actor, ArkDoor, ArkObserver, Fault, Stage, dynamodb_faults

# 2026-01-01T00:00:00.250Z: a start with a fraction of a second, as any real clock has.
T0 = 1_767_225_600.25
ARK_ROOT_URL = "http://ark.test"
ARK_BASE_URL = f"{ARK_ROOT_URL}/api/v3"
ARK_KEY = "sk-lifecycle"
PUBLIC_API_URL = "https://api.arkflow.test"
IMAGE_MODEL, VIDEO_MODEL = "seedream-4.5", "seedance-1.0-pro"
PASSWORDS = dict([ADMIN, DEMO, OTHER])
# Each function's timeout (`.chalice/config.json`): a run stalled past it is killed.
TIMEOUTS = {"worker": float(lane_named("image").lambda_timeout_s), "poller": 60.0, "sweeper": 60.0, "api": 28.0,
            "operator": 28.0}
# A call held at Ark answers before its client would give up: an image worker's read timeout is minutes, a video
# call's seconds (`chalicelib.ark.client.VIDEO_TIMEOUT`).
IMAGE_CALL_ANSWERS_WITHIN_S = TIMEOUTS["worker"] / 2
VIDEO_CALL_ANSWERS_WITHIN_S = float(VIDEO_TIMEOUT.read or 0) - 2
POLLER_BUDGET_S = 30.0
# A drain round moves the clock past the lanes' visibility timeout, so crashed deliveries come back each round.
DRAIN_STEP_S = float(max(lane.visibility_timeout_s for lane in LANES) + 1)
DRAIN_ROUNDS = 12
DRAIN_DELIVERIES_PER_ROUND = 200


class SharedClock(SimClock, Clock):
    """One frozen clock for the app, the simulator and moto's queues; only the model moves it."""

    def __init__(self, start: float = T0) -> None:
        super().__init__(frozen_at=start)


class Observer(ArkObserver, Protocol):
    """What the model hears from the harness besides Ark's door, on the acting thread."""

    def transition(self, task: TaskRecord) -> None: ...

    def acquiring(self, model_id: str, task_id: str, concurrency: int, user_id: str | None,
                  user_cap: int | None) -> Callable[[bool], None]: ...

    def releasing(self, model_id: str, task_id: str) -> None: ...

    def ark_changed(self, changes: list[arksim.video.StatusChange]) -> None: ...

    def actor_done(self, actor: Actor) -> None: ...


# --- reading moto's state -----------------------------------------------------------------------------------------


class Tables:
    """arkflow's tables as moto holds them in memory: read without a DynamoDB call, and put back per example."""

    def __init__(self, settings: Settings) -> None:
        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][settings.region]
        self._snapshot: dict[str, Any] = {}

    def _items(self, model: type[Any]) -> Iterator[Any]:
        for item in self._backend.get_table(model.Meta.table_name).all_items():
            yield model.from_raw_data(item.to_json()["Attributes"])

    def tasks(self) -> dict[str, TaskRecord]:
        return {task.task_id: task for task in self._items(TaskRecord)}

    def slot_records(self) -> dict[str, SlotRecord]:
        return {record.model_id: record for record in self._items(SlotRecord)}

    def holders(self, slot_key: str) -> dict[str, int]:
        record = self.slot_records().get(slot_key)
        return dict(record.holders.as_dict()) if record is not None and record.holders is not None else {}

    def quota_used(self) -> dict[str, int]:
        return {record.quota_key: int(record.used or 0) for record in self._items(QuotaRecord)}

    def models(self) -> dict[str, ModelRecord]:
        return {model.model_id: model for model in self._items(ModelRecord)}

    def snapshot(self) -> None:
        self._snapshot = {name: copy.deepcopy(table.items) for name, table in self._backend.tables.items()}

    def restore(self) -> None:
        for name, items in self._snapshot.items():
            self._backend.tables[name].items = copy.deepcopy(items)


# --- one example's world -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A lane message as Lambda hands it to the handler (kept, so that it can be delivered again later)."""

    lane: str
    record: dict[str, Any]

    @property
    def task_id(self) -> str:
        return json.loads(self.record["body"])["task_id"]

    def __repr__(self) -> str:
        count = self.record["attributes"].get("ApproximateReceiveCount")
        return f"Delivery({self.lane}, {self.task_id}, receive {count})"


class World:
    """One example: a fresh simulator and clock over the environment's tables, and the functions that act."""

    def __init__(self, env: Environment, observer: Observer) -> None:
        self.env = env
        self.api = env.api
        self.tables = env.tables
        self.stage = env.stage
        self.observer = observer
        self.settings = get_settings()
        self.clock = SharedClock()
        self.sim = Simulator(SimConfig(image_latency_s=0.0, video_queue_s=2.0, video_run_s=60.0,
                                       video_max_running=2, callback_retries=0), self.clock)
        self.sim.random.seed(0)
        self.door = ArkDoor(self.sim, self.stage, observer)
        http = httpx.Client(transport=self.door)
        # Results are fetched from the simulator's media URLs, through the same door (not Ark API calls).
        self.downloads = Downloads(ResultHosts(self.settings.ark_result_hosts), transport_for=lambda _: self.door)
        self.images = VolcImageClient(ARK_BASE_URL, ARK_KEY, http=http)
        self.videos = VolcVideoClient(ARK_BASE_URL, ARK_KEY, http=http)
        self.sqs, self.s3 = aws.sqs(), aws.s3()
        # The app's services as a container wires them, on the model's clock and Ark; the routes use them too.
        self.services = Wiring(self.settings, clock=self.clock, s3=self.s3, sqs=self.sqs, image_client=self.images,
                               video_client=self.videos, downloads=self.downloads, rng_for=random.Random)
        self.video = self.services.video_status
        self.sweeper = self.services.sweeper
        self.workers = {lane.name: self.services.lane_worker(lane.name) for lane in LANES}
        wiring.install(self.services)
        self._task_ids = itertools.count(1)

    def new_task_id(self) -> str:
        """Ids in creation order (the same 26 base-32 characters `ids.new_task_id` makes)."""
        number = next(self._task_ids).to_bytes(16, "big")
        return "tsk_" + base64.b32encode(number).decode().rstrip("=").lower()

    def now(self) -> float:
        return self.clock.now()

    # --- acting ---------------------------------------------------------------------------------------------

    def act(self, kind: str, name: str, work: Callable[[], Any], fault: Fault | None = None,
            task_id: str | None = None) -> Actor:
        """Run `work` as one function run; returns its actor once it ended or stalled."""
        actor = Actor(name, kind, TIMEOUTS[kind], self.now(), fault, task_id)
        return self._settled(self.stage.run(actor, work))

    def resume(self, actor: Actor, kill: bool = False) -> Actor:
        return self._settled(self.stage.resume(actor, kill=kill))

    def _settled(self, actor: Actor) -> Actor:
        if actor.state == "done":
            self.observer.actor_done(actor)
        return actor

    def receive(self, lane: str) -> Delivery | None:
        """The next visible message of `lane` (it stays in flight for the queue's visibility timeout)."""
        answer = self.sqs.receive_message(QueueUrl=queues.queue_url(self.sqs, lane), MaxNumberOfMessages=1,
                                          AttributeNames=["All"], WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        return Delivery(lane, _lambda_record(messages[0])) if messages else None

    def duplicate(self, lane: str, task_id: str) -> Delivery:
        """A copy SQS delivered twice (at-least-once): its own receipt, never received from the queue."""
        return Delivery(lane, {"messageId": str(uuid.uuid4()), "receiptHandle": str(uuid.uuid4()),
                               "body": json.dumps({"task_id": task_id}),
                               "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"})

    def deliver(self, delivery: Delivery, fault: Fault | None = None) -> Actor:
        """The lane's Lambda on one record; what it does not give back is deleted, as the event source does."""
        worker = self.workers[delivery.lane]

        def work() -> dict[str, Any]:
            answer = worker.handle([delivery.record])
            given_back = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
            if delivery.record["messageId"] not in given_back:
                with suppress(ClientError):  # a stale receipt: the message comes back after its timeout
                    self.sqs.delete_message(QueueUrl=queues.queue_url(self.sqs, delivery.lane),
                                            ReceiptHandle=delivery.record["receiptHandle"])
            return answer

        return self.act("worker", f"{delivery.lane}:{delivery.task_id}", work, fault, delivery.task_id)

    def poll(self, fault: Fault | None = None) -> Actor:
        return self.act("poller", "poller", lambda: self.video.poll_due(budget_s=POLLER_BUDGET_S), fault)

    def sweep(self, fault: Fault | None = None) -> Actor:
        return self.act("sweeper", "sweeper", self.sweeper.sweep, fault)

    def request(self, method: str, path: str, body: Any = None, *, as_user: str | None = None,
                fault: Fault | None = None, task_id: str | None = None, kind: str = "api") -> Actor:
        """One API request through the Chalice test client (as `as_user`, or unauthenticated); `kind` says who
        sends it (`operator`: an admin changing a task's status)."""
        user = (as_user, PASSWORDS[as_user]) if as_user else None
        return self.act(kind, f"{method} {path}", lambda: self.api.request(method, path, body, as_user=user),
                        fault, task_id)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """An admin request that must be answered (no fault): returns the response."""
        actor = self.request(method, path, body, as_user=ADMIN[0])
        assert actor.error is None and actor.result is not None, actor.error
        return actor.result

    # --- time ------------------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the shared clock. No run outlives its function's timeout: a call held at Ark answers first, and
        a run stalled elsewhere is killed (in time order), before the clock passes the instant they end."""
        target = self.now() + seconds
        for actor in sorted(self.stage.stalled, key=self._must_end_by):
            if self._must_end_by(actor) <= target and actor in self.stage.stalled:
                self.resume(actor, kill=actor.stalled_call is None)
        self.clock.advance(seconds)

    def _must_end_by(self, actor: Actor) -> float:
        end = actor.started_at + actor.timeout_s
        call = actor.stalled_call
        if call is not None and call.stalled_at is not None:
            within = IMAGE_CALL_ANSWERS_WITHIN_S if call.endpoint == "images.generate" else VIDEO_CALL_ANSWERS_WITHIN_S
            end = min(end, call.stalled_at + within)
        return end

    def step_ark(self) -> None:
        """Let the simulator apply what became due by now (its tasks move only when asked or stepped)."""
        arksim.video.step(self.sim)

    # --- draining --------------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Let everything finish with no more faults: stalled runs go on, then rounds of poller, sweeper and every
        message, the clock moving past the lanes' visibility timeout each round, until nothing is left to do."""
        for actor in list(self.stage.stalled):
            if actor in self.stage.stalled:
                self.resume(actor)
        for _ in range(DRAIN_ROUNDS):
            if self.quiescent():
                return
            self.poll()
            self.sweep()
            for _ in range(DRAIN_DELIVERIES_PER_ROUND):
                delivery = next((found for lane in LANES if (found := self.receive(lane.name))), None)
                if delivery is None:
                    break
                self.deliver(delivery)
            if self.quiescent():
                return
            self.advance(DRAIN_STEP_S)

    def quiescent(self) -> bool:
        return (not self.stage.stalled and not any(self.messages_left().values())
                and all(task.status in statemachine.TERMINAL for task in self.tables.tasks().values())
                and not any(self.tables.holders(key) for key in self.tables.slot_records()))

    def messages_left(self) -> dict[str, int]:
        """Messages per lane queue, visible or not (a DLQ keeps what gave up: that is its job)."""
        backend = sqs_backends[DEFAULT_ACCOUNT_ID][self.settings.region]
        return {lane.name: len(backend.queues[lane.queue_name(self.settings.resource_prefix)]._messages)
                for lane in LANES}

    def close(self) -> None:
        for actor in list(self.stage.stalled):
            if actor in self.stage.stalled:
                self.resume(actor, kill=True)


def _lambda_record(message: dict[str, Any]) -> dict[str, Any]:
    return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
            "attributes": message.get("Attributes", {"ApproximateReceiveCount": "1"}), "eventSource": "aws:sqs"}


# --- the environment (once per test) ------------------------------------------------------------------------------


class Environment:
    """moto with arkflow's resources and seeded users, the app's test client, and the process-wide patches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.stage = Stage()
        self.world: World | None = None
        # The clock before the first example (logins): every example starts at the same instant.
        self._idle_clock = SharedClock()
        self.api: Api
        self.tables: Tables

    @contextmanager
    def running(self) -> Iterator[Environment]:
        patch = self.monkeypatch
        for name, value in {"ARK_BASE_URL": ARK_BASE_URL, "ARK_API_KEY": ARK_KEY, "PUBLIC_API_URL": PUBLIC_API_URL,
                            # Results come from the simulator's media URLs (as the local stack lets them in),
                            # and an operator's from https.
                            "ARK_RESULT_HOSTS": f"{ARK_ROOT_URL},ark.test",
                            # Long enough that the token library's own clock (real time) accepts them too.
                            "TOKEN_TTL_SECONDS": str(20 * 365 * 24 * 3600)}.items():
            patch.setenv(name, value)
        with mock_aws():
            reconfigure()
            from devstack.bootstrap import create_all

            create_all(boto3, get_settings().resource_prefix)
            from devstack.demo import create_demo_data

            create_demo_data(admin=ADMIN, accounts=[(*DEMO, "user"), (*OTHER, "user")], default_models=True)
            from app import app

            self._patch_singletons()
            with Client(app) as client, dynamodb_faults(self.stage):
                self.api = Api(client)
                for user in (ADMIN, DEMO, OTHER):
                    self.api.token(user)
                self._tokens = dict(self.api.tokens)
                self.tables = Tables(get_settings())
                self.tables.snapshot()
                try:
                    yield self
                finally:
                    if self.world is not None:
                        self.world.close()
        reconfigure()

    def new_world(self, observer: Observer) -> World:
        """Back to the seeded state: tables as seeded, queues and bucket empty, the logins of the seeded users."""
        if self.world is not None:
            self.world.close()
        self.tables.restore()
        settings = get_settings()
        backend = sqs_backends[DEFAULT_ACCOUNT_ID][settings.region]
        for queue in backend.queues.values():
            queue._messages = []
        bucket = MEDIA_BUCKET.physical_name(settings.resource_prefix)
        for page in aws.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                aws.s3().delete_object(Bucket=bucket, Key=item["Key"])
        self.api.tokens = dict(self._tokens)
        self.world = World(self, observer)
        return self.world

    def _current(self) -> World:
        assert self.world is not None, "no example is running"
        return self.world

    def _now(self) -> float:
        return (self.world.clock if self.world is not None else self._idle_clock).now()

    def _patch_singletons(self) -> None:
        patch = self.monkeypatch
        patch.setattr(SYSTEM_CLOCK, "now", self._now)

        def unix_time(dt: Any = None) -> float:
            return self._now() if dt is None else original_unix_time(dt)

        import moto.sqs.models as moto_sqs

        original_unix_time = moto_sqs.unix_time
        patch.setattr(moto_sqs, "unix_time", unix_time)
        patch.setattr(moto_sqs, "unix_time_millis", lambda dt=None: unix_time(dt) * 1000.0)
        # Ark calls' deadlines and the lanes' time budget count on the model's clock, as everything else does: a call
        # held at Ark answers within its deadline however long the model runs meanwhile.
        model_time = SimpleNamespace(monotonic=self._now)
        for module in (ark_client, ark_deadline, lane_worker, lane_images):
            patch.setattr(module, "time", model_time)
        patch.setattr(ids, "new_task_id", lambda: self._current().new_task_id())

        real_acquire, real_release, real_step = slots.try_acquire, slots.release_counting_parked, arksim.video.step
        real_move, real_take_for, real_take_back = Waker._move, Waker._take_for, Waker.take_back

        def limits(model_id: str) -> tuple[int, int | None]:
            """What the admin configured, the referee's measure (the slot record's copy is what is judged)."""
            model = self._current().tables.models().get(model_id)
            if model is None:
                return 0, None
            cap = model.max_running_per_user
            return int(model.concurrency), None if cap is None else int(cap)

        def acquire(model_id: str, task_id: str, lease_until: float, *, user_id: str | None = None,
                    **options: Any) -> slots.Held | slots.Refused:
            after = self._current().observer.acquiring(model_id, task_id, *limits(model_id)[:1], user_id,
                                                       limits(model_id)[1])
            acquired = real_acquire(model_id, task_id, lease_until, user_id=user_id, **options)
            after(isinstance(acquired, slots.Held))
            return acquired

        def release(model_id: str, task_id: str, user_id: str | None = None) -> tuple[bool, int]:
            self._current().observer.releasing(model_id, task_id)
            return real_release(model_id, task_id, user_id)

        def move(waker: Waker, releasing: TaskRecord, candidate: TaskRecord, user_cap: int | None) -> bool | None:
            concurrency, cap = limits(releasing.model_id)
            observer = self._current().observer
            observer.releasing(releasing.model_id, releasing.task_id)
            after = observer.acquiring(releasing.model_id, candidate.task_id, concurrency, candidate.user_id, cap)
            moved = real_move(waker, releasing, candidate, user_cap)
            after(moved is True)
            return moved

        def take_for(waker: Waker, candidate: TaskRecord, user_cap: int | None, *options: Any) -> bool | None:
            after = self._current().observer.acquiring(candidate.model_id, candidate.task_id,
                                                       *limits(candidate.model_id)[:1], candidate.user_id,
                                                       limits(candidate.model_id)[1])
            taken = real_take_for(waker, candidate, user_cap, *options)
            after(taken is True)
            return taken

        def take_back(waker: Waker, task: TaskRecord) -> bool:
            self._current().observer.releasing(task.model_id, task.task_id)
            return real_take_back(waker, task)

        def step(sim: Simulator) -> list[arksim.video.StatusChange]:
            changes = real_step(sim)
            if self.world is not None and sim is self.world.sim:
                self.world.observer.ark_changed(changes)
            return changes

        patch.setattr(slots, "try_acquire", acquire)
        patch.setattr(slots, "release_counting_parked", release)
        patch.setattr(Waker, "_move", move)
        patch.setattr(Waker, "_take_for", take_for)
        patch.setattr(Waker, "take_back", take_back)
        patch.setattr(arksim.video, "step", step)
        # Only the model's: the app's WebSocket publisher is not part of the lifecycle (tests/ws covers it), and
        # its reads on every transition would cost a quarter of the run time.
        patch.setattr(statemachine, "listeners", [self._transition])

    def _transition(self, task: TaskRecord) -> None:
        self._current().observer.transition(task)
