"""The video lane: one create per task, reconciling after crashes, polling, callbacks and their races."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.accounts.auth import secret_digest
from chalicelib.ark.client import VolcVideoClient
from chalicelib.store import slots, statemachine
from chalicelib.store.records import TaskRecord
from chalicelib.video.stages import ARK_QUEUED, ARK_RUNNING, CREATE_GRACE_S, SUBMITTING
from chalicelib.video.status import callback_token as signed_callback_token
from chalicelib.video.submit import VideoSubmitter, claim_ark_task
from tests.factories import DEMO, OTHER, VIDEO_MODEL
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import ARK_KEY, Lanes, record_for
from tests.polling import wait_for


def ark_status(lanes: Lanes, external_id: str) -> str:
    return VolcVideoClient(lanes.ark.base_url, ARK_KEY).get_task_status(external_id).status


def submitted(lanes: Lanes, body: dict[str, Any] | None = None) -> str:
    task_id = lanes.submit(body or VIDEO_TASK)
    assert lanes.run("video") == {"batchItemFailures": []}
    return task_id


class CrashAfterCreate(VideoSubmitter):
    """The worker dies between Ark accepting the create and storing its id."""

    def record_submitted(self, task: Any, external_id: str, **_: Any) -> Any:
        raise RuntimeError("the Lambda was killed here")


def test_a_video_is_created_once_with_a_secret_callback_and_handed_to_the_poller(lanes: Lanes) -> None:
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2, "return_last_frame": True}})

    task = lanes.task(task_id)
    assert task.status == "running" and task.stage == ARK_QUEUED and task.external_id
    assert task.poll_shard and task.next_poll_at > lanes.clock.now()
    assert task_id in slots.holders(VIDEO_MODEL)
    callback_url = lanes.ark.sim.tasks.tasks[task.external_id].callback_url
    token = parse_qs(urlsplit(callback_url).query)["token"][0]
    assert token == signed_callback_token(lanes.settings, task_id) and token not in str(task.attribute_values)
    assert lanes.ark_calls("tasks.create") == 1
    assert lanes.get(task_id)["cancellable"] is True


def test_the_poller_reads_due_tasks_and_stores_the_result(lanes: Lanes) -> None:
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2, "return_last_frame": True}})
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    gets_before = lanes.ark_calls("tasks.get")

    assert lanes.video().poll_due(budget_s=10) == 0  # not due yet: nothing read
    lanes.clock.advance(lanes.settings.video_poll_interval_s)
    assert lanes.video().poll_due(budget_s=10) == 1

    body = lanes.get(task_id)
    assert body["status"] == "succeeded"
    assert body["video_url"].endswith(".mp4") and body["last_frame_url"].endswith(".png")
    assert body["result"]["duration"] == 2 and body["result"]["resolution"] == "1080p"
    assert body["result"]["ratio"] == "16:9" and isinstance(body["result"]["seed"], int)
    assert body["result"]["usage"]["completion_tokens"] > 0
    assert slots.in_use(VIDEO_MODEL) == 0
    assert lanes.task(task_id).poll_shard is None  # out of the sparse index
    assert lanes.ark_calls("tasks.get") == gets_before + 1


def test_polls_back_off_for_long_videos(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    interval = lanes.settings.video_poll_interval_s
    gaps = []
    for _ in range(10):
        before = lanes.task(task_id).next_poll_at
        lanes.clock.advance(before - lanes.clock.now())
        assert lanes.video().poll_due(budget_s=10) == 1
        gaps.append(lanes.task(task_id).next_poll_at - lanes.clock.now())
    assert gaps[:5] == [interval] * 5
    assert gaps[-1] > gaps[6] > interval
    assert lanes.task(task_id).stage == ARK_RUNNING



@pytest.mark.abuse
def test_a_crash_before_the_create_reached_ark_creates_it_exactly_once(lanes: Lanes) -> None:
    task_id = lanes.submit(VIDEO_TASK)
    record = lanes.receive_for("video", task_id)
    dead = lanes.worker("video")
    dead.videos.submitter.create = _raise_crash  # type: ignore[method-assign]
    dead.handle([record])
    assert lanes.ark_calls("tasks.create") == 0

    lanes.clock.advance(CREATE_GRACE_S + 1)
    lanes.worker("video").handle([record_for(task_id, 2)])
    lanes.worker("video").handle([record_for(task_id, 3)])  # and a duplicate on top

    assert lanes.ark_calls("tasks.create") == 1
    assert lanes.task(task_id).external_id in lanes.ark.sim.tasks.tasks


def test_two_deliveries_reconciling_at_once_create_the_video_once(lanes: Lanes) -> None:
    task_id = lanes.submit(VIDEO_TASK)
    dead = lanes.worker("video")
    dead.videos.submitter.create = _raise_crash  # type: ignore[method-assign]
    dead.handle([lanes.receive_for("video", task_id)])
    lanes.clock.advance(CREATE_GRACE_S + 1)
    read_by_both = lanes.task(task_id)  # a redelivery and the sweeper's message read it at the same time
    first, second = lanes.worker("video"), lanes.worker("video")
    look_up = first.videos.submitter.find_submitted
    second_outcomes = []

    def look_up_while_the_other_reconciles(task: Any) -> Any:
        second_outcomes.append(second.videos.reconcile(read_by_both, _delivery(record_for(task_id, 3))))
        return look_up(task)

    first.videos.submitter.find_submitted = look_up_while_the_other_reconciles  # type: ignore[method-assign]
    assert first.videos.reconcile(read_by_both, _delivery(record_for(task_id, 2))) is None

    assert second_outcomes == [None]  # it found the round taken and stopped
    assert lanes.ark_calls("tasks.create") == 1
    assert lanes.task(task_id).stage == ARK_QUEUED


@pytest.mark.abuse
def test_an_unanswered_create_is_reconciled_not_retried_blindly(lanes: Lanes) -> None:
    lanes.ark.configure(timeout_fraction=1.0, timeout_hang_s=0.0, fault_endpoints=["tasks.create"])
    task_id = lanes.submit(VIDEO_TASK)
    outcome = lanes.worker("video").process(_delivery(lanes.receive_for("video", task_id)))
    assert outcome is not None and outcome.delay_s == CREATE_GRACE_S
    assert lanes.task(task_id).stage == SUBMITTING

    lanes.ark.configure(timeout_fraction=0.0)
    lanes.clock.advance(CREATE_GRACE_S + 1)
    lanes.worker("video").handle([record_for(task_id, 2)])
    assert lanes.ark_calls("tasks.create") == 2  # the first one answered 504 and was never accepted
    assert lanes.task(task_id).stage == ARK_QUEUED


@pytest.mark.abuse
def test_a_rejected_create_fails_the_task_with_arks_code(lanes: Lanes) -> None:
    task_id = submitted(lanes, {**VIDEO_TASK, "prompt": "SIM_SENSITIVE_INPUT waves"})
    body = lanes.get(task_id)
    assert body["status"] == "failed" and body["error"]["code"] == "InputTextSensitiveContentDetected"
    assert slots.in_use(VIDEO_MODEL) == 0


# --- callbacks -----------------------------------------------------------------------------------------------


def callback_token(lanes: Lanes, task_id: str) -> str:
    url = lanes.ark.sim.tasks.tasks[lanes.task(task_id).external_id].callback_url
    return parse_qs(urlsplit(url).query)["token"][0]


def post_callback(lanes: Lanes, query: str, payload: dict[str, Any]) -> Any:
    return lanes.api.request("POST", f"/api/queue/callback{query}", payload)


@pytest.mark.abuse
@pytest.mark.parametrize("which", ["missing", "wrong", "other_task", "unknown_task"])
def test_a_callback_without_this_tasks_secret_is_refused_and_changes_nothing(lanes: Lanes, which: str) -> None:
    task_id, other_id = submitted(lanes), submitted(lanes)
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    query = {
        "missing": f"?task_id={task_id}",
        "wrong": f"?task_id={task_id}&token=not-the-secret",
        "other_task": f"?task_id={task_id}&token={callback_token(lanes, other_id)}",
        "unknown_task": f"?task_id=tsk_nope&token={callback_token(lanes, task_id)}",
    }[which]
    before = lanes.task(task_id).version
    gets_before = lanes.ark_calls("tasks.get")

    response = post_callback(lanes, query, lanes.ark.sim.tasks.tasks[external_id].to_wire())

    assert response.status_code == 401
    assert response.data["error"]["code"] == "invalid_callback_token"
    assert lanes.task(task_id).version == before and lanes.task(task_id).status == "running"
    assert lanes.ark_calls("tasks.get") == gets_before


@pytest.mark.abuse
def test_a_terminal_callback_triggers_one_status_read_and_ends_the_task(lanes: Lanes) -> None:
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")
    gets_before = lanes.ark_calls("tasks.get")
    payload = lanes.ark.sim.tasks.tasks[external_id].to_wire()

    response = post_callback(lanes, f"?task_id={task_id}&token={callback_token(lanes, task_id)}", payload)

    assert response.status_code == 200
    assert lanes.get(task_id)["status"] == "succeeded"
    assert lanes.ark_calls("tasks.get") == gets_before + 1
    assert slots.in_use(VIDEO_MODEL) == 0
    # Ark retries a terminal callback it thinks was lost: the second one changes and reads nothing.
    again = post_callback(lanes, f"?task_id={task_id}&token={callback_token(lanes, task_id)}", payload)
    assert again.status_code == 200 and lanes.ark_calls("tasks.get") == gets_before + 1


def test_a_running_callback_advances_the_stage_without_reading_ark(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    payload = {"id": external_id, "status": "running"}
    query = f"?task_id={task_id}&token={callback_token(lanes, task_id)}"

    assert post_callback(lanes, query, payload).status_code == 200
    assert lanes.task(task_id).stage == ARK_RUNNING
    # A late `queued` never moves it back.
    assert post_callback(lanes, query, {"id": external_id, "status": "queued"}).status_code == 200
    assert lanes.task(task_id).stage == ARK_RUNNING
    assert lanes.get(task_id)["cancellable"] is False
    assert lanes.ark_calls("tasks.get") == 0


def test_once_its_callbacks_arrive_a_video_whose_terminal_callback_is_lost_still_ends_through_the_poller(
        lanes: Lanes) -> None:
    """The running callback puts the next poll off to the safety net's interval (in the write it makes anyway):
    the poller reads the video no more at its own interval, yet ends it within the safety interval."""
    interval, safety = lanes.settings.video_poll_interval_s, lanes.settings.poll_interval_with_callbacks_s
    assert safety == max(4 * interval, 60)
    task_id = submitted(lanes, {**VIDEO_TASK, "params": {"duration": 2}})
    external_id = lanes.task(task_id).external_id
    query = f"?task_id={task_id}&token={callback_token(lanes, task_id)}"
    assert post_callback(lanes, query, {"id": external_id, "status": "running"}).status_code == 200
    wait_for(lambda: ark_status(lanes, external_id) == "succeeded")  # and Ark's terminal callback is lost
    gets_before = lanes.ark_calls("tasks.get")

    lanes.clock.advance(interval)
    assert lanes.video().poll_due(budget_s=10) == 0
    assert lanes.task(task_id).status == "running" and lanes.ark_calls("tasks.get") == gets_before
    lanes.clock.advance(safety - interval)
    assert lanes.video().poll_due(budget_s=10) == 1
    assert lanes.get(task_id)["status"] == "succeeded" and lanes.ark_calls("tasks.get") == gets_before + 1
    assert slots.in_use(VIDEO_MODEL) == 0


def test_a_long_video_whose_callbacks_arrive_is_polled_at_the_safety_interval_only(lanes: Lanes) -> None:
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    external_id = lanes.task(task_id).external_id
    query = f"?task_id={task_id}&token={callback_token(lanes, task_id)}"
    assert post_callback(lanes, query, {"id": external_id, "status": "running"}).status_code == 200
    gaps = []
    for _ in range(3):
        due = lanes.task(task_id).next_poll_at
        gaps.append(due - lanes.clock.now())
        lanes.clock.advance(due - lanes.clock.now())
        assert lanes.video().poll_due(budget_s=10) == 1
    assert gaps == [lanes.settings.poll_interval_with_callbacks_s] * 3
    assert lanes.ark_calls("tasks.get") == 3


@pytest.mark.abuse
def test_a_callback_naming_another_ark_task_or_an_ended_task_changes_nothing(lanes: Lanes) -> None:
    """Safeguard: a stage is advanced with no read, by a write conditional on the task running that Ark task."""
    lanes.ark.configure(video_run_s=3600)
    task_id, ended_id = submitted(lanes), submitted(lanes)
    statemachine.transition(lanes.task(ended_id), statemachine.FAILED, clock=lanes.clock)
    ended = lanes.task(ended_id)

    elsewhere = post_callback(lanes, f"?task_id={task_id}&token={callback_token(lanes, task_id)}",
                              {"id": "cgt-20250101000000-other", "status": "running"})
    late = post_callback(lanes, f"?task_id={ended_id}&token={callback_token(lanes, ended_id)}",
                         {"id": ended.external_id, "status": "running"})

    assert (elsewhere.status_code, late.status_code) == (200, 200)
    assert lanes.task(task_id).stage == ARK_QUEUED
    assert (lanes.task(ended_id).status, lanes.task(ended_id).stage, lanes.task(ended_id).version) == (
        "failed", ended.stage, ended.version)


def test_a_callback_url_made_before_tokens_were_signed_still_authenticates(lanes: Lanes) -> None:
    """A video created by an earlier release carries a random secret, of which its record keeps the hash."""
    lanes.ark.configure(video_run_s=3600)
    task_id = submitted(lanes)
    task = lanes.task(task_id)
    task.update(actions=[TaskRecord.callback_secret_hash.set(secret_digest("an-old-random-secret"))])
    payload = {"id": task.external_id, "status": "running"}

    wrong = post_callback(lanes, f"?task_id={task_id}&token=another-old-secret", payload)
    right = post_callback(lanes, f"?task_id={task_id}&token=an-old-random-secret", payload)

    assert wrong.status_code == 401 and right.status_code == 200
    assert lanes.task(task_id).stage == ARK_RUNNING



def _raise_crash(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the Lambda was killed before the create left")


def _delivery(record: dict[str, Any]) -> Any:
    from chalicelib.lanes.messages import Delivery

    return Delivery.of(record)


def test_other_users_cannot_see_or_cancel_a_video(lanes: Lanes) -> None:
    task_id = submitted(lanes)
    for method, path in (("GET", f"/api/tasks/{task_id}"), ("POST", f"/api/tasks/{task_id}/cancel"),
                         ("DELETE", f"/api/tasks/{task_id}")):
        refused = lanes.api.request(method, path, as_user=OTHER)
        assert (refused.status_code, refused.data["error"]["code"]) == (404, "task_not_found"), (method, path)
    assert task_id not in [task["id"] for task in lanes.api.request("GET", "/api/tasks", as_user=OTHER).data["tasks"]]
    assert lanes.get(task_id, DEMO)["status"] == "running"


# --- reconciling: only this task's own video is ever adopted ---------------------------------------------------

SEEDED = {**VIDEO_TASK, "params": {"duration": 2, "seed": 42}}


def crashed_before_the_create(lanes: Lanes, body: dict[str, Any], user: tuple[str, str] = DEMO) -> str:
    task_id = lanes.submit(body, user)
    dead = lanes.worker("video")
    dead.videos.submitter.create = _raise_crash  # type: ignore[method-assign]
    dead.handle([lanes.receive_for("video", task_id)])
    assert lanes.task(task_id).stage == SUBMITTING
    return task_id


def crashed_after_the_create(lanes: Lanes, body: dict[str, Any], videos: VolcVideoClient | None = None) -> str:
    task_id = lanes.submit(body)
    crashing = lanes.video_worker(CrashAfterCreate, **({"video_client": videos} if videos else {}))
    crashing.handle([lanes.receive_for("video", task_id)])
    assert lanes.task(task_id).stage == SUBMITTING
    return task_id


def reconciled(lanes: Lanes, task_id: str, receive_count: int = 2, **overrides: Any) -> Any:
    lanes.clock.advance(CREATE_GRACE_S + 1)
    return lanes.worker("video", **overrides).handle([record_for(task_id, receive_count)])


def test_every_create_names_its_owner_by_a_hash_as_safety_identifier(lanes: Lanes) -> None:
    mine, theirs = submitted(lanes), lanes.submit(VIDEO_TASK, OTHER)
    lanes.run("video")
    sent = {task_id: lanes.ark.sim.tasks.tasks[lanes.task(task_id).external_id].safety_identifier
            for task_id in (mine, theirs)}
    assert all(len(value) == 64 and DEMO[0] not in value and OTHER[0] not in value for value in sent.values())
    assert sent[mine] != sent[theirs]


def test_a_crashed_video_never_adopts_another_users_video_of_the_same_seed_and_shape(lanes: Lanes) -> None:
    crashed = crashed_before_the_create(lanes, SEEDED)
    theirs = lanes.submit(SEEDED, OTHER)
    lanes.run("video")
    their_video = lanes.task(theirs).external_id

    assert reconciled(lanes, crashed) == {"batchItemFailures": []}

    assert lanes.task(crashed).external_id not in (None, their_video)
    assert lanes.task(theirs).external_id == their_video
    assert lanes.ark_calls("tasks.create") == 2


def test_a_crashed_video_never_adopts_the_video_another_task_of_its_user_holds(lanes: Lanes) -> None:
    crashed = crashed_before_the_create(lanes, SEEDED)
    twin = submitted(lanes, SEEDED)  # the same user, seed and shape, created normally

    assert reconciled(lanes, crashed) == {"batchItemFailures": []}

    assert lanes.task(crashed).external_id not in (None, lanes.task(twin).external_id)
    assert lanes.ark_calls("tasks.create") == 2


class CreatingTwice(VolcVideoClient):
    """An SDK-style automatic retry of a create that Ark had in fact accepted: two billed tasks, one answer."""

    def create_video_task(self, *args: Any, **kwargs: Any) -> str:
        first = super().create_video_task(*args, **kwargs)
        super().create_video_task(*args, **kwargs)
        return first


def test_two_ark_videos_that_fit_fail_the_task_as_ambiguous_instead_of_guessing(lanes: Lanes) -> None:
    lanes.ark.configure(video_queue_s=600)
    task_id = crashed_after_the_create(lanes, SEEDED, CreatingTwice(lanes.ark.base_url, ARK_KEY))
    assert lanes.ark_calls("tasks.create") == 2

    assert reconciled(lanes, task_id) == {"batchItemFailures": []}

    body = lanes.get(task_id)
    assert body["status"] == "failed" and body["error"]["code"] == "reconcile_ambiguous"
    assert lanes.task(task_id).external_id is None and lanes.ark_calls("tasks.create") == 2
    assert slots.in_use(VIDEO_MODEL) == 0
    # Nobody will take them: dropped while Ark still queues them, and never adopted by a later task of the user.
    set_aside = list(lanes.ark.sim.tasks.tasks)
    assert [ark_status(lanes, external_id) for external_id in set_aside] == ["cancelled"] * 2
    later = crashed_before_the_create(lanes, SEEDED)
    assert reconciled(lanes, later) == {"batchItemFailures": []}
    assert lanes.task(later).external_id not in (None, *set_aside)


class ListingWithout(VolcVideoClient):
    """Ark's list as an Ark that does not echo one field would answer it."""

    def __init__(self, base_url: str, missing: str) -> None:
        super().__init__(base_url, ARK_KEY)
        self.missing = missing

    def list_tasks(self, *args: Any, **kwargs: Any) -> Any:
        page = super().list_tasks(*args, **kwargs)
        return page.model_copy(update={"items": [item.model_copy(update={self.missing: None})
                                                 for item in page.items]})


@pytest.mark.parametrize("missing", ["seed", "safety_identifier", "resolution"])
def test_a_field_ark_does_not_echo_counts_as_no_match(lanes: Lanes, missing: str) -> None:
    task_id = crashed_after_the_create(lanes, {**SEEDED, "params": {**SEEDED["params"], "resolution": "720p"}})
    unseen = next(iter(lanes.ark.sim.tasks.tasks))

    reconciled(lanes, task_id, video_client=ListingWithout(lanes.ark.base_url, missing))

    assert lanes.task(task_id).external_id not in (None, unseen)


class RunningDuringCreate(VolcVideoClient):
    """Runs `during()` once Ark accepted the create, before its answer reaches the worker."""

    def __init__(self, base_url: str, during: Any) -> None:
        super().__init__(base_url, ARK_KEY)
        self.during = during

    def create_video_task(self, *args: Any, **kwargs: Any) -> str:
        external_id = super().create_video_task(*args, **kwargs)
        self.during()
        return external_id


def test_a_lone_video_a_sibling_may_still_claim_is_not_adopted(lanes: Lanes) -> None:
    crashed = crashed_before_the_create(lanes, SEEDED)
    lanes.clock.advance(CREATE_GRACE_S + 1)
    sibling = lanes.submit(SEEDED)  # the same user, seed and shape: its create is in flight
    looks: list[Any] = []
    creating = RunningDuringCreate(lanes.ark.base_url, lambda: looks.append(
        lanes.worker("video").handle([record_for(crashed, 2)])))

    lanes.worker("video", video_client=creating).handle([lanes.receive_for("video", sibling)])
    assert len(looks[0]["batchItemFailures"]) == 1  # it looks again later
    sibling_video = lanes.task(sibling).external_id
    assert lanes.task(crashed).external_id is None

    assert reconciled(lanes, crashed, receive_count=3) == {"batchItemFailures": []}
    assert lanes.task(crashed).external_id not in (None, sibling_video)
    assert lanes.ark_calls("tasks.create") == 2


def test_a_crash_after_taking_the_ark_id_adopts_it_on_the_next_look(lanes: Lanes, monkeypatch: Any) -> None:
    """A worker of an earlier release owned the Ark task, then died before recording its id (today both are one
    transaction): the next look adopts it, however many of the user's videos look alike."""
    from chalicelib.store import statemachine

    task_id = lanes.submit(SEEDED)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the Lambda was killed before recording the Ark task")

    monkeypatch.setattr(statemachine, "update_fields_together", killed)
    lanes.worker("video").handle([lanes.receive_for("video", task_id)])
    monkeypatch.undo()
    created = next(iter(lanes.ark.sim.tasks.tasks))
    assert lanes.task(task_id).stage == SUBMITTING
    claim_ark_task(created, task_id, lanes.clock.now())
    crashed_before_the_create(lanes, SEEDED)  # a sibling whose create would look the same

    assert reconciled(lanes, task_id) == {"batchItemFailures": []}
    assert lanes.task(task_id).external_id == created and lanes.ark_calls("tasks.create") == 1


class EndingTheTaskDuringTheCreate(VolcVideoClient):
    """Ark accepts the create while the task is ended here (an operator failed it)."""

    def __init__(self, base_url: str, end: Any) -> None:
        super().__init__(base_url, ARK_KEY)
        self.end = end

    def create_video_task(self, *args: Any, **kwargs: Any) -> str:
        created = super().create_video_task(*args, **kwargs)
        self.end()
        return created


def test_the_ark_video_of_a_task_ended_during_its_create_is_never_another_tasks(lanes: Lanes) -> None:
    """Safeguard: a create whose task ended meanwhile still records its Ark task as that task's (Ark runs it: it
    cannot be dropped), so a twin of the same user, seed and shape reconciling after a crash creates its own."""
    from chalicelib.store import statemachine

    lanes.ark.configure(video_queue_s=0, video_run_s=3600)
    twin = crashed_before_the_create(lanes, SEEDED)
    ended = lanes.submit(SEEDED)

    client = EndingTheTaskDuringTheCreate(lanes.ark.base_url, lambda: statemachine.transition(
        lanes.task(ended), statemachine.FAILED, clock=lanes.clock))
    assert lanes.worker("video", video_client=client).handle([lanes.receive_for("video", ended)]) == {
        "batchItemFailures": []}
    (abandoned,) = lanes.ark.sim.tasks.tasks
    assert lanes.task(ended).status == "failed" and ark_status(lanes, abandoned) == "running"

    assert reconciled(lanes, twin) == {"batchItemFailures": []}

    assert lanes.task(twin).external_id not in (None, abandoned)
    assert lanes.ark_calls("tasks.create") == 2
