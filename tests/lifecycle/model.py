"""A model-based test of the task lifecycle: what must hold whatever users, workers, Ark and AWS do, in any order.

`LifecycleModel` is a Hypothesis state machine over a `World` (`tests.lifecycle.harness`). Its rules are what
happens in production: two users submit images and videos; lane messages are delivered, again, late and twice;
the poller and the sweeper run; Ark's callbacks arrive late, twice and out of order; users cancel and delete,
admins change task statuses, models and users; the clock jumps across leases and deadlines; and any run may
crash, stall, meet a DynamoDB error or a malformed Ark answer at any of its operations (`tests.lifecycle.faults`).

The `Referee` hears every transition (a `chalicelib.store.statemachine` listener), every slot taken and given back, and
every call at Ark's door, and checks the promises at the moment they could break; the rest it checks after every
step from the tables and the simulator, and once more after draining. Each promise has its own exception class,
so Hypothesis shrinks a failing run per promise broken and reports each of them.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

import arksim.video
from chalicelib.clock import epoch_of
from chalicelib.media import storage
from chalicelib.store import slots
from chalicelib.store.records import TaskRecord
from chalicelib.store.statemachine import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL
from tests.lifecycle.faults import (
    DYNAMODB_ERRORS,
    FAULT_TARGETS,
    GENERATION_ENDPOINTS,
    MALFORMED,
    Actor,
    ArkCall,
    Fault,
)
from tests.lifecycle.harness import IMAGE_MODEL, VIDEO_MODEL, Delivery, Environment, World

ADMIN_NAME = "admin"
USERS = ("demo", "other")
ACTIVE_AT_ARK = frozenset({"queued", "running"})
# What a task may end as, given what Ark says of its video when it ends.
AGREES_WITH_ARK: dict[str, frozenset[str]] = {
    "succeeded": frozenset({SUCCEEDED}),
    "failed": frozenset({FAILED}),
    "expired": frozenset({EXPIRED, FAILED}),
    "cancelled": frozenset({CANCELLED, FAILED, EXPIRED}),  # we asked Ark to drop it
}


# --- the promises ---------------------------------------------------------------------------------------------------


class BrokenPromise(AssertionError):
    """One of the lifecycle's promises did not hold (each subclass is one promise)."""


class TwoArkCalls(BrokenPromise):
    """At most one Ark create per task: a video is created once, an image is not billed again once a live worker
    got its 200, and never two generation calls for one task at once."""


class ArkTaskOwnedTwice(BrokenPromise):
    """No Ark task is owned by two tasks, nor by a task it was not created for."""


class OverConcurrency(BrokenPromise):
    """No acquire succeeds while the holders, or the calls in flight at Ark, are at or above the concurrency read
    at that acquire."""


class CallWithoutSlot(BrokenPromise):
    """Every call in flight at Ark (and every video Ark still queues or runs) belongs to a running task holding a
    slot of its model."""


class SlotsDisagree(BrokenPromise):
    """Slot holders are exactly the running tasks (once the sweeper freed what crashed runs left behind)."""


class QuotaLedger(BrokenPromise):
    """Quota used = accepted - refunded; a refund once, and only when no call may have done work at Ark."""


class TerminalChanged(BrokenPromise):
    """Terminal states never change."""


class VideoRequeued(BrokenPromise):
    """A video that Ark accepted is never queued again, by anyone."""


class RequeueWhileWorking(BrokenPromise):
    """`running -> queued` only when no call is in flight, and only by the worker holding the slot or once its
    lease ended."""


class EndedMidCall(BrokenPromise):
    """No task ends while its worker is still calling Ark, or while Ark still queues or runs its video (unless an
    operator chose to leave a video running there); the deadline never ends an image whose worker holds a live
    lease."""


class ResultDiscarded(BrokenPromise):
    """A video ends as Ark says it ended: a finished video is never dropped or deleted unseen."""


class WantedVideoCancelled(BrokenPromise):
    """Nothing cancels at Ark the video of a task that still wants it."""


class UnreadableAnswer(BrokenPromise):
    """An Ark answer that does not fit its schema is never taken for a result: an image call's unparseable 200
    fails the task with `invalid_response` (it may have been billed, so it is never sent again: `TwoArkCalls`)."""


class SeenByOthers(BrokenPromise):
    """A task is visible to its owner and admins only."""


class RunBroke(BrokenPromise):
    """A scheduled run does not abort on what Ark answers, and a fault-free API request does not answer 500."""


class NotDrained(BrokenPromise):
    """After draining, every task is terminal, no slot is held, no message is left, and a task Ark succeeded has
    its results copied (or says why not)."""


# --- what the model knows ---------------------------------------------------------------------------------------


@dataclass
class TaskFacts:
    task_id: str
    owner: tuple[str, int]  # (username, account generation): a new account with an old name is someone else
    type: str
    model_id: str
    lane: str
    created_at: float
    quota_keys: list[str]
    deleted: bool = False


@dataclass(frozen=True)
class Callback:
    """One status push Ark made, kept to be delivered (late, again, out of order)."""

    task_id: str
    token: str
    payload: dict[str, Any] = field(compare=False)

    def __repr__(self) -> str:
        return f"Callback({self.task_id}, {self.payload.get('id')} {self.payload.get('status')})"


class Referee:
    """Hears the system act (on the acting thread) and checks what must hold at that moment; `check` does the
    rest after every step."""

    # Promises not checked: a subclass hunting for one kind of failure can set it (`make test` checks them all).
    muted: frozenset[type[BrokenPromise]] = frozenset()

    def __init__(self) -> None:
        self.world: World
        self.violations: list[BrokenPromise] = []
        self.facts: dict[str, TaskFacts] = {}
        self.accepted: Counter[str] = Counter()
        self.refunded: set[str] = set()
        self.statuses: dict[str, str] = {}
        # The version of the last change seen per task (changes are published in any order, as on AWS).
        self.versions: dict[str, int] = {}
        self.ever_running: set[str] = set()
        self.may_have_worked: set[str] = set()
        # Images whose Ark call answered 200 to a worker that lived on: billed, and seen.
        self.billed_and_seen: set[str] = set()
        self.ark_owner: dict[str, str] = {}  # Ark task id -> the task it was created for
        self.ark_status_when_deleted: dict[str, str] = {}
        # Tasks an operator ended while Ark was still at work for them (the operator route's documented trade-off):
        # that work is not held against the concurrency, nor the task.
        self.abandoned_owners: set[str] = set()
        self.operator_results: set[str] = set()
        self.callbacks: list[Callback] = []
        self.released_lease: dict[str, float] = {}
        # The run that last acquired (or found it already held) each task's slot: the worker holding it.
        self.slot_taken_by: dict[str, Actor | None] = {}
        self._answers: dict[Actor, list[ArkCall]] = defaultdict(list)
        self._cancelled_at_ark: dict[Actor, list[tuple[str, str | None]]] = defaultdict(list)
        self._ark_status_before_delete: dict[ArkCall, str] = {}

    def violate(self, promise: type[BrokenPromise], message: str) -> None:
        if promise not in self.muted:
            self.violations.append(promise(message))

    def raise_first(self) -> None:
        if self.violations:
            first, *rest = self.violations
            raise type(first)("\n".join(str(violation) for violation in self.violations)) if rest else first

    # --- reading the world ---------------------------------------------------------------------------------

    def ark_status(self, external_id: str) -> str:
        self.world.step_ark()
        task = self.world.sim.tasks.tasks.get(external_id)
        if task is not None:
            return task.status
        return self.ark_status_when_deleted.get(external_id, "unknown")

    def stalled_generation_calls(self) -> list[ArkCall]:
        return [actor.stalled_call for actor in self.world.stage.stalled
                if actor.stalled_call is not None and actor.stalled_call.endpoint in GENERATION_ENDPOINTS]

    def in_flight_at_ark(self, model_id: str) -> int:
        """Generation calls held at Ark (the simulator's own in-flight count) and videos Ark queues or runs."""
        self.world.step_ark()
        upstream = self.world.tables.models()[model_id].upstream_model
        abandoned_calls = sum(1 for call in self.stalled_generation_calls()
                              if call.task_id in self.abandoned_owners and self._model_of(call.task_id) == model_id)
        videos = sum(1 for task in self.world.sim.tasks.tasks.values()
                     if task.model == upstream and task.status in ACTIVE_AT_ARK
                     and self.ark_owner.get(task.id) not in self.abandoned_owners)
        return self.world.sim.stats.in_flight.get(upstream, 0) - abandoned_calls + videos

    def _model_of(self, task_id: str | None) -> str | None:
        facts = self.facts.get(task_id or "")
        return facts.model_id if facts else None

    # --- the state machine's listener ----------------------------------------------------------------------

    def transition(self, task: TaskRecord) -> None:
        self._observe(task, self.world.stage.current())

    def _observe(self, task: TaskRecord, actor: Actor | None) -> None:
        task_id, new = task.task_id, task.status
        if task.quota_refunded and task_id not in self.refunded:
            self.refunded.add(task_id)
            if task_id in self.may_have_worked:
                self.violate(QuotaLedger, f"{task_id}: quota given back although an Ark call for it may have "
                                          "done work")
        version = int(task.version or 0)
        if version <= self.versions.get(task_id, -1):
            return  # an earlier transition whose publishing ran late: readers order a task's changes by version
        self.versions[task_id] = version
        previous = self.statuses.get(task_id)
        if previous == new:
            return
        self.statuses[task_id] = new
        if previous is None:
            return  # its creation
        if previous in TERMINAL:
            self.violate(TerminalChanged, f"{task_id} went from {previous} to {new}")
            return
        if new == RUNNING:
            self.ever_running.add(task_id)
        if previous == RUNNING and new == QUEUED:
            self._check_requeue(task, actor)
        if new in TERMINAL:
            self._check_ending(task, actor, previous)

    def _check_requeue(self, task: TaskRecord, actor: Actor | None) -> None:
        task_id, now = task.task_id, self.world.now()
        by = actor.name if actor else "a run that died before publishing it"
        created = [ark_id for ark_id, owner in self.ark_owner.items() if owner == task_id]
        if created:
            self.violate(VideoRequeued, f"{task_id}: a video Ark accepted ({created[0]}) went back to queued "
                                         f"(by {by})")
        if any(call.task_id == task_id for call in self.stalled_generation_calls()):
            self.violate(RequeueWhileWorking, f"{task_id} went back to queued while its call at Ark is in flight "
                                         f"(by {by})")
        lease = self._lease_left_behind(task)
        if actor is not None and self.slot_taken_by.get(task_id) is actor:
            return  # the worker holding the slot (what its Ark calls may cost is `TwoArkCalls`' to judge)
        if lease is not None and lease >= now:
            self.violate(RequeueWhileWorking, f"{task_id} went back to queued while its worker's lease is live "
                                         f"(until {lease}, now {now:.3f}; by {by})")

    def _lease_left_behind(self, task: TaskRecord) -> float | None:
        """The slot lease a task held when it left `running` (its transition released it, or the run died before
        the release)."""
        lease = self.released_lease.pop(task.task_id, None)
        return self.world.tables.holders(task.model_id).get(task.task_id) if lease is None else lease

    def _check_ending(self, task: TaskRecord, actor: Actor | None, previous: str) -> None:
        task_id, new = task.task_id, task.status
        operator = actor is not None and actor.kind == "operator"
        by = actor.name if actor else "a run that died before publishing it"
        if operator and new == SUCCEEDED:
            self.operator_results.add(task_id)
        if not task.quota_refunded and task_id not in self.ever_running:
            self.violate(QuotaLedger, f"{task_id} ended {new} without ever running and kept its quota")
        lease = self._lease_left_behind(task) if previous == RUNNING else None
        timed_out = task.error is not None and task.error.code == "timeout"
        if task.type == "image" and timed_out and lease is not None and lease >= self.world.now():
            self.violate(EndedMidCall, f"the deadline ended {task_id} while its worker's lease is live (until "
                                       f"{lease}, now {self.world.now():.3f}; by {by})")
        # Still at work at Ark: a call in flight, or a video Ark queues or runs (recorded as this task's or not).
        working = [call.endpoint for call in self.stalled_generation_calls() if call.task_id == task_id]
        working += [f"video {ark_id} {status}" for ark_id, owner in self.ark_owner.items()
                    if owner == task_id and (status := self.ark_status(ark_id)) in ACTIVE_AT_ARK]
        if working and operator and task.type == "video":
            # The operator's choice, documented by the route: a video Ark generates, or a create on its way there,
            # cannot be stopped at Ark. An image's call can be (the route waits out its worker's lease).
            self.abandoned_owners.add(task_id)
        elif working:
            self.violate(EndedMidCall, f"{task_id} ended {new} while Ark is still at work for it "
                                        f"({', '.join(working)}; by {by})")
        if task.type != "video" or not task.external_id:
            return
        ark_status = self.ark_status(task.external_id)
        if ark_status == "cancelled" and operator:
            return  # dropped at Ark on the operator's word: the operator's outcome stands
        if ark_status in AGREES_WITH_ARK and new not in AGREES_WITH_ARK[ark_status]:
            self.violate(ResultDiscarded, f"{task_id} ended {new} although its video {task.external_id} "
                                          f"{ark_status} at Ark (by {by})")

    # --- slots ---------------------------------------------------------------------------------------------

    def acquiring(self, model_id: str, task_id: str, concurrency: int, user_id: str | None,
                  user_cap: int | None) -> Any:
        held_before = task_id in self.world.tables.holders(model_id)

        def acquired(taken: bool) -> None:
            if taken:
                self.slot_taken_by[task_id] = self.world.stage.current()
            if not taken or held_before:
                return
            # Judged as the write took effect, not as it was sent: a stalled acquire may land after others left.
            holders = {other: lease for other, lease in self.world.tables.holders(model_id).items()
                       if other != task_id}
            user_holders = {other: lease for other, lease in self.world.tables.holders(
                slots.user_slot_key(model_id, user_id)).items() if other != task_id} \
                if user_id is not None and user_cap is not None else {}
            in_flight = self.in_flight_at_ark(model_id)
            if len(holders) >= concurrency:
                self.violate(OverConcurrency, f"{task_id} took a slot of {model_id} held by {len(holders)} "
                                              f"at concurrency {concurrency}")
            if in_flight >= concurrency:
                self.violate(OverConcurrency, f"{task_id} took a slot of {model_id} with {in_flight} calls in "
                                              f"flight at Ark (concurrency {concurrency} read at this acquire)")
            if user_cap is not None and len(user_holders) >= user_cap:
                self.violate(OverConcurrency, f"{task_id} took a slot of {model_id} over its user's cap "
                                              f"{user_cap}")

        return acquired

    def releasing(self, model_id: str, task_id: str) -> None:
        lease = self.world.tables.holders(model_id).get(task_id)
        if lease is not None:
            self.released_lease[task_id] = lease

    # --- Ark's door ----------------------------------------------------------------------------------------

    def call_arrived(self, call: ArkCall) -> None:
        if call.endpoint not in GENERATION_ENDPOINTS:
            return
        task_id = call.task_id or "?"
        task = self.world.tables.tasks().get(task_id)
        if task is None or task.status != RUNNING:
            self.violate(CallWithoutSlot, f"a {call.endpoint} call for {task_id} reached Ark while it is "
                                          f"{task.status if task else 'gone'}")
        elif task_id not in self.world.tables.holders(task.model_id):
            self.violate(CallWithoutSlot, f"a {call.endpoint} call for {task_id} reached Ark without a slot")
        if any(other.task_id == task_id for other in self.stalled_generation_calls()):
            self.violate(TwoArkCalls, f"two {call.endpoint} calls for {task_id} at Ark at once")
        if call.endpoint == "images.generate" and task_id in self.billed_and_seen:
            self.violate(TwoArkCalls, f"{task_id}: a second billed image generation, though a live worker got "
                                      "the first one's 200")
        created = [ark_id for ark_id, owner in self.ark_owner.items() if owner == task_id]
        if call.endpoint == "tasks.create" and created:
            self.violate(TwoArkCalls, f"{task_id}: a second create at Ark (it already has {created[0]})")

    def call_stalled(self, call: ArkCall) -> None:
        pass

    def before_forward(self, call: ArkCall) -> None:
        if call.endpoint == "tasks.delete" and call.external_id:
            self._ark_status_before_delete[call] = self.ark_status(call.external_id)

    def call_answered(self, call: ArkCall) -> None:
        actor, task_id = call.actor, call.task_id
        if call.may_have_worked and task_id:
            self.may_have_worked.add(task_id)
        if not call.reached_ark or call.status != 200:
            return
        if call.endpoint == "tasks.create" and call.external_id and task_id:
            self.ark_owner[call.external_id] = task_id
        elif call.endpoint == "images.generate" and actor is not None and task_id and call.op is not None:
            self._answers[actor].append(call)
        elif call.endpoint == "tasks.delete" and call.external_id:
            before = self._ark_status_before_delete.pop(call, "unknown")
            if before == "queued":
                self._cancelled_at_ark[actor].append((call.external_id, self.ark_owner.get(call.external_id)))
            elif before not in ACTIVE_AT_ARK:
                self.ark_status_when_deleted[call.external_id] = before

    def ark_changed(self, changes: list[arksim.video.StatusChange]) -> None:
        for change in changes:
            url = change.task.callback_url
            if url and change.status in arksim.video.CALLBACK_STATUSES:
                query = parse_qs(urlsplit(url).query)
                self.callbacks.append(Callback(query["task_id"][0], query["token"][0], change.payload))

    # --- runs ending ---------------------------------------------------------------------------------------

    def actor_done(self, actor: Actor) -> None:
        tasks = self.world.tables.tasks()
        for call in self._answers.pop(actor, []):
            assert call.op is not None and call.task_id is not None
            if actor.crashed or (actor.fault_op is not None and actor.fault_op > call.op):
                continue  # the answer died with its run, or an error after it kept it from being recorded
            self.billed_and_seen.add(call.task_id)
            task = tasks.get(call.task_id)
            error = task.error.code if task is not None and task.error is not None else None
            if call.malformed and task is not None and (task.status, error) != (FAILED, "invalid_response"):
                self.violate(UnreadableAnswer, f"{call.task_id}'s image call answered a malformed 200 "
                                               f"({call.malformed}); the task is {task.status} ({error})")
        for ark_id, owner in self._cancelled_at_ark.pop(actor, []):
            # A cancel, an operator or the deadline set out to end the task; a worker or the poller never may.
            status = tasks[owner].status if owner in tasks else "deleted"
            if actor.kind in ("worker", "poller") and status not in TERMINAL and status != "deleted":
                self.violate(WantedVideoCancelled, f"{actor.name} cancelled {owner}'s video {ark_id} at Ark, and "
                                            f"{owner} is still {status}")
        dynamodb_fault = actor.fault is not None and actor.fault_fired and actor.fault.kind in DYNAMODB_ERRORS
        if actor.error is not None and not dynamodb_fault:
            self.violate(RunBroke, f"{actor.name} raised {actor.error!r}")
        response = actor.result
        if (actor.kind in ("api", "operator") and not actor.fault_fired and response is not None
                and response.status_code >= 500):
            self.violate(RunBroke, f"{actor.name} answered {response.status_code} with no fault injected: "
                                   f"{response.data}")

    # --- after every step ----------------------------------------------------------------------------------

    def check(self) -> None:
        world = self.world
        tasks = world.tables.tasks()
        for task in tasks.values():
            if self.statuses.get(task.task_id) != task.status or (task.quota_refunded
                                                                   and task.task_id not in self.refunded):
                self._observe(task, None)  # a transition whose run died before publishing it
        self._check_ark_ownership(tasks)
        self._check_calls_have_slots(tasks)
        self._check_slots(tasks)
        self._check_quota()
        self.raise_first()

    def _check_ark_ownership(self, tasks: dict[str, TaskRecord]) -> None:
        holders_of: dict[str, list[str]] = defaultdict(list)
        for task in tasks.values():
            if task.external_id:
                holders_of[task.external_id].append(task.task_id)
                created_for = self.ark_owner.get(task.external_id)
                if created_for != task.task_id:
                    made = f"created for {created_for}" if created_for else "never created by arkflow"
                    self.violate(ArkTaskOwnedTwice, f"{task.task_id} holds Ark task {task.external_id}, {made}")
        for ark_id, owners in holders_of.items():
            if len(owners) > 1:
                self.violate(ArkTaskOwnedTwice, f"Ark task {ark_id} is held by {', '.join(sorted(owners))}")
        made: Counter[str] = Counter(self.ark_owner.values())
        for task_id, count in made.items():
            if count > 1:
                self.violate(TwoArkCalls, f"{task_id}: {count} videos created at Ark")

    def _check_calls_have_slots(self, tasks: dict[str, TaskRecord]) -> None:
        def holds_slot(task_id: str | None) -> bool:
            task = tasks.get(task_id or "")
            return (task is not None and task.status == RUNNING
                    and task.task_id in self.world.tables.holders(task.model_id))

        for call in self.stalled_generation_calls():
            if call.task_id not in self.abandoned_owners and not holds_slot(call.task_id):
                self.violate(CallWithoutSlot, f"{call.task_id}'s {call.endpoint} call is in flight at Ark, but "
                                              "the task no longer runs with a slot")
        self.world.step_ark()
        for ark_task in self.world.sim.tasks.tasks.values():
            owner = self.ark_owner.get(ark_task.id)
            if ark_task.status not in ACTIVE_AT_ARK or owner in self.abandoned_owners:
                continue
            if not holds_slot(owner):
                state = tasks[owner].status if owner in tasks else "gone"
                self.violate(CallWithoutSlot, f"Ark {ark_task.status} video {ark_task.id} of {owner}, which is "
                                              f"{state} without a slot")

    def _check_slots(self, tasks: dict[str, TaskRecord]) -> None:
        records = self.world.tables.slot_records()
        for key, record in records.items():
            held = record.holders.as_dict() if record.holders is not None else {}
            if int(record.count or 0) != len(held):
                self.violate(SlotsDisagree, f"slot record {key} counts {record.count} for {len(held)} holders")
        for task in tasks.values():
            if task.status == RUNNING and task.task_id not in self.world.tables.holders(task.model_id):
                self.violate(SlotsDisagree, f"{task.task_id} is running without a slot of {task.model_id}")
        for key, record in records.items():
            model_id, _, user = key.partition("#user#")
            if user:
                model_holders = self.world.tables.holders(model_id)
                for task_id in (record.holders.as_dict() if record.holders is not None else {}):
                    if task_id not in model_holders:
                        self.violate(SlotsDisagree, f"{task_id} holds a user slot of {model_id} but no model slot")

    def check_after_clean_sweep(self) -> None:
        """A sweep that ran to its end frees every slot left by a task that ended, vanished, or was never claimed
        before its lease ran out."""
        tasks, now = self.world.tables.tasks(), self.world.now()
        for key, record in self.world.tables.slot_records().items():
            for task_id, lease in (record.holders.as_dict() if record.holders is not None else {}).items():
                task = tasks.get(task_id)
                if task is None or task.status in TERMINAL or (task.status == QUEUED and lease < now):
                    state = task.status if task else "gone"
                    self.violate(SlotsDisagree, f"after a sweep, {task_id} ({state}, lease {lease}) still holds a "
                                                f"slot of {key}")

    def _check_quota(self) -> None:
        used = self.world.tables.quota_used()
        refunds: Counter[str] = Counter()
        for task_id in self.refunded:
            refunds.update(self.facts[task_id].quota_keys)
        for key in set(self.accepted) | set(used):
            if used.get(key, 0) != self.accepted[key] - refunds[key]:
                self.violate(QuotaLedger, f"quota {key} used {used.get(key, 0)}, but {self.accepted[key]} accepted "
                                          f"and {refunds[key]} refunded")

    def check_drained(self) -> None:
        world = self.world
        tasks = world.tables.tasks()
        unfinished = sorted(f"{task.task_id} {task.status}/{task.stage}" for task in tasks.values()
                            if task.status not in TERMINAL)
        if unfinished:
            self.violate(NotDrained, f"still not terminal after draining: {', '.join(unfinished)}")
        held = {key: sorted(record.holders.as_dict()) for key, record in world.tables.slot_records().items()
                if record.holders is not None and record.holders.as_dict()}
        if held:
            self.violate(NotDrained, f"slots still held after draining: {held}")
        left = {lane: count for lane, count in world.messages_left().items() if count}
        if left:
            self.violate(NotDrained, f"messages left after draining: {left}")
        for task in tasks.values():
            if task.status != SUCCEEDED or task.task_id in self.operator_results:
                continue
            urls = [*(task.result_urls or []), task.video_url, task.last_frame_url]
            if task.results_copy_error is None and not all(storage.is_s3_ref(url) for url in urls if url):
                self.violate(NotDrained, f"{task.task_id} succeeded, but its results stay at Ark with no "
                                         "results_copy_error")
        self.check()


# --- the state machine ------------------------------------------------------------------------------------------

# A run's fault: none half the time, else one kind aimed at one of its first operations (early ones more often:
# most runs make a handful).
FAULTS = st.one_of(st.none(), st.builds(Fault, st.sampled_from(sorted(FAULT_TARGETS)),
                                        st.sampled_from((0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7))))
CLOCK_STEPS_S = (0.5, 1.0, 3.0, 11.0, 31.0, 61.0, 121.0, 361.0, 901.0, 1801.0, 10801.0)
STATUS_CHANGES = ("queued", "running", "failed", "cancelled", "expired", "succeeded")


class LifecycleModel(RuleBasedStateMachine):
    tasks = Bundle("tasks")
    deliveries = Bundle("deliveries")
    referee_class: type[Referee] = Referee

    def __init__(self, env: Environment) -> None:
        super().__init__()
        self.referee = self.referee_class()
        self.world = env.new_world(self.referee)
        self.referee.world = self.world
        self.api = self.world.api
        self.accounts = dict.fromkeys(USERS, 0)
        self.deleted_users: set[str] = set()
        self.result_image = self._sim_media("jpeg")
        self.result_video = self._sim_media("mp4")

    def _sim_media(self, kind: str) -> str:
        item = self.world.sim.media.add(kind, 64, 64, self.world.now(), frames=2 if kind == "mp4" else 0)
        return f"https://ark.test/_sim/media/{item.filename}"

    def _account(self, username: str) -> tuple[str, int]:
        return username, self.accounts[username]

    def _done(self, actor: Actor) -> Any:
        """The response of an API run that ended (None when it crashed or stalled)."""
        return actor.result if actor.state == "done" and not actor.crashed else None

    # --- setting up -----------------------------------------------------------------------------------------

    @initialize(image=st.integers(1, 2), video=st.integers(1, 2), user_cap=st.sampled_from([None, 1]))
    def configure_models(self, image: int, video: int, user_cap: int | None) -> None:
        for model_id, concurrency in ((IMAGE_MODEL, image), (VIDEO_MODEL, video)):
            response = self.world.admin("PUT", f"/api/admin/models/{model_id}",
                                        {"concurrency": concurrency, "max_running_per_user": user_cap})
            assert response.status_code == 200, response.data

    # --- users ------------------------------------------------------------------------------------------------

    @rule(target=tasks, user=st.sampled_from(USERS), kind=st.sampled_from(["image", "video"]),
          seed=st.sampled_from([None, 42]), duration=st.sampled_from([2, 3]))
    def submit(self, user: str, kind: str, seed: int | None, duration: int) -> Any:
        if user in self.deleted_users:
            return multiple()
        if kind == "image":
            body: dict[str, Any] = {"type": "image", "model_id": IMAGE_MODEL, "prompt": "a red fox in snow"}
        else:
            params = {"duration": duration, "resolution": "480p", **({"seed": seed} if seed is not None else {})}
            body = {"type": "video", "model_id": VIDEO_MODEL, "prompt": "waves", "params": params}
        response = self._done(self.world.request("POST", "/api/tasks", body, as_user=user))
        assert response is not None and response.status_code == 201, response and response.data
        task_id = response.data["id"]
        task = self.world.tables.tasks()[task_id]
        self.referee.facts[task_id] = TaskFacts(task_id, self._account(user), task.type, task.model_id, task.lane,
                                                epoch_of(task.created_at), list(task.quota_keys))
        self.referee.accepted.update(task.quota_keys)
        self.referee.statuses.setdefault(task_id, task.status)
        return task_id

    @rule(task=tasks, fault=FAULTS)
    def cancel(self, task: str, fault: Fault | None) -> None:
        facts = self.referee.facts[task]
        username = facts.owner[0]
        if username in self.deleted_users:
            return
        response = self._done(self.world.request("POST", f"/api/tasks/{task}/cancel", as_user=username,
                                                 fault=fault, task_id=task))
        if response is None:
            return
        if facts.deleted or facts.owner != self._account(username):
            self._expect_hidden(response, f"{username} cancelling {task}")
        elif response.status_code < 500:
            assert response.status_code in (200, 409), (response.status_code, response.data)

    @rule(task=tasks, as_admin=st.booleans())
    def delete_task(self, task: str, as_admin: bool) -> None:
        facts = self.referee.facts[task]
        username = ADMIN_NAME if as_admin else facts.owner[0]
        if username in self.deleted_users:
            return
        response = self._done(self.world.request("DELETE", f"/api/tasks/{task}", as_user=username, task_id=task))
        assert response is not None
        if not as_admin and (facts.deleted or facts.owner != self._account(username)):
            self._expect_hidden(response, f"{username} deleting {task}")
        else:
            assert response.status_code in (200, 404, 409), (response.status_code, response.data)
        if response.status_code == 200:
            facts.deleted = True

    @rule(task=tasks, reader=st.sampled_from(USERS))
    def read_task(self, task: str, reader: str) -> None:
        if reader in self.deleted_users:
            return
        facts = self.referee.facts[task]
        response = self._done(self.world.request("GET", f"/api/tasks/{task}", as_user=reader))
        assert response is not None
        if not facts.deleted and facts.owner == self._account(reader):
            if response.status_code != 200:
                self.referee.violate(SeenByOthers, f"{reader} cannot read its own task {task}: "
                                                   f"{response.status_code}")
        else:
            self._expect_hidden(response, f"{reader} reading {task}")

    @rule(reader=st.sampled_from((*USERS, ADMIN_NAME)))
    def list_tasks(self, reader: str) -> None:
        if reader in self.deleted_users:
            return
        path = "/api/admin/tasks" if reader == ADMIN_NAME else "/api/tasks"
        listed: set[str] = set()
        cursor: str | None = None
        for _ in range(20):
            query = f"?limit=100&cursor={cursor}" if cursor else "?limit=100"
            response = self._done(self.world.request("GET", path + query, as_user=reader))
            assert response is not None and response.status_code == 200, response and response.data
            listed |= {task["id"] for task in response.data["tasks"]}
            cursor = response.data.get("next_cursor")
            if not cursor:
                break
        expected = {task_id for task_id, facts in self.referee.facts.items() if not facts.deleted
                    and (reader == ADMIN_NAME or facts.owner == self._account(reader))}
        if listed != expected:
            self.referee.violate(SeenByOthers, f"{reader} lists {sorted(listed - expected)} it should not see, "
                                               f"misses {sorted(expected - listed)}")

    def _expect_hidden(self, response: Any, what: str) -> None:
        if response.status_code != 404:
            self.referee.violate(SeenByOthers, f"{what}: {response.status_code} {response.data}, not 404")

    # --- lanes, poller, sweeper, callbacks --------------------------------------------------------------------

    @rule(target=deliveries, lane=st.sampled_from(["image", "video"]), fault=FAULTS)
    def deliver(self, lane: str, fault: Fault | None) -> Any:
        delivery = self.world.receive(lane)
        if delivery is None:
            return multiple()
        self.world.deliver(delivery, fault)
        return delivery

    # The failures that matter most get rules of their own, so that short runs combine them: a worker that dies
    # inside its Ark call, one whose call Ark is still working on, one that gets an answer it cannot read or meets a
    # transient DynamoDB error on one of the task's own writes, and a sweep or an operator that acts on what it read
    # earlier.

    @rule(task=tasks)
    def deliver_and_die_at_ark(self, task: str) -> None:
        self.deliver_duplicate(task, Fault("answer_lost", at=0))

    @rule(task=tasks)
    def deliver_and_hold_at_ark(self, task: str) -> None:
        self.deliver_duplicate(task, Fault("held_at_ark", at=0))

    @rule(task=tasks, kind=st.sampled_from(MALFORMED))
    def deliver_an_unreadable_answer(self, task: str, kind: str) -> None:
        self.deliver_duplicate(task, Fault(kind, at=0))

    @rule(task=tasks, error=st.sampled_from(DYNAMODB_ERRORS), at=st.integers(0, 3))
    def deliver_meeting_a_dynamodb_error(self, task: str, error: str, at: int) -> None:
        """Its claim, Ark's id, its outcome or its results copy: the write meets an error that is no lost race."""
        self.deliver_duplicate(task, Fault(error, at=at, task_id=task))

    @rule(task=tasks)
    def sweep_from_a_stale_read(self, task: str) -> None:
        """A sweep that read the tables, then stalls before its first write to `task` (a later rule lets it go on)."""
        self.run_sweeper(Fault("stall", at=0, task_id=task))

    @rule(delivery=deliveries, fault=FAULTS)
    def deliver_again(self, delivery: Delivery, fault: Fault | None) -> None:
        """A message delivered before (its receipt may be stale), as SQS and Lambda retries do."""
        self.world.deliver(delivery, fault)

    @rule(task=tasks, fault=FAULTS)
    def deliver_duplicate(self, task: str, fault: Fault | None) -> None:
        self.world.deliver(self.world.duplicate(self.referee.facts[task].lane, task), fault)

    @rule(fault=FAULTS)
    def run_poller(self, fault: Fault | None) -> None:
        self.world.poll(fault)

    @rule(fault=FAULTS)
    def run_sweeper(self, fault: Fault | None) -> None:
        actor = self.world.sweep(fault)
        if actor.state == "done" and not actor.faulted and not actor.aborted:
            self.referee.check_after_clean_sweep()

    @precondition(lambda self: self.referee.callbacks)
    @rule(pick=st.integers(0, 1000), fault=FAULTS)
    def deliver_callback(self, pick: int, fault: Fault | None) -> None:
        callback = self.referee.callbacks[pick % len(self.referee.callbacks)]
        path = f"/api/queue/callback?task_id={callback.task_id}&token={callback.token}"
        self.world.request("POST", path, callback.payload, fault=fault, task_id=callback.task_id)

    # --- operators --------------------------------------------------------------------------------------------

    @rule(task=tasks, status=st.sampled_from(STATUS_CHANGES), fault=FAULTS)
    def change_status(self, task: str, status: str, fault: Fault | None) -> None:
        facts = self.referee.facts[task]
        body: dict[str, Any] = {"status": status}
        if status == "failed":
            body["error"] = {"code": "operator", "message": "Stopped by an operator."}
        if status == "succeeded":
            body.update({"result_urls": [self.result_image]} if facts.type == "image"
                        else {"video_url": self.result_video})
        actor = self.world.request("PUT", f"/api/tasks/{task}/status", body, as_user=ADMIN_NAME, fault=fault,
                                   task_id=task, kind="operator")
        response = self._done(actor)
        if response is not None and response.status_code < 500:
            allowed = (404,) if facts.deleted else (200, 409)
            assert response.status_code in allowed, (response.status_code, response.data)

    @rule(task=tasks, status=st.sampled_from(STATUS_CHANGES))
    def change_status_from_a_stale_read(self, task: str, status: str) -> None:
        """An operator request that read the task and checked it, then stalls before its write."""
        self.change_status(task, status, Fault("stall", at=0, task_id=task))

    @rule(model_id=st.sampled_from([IMAGE_MODEL, VIDEO_MODEL]), concurrency=st.integers(1, 3),
          user_cap=st.sampled_from([None, 1, 2]))
    def reconfigure_model(self, model_id: str, concurrency: int, user_cap: int | None) -> None:
        response = self.world.admin("PUT", f"/api/admin/models/{model_id}",
                                    {"concurrency": concurrency, "max_running_per_user": user_cap})
        assert response.status_code == 200, response.data

    @rule(user=st.sampled_from(USERS))
    def delete_user(self, user: str) -> None:
        if user in self.deleted_users:
            return
        response = self.world.admin("DELETE", f"/api/admin/users/{user}")
        assert response.status_code == 200, response.data
        self.deleted_users.add(user)
        self.api.tokens.pop(user, None)

    @rule(user=st.sampled_from(USERS))
    def recreate_user(self, user: str) -> None:
        """A new account under a deleted account's name: someone else."""
        if user not in self.deleted_users:
            return
        response = self.world.admin("POST", "/api/admin/users",
                                    {"username": user, "password": f"{user}-pass", "role": "user"})
        assert response.status_code == 201, response.data
        self.deleted_users.discard(user)
        self.accounts[user] += 1
        self.api.tokens.pop(user, None)

    # --- time ---------------------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from(CLOCK_STEPS_S))
    def advance_clock(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(task=tasks, moment=st.sampled_from(["past_lease", "before_deadline", "past_deadline"]))
    def advance_to(self, task: str, moment: str) -> None:
        """To the edge of a lease or a deadline, where one check may see it passed and another not."""
        facts = self.referee.facts[task]
        if moment == "past_lease":
            lease = self.world.tables.holders(facts.model_id).get(task)
            if lease is None:
                return
            target = lease + 0.001
        else:
            deadline = facts.created_at + self.world.settings.task_deadline_s
            target = deadline + (0.001 if moment == "past_deadline" else -0.001)
        if target > self.world.now():
            self.world.advance(target - self.world.now())

    @precondition(lambda self: self.world.stage.stalled)
    @rule(pick=st.integers(0, 3))
    def resume(self, pick: int) -> None:
        """A stalled run goes on (a call held at Ark gets its answer)."""
        stalled = self.world.stage.stalled
        self.world.resume(stalled[pick % len(stalled)])

    # --- what must hold ----------------------------------------------------------------------------------------

    @invariant()
    def promises_hold(self) -> None:
        self.referee.check()

    def teardown(self) -> None:
        """Drain and check the end state, unless a step failed already (that failure is the one to report)."""
        failing = sys.exc_info()[0] is not None
        try:
            if not failing:
                self.world.drain()
                self.referee.check_drained()
        finally:
            self.world.close()
