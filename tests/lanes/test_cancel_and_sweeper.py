"""Cancelling in every state, reclaiming leases of dead workers, and the deadline sweeper."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import catalog, slots, statemachine
from chalicelib.db import ModelRecord
from chalicelib.lanes import IMAGE_LEASE_MARGIN_S, Delivery, Retry
from chalicelib.resources import lane_named
from tests.conftest import DEMO, user_id_of
from tests.lanes.conftest import IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL, VIDEO_TASK, Lanes, record_for
from tests.lanes.test_image_lane import ImagesCallingBack
from tests.lanes.test_video_lane import ark_status, submitted
from tests.polling import wait_for


def cancel(lanes: Lanes, task_id: str) -> Any:
    return lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO)


def used_today(model_id: str, lanes: Lanes) -> int:
    return catalog.usage_today(ModelRecord.get(model_id), lanes.clock.now())["used"]


def test_cancelling_a_queued_task_gives_its_quota_request_back(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    assert used_today(IMAGE_MODEL, lanes) == 1

    response = cancel(lanes, task_id)

    assert response.status_code == 200 and response.data["status"] == "cancelled"
    assert response.data["cancellable"] is False
    assert used_today(IMAGE_MODEL, lanes) == 0


def test_cancelling_a_video_ark_still_queues_deletes_it_at_ark(lanes: Lanes) -> None:
    lanes.ark.configure(video_queue_s=600)
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id

    response = cancel(lanes, task_id)

    assert response.status_code == 200 and response.data["status"] == "cancelled"
    assert ark_status(lanes, external_id) == "cancelled"
    assert slots.in_use(VIDEO_MODEL) == 0


def test_a_video_running_at_ark_cannot_be_cancelled(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    wait_for(lambda: ark_status(lanes, lanes.task(task_id).external_id) == "running")

    # Our record still says Ark queues it: Ark refuses the DELETE and nothing changes here.
    refused = cancel(lanes, task_id)
    assert refused.status_code == 409 and refused.data["error"]["code"] == "not_cancellable"

    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    lanes.video().poll_due(budget_s=10)
    assert lanes.task(task_id).stage == "ark_running"
    assert cancel(lanes, task_id).status_code == 409
    assert lanes.task(task_id).status == "running" and task_id in slots.holders(VIDEO_MODEL)


def test_a_running_image_call_cannot_be_cancelled(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    images = ImagesCallingBack(lanes.ark.base_url, lambda: cancel(lanes, task_id))
    lanes.run("image", images=images)
    assert images.seen[0].status_code == 409
    assert lanes.task(task_id).status == "succeeded"


def test_a_finished_task_cannot_be_cancelled(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    lanes.run("image")
    response = cancel(lanes, task_id)
    assert response.status_code == 409 and response.data["error"]["details"]["status"] == "succeeded"


# --- the sweeper ---------------------------------------------------------------------------------------------


def test_a_dead_workers_lease_is_reclaimed_and_the_image_runs_again(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    lanes.receive_for("image", task_id)  # received by a worker that then died mid-call
    task = lanes.task(task_id)
    assert slots.acquire(IMAGE_MODEL, task_id, 4, lanes.clock.now() + 300)
    statemachine.transition(task, statemachine.RUNNING, actions=[], clock=lanes.clock)

    assert lanes.sweeper().sweep().leases_reclaimed == 0  # lease still valid: leave it alone
    lanes.clock.advance(301)
    report = lanes.sweeper().sweep()

    assert (report.leases_reclaimed, report.requeued) == (1, 1)
    assert lanes.task(task_id).status == "queued" and slots.in_use(IMAGE_MODEL) == 0
    lanes.worker("image").handle([lanes.receive_for("image", task_id)])  # the fresh message
    assert lanes.task(task_id).status == "succeeded"


@pytest.mark.abuse
def test_a_redelivery_after_a_dead_worker_takes_over_once_the_lease_ended(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)
    lease = lanes.clock.now() + lane_named("image").lambda_timeout_s + IMAGE_LEASE_MARGIN_S
    assert slots.acquire(IMAGE_MODEL, task_id, 4, lease)
    statemachine.transition(lanes.task(task_id), statemachine.RUNNING, clock=lanes.clock)

    assert len(lanes.worker("image").handle([record])["batchItemFailures"]) == 1  # still leased
    lanes.clock.advance(lease - lanes.clock.now() + 1)
    assert lanes.worker("image").handle([record]) == {"batchItemFailures": []}
    assert lanes.task(task_id).status == "succeeded" and lanes.ark_calls("images.generate") == 1


def test_slots_leaked_by_ended_or_unclaimed_tasks_are_freed(lanes: Lanes) -> None:
    ended, unclaimed = lanes.submit(IMAGE_TASK), lanes.submit(IMAGE_TASK)
    cancel(lanes, ended)
    for task_id in (ended, unclaimed, "tsk_vanished"):
        slots.acquire(IMAGE_MODEL, task_id, 4, lanes.clock.now() + 10)

    lanes.sweeper().sweep()
    assert set(slots.holders(IMAGE_MODEL)) == {unclaimed}  # an unclaimed one keeps its lease until it ends
    lanes.clock.advance(11)
    assert lanes.sweeper().sweep().leases_reclaimed == 1
    assert slots.in_use(IMAGE_MODEL) == 0


def test_a_vanished_tasks_slot_is_freed_with_its_users_slot(lanes: Lanes) -> None:
    user_slot = slots.user_slot_key(IMAGE_MODEL, user_id_of(DEMO[0]))
    slots.acquire(IMAGE_MODEL, "tsk_vanished", 4, lanes.clock.now() + 600, user_id=user_id_of(DEMO[0]), user_cap=1)
    assert slots.in_use(user_slot) == 1

    assert lanes.sweeper().sweep().leases_reclaimed == 1
    assert slots.in_use(IMAGE_MODEL) == 0 and slots.in_use(user_slot) == 0


def test_a_release_that_fails_leaves_the_slot_to_the_sweeper_and_the_task_moves_on(
    lanes: Lanes, listen: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lanes.ark.configure(server_error_fraction=1.0)
    task_id = lanes.submit(IMAGE_TASK)

    def throttled(*args: Any, **kwargs: Any) -> bool:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")

    monkeypatch.setattr(slots, "release", throttled)
    outcome = lanes.worker("image").process(Delivery.of(lanes.receive_for("image", task_id)))
    monkeypatch.undo()

    assert isinstance(outcome, Retry)  # backed off as usual, not a crashed worker
    assert lanes.task(task_id).status == "queued" and (task_id, "queued") in listen()
    assert task_id in slots.holders(IMAGE_MODEL)
    lanes.clock.advance(lane_named("image").lambda_timeout_s + IMAGE_LEASE_MARGIN_S + 1)
    assert lanes.sweeper().sweep().leases_reclaimed == 1
    assert slots.in_use(IMAGE_MODEL) == 0


def test_tasks_past_the_deadline_fail_with_timeout(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600, video_queue_s=0)
    queued = lanes.submit(IMAGE_TASK)
    running_video = submitted(lanes)
    fresh_clock_start = lanes.clock.now()
    lanes.clock.advance(lanes.settings.task_deadline_s + 60)

    report = lanes.sweeper().sweep()

    assert report.timed_out == 2
    for task_id in (queued, running_video):
        body = lanes.get(task_id)
        assert body["status"] == "failed" and body["error"]["code"] == "timeout"
    assert used_today(IMAGE_MODEL, lanes) == 0  # never reached Ark: the request is given back
    assert slots.in_use(VIDEO_MODEL) == 0
    assert lanes.task(queued).finished_at > lanes.task(queued).created_at
    assert fresh_clock_start < lanes.clock.now()
    # The message of the timed-out image finds it ended and calls nothing.
    assert lanes.run("image") == {"batchItemFailures": []}
    assert lanes.ark_calls("images.generate") == 0


def test_a_video_stuck_submitting_gets_a_message_to_reconcile_it(lanes: Lanes) -> None:
    task_id = lanes.submit(VIDEO_TASK)
    lanes.receive_for("video", task_id)  # its message: in flight with a dead worker
    dead = lanes.worker("video")
    dead.video.create = _no_answer  # type: ignore[method-assign]
    dead.handle([record_for(task_id)])
    lanes.clock.advance(3 * 60)

    assert lanes.sweeper().sweep().reconciling == 1
    lanes.worker("video").handle([lanes.receive_for("video", task_id)])
    assert lanes.task(task_id).stage == "ark_queued" and lanes.ark_calls("tasks.create") == 1


def _no_answer(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("killed mid-create")


def test_the_scheduled_functions_run_through_the_app(lanes: Lanes) -> None:
    from app import app

    event = {"version": "0", "id": "1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}
    assert app.handler_map["video_poller"](event, None) == {"polled": 0}
    lanes.submit(IMAGE_TASK)
    slots.acquire(IMAGE_MODEL, "tsk_vanished", 4, 0)
    answer = app.handler_map["sweeper"](event, None)
    assert answer == {"timed_out": 0, "leases_reclaimed": 1, "requeued": 0, "reconciling": 0}
