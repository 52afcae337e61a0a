"""Cancelling in every state, reclaiming leases of dead workers, and the deadline sweeper."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import catalog
from chalicelib.clock import iso
from chalicelib.lanes.messages import Delivery, Retry
from chalicelib.lanes.waits import IMAGE_LEASE_MARGIN_S
from chalicelib.resources import lane_named
from chalicelib.settings import get_settings
from chalicelib.store import slots, statemachine
from chalicelib.store.records import ModelRecord, TaskRecord
from chalicelib.video.stages import VIDEO_DEADLINE_GRACE_S
from tests.factories import ADMIN, DEMO, IMAGE_MODEL, IMAGE_TASK, VIDEO_MODEL, user_id_of
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import Lanes, record_for
from tests.lanes.test_image_lane import ImagesCallingBack
from tests.polling import wait_for
from tests.slot_helpers import hold_slot
from tests.video.test_video_lane import ark_status, submitted


def cancel(lanes: Lanes, task_id: str) -> Any:
    return lanes.api.request("POST", f"/api/tasks/{task_id}/cancel", as_user=DEMO)


def used_today(model_id: str, lanes: Lanes) -> int:
    return catalog.usage_today(ModelRecord.get(model_id), lanes.clock.now(), get_settings().quota_timezone)["used"]


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
    lanes.run("image", image_client=images)
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
    assert hold_slot(IMAGE_MODEL, task_id, 4, lanes.clock.now() + 300)
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
    assert hold_slot(IMAGE_MODEL, task_id, 4, lease)
    statemachine.transition(lanes.task(task_id), statemachine.RUNNING, clock=lanes.clock)

    assert len(lanes.worker("image").handle([record])["batchItemFailures"]) == 1  # still leased
    lanes.clock.advance(lease - lanes.clock.now() + 1)
    assert lanes.worker("image").handle([record]) == {"batchItemFailures": []}
    assert lanes.task(task_id).status == "succeeded" and lanes.ark_calls("images.generate") == 1


def test_slots_leaked_by_ended_or_unclaimed_tasks_are_freed(lanes: Lanes) -> None:
    ended, unclaimed = lanes.submit(IMAGE_TASK), lanes.submit(IMAGE_TASK)
    cancel(lanes, ended)
    for task_id in (ended, unclaimed, "tsk_vanished"):
        hold_slot(IMAGE_MODEL, task_id, 4, lanes.clock.now() + 10)

    lanes.sweeper().sweep()
    assert set(slots.holders(IMAGE_MODEL)) == {unclaimed}  # an unclaimed one keeps its lease until it ends
    lanes.clock.advance(11)
    assert lanes.sweeper().sweep().leases_reclaimed == 1
    assert slots.in_use(IMAGE_MODEL) == 0


def test_a_vanished_tasks_slot_is_freed_with_its_users_slot(lanes: Lanes) -> None:
    user_slot = slots.user_slot_key(IMAGE_MODEL, user_id_of(DEMO[0]))
    hold_slot(IMAGE_MODEL, "tsk_vanished", 4, lanes.clock.now() + 600, user_id=user_id_of(DEMO[0]), user_cap=1)
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

    monkeypatch.setattr(slots, "release_counting_parked", throttled)
    outcome = lanes.worker("image").process(Delivery.of(lanes.receive_for("image", task_id)))
    monkeypatch.undo()

    assert isinstance(outcome, Retry)  # backed off as usual, not a crashed worker
    assert lanes.task(task_id).status == "queued" and (task_id, "queued") in listen()
    assert task_id in slots.holders(IMAGE_MODEL)
    lanes.clock.advance(lane_named("image").lambda_timeout_s + IMAGE_LEASE_MARGIN_S + 1)
    assert lanes.sweeper().sweep().leases_reclaimed == 1
    assert slots.in_use(IMAGE_MODEL) == 0


def test_a_queued_task_past_the_deadline_fails_with_timeout(lanes: Lanes) -> None:
    queued = lanes.submit(IMAGE_TASK)
    lanes.clock.advance(lanes.settings.task_deadline_s + 60)

    report = lanes.sweeper().sweep()

    assert report.timed_out == 1
    body = lanes.get(queued)
    assert body["status"] == "failed" and body["error"]["code"] == "timeout"
    assert used_today(IMAGE_MODEL, lanes) == 0  # never reached Ark: the request is given back
    assert lanes.task(queued).finished_at == iso(lanes.clock.now())  # ended by this sweep
    # The message of the timed-out image finds it ended and calls nothing.
    assert lanes.run("image") == {"batchItemFailures": []}
    assert lanes.ark_calls("images.generate") == 0


def test_a_video_stuck_submitting_gets_a_message_to_reconcile_it(lanes: Lanes) -> None:
    task_id = lanes.submit(VIDEO_TASK)
    lanes.receive_for("video", task_id)  # its message: in flight with a dead worker
    dead = lanes.worker("video")
    dead.videos.submitter.create = _no_answer  # type: ignore[method-assign]
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
    hold_slot(IMAGE_MODEL, "tsk_vanished", 4, 0)
    answer = app.handler_map["sweeper"](event, None)
    assert answer == {"timed_out": 0, "leases_reclaimed": 1, "requeued": 0, "reconciling": 0, "woken": 0,
                      "webhooks_resent": 0, "metrics_applied": 0, "metrics_set_aside": 0,
                      "circuit_failed": 0}


# --- a video Ark accepted is never queued again; deadlines count from its create --------------------------------


def test_a_sweep_in_the_rounding_gap_of_a_videos_lease_leaves_it_running(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600)
    lanes.clock.advance(1.9 - lanes.clock.now() % 1)  # created at .9 of a second
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    # Past a lease truncated to whole seconds, not past the deadline it was computed from.
    lanes.clock.advance(lanes.settings.task_deadline_s - 0.4)

    lanes.sweeper().sweep()
    lanes.run("video")

    task = lanes.task(task_id)
    assert (task.status, task.external_id, task.stage) == ("running", external_id, "ark_queued")
    assert lanes.ark_calls("tasks.create") == 1


def test_a_deadline_raised_in_a_deploy_leaves_running_videos_alone(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=24 * 3600)
    task_id = submitted(lanes)
    lanes.clock.advance(lanes.settings.task_deadline_s + 60)
    lanes.settings = dataclasses.replace(lanes.settings, task_deadline_s=2 * lanes.settings.task_deadline_s)

    report = lanes.sweeper().sweep()
    lanes.run("video")

    assert (report.requeued, report.timed_out) == (0, 0)
    assert lanes.task(task_id).status == "running" and lanes.ark_calls("tasks.create") == 1


def test_a_video_ark_accepted_never_goes_back_to_the_queue(lanes: Lanes) -> None:
    task_id = submitted(lanes)

    with pytest.raises(statemachine.IllegalTransition):
        statemachine.transition(lanes.task(task_id), statemachine.QUEUED, clock=lanes.clock)
    assert lanes.task(task_id).status == "running" and lanes.task(task_id).poll_shard


def test_a_videos_deadline_counts_from_its_ark_create_not_from_its_queueing(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=24 * 3600)
    task_id = lanes.submit(VIDEO_TASK)
    lanes.clock.advance(lanes.settings.task_deadline_s - 600)  # waited in the queue nearly to its deadline
    lanes.run("video")
    lanes.clock.advance(3600)  # an hour into its run at Ark

    assert lanes.sweeper().sweep().timed_out == 0
    assert lanes.task(task_id).status == "running"
    assert ark_status(lanes, lanes.task(task_id).external_id) == "running"


@pytest.mark.parametrize(("deadline_s", "sent_s"), [(3 * 3600, 3 * 3600), (600, 3600), (10**6, 259200)])
def test_a_video_create_asks_ark_to_expire_it_within_the_platforms_deadline(
    lanes: Lanes, deadline_s: int, sent_s: int
) -> None:
    lanes.settings = dataclasses.replace(lanes.settings, task_deadline_s=deadline_s)
    task_id = submitted(lanes)
    assert lanes.ark.sim.tasks.tasks[lanes.task(task_id).external_id].execution_expires_after == sent_s


def test_a_video_past_its_deadline_that_ark_expired_ends_as_ark_says(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=24 * 3600)
    task_id = submitted(lanes)
    past_expiry = lanes.ark.sim.tasks.tasks[lanes.task(task_id).external_id].execution_expires_after + 1
    lanes.ark.advance(past_expiry)
    lanes.clock.advance(past_expiry + VIDEO_DEADLINE_GRACE_S)

    lanes.sweeper().sweep()

    assert lanes.get(task_id)["status"] == "expired" and slots.in_use(VIDEO_MODEL) == 0


def test_a_video_still_running_at_ark_past_its_deadline_fails_only_after_a_second_grace(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=24 * 3600)  # an Ark that overruns its own expiry
    task_id = submitted(lanes)
    lanes.clock.advance(lanes.task(task_id).deadline_at - lanes.clock.now() + 1)

    assert lanes.sweeper().sweep().timed_out == 0
    assert lanes.task(task_id).status == "running" and lanes.task(task_id).stage == "ark_running"
    lanes.clock.advance(VIDEO_DEADLINE_GRACE_S)
    assert lanes.sweeper().sweep().timed_out == 1
    assert lanes.get(task_id)["error"]["code"] == "timeout" and slots.in_use(VIDEO_MODEL) == 0


def test_a_video_ark_still_queues_past_its_deadline_is_cancelled_there(lanes: Lanes) -> None:
    lanes.ark.configure(video_queue_s=24 * 3600)
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    lanes.clock.advance(lanes.task(task_id).deadline_at - lanes.clock.now() + 1)

    assert lanes.sweeper().sweep().timed_out == 1

    assert lanes.get(task_id)["error"]["code"] == "timeout"
    assert ark_status(lanes, external_id) == "cancelled" and slots.in_use(VIDEO_MODEL) == 0


def test_the_deadline_never_ends_an_image_whose_worker_is_inside_its_call(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    lanes.clock.advance(lanes.settings.task_deadline_s - 10)  # claimed just before its deadline
    reports = []

    def deadline_passes_mid_call() -> None:
        lanes.clock.advance(20)
        reports.append(lanes.sweeper().sweep())

    lanes.run("image", image_client=ImagesCallingBack(lanes.ark.base_url, deadline_passes_mid_call))

    assert reports[0].timed_out == 0 and reports[0].leases_reclaimed == 0
    assert lanes.get(task_id)["status"] == "succeeded" and lanes.ark_calls("images.generate") == 1
    assert slots.in_use(IMAGE_MODEL) == 0


# --- ending a video reads Ark's status first ---------------------------------------------------------------------


def finished_at_ark_while_recorded_queued(lanes: Lanes) -> tuple[str, str]:
    """A video our record still shows `ark_queued` (no poll or callback yet) that Ark has finished."""
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    assert lanes.task(task_id).stage == "ark_queued"
    return task_id, external_id


def test_cancelling_a_video_ark_already_finished_keeps_it(lanes: Lanes) -> None:
    task_id, external_id = finished_at_ark_while_recorded_queued(lanes)

    response = cancel(lanes, task_id)

    assert response.status_code == 409 and response.data["error"]["code"] == "not_cancellable"
    assert response.data["error"]["details"]["status"] == "succeeded"
    body = lanes.get(task_id)
    assert body["status"] == "succeeded" and body["video_url"]
    assert external_id in lanes.ark.sim.tasks.tasks  # never DELETEd: Ark still has the billed video


def test_the_deadline_keeps_a_video_ark_already_finished(lanes: Lanes) -> None:
    task_id, external_id = finished_at_ark_while_recorded_queued(lanes)
    lanes.clock.advance(lanes.settings.task_deadline_s + VIDEO_DEADLINE_GRACE_S + 60)

    lanes.sweeper().sweep()

    assert lanes.get(task_id)["status"] == "succeeded"
    assert external_id in lanes.ark.sim.tasks.tasks and slots.in_use(VIDEO_MODEL) == 0


def test_an_operator_ending_a_video_ark_already_finished_gets_arks_outcome(lanes: Lanes) -> None:
    task_id, external_id = finished_at_ark_while_recorded_queued(lanes)

    response = lanes.api.request("PUT", f"/api/tasks/{task_id}/status",
                                 {"status": "failed", "error": {"code": "operator", "message": "stop"}}, as_user=ADMIN)

    assert response.status_code == 409 and response.data["error"]["code"] == "ended_at_ark"
    assert lanes.get(task_id)["status"] == "succeeded"
    assert external_id in lanes.ark.sim.tasks.tasks


def test_a_cancel_when_ark_cannot_be_asked_changes_nothing(lanes: Lanes) -> None:
    lanes.ark.configure(video_queue_s=600)
    task_id = submitted(lanes)
    lanes.ark.configure(server_error_fraction=1.0, fault_endpoints=["tasks.get"])

    response = cancel(lanes, task_id)

    assert response.status_code == 503 and response.data["error"]["code"] == "unavailable"
    assert lanes.task(task_id).status == "running" and lanes.ark_calls("tasks.delete") == 0


def test_a_worker_taking_over_a_slot_acquired_by_a_dead_one_is_left_alone_mid_call(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    record = lanes.receive_for("image", task_id)
    assert hold_slot(IMAGE_MODEL, task_id, 4, lanes.clock.now() + 300)  # then the worker died, unclaimed
    lanes.clock.advance(lane_named("image").visibility_timeout_s)  # its message comes back much later
    reports = []

    def sweep_mid_call() -> None:
        lanes.clock.advance(1)
        reports.append(lanes.sweeper().sweep())

    lanes.worker("image", image_client=ImagesCallingBack(lanes.ark.base_url, sweep_mid_call)).handle([record])

    assert reports[0].requeued == 0 and reports[0].leases_reclaimed == 0
    assert lanes.task(task_id).status == "succeeded" and lanes.ark_calls("images.generate") == 1


def test_a_video_scheduled_under_a_retired_poll_shard_is_polled_again_after_a_sweep(lanes: Lanes) -> None:
    """A video polled before the poller's index had one partition (its shard no longer read) is put back in it by
    the next sweep, and then ended by the poller: nothing waits for its deadline."""
    task_id = submitted(lanes)
    task = lanes.task(task_id)
    task.update(actions=[TaskRecord.poll_shard.set("video-1")])  # as the two-shard poller wrote it
    wait_for(lambda: ark_status(lanes, task.external_id) == "succeeded")
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    assert lanes.video().poll_due(budget_s=10) == 0  # not in the shard the poller reads

    lanes.sweeper().sweep()
    lanes.clock.advance(lanes.settings.video_poll_interval_s)

    assert lanes.video().poll_due(budget_s=10) == 1
    assert lanes.task(task_id).status == "succeeded"
