"""Parked tasks: a task with no free slot leaves the queue, and a released slot hands itself to the oldest parked
task its model may run (docs/design.md, "Parked tasks")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import aws, queues
from chalicelib.lanes import waits
from chalicelib.lanes.waits import HANDOFF_LEASE_S, Waker
from chalicelib.store import slots
from chalicelib.store.records import TaskRecord
from tests.factories import DEMO, IMAGE_MODEL, IMAGE_TASK, OTHER, user_id_of
from tests.lane_fixtures import Lanes, record_for
from tests.lanes.test_image_lane import ImagesCallingBack
from tests.slot_helpers import hold_slot


def _task_ids(records: list[dict[str, Any]]) -> list[str]:
    return [json.loads(record["body"])["task_id"] for record in records]


def _messages_in_queue() -> int:
    attributes = aws.sqs().get_queue_attributes(QueueUrl=queues.queue_url(aws.sqs(), "image"),
                                                AttributeNames=["All"])["Attributes"]
    return sum(int(attributes[name]) for name in (
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))


def _park(lanes: Lanes, *task_ids: str) -> None:
    """Deliver each task's message to a worker while no slot is free: every one is parked and acknowledged."""
    records = [lanes.receive_for("image", task_id) for task_id in task_ids]
    assert lanes.worker("image").handle(records) == {"batchItemFailures": []}
    for record in records:  # the event source deletes what the batch answer acknowledged
        aws.sqs().delete_message(QueueUrl=queues.queue_url(aws.sqs(), "image"), ReceiptHandle=record["receiptHandle"])


def _handed_without_a_message(lanes: Lanes, monkeypatch: Any) -> str:
    """A parked task handed a free slot by a waker that died before sending its message."""
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    _park(lanes, task_id)
    slots.release(IMAGE_MODEL, "tsk_elsewhere")

    monkeypatch.setattr(waits.queues, "enqueue", _dies)
    with pytest.raises(RuntimeError):
        _waker(lanes).hand_off(IMAGE_MODEL)
    monkeypatch.undo()
    return task_id


def _dies(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("the Lambda died")


def _waker(lanes: Lanes) -> Waker:
    return Waker(sqs=aws.sqs(), clock=lanes.clock, settings=lanes.settings)


def test_a_task_with_no_free_slot_is_parked_and_leaves_the_queue(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)

    _park(lanes, task_id)

    assert lanes.task(task_id).parked_model == IMAGE_MODEL
    assert lanes.get(task_id)["status"] == "queued" and lanes.get(task_id)["queue_position"] == 1
    assert _messages_in_queue() == 0  # nothing polls: the message is gone
    assert lanes.ark_calls("images.generate") == 0


def test_released_slots_hand_themselves_to_parked_tasks_in_the_order_they_were_accepted(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    running, first, second = (lanes.submit(IMAGE_TASK) for _ in range(3))
    parked = [lanes.receive_for("image", first), lanes.receive_for("image", second)]
    worker = lanes.worker("image")
    images = ImagesCallingBack(lanes.ark.base_url, lambda: worker.handle(parked))

    lanes.worker("image", image_client=images).handle([lanes.receive_for("image", running)])

    assert images.seen == [{"batchItemFailures": []}]  # both parked while the first ran
    assert lanes.task(running).status == "succeeded"
    # Its release took the slot for the oldest parked task and sent it one message.
    assert set(slots.holders(IMAGE_MODEL)) == {first}
    woken = lanes.receive("image")
    assert _task_ids(woken) == [first]
    worker.handle(woken)
    assert lanes.task(first).status == "succeeded" and lanes.task(first).parked_model is None
    assert _task_ids(lanes.receive("image")) == [second]  # and that release woke the next one
    assert lanes.ark_calls("images.generate") == 2


def test_two_hand_offs_at_once_wake_two_different_tasks(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=2)
    parked = [lanes.submit(IMAGE_TASK) for _ in range(3)]  # queued before the slots were taken: each has a message
    for holder in ("tsk_running_1", "tsk_running_2"):
        hold_slot(IMAGE_MODEL, holder, 2, lanes.clock.now() + 60)
    _park(lanes, *parked)
    for holder in ("tsk_running_1", "tsk_running_2"):
        slots.release(IMAGE_MODEL, holder)

    # Two releases that read the same oldest parked task at once: only one takes the slot for it.
    read_by_both = lanes.task(parked[0])
    assert [_waker(lanes)._take_for(read_by_both, None), _waker(lanes)._take_for(read_by_both, None)] == [True, False]
    assert _waker(lanes).hand_off(IMAGE_MODEL) == parked[1]
    assert _waker(lanes).hand_off(IMAGE_MODEL) is None  # both slots are taken: the third stays parked
    assert set(slots.holders(IMAGE_MODEL)) == set(parked[:2]) and lanes.task(parked[2]).parked_model == IMAGE_MODEL


def test_a_released_slot_skips_parked_tasks_whose_user_is_at_the_cap(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=2, max_running_per_user=1)
    demo_parked, other_parked = lanes.submit(IMAGE_TASK, DEMO), lanes.submit(IMAGE_TASK, OTHER)
    for holder, user in (("tsk_demo_running", user_id_of(DEMO[0])), ("tsk_other_running", user_id_of(OTHER[0]))):
        hold_slot(IMAGE_MODEL, holder, 2, lanes.clock.now() + 60, user_id=user, user_cap=1)
    _park(lanes, demo_parked, other_parked)

    _waker(lanes).release(TaskRecord("tsk_other_running", model_id=IMAGE_MODEL, user_id=user_id_of(OTHER[0]),
                                     user_slot=True))

    # Demo's task waited longer, but demo still runs one: the freed slot goes to the other user's task.
    woken = lanes.receive("image")
    assert _task_ids(woken) == [other_parked]
    lanes.worker("image").handle(woken)
    assert lanes.task(other_parked).status == "succeeded"
    assert lanes.task(demo_parked).status == "queued" and lanes.task(demo_parked).parked_model == IMAGE_MODEL


def test_a_parked_user_capped_task_runs_once_its_user_is_under_the_cap(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=3, max_running_per_user=1)
    assert hold_slot(IMAGE_MODEL, "tsk_demo_running", 3, lanes.clock.now() + 60, user_id=user_id_of(DEMO[0]),
                         user_cap=1)
    demo_task = lanes.submit(IMAGE_TASK, DEMO)
    _park(lanes, demo_task)  # refused by demo's own record: parked on it, though the model has free slots
    assert lanes.task(demo_task).parked_model == IMAGE_MODEL

    _waker(lanes).release(TaskRecord("tsk_demo_running", model_id=IMAGE_MODEL, user_id=user_id_of(DEMO[0]),
                                     user_slot=True))
    lanes.worker("image").handle(lanes.receive("image"))
    assert lanes.task(demo_task).status == "succeeded"


def test_a_slot_freed_between_the_refusal_and_the_park_is_taken_at_once(lanes: Lanes, monkeypatch: Any) -> None:
    """The park's condition on the full slot record: without it, the task would park after the last release and
    wait for the sweeper."""
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    real_try_acquire = slots.try_acquire

    def refused_then_released(*args: Any, **kwargs: Any) -> slots.Held | slots.Refused:
        acquired = real_try_acquire(*args, **kwargs)
        if isinstance(acquired, slots.Refused):
            slots.release(IMAGE_MODEL, "tsk_elsewhere")  # a release with nothing parked yet to hand over to
        return acquired

    monkeypatch.setattr(slots, "try_acquire", refused_then_released)
    lanes.worker("image").handle([lanes.receive_for("image", task_id)])

    assert lanes.task(task_id).status == "succeeded"


def test_a_lost_wake_up_is_made_good_by_the_next_sweep(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    _park(lanes, task_id)
    slots.release(IMAGE_MODEL, "tsk_elsewhere")  # released with no hand-off (the waker's requests failed)
    assert lanes.receive("image") == []

    assert lanes.sweeper().sweep().woken == 1

    lanes.worker("image").handle(lanes.receive("image"))
    assert lanes.task(task_id).status == "succeeded"


def test_a_waker_dying_between_the_hand_off_and_its_message_strands_nothing(lanes: Lanes, monkeypatch: Any) -> None:
    task_id = _handed_without_a_message(lanes, monkeypatch)
    assert set(slots.holders(IMAGE_MODEL)) == {task_id} and lanes.task(task_id).parked_model is None

    lanes.sweeper().sweep()  # within the hand-off lease: left alone
    assert lanes.receive("image") == []
    lanes.clock.advance(HANDOFF_LEASE_S + 1)
    report = lanes.sweeper().sweep()  # the lapsed hand-off taken back, the task parked and handed the slot anew

    assert report.leases_reclaimed == 1 and set(slots.holders(IMAGE_MODEL)) == {task_id}
    lanes.worker("image").handle(lanes.receive("image"))
    assert lanes.task(task_id).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 1


def test_a_worker_dying_after_parking_leaves_one_task_that_runs_once(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    worker = lanes.worker("image")
    worker.handle([record_for(task_id)])  # parked; the worker died before its message was acknowledged
    worker.handle([record_for(task_id, receive_count=2)])  # redelivered: still full, parked again
    assert lanes.task(task_id).parked_model == IMAGE_MODEL

    slots.release(IMAGE_MODEL, "tsk_elsewhere")
    worker.handle([record_for(task_id, receive_count=3)])  # the old message once more, now a slot is free
    _waker(lanes).hand_off(IMAGE_MODEL)  # a hand-off racing it finds nothing parked
    worker.handle(lanes.receive("image"))

    assert lanes.task(task_id).status == "succeeded" and lanes.task(task_id).parked_model is None
    assert lanes.ark_calls("images.generate") == 1 and slots.in_use(IMAGE_MODEL) == 0


def test_a_cancelled_parked_task_is_never_woken(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    cancelled, kept = lanes.submit(IMAGE_TASK), lanes.submit(IMAGE_TASK)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    _park(lanes, cancelled, kept)
    assert lanes.api.request("POST", f"/api/tasks/{cancelled}/cancel", as_user=DEMO).status_code == 200
    assert lanes.task(cancelled).parked_model is None

    slots.release(IMAGE_MODEL, "tsk_elsewhere")
    assert _waker(lanes).hand_off(IMAGE_MODEL) == kept


def test_a_task_accepted_while_every_slot_is_taken_is_parked_with_its_creation_and_sent_no_message(
        lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    running = lanes.submit(IMAGE_TASK)
    worker = lanes.worker("image")
    accepted_while_busy: list[tuple[str, str | None, int]] = []

    def submit_while_running() -> None:
        task_id = lanes.submit(IMAGE_TASK)
        accepted_while_busy.append((task_id, lanes.task(task_id).parked_model, _messages_in_queue()))

    images = ImagesCallingBack(lanes.ark.base_url, submit_while_running)
    lanes.worker("image", image_client=images).handle([lanes.receive_for("image", running)])

    ((parked, parked_model, messages),) = accepted_while_busy
    assert parked_model == IMAGE_MODEL and messages == 1  # only the running task's own message: none for it
    assert lanes.task(parked).slot_handed_at is not None  # the release handed it the slot, and sent its message
    worker.handle(lanes.receive("image"))
    assert lanes.task(parked).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 2


def test_a_slot_freed_between_intake_looking_and_writing_queues_the_task_as_usual(
        lanes: Lanes, monkeypatch: Any) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    real_take = slots.take_queue_number
    monkeypatch.setattr(slots, "take_queue_number", lambda model_id: (real_take(model_id)[0], True))  # "full"

    task_id = lanes.submit(IMAGE_TASK)

    assert lanes.task(task_id).parked_model is None and slots.state(IMAGE_MODEL).parked == 0
    lanes.worker("image").handle(lanes.receive("image"))
    assert lanes.task(task_id).status == "succeeded"


def test_a_first_message_that_finds_its_task_cancelled_gives_the_slot_it_took_back(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    assert lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO).status_code == 200

    # The first message acquires before it reads the task: the slot it took for a cancelled task goes back.
    assert lanes.worker("image").handle([lanes.receive_for("image", task_id)]) == {"batchItemFailures": []}

    assert slots.in_use(IMAGE_MODEL) == 0 and lanes.ark_calls("images.generate") == 0


def test_queue_positions_count_from_the_oldest_task_still_waiting(lanes: Lanes) -> None:
    lanes.set_model(IMAGE_MODEL, concurrency=1)
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)
    first, second, third = (lanes.submit(IMAGE_TASK) for _ in range(3))  # parked with their creation
    assert [lanes.get(task)["queue_position"] for task in (first, second, third)] == [1, 2, 3]

    _waker(lanes).release(TaskRecord("tsk_elsewhere", model_id=IMAGE_MODEL, user_id=None, user_slot=False))
    lanes.worker("image").handle(lanes.receive("image"))

    assert lanes.get(first)["status"] == "succeeded"
    assert [lanes.get(task)["queue_position"] for task in (second, third)] == [1, 2]




def test_a_lowered_user_cap_holds_when_a_users_own_release_hands_over(lanes: Lanes) -> None:
    """A same-user hand-off keeps the user's count: after the cap went down, it must not keep the user above it."""
    demo = user_id_of(DEMO[0])
    lanes.set_model(IMAGE_MODEL, concurrency=3, max_running_per_user=2)
    for holder in ("tsk_demo_1", "tsk_demo_2"):
        assert hold_slot(IMAGE_MODEL, holder, 3, lanes.clock.now() + 60, user_id=demo, user_cap=2)
    parked = lanes.submit(IMAGE_TASK, DEMO)
    _park(lanes, parked)  # refused by demo's record (2 of 2)
    lanes.set_model(IMAGE_MODEL, max_running_per_user=1)  # demo now runs one more than the cap allows

    _waker(lanes).release(TaskRecord("tsk_demo_1", model_id=IMAGE_MODEL, user_id=demo, user_slot=True))

    # Demo still runs tsk_demo_2 = the new cap: the parked task must wait.
    assert lanes.task(parked).parked_model == IMAGE_MODEL and lanes.task(parked).slot_handed_at is None
    assert set(slots.holders(IMAGE_MODEL)) == {"tsk_demo_2"}


def test_a_parked_task_behind_many_of_a_capped_users_is_still_handed_a_free_slot(
        lanes: Lanes, monkeypatch: Any) -> None:
    """More parked tasks of users at the cap than a hand-off looks ahead must not strand another user's task while
    slots are free."""
    monkeypatch.setattr(waits, "WAKE_PAGE_SIZE", 2)
    monkeypatch.setattr(waits, "WAKE_LOOKAHEAD", 3)
    demo, other = user_id_of(DEMO[0]), user_id_of(OTHER[0])
    lanes.set_model(IMAGE_MODEL, concurrency=3, max_running_per_user=1)
    assert hold_slot(IMAGE_MODEL, "tsk_demo_running", 3, lanes.clock.now() + 60, user_id=demo, user_cap=1)
    demo_parked = [lanes.submit(IMAGE_TASK, DEMO) for _ in range(4)]
    _park(lanes, *demo_parked)  # more than the look-ahead, all refused by demo's record
    assert hold_slot(IMAGE_MODEL, "tsk_other_running", 3, lanes.clock.now() + 60, user_id=other, user_cap=1)
    other_parked = lanes.submit(IMAGE_TASK, OTHER)
    _park(lanes, other_parked)

    _waker(lanes).release(TaskRecord("tsk_other_running", model_id=IMAGE_MODEL, user_id=other, user_slot=True))
    lanes.sweeper().sweep()  # the safety net too

    assert lanes.task(other_parked).slot_handed_at is not None, "stranded behind demo's parked tasks"


def test_a_redelivered_first_message_of_a_succeeded_task_copies_its_results_while_the_model_is_full(
        lanes: Lanes, monkeypatch: Any) -> None:
    """The worker died in the results copy after the success: its first message comes back while every slot is
    taken. Parking it (nothing to wait for) must not drop the copy."""
    from chalicelib.lanes.copies import ResultCopies
    from chalicelib.media import results

    lanes.set_model(IMAGE_MODEL, concurrency=1)
    task_id = lanes.submit(IMAGE_TASK)
    first_message = lanes.receive_for("image", task_id)
    real_keep = ResultCopies.keep

    def dies(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the Lambda died in the copy")

    monkeypatch.setattr(ResultCopies, "keep", dies)
    assert lanes.worker("image").handle([first_message])["batchItemFailures"]
    monkeypatch.setattr(ResultCopies, "keep", real_keep)
    assert lanes.task(task_id).status == "succeeded" and results.stored_count(lanes.task(task_id)) == 0
    hold_slot(IMAGE_MODEL, "tsk_elsewhere", 1, lanes.clock.now() + 60)

    for _ in range(2):  # once with the model not yet seen full here, once seen full
        assert lanes.worker("image").handle([first_message]) == {"batchItemFailures": []}

    assert results.stored_count(lanes.task(task_id)) == 1
    assert slots.state(IMAGE_MODEL).parked == 0 and lanes.ark_calls("images.generate") == 1


def test_a_claim_lost_to_a_cancel_gives_back_the_user_slot_its_acquire_took(lanes: Lanes, monkeypatch: Any) -> None:
    """The task's record says it took no user slot (its earlier run was before the cap): the slot this acquire
    took must still go back, or the user's record holds it forever (the sweeper reads only the model's)."""
    demo = user_id_of(DEMO[0])
    lanes.set_model(IMAGE_MODEL, concurrency=2)
    task_id = lanes.submit(IMAGE_TASK)
    TaskRecord(task_id).update(actions=[TaskRecord.user_slot.set(False)])  # ran once uncapped, then a retry
    lanes.set_model(IMAGE_MODEL, max_running_per_user=1)
    real_try_acquire = slots.try_acquire

    def acquired_then_cancelled(*args: Any, **kwargs: Any) -> slots.Held | slots.Refused:
        acquired = real_try_acquire(*args, **kwargs)
        assert lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO).status_code == 200
        return acquired

    monkeypatch.setattr(slots, "try_acquire", acquired_then_cancelled)
    lanes.worker("image").handle([record_for(task_id)])  # the retry's message: reads the task, then acquires

    assert lanes.task(task_id).status == "cancelled"
    assert slots.in_use(IMAGE_MODEL) == 0
    assert slots.in_use(slots.user_slot_key(IMAGE_MODEL, demo)) == 0, "the user's slot leaked"


def test_a_sweeper_dying_between_taking_a_hand_off_back_and_its_message_strands_nothing(
        lanes: Lanes, monkeypatch: Any) -> None:
    from chalicelib import sweeper

    task_id = _handed_without_a_message(lanes, monkeypatch)
    lanes.clock.advance(HANDOFF_LEASE_S + 1)
    monkeypatch.setattr(sweeper.queues, "enqueue", _dies)
    with pytest.raises(RuntimeError):
        lanes.sweeper().sweep()  # took the hand-off back, then died before sending the task its message
    monkeypatch.undo()

    lanes.clock.advance(HANDOFF_LEASE_S + 1)
    lanes.sweeper().sweep()  # a later sweep
    lanes.worker("image").handle(lanes.receive("image"))
    assert lanes.task(task_id).status == "succeeded", "queued with no message, no slot and not parked"
    assert lanes.ark_calls("images.generate") == 1 and slots.in_use(IMAGE_MODEL) == 0
    assert slots.state(IMAGE_MODEL).parked == 0
