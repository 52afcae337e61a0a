"""The one place arkflow's services are built and the state machine's listeners registered.

A `Wiring` holds one deployment's services, each given its clients, settings and clock, and built on first use.
A Lambda container has one (`current()`), built from the environment and kept for its life, so its HTTP and AWS
connections are reused across invocations. Tests and the local stack build their own (their settings, their clock,
an Ark client of their choosing) and `install` it, so the app's handlers use it too; `new_container()` forgets
everything a container caches, as a fresh container would start.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cached_property
from typing import Any

import httpx

from chalicelib import aws, catalog, live, observability, queues, secret_store
from chalicelib.accounts import auth, first_admin
from chalicelib.accounts.auth import Authenticator
from chalicelib.accounts.keys import ApiKeys
from chalicelib.admin.dlq import DeadLetters
from chalicelib.api.bodies import TaskBodies
from chalicelib.ark.client import IMAGE_TIMEOUT, VolcImageClient, VolcVideoClient
from chalicelib.audit.trail import AuditTrail
from chalicelib.clock import SYSTEM_CLOCK, Clock
from chalicelib.lanes.circuit import Breaker
from chalicelib.lanes.copies import ResultCopies
from chalicelib.lanes.endings import Endings
from chalicelib.lanes.images import ImageCalls
from chalicelib.lanes.videos import VideoCalls
from chalicelib.lanes.waits import Waiting, Waker
from chalicelib.lanes.worker import LaneWorker
from chalicelib.live import LiveUpdates
from chalicelib.media import storage
from chalicelib.media.downloads import Downloads
from chalicelib.media.uploads import UploadService
from chalicelib.metrics import figures, rollup
from chalicelib.resources import Lane, lane_named
from chalicelib.settings import Settings, get_settings, reload_settings
from chalicelib.store import records, statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.sweeper import Sweeper
from chalicelib.tasks import costs
from chalicelib.tasks.intake import Intake
from chalicelib.tasks.queries import TaskQueries
from chalicelib.video.status import VideoStatus
from chalicelib.video.submit import VideoSubmitter
from chalicelib.webhooks.addresses import Resolver, system_resolver
from chalicelib.webhooks.delivery import WebhookDelivery
from chalicelib.webhooks.events import WebhookEvents, due_mark
from chalicelib.webhooks.secrets import WebhookSecrets
from chalicelib.webhooks.sender import WebhookSender

# Time an image worker keeps after its Ark call's timeout to record the outcome before the Lambda timeout.
IMAGE_RECORD_MARGIN_S = 20


def _new_rng(_lane_name: str) -> random.Random:
    return random.Random()


class Wiring:
    """One deployment's services. Every argument but `settings` defaults to what a Lambda container uses; a test
    gives its own (`but(...)` makes a copy with some of them changed, and services of its own)."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, s3: Any = None, sqs: Any = None,
                 image_client: VolcImageClient | None = None, video_client: VolcVideoClient | None = None,
                 downloads: Downloads | None = None, rng_for: Callable[[str], random.Random] = _new_rng,
                 webhook_resolver: Resolver = system_resolver) -> None:
        self._arguments = {"settings": settings, "clock": clock, "s3": s3, "sqs": sqs, "image_client": image_client,
                           "video_client": video_client, "downloads": downloads, "rng_for": rng_for,
                           "webhook_resolver": webhook_resolver}
        self.settings = settings
        self.clock = clock
        self._s3 = s3
        self._sqs = sqs
        self._image_client = image_client
        self._video_client = video_client
        self._downloads = downloads
        self._rng_for = rng_for
        self._webhook_resolver = webhook_resolver
        self._lane_workers: dict[str, LaneWorker] = {}

    def but(self, **changes: Any) -> Wiring:
        """A new wiring with the same arguments but `changes`, and none of this one's services."""
        return Wiring(**{**self._arguments, **changes})

    # The container's clients are made on first use: many invocations never call S3 or SQS, and each client made
    # is tens of milliseconds of a cold start.

    @cached_property
    def s3(self) -> Any:
        return self._s3 if self._s3 is not None else aws.s3()

    @cached_property
    def sqs(self) -> Any:
        return self._sqs if self._sqs is not None else aws.sqs()

    # --- Ark and results ------------------------------------------------------------------------------------

    @cached_property
    def video_client(self) -> VolcVideoClient:
        return self._video_client or VolcVideoClient.from_settings(self.settings)

    def image_client(self, lane: Lane) -> VolcImageClient:
        """The image lane's client: an image call may take minutes, so the whole request (every phase) may use the
        Lambda's time, minus room to record the outcome."""
        if self._image_client is not None:
            return self._image_client
        other_phases = {"connect": IMAGE_TIMEOUT.connect, "write": IMAGE_TIMEOUT.write, "pool": IMAGE_TIMEOUT.pool}
        read_s = lane.lambda_timeout_s - IMAGE_RECORD_MARGIN_S - sum(phase or 0.0 for phase in other_phases.values())
        return VolcImageClient.from_settings(self.settings, timeout=httpx.Timeout(read=read_s, **other_phases))

    @cached_property
    def downloads(self) -> Downloads:
        return self._downloads or Downloads.from_settings(self.settings)

    # --- videos, lanes and the sweeper ----------------------------------------------------------------------

    @cached_property
    def video_status(self) -> VideoStatus:
        return VideoStatus(self.video_client, sqs=self.sqs, settings=self.settings, clock=self.clock)

    @cached_property
    def video_submitter(self) -> VideoSubmitter:
        return VideoSubmitter(self.video_client, s3=self.s3, status=self.video_status, settings=self.settings,
                              clock=self.clock)

    def lane_worker(self, lane_name: str) -> LaneWorker:
        """The lane's worker, made once per wiring (its HTTP connections are reused)."""
        if lane_name not in self._lane_workers:
            self._lane_workers[lane_name] = self.new_lane_worker(lane_named(lane_name))
        return self._lane_workers[lane_name]

    def new_lane_worker(self, lane: Lane) -> LaneWorker:
        rng = self._rng_for(lane.name)
        endings = Endings(lane, settings=self.settings, clock=self.clock, rng=rng, circuit=self.breaker)
        copies = ResultCopies(lane, s3=self.s3, sqs=self.sqs, downloads=self.downloads, settings=self.settings,
                              clock=self.clock)
        return LaneWorker(
            lane,
            sqs=self.sqs,
            images=ImageCalls(self.image_client(lane), s3=self.s3, endings=endings, copies=copies,
                              settings=self.settings),
            videos=VideoCalls(lane, submitter=self.video_submitter, endings=endings, clock=self.clock),
            copies=copies,
            waiting=Waiting(lane, sqs=self.sqs, settings=self.settings, rng=rng),
            endings=endings,
            settings=self.settings,
            clock=self.clock,
        )

    @cached_property
    def waker(self) -> Waker:
        return Waker(sqs=self.sqs, clock=self.clock, settings=self.settings)

    @cached_property
    def breaker(self) -> Breaker:
        return Breaker(settings=self.settings, clock=self.clock, waker=self.waker, announce=self._circuit_changed)

    def _circuit_changed(self, model_id: str, circuit: dict[str, Any]) -> None:
        """A model's circuit changed: admins see it at once, and CloudWatch's open-circuit alarm counts it."""
        observability.emit_circuit_state(model_id, circuit["state"] != "closed")
        self.live.publish_circuit(model_id, circuit)

    @cached_property
    def sweeper(self) -> Sweeper:
        return Sweeper(sqs=self.sqs, video=self.video_status, waker=self.waker, circuit=self.breaker,
                       webhooks=self.webhook_events, settings=self.settings, clock=self.clock)

    # --- the API's services -----------------------------------------------------------------------------------

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(self.settings, self.clock, keys=self.api_keys)

    @cached_property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.clock)

    @cached_property
    def uploads(self) -> UploadService:
        return UploadService(s3=self.s3, settings=self.settings, clock=self.clock)

    @cached_property
    def intake(self) -> Intake:
        return Intake(s3=self.s3, sqs=self.sqs, uploads=self.uploads, settings=self.settings, clock=self.clock)

    @cached_property
    def queries(self) -> TaskQueries:
        return TaskQueries()

    @cached_property
    def bodies(self) -> TaskBodies:
        return TaskBodies(s3=self.s3, queries=self.queries, clock=self.clock)

    @cached_property
    def live(self) -> LiveUpdates:
        return LiveUpdates(self.bodies, settings=self.settings, clock=self.clock)

    # --- steering: the audit trail and dead letters -----------------------------------------------------------

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.clock)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(sqs=self.sqs, audit=self.audit, clock=self.clock)

    # --- webhooks -----------------------------------------------------------------------------------------------

    @cached_property
    def webhook_events(self) -> WebhookEvents:
        return WebhookEvents(sqs=self.sqs, clock=self.clock)

    @cached_property
    def webhook_secrets(self) -> WebhookSecrets:
        return WebhookSecrets(self.clock)

    @cached_property
    def webhook_delivery(self) -> WebhookDelivery:
        sender = WebhookSender(allow_loopback=self.settings.webhook_allow_loopback, resolver=self._webhook_resolver)
        return WebhookDelivery(sqs=self.sqs, sender=sender, secrets=self.webhook_secrets, bodies=self.bodies,
                               clock=self.clock, rng=self._rng_for("webhooks"),
                               copies_results=bool(self.settings.media_bucket))


# --- the container's wiring ---------------------------------------------------------------------------------

_current: Wiring | None = None


def current() -> Wiring:
    """The container's wiring: built from the environment on first use, then kept."""
    global _current
    if _current is None:
        _current = Wiring(get_settings())
    return _current


def install(wiring: Wiring | None) -> None:
    """Make `wiring` the container's (None: the next `current()` builds one from the environment again)."""
    global _current
    _current = wiring


def new_container() -> None:
    """Start afresh as a new Lambda container would: settings read from the environment again, records pointed at
    its tables, and nothing cached: no wiring, client, connection, secret or once-per-container check."""
    install(None)
    records.configure(reload_settings())
    aws.reset()
    secret_store.reset()
    # Every cache a container keeps beside its wiring.
    figures.forget_recent()
    catalog.forget_recent_models()
    for cached in (live.management_client, queues._queue_url, storage._long_term_signer, auth._hasher,
                   auth._decoy_hash, first_admin.ensure_first_admin, catalog.ensure_default_models_once):
        cached.cache_clear()


# --- the state machine's listeners --------------------------------------------------------------------------


def publish(task: TaskRecord) -> None:
    """Every change the state machine writes, wherever (worker, poller, callback, cancel, admin, sweeper), reaches
    the task's owner over WebSockets: all of them run in this app's functions."""
    current().live.publish(task)


def queue_webhook(task: TaskRecord) -> None:
    """A change the task's webhook subscribes to becomes one message on the webhook queue (tasks without a webhook
    cost nothing here)."""
    if task.webhook_url:
        current().webhook_events.on_change(task)


def release_slot(task: TaskRecord) -> bool:
    """A slot given back hands itself to the oldest parked task of its model."""
    return current().waker.release(task)


def audit_refund(task: TaskRecord) -> None:
    """Every quota refund is on the audit trail, written just after the refund (docs/design.md, "Audit trail")."""
    current().audit.record_refund(task)


# The outbox's mark rides on the transition's own write, so a webhook event is never lost between the write and its
# listener's send (`chalicelib.webhooks.outbox`).
statemachine.write_hooks.append(due_mark)
statemachine.write_hooks.append(costs.unbilled_end)  # a task Ark did no work for costs 0, written as it ends
# The same for the metrics: the terminal write marks the task, and the sweeper's roll-up counts marked tasks in
# batches, off the worker's way to its next task (`chalicelib.metrics.rollup`).
statemachine.write_hooks.append(rollup.mark)
statemachine.listeners.append(publish)
statemachine.listeners.append(queue_webhook)
statemachine.listeners.append(observability.on_task_written)
statemachine.slot_releaser[:] = [release_slot]
statemachine.refund_listeners.append(audit_refund)
