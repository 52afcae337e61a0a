"""The baton pass: a worker whose release hands its slot to a parked task runs that task itself, in the same
invocation, while its Lambda time allows; else the task is woken by a message (docs/design.md, "The baton
pass")."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.ark.errors import ArkRateLimitError
from chalicelib.lanes.waits import HANDOFF_LEASE_S
from chalicelib.lanes.worker import BATON_MIN_CALL_S, RESULTS_COPY_MARGIN_S, Batons, LaneWorker
from chalicelib.store import slots
from tests.factories import IMAGE_MODEL, IMAGE_TASK
from tests.lane_fixtures import Lanes, record_for
from tests.lanes.test_image_lane import ImagesCallingBack
from tests.lanes.test_parking import _task_ids
from tests.polling import wait_for

# Time left that allows a baton, and that does not.
PLENTY_S = RESULTS_COPY_MARGIN_S + BATON_MIN_CALL_S + 60
TOO_LITTLE_S = RESULTS_COPY_MARGIN_S + BATON_MIN_CALL_S - 1


def _clock(*readings: float) -> Callable[[], float]:
    """The invocation's remaining time, one reading per look (the last one repeated)."""
    values: Iterator[float] = iter(readings)
    last = [readings[-1]]

    def time_left() -> float:
        last[0] = next(values, last[0])
        return last[0]
    return time_left


def _run_with_two_parked(lanes: Lanes, time_left: Callable[[], float],
                         images_client: type[ImagesCallingBack] = ImagesCallingBack,
                         **overrides: Any) -> tuple[str, str, str]:
    """One task running on the model's one slot, two more parked during its Ark call (by `images_client`); its
    worker (given `time_left`) handles its message."""
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    running, first, second = (lanes.submit(IMAGE_TASK) for _ in range(3))
    parked = [lanes.receive_for("image", first), lanes.receive_for("image", second)]
    parking = lanes.worker("image")
    done: list[Any] = []
    images = images_client(lanes.ark.base_url, lambda: done or done.append(parking.handle(parked)))
    assert lanes.worker("image", image_client=images, **overrides).handle(
        [lanes.receive_for("image", running)], time_left=time_left) == {"batchItemFailures": []}
    assert done == [{"batchItemFailures": []}]  # both parked while the first ran
    return running, first, second


def test_a_released_slot_runs_the_oldest_parked_task_in_the_same_invocation(lanes: Lanes) -> None:
    tasks = _run_with_two_parked(lanes, _clock(PLENTY_S))

    assert [lanes.task(task_id).status for task_id in tasks] == ["succeeded"] * 3
    assert lanes.ark_calls("images.generate") == 3  # each once
    assert lanes.receive("image") == []  # no wake-up message: the releasing worker ran them
    assert slots.holders(IMAGE_MODEL) == {}


def test_with_too_little_time_left_the_slot_is_handed_on_by_a_message(lanes: Lanes) -> None:
    # Time enough for one relayed task: the one after it is woken by a message.
    _, first, second = _run_with_two_parked(lanes, _clock(PLENTY_S, PLENTY_S, TOO_LITTLE_S))

    assert lanes.task(first).status == "succeeded"
    assert lanes.task(second).status == "queued" and lanes.task(second).slot_handed_at is not None
    woken = wait_for(lambda: lanes.receive("image"))
    assert _task_ids(woken) == [second]
    lanes.worker("image").handle(woken)
    assert lanes.task(second).status == "succeeded" and lanes.ark_calls("images.generate") == 3


def test_a_worker_dying_mid_baton_strands_nothing(lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker dies after the hand-off, before the claim.
    monkeypatch.setattr(Batons, "_run", lambda _self, _task_id, _as_handed: None)
    running, first, second = _run_with_two_parked(lanes, _clock(PLENTY_S))
    assert lanes.task(first).status == "queued" and set(slots.holders(IMAGE_MODEL)) == {first}
    assert lanes.receive("image") == []  # handed, with no message: only the safety net finds it

    # Past the hand-off lease (the mark is the app wiring's clock's: the lanes' one is frozen a moment earlier).
    lanes.clock.advance(float(lanes.task(first).slot_handed_at or 0) - lanes.clock.now() + HANDOFF_LEASE_S + 1)
    lanes.sweeper().sweep()  # the hand-off taken back, handed anew (the oldest parked task is the same one)
    woken = wait_for(lambda: lanes.receive("image"))  # moto shows a message from the millisecond after its send
    assert _task_ids(woken) == [first]
    lanes.worker("image").handle(woken)
    woken = wait_for(lambda: lanes.receive("image"))
    assert _task_ids(woken) == [second]
    lanes.worker("image").handle(woken)
    assert [lanes.task(task_id).status for task_id in (running, first, second)] == ["succeeded"] * 3
    assert lanes.ark_calls("images.generate") == 3


def test_a_message_of_the_relayed_task_claiming_first_does_not_run_it_twice(
        lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of the handed task (a redelivery, a sweep's) handled between the relay's read and its claim: the
    claim's condition (the task's version and hand-off mark as read) refuses the relay's."""
    real_lease = LaneWorker._handed_lease
    strays: list[Any] = []
    stray = lanes.worker("image")

    def stray_first(worker: LaneWorker, task: Any) -> int:
        if worker is not stray and not strays:  # between the relayed task's read and its claim
            strays.append(stray.handle([record_for(task.task_id)]))
        return real_lease(worker, task)

    monkeypatch.setattr(LaneWorker, "_handed_lease", stray_first)
    tasks = _run_with_two_parked(lanes, _clock(PLENTY_S))

    assert strays == [{"batchItemFailures": []}]
    # the stray's release woke the last one by a message
    lanes.worker("image").handle(wait_for(lambda: lanes.receive("image")))
    assert [lanes.task(task_id).status for task_id in tasks] == ["succeeded"] * 3
    assert lanes.ark_calls("images.generate") == 3  # the stray ran it; the relay did not run it again


class _RateLimitedOnce(ImagesCallingBack):
    """Parks two tasks during the first call (as `_run_with_two_parked`'s client does); Ark answers the second
    call (the first relayed task's) 429."""

    def create_image_task(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.seen) == 1:
            self.seen.append("429")
            raise ArkRateLimitError("RateLimitExceeded", "too many requests", 429, retry_after=1)
        return super().create_image_task(*args, **kwargs)


class _RelaySendsFail:
    """The lane's SQS client, whose sends from a relayed task's thread fail (SQS down for that moment)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed: list[str] = []

    def send_message(self, **kwargs: Any) -> Any:
        if threading.current_thread().name.endswith("-relay"):
            self.failed.append(json.loads(kwargs["MessageBody"])["task_id"])
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessage")
        return self.inner.send_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_relayed_task_whose_retry_message_cannot_be_sent_is_not_stranded(lanes: Lanes) -> None:
    """A relayed task has no message of its own: when Ark refuses its call (429) and the retry's fresh message
    cannot be sent, it must still run later (parked for a slot), not wait queued until it times out."""
    sqs = _RelaySendsFail(aws.sqs())
    running, first, second = _run_with_two_parked(lanes, _clock(PLENTY_S), _RateLimitedOnce, sqs=sqs)
    assert sqs.failed == [first]  # its retry's message was never sent
    if lanes.task(first).status == "queued":  # parked after the second's release: a later hand-off finds it
        assert lanes.task(first).parked_model == IMAGE_MODEL
        lanes.sweeper().sweep()  # a free slot, and a task parked for one: handed it, and woken
        woken = wait_for(lambda: lanes.receive("image"))
        assert _task_ids(woken) == [first]
        lanes.worker("image").handle(woken)
    # else the second's release found it parked and ran it in the same invocation
    assert [lanes.task(task_id).status for task_id in (running, first, second)] == ["succeeded"] * 3
    assert lanes.ark_calls("images.generate") == 3  # the refused call never reached the simulator
    assert slots.holders(IMAGE_MODEL) == {}
