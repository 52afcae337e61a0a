"""Dead letters: listed with their task and why they died without being hidden, and replayed safely (a finished task
dropped, a video Ark accepted never created again, parallel and repeated replays one Ark call)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import aws, queues, wiring
from chalicelib.admin.dlq import REPLAY_VISIBILITY_S, DeadLetters
from chalicelib.lanes.messages import Delivery
from chalicelib.resources import WEBHOOK_DELIVERY, Queue, lane_named
from chalicelib.store.records import WebhookEventRecord
from chalicelib.video.stages import ARK_QUEUED, CREATE_GRACE_S, SUBMITTING
from chalicelib.webhooks.delivery import EVENT_KEY
from chalicelib.webhooks.events import WebhookMessage, webhook_id
from tests.factories import ADMIN, IMAGE_TASK, SHORT_VIDEO_TASK
from tests.lane_fixtures import Lanes, record_for
from tests.video.test_video_lane import CrashAfterCreate, submitted

IMAGE, VIDEO = lane_named("image"), lane_named("video")


@pytest.fixture(autouse=True)
def replays_on_the_lanes_clock(lanes: Lanes) -> None:
    """The routes' dead letters run on the lanes' clock, as the workers and the poller do."""
    wiring.current().dead_letters = lanes.wiring().dead_letters


def dead_letter(queue: Queue, body: dict[str, Any] | str) -> str:
    """A message in the queue's DLQ, as SQS moves it there; returns its id."""
    sqs = aws.sqs()
    answer = sqs.send_message(QueueUrl=queues.dead_letter_url_of(sqs, queue),
                              MessageBody=body if isinstance(body, str) else json.dumps(body))
    return answer["MessageId"]


def visible_in_dlq(queue: Queue) -> list[str]:
    """The DLQ's visible message ids (received and shown again)."""
    sqs = aws.sqs()
    url = queues.dead_letter_url_of(sqs, queue)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return sorted(message["MessageId"] for message in messages)


def drain(lanes: Lanes, lane: str) -> None:
    """Acknowledge every message the lane holds (the task's own, as if its worker took it)."""
    sqs = aws.sqs()
    for record in lanes.receive(lane):
        sqs.delete_message(QueueUrl=queues.queue_url(sqs, lane), ReceiptHandle=record["receiptHandle"])


def replay(lanes: Lanes, lane: str, body: dict[str, Any] | None = None, expect: int = 200) -> dict[str, Any]:
    response = lanes.api.request("POST", f"/api/admin/dlq/{lane}/replay", body, as_user=ADMIN)
    assert response.status_code == expect, response.body
    return response.data


def failed_by_ark(lanes: Lanes) -> str:
    """A video the lane gave up on: Ark refused every create (429) until the last receive, its quota given back."""
    lanes.ark.configure(video_max_queued=0)
    task_id = lanes.submit(SHORT_VIDEO_TASK)
    worker = lanes.worker("video")
    worker.process(Delivery.of(lanes.receive_for("video", task_id)))
    for receive in range(2, VIDEO.max_receives + 1):
        worker.handle([record_for(task_id, receive)])
    assert lanes.task(task_id).status == "failed"
    return task_id


def test_the_listing_shows_each_dead_letter_hides_none_and_a_replay_drops_what_must_not_run(lanes: Lanes) -> None:
    gave_up, queued, other = failed_by_ark(lanes), lanes.submit(IMAGE_TASK), lanes.submit(IMAGE_TASK)
    drain(lanes, "image")
    dead_letter(VIDEO, {"task_id": gave_up})
    dead_letter(VIDEO, {"task_id": "tsk_" + "a" * 26})
    dead_letter(VIDEO, "{]")
    chosen, left = dead_letter(IMAGE, {"task_id": queued}), dead_letter(IMAGE, {"task_id": other})
    creates = lanes.ark_calls("tasks.create")

    listing = lanes.api.request("GET", "/api/admin/dlq", as_user=ADMIN)

    assert listing.status_code == 200, listing.body
    by_lane = {queue["lane"]: queue for queue in listing.data["queues"]}
    assert set(by_lane) == {"image", "video", WEBHOOK_DELIVERY.name}
    assert by_lane["video"]["approximate"] == 3 and by_lane[WEBHOOK_DELIVERY.name]["messages"] == []
    letters = {letter["task_id"]: letter for letter in by_lane["video"]["messages"]}
    assert letters[gave_up]["task_status"] == "failed" and letters[gave_up]["sent_at"]
    assert letters[gave_up]["reason"].startswith("upstream_quota_exceeded: ")  # the lane's last error
    assert (letters["tsk_" + "a" * 26]["task_status"], letters[None]["reason"]) == (None, "unreadable message")
    assert [letter["task_status"] for letter in by_lane["image"]["messages"]] == ["queued", "queued"]
    # Nothing was hidden by the listing: a replay (or another listing) sees every message at once.
    assert len(visible_in_dlq(VIDEO)) == 3 and visible_in_dlq(IMAGE) == sorted([chosen, left])

    assert replay(lanes, "video") == {"replayed": 0, "dropped": 3,
                                      "dropped_reasons": {"task_finished": 1, "task_missing": 1, "unreadable": 1}}
    assert visible_in_dlq(VIDEO) == [] and lanes.receive("video") == []  # deleted, and nothing re-sent
    task = lanes.task(gave_up)
    assert task.status == "failed" and task.quota_refunded  # stays finished: its refund stands, nothing resurrects
    assert lanes.ark_calls("tasks.create") == creates

    assert replay(lanes, "image", {"message_ids": [chosen]})["replayed"] == 1
    assert visible_in_dlq(IMAGE) == [left]  # passed over, and visible again at once
    assert [json.loads(record["body"])["task_id"] for record in lanes.receive("image")] == [queued]
    trail = lanes.api.request("GET", "/api/admin/audit?action=x", as_user=ADMIN)
    assert trail.status_code == 400  # no such filter
    replays = {entry["target"]: entry for entry in lanes.api.request("GET", "/api/admin/audit?actor=admin",
                                                                      as_user=ADMIN).data["entries"]
               if entry["action"] == "dlq.replay"}
    assert replays["dlq:image"]["after"]["replayed_messages"] == [{"message_id": chosen, "task_id": queued}]
    assert replays["dlq:video"]["after"]["dropped_reasons"]["task_finished"] == 1


def test_a_video_ark_accepted_goes_to_the_poller_and_is_never_created_again(lanes: Lanes) -> None:
    task_id = submitted(lanes, SHORT_VIDEO_TASK)
    assert lanes.task(task_id).stage == ARK_QUEUED and lanes.ark_calls("tasks.create") == 1
    dead_letter(VIDEO, {"task_id": task_id, "model_id": SHORT_VIDEO_TASK["model_id"], "user_id": "forged"})

    assert replay(lanes, "video") == {"replayed": 1, "dropped": 0, "dropped_reasons": {}}

    assert lanes.receive("video") == []  # no message a lane could act on
    assert lanes.task(task_id).next_poll_at <= lanes.clock.now()  # due for the poller now
    assert lanes.video().poll_due(budget_s=10) == 1
    assert lanes.ark_calls("tasks.create") == 1


def test_a_video_whose_worker_died_after_the_create_is_reconciled_not_created_again(lanes: Lanes) -> None:
    lanes.ark.configure(video_queue_s=600)  # still queued at Ark when adopted, however soon the replay comes
    task_id = lanes.submit(SHORT_VIDEO_TASK)
    lanes.video_worker(CrashAfterCreate).handle([lanes.receive_for("video", task_id)])
    assert lanes.task(task_id).stage == SUBMITTING and lanes.ark_calls("tasks.create") == 1
    drain(lanes, "video")  # the crashed delivery's message, as if it had gone to the DLQ
    dead_letter(VIDEO, {"task_id": task_id})

    assert replay(lanes, "video")["replayed"] == 1
    lanes.clock.advance(CREATE_GRACE_S + 1)
    lanes.run("video")

    task = lanes.task(task_id)
    assert task.stage == ARK_QUEUED and task.external_id  # Ark's task adopted from its list
    assert lanes.ark_calls("tasks.create") == 1


def test_two_replays_at_once_make_one_ark_call(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    drain(lanes, "image")
    dead_letter(IMAGE, {"task_id": task_id})
    services = lanes.wiring()
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def replay_now() -> None:
        start.wait()
        answers.append(DeadLetters(sqs=services.sqs, audit=services.audit, clock=lanes.clock)
                       .replay("image", None, actor="admin"))

    threads = [threading.Thread(target=replay_now) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(answer["replayed"] for answer in answers) >= 1 and visible_in_dlq(IMAGE) == []
    worker = lanes.worker("image")
    while records := lanes.receive("image"):  # both replays' messages, if both sent one
        worker.handle(records)
    assert lanes.task(task_id).status == "succeeded"
    assert lanes.ark_calls("images.generate") == 1


def test_a_replay_that_died_before_its_delete_sends_again_and_ark_is_called_once(lanes: Lanes) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    drain(lanes, "image")
    message_id = dead_letter(IMAGE, {"task_id": task_id})
    dead = lanes.wiring().dead_letters
    [letter] = dead._receive(queues.dead_letter_url_of(aws.sqs(), IMAGE), 10, 0, visible=1)
    assert dead._redrive(IMAGE, letter) is None  # sent; the replay dies before deleting it

    assert replay(lanes, "image", {"message_ids": [message_id]})["replayed"] == 1  # sent a second time

    both = lanes.receive("image")
    assert len(both) == 2
    lanes.worker("image").handle(both)  # the duplicate finds the task claimed
    assert lanes.task(task_id).status == "succeeded" and lanes.ark_calls("images.generate") == 1

    unknown = lanes.api.request("POST", "/api/admin/dlq/nope/replay", as_user=ADMIN)
    assert (unknown.status_code, unknown.data["error"]["code"]) == (404, "lane_not_found")
    bad = lanes.api.request("POST", "/api/admin/dlq/image/replay", {"message_ids": "all"}, as_user=ADMIN)
    assert bad.status_code == 400 and bad.data["error"]["code"] == "validation_error"


class LapsingSqs:
    """SQS as it may behave (at-least-once delivery, a visibility that lapsed): what a replay receives from a DLQ
    stays visible to others (received and shown again in one step: no one sees it hidden). With `together`, each
    thread's first receive waits for the others' (so they all hold the same message at once)."""

    def __init__(self, sqs: Any, together: int = 1) -> None:
        self._sqs = sqs
        self._one_step = threading.Lock()
        self._all_received = threading.Barrier(together)
        self._waited = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def get_queue_attributes(self, **arguments: Any) -> dict[str, Any]:
        with self._one_step:
            return self._sqs.get_queue_attributes(**arguments)

    def receive_message(self, **arguments: Any) -> dict[str, Any]:
        if not arguments["QueueUrl"].endswith("-dlq"):
            return self._sqs.receive_message(**arguments)
        with self._one_step:
            answer = self._sqs.receive_message(**{**arguments, "WaitTimeSeconds": 0})
            for message in answer.get("Messages", []):
                self._sqs.change_message_visibility(QueueUrl=arguments["QueueUrl"],
                                                    ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        if not getattr(self._waited, "done", False):
            self._waited.done = True
            self._all_received.wait(timeout=10)
        return answer


def replays_on(lanes: Lanes, sqs: Any) -> DeadLetters:
    services = lanes.wiring()
    return DeadLetters(sqs=sqs, audit=services.audit, clock=lanes.clock)


def test_two_replays_holding_one_message_send_it_once(lanes: Lanes) -> None:
    """Each replay claims the message first: the one whose conditional write won sends it, the other leaves it
    (held) or deletes it (sent). Without the claim both send it."""
    task_id = lanes.submit(IMAGE_TASK)
    drain(lanes, "image")
    dead_letter(IMAGE, {"task_id": task_id})
    sqs = LapsingSqs(aws.sqs(), together=2)
    answers: list[dict[str, Any]] = []

    def replay_now() -> None:
        answers.append(replays_on(lanes, sqs).replay("image", None, actor="admin"))

    threads = [threading.Thread(target=replay_now) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer["replayed"] for answer in answers) == [0, 1], answers
    assert [json.loads(record["body"])["task_id"] for record in lanes.receive("image")] == [task_id]
    # Whatever the DLQ still holds (a delete by an older receipt) goes unsent on the next replay.
    again = replay(lanes, "image")
    assert again["replayed"] == 0 and set(again["dropped_reasons"]) <= {"already_replayed"}
    assert visible_in_dlq(IMAGE) == [] and lanes.receive("image") == []


def test_a_replay_that_died_after_its_claim_leaves_the_message_to_a_later_one(lanes: Lanes,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = lanes.submit(IMAGE_TASK)
    drain(lanes, "image")
    message_id = dead_letter(IMAGE, {"task_id": task_id})
    lapsing = replays_on(lanes, LapsingSqs(aws.sqs()))

    def dies(*_: Any, **__: Any) -> None:
        raise RuntimeError("the replay's Lambda died")

    with monkeypatch.context() as patched:
        patched.setattr(queues, "enqueue", dies)
        with pytest.raises(RuntimeError):
            lapsing.replay("image", None, actor="admin")
    # Back in the DLQ, the message is left alone while the dead replay's claim holds: no send, nothing dropped.
    assert visible_in_dlq(IMAGE) == [message_id]
    assert lapsing.replay("image", None, actor="admin") == {"replayed": 0, "dropped": 0, "dropped_reasons": {}}
    lanes.clock.advance(REPLAY_VISIBILITY_S + 1)  # the claim's lease lapsed: the next replay takes it over
    assert lapsing.replay("image", None, actor="admin")["replayed"] == 1
    assert [json.loads(record["body"])["task_id"] for record in lanes.receive("image")] == [task_id]
    assert visible_in_dlq(IMAGE) == []


def test_a_webhook_event_is_replayed_as_its_next_attempt_unless_delivered(lanes: Lanes) -> None:
    task_id = lanes.submit({**IMAGE_TASK, "webhook_url": "https://hooks.example.com/arkflow"})
    lanes.run("image")
    task = lanes.task(task_id)
    event_id = webhook_id(task_id, task.status, task.finished_at)
    message = WebhookMessage(webhook_id=event_id, task_id=task_id, event="succeeded", occurred_at=task.finished_at,
                             attempt=1, first_at=0.0, not_before=0.0)
    WebhookEventRecord(task_id, EVENT_KEY + event_id, attempt=3, message_id="m-3", expires_at_epoch=2**31).save()
    dead_letter(WEBHOOK_DELIVERY, message.model_dump_json())
    sqs = aws.sqs()
    webhook_queue = queues.url_of(sqs, WEBHOOK_DELIVERY)
    sqs.purge_queue(QueueUrl=webhook_queue)

    assert replay(lanes, WEBHOOK_DELIVERY.name)["replayed"] == 1
    [sent] = sqs.receive_message(QueueUrl=webhook_queue, MaxNumberOfMessages=10)["Messages"]
    assert WebhookMessage.model_validate_json(sent["Body"]).attempt == 4  # after the last claimed: it is posted

    WebhookEventRecord(task_id, EVENT_KEY + event_id).update(actions=[WebhookEventRecord.outcome.set("delivered")])
    dead_letter(WEBHOOK_DELIVERY, message.model_dump_json())
    assert replay(lanes, WEBHOOK_DELIVERY.name)["dropped_reasons"] == {"already_delivered": 1}


DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
# What happens to a dead letter: a replay runs whole, or dies after its claim (before sending), after its send
# (before marking the claim sent) or after its mark (before deleting the message); two replays run at once, both
# holding it; or time passes past every visibility and lease (`lapse`).
REPLAY_RUNS = st.sampled_from(["whole", "dies_after_claim", "dies_after_send", "dies_after_mark", "two_at_once",
                               "lapse"])


class Died(Exception):
    """The replay's Lambda stopped here."""


def _dies(*_: Any, **__: Any) -> None:
    raise Died()


def test_replays_that_die_anywhere_or_run_at_once_send_each_message_once_and_lose_none(
        lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever replays of one dead letter run, die or overlap, SQS handing the message to each (as a lapsed
    visibility or a duplicate delivery does): the lane gets it once, plus once for each replay that died between
    its send and its mark; and once leases lapse, a replay leaves nothing behind and nothing unsent."""
    mark_sent = DeadLetters._mark_sent
    audit = lanes.wiring().audit  # one wiring: each costs a few tenths of a second

    def mark_then_die(self: DeadLetters, *arguments: Any) -> None:
        mark_sent(self, *arguments)
        raise Died()

    def run(how: str) -> None:
        with monkeypatch.context() as patched:
            if how == "dies_after_claim":
                patched.setattr(queues, "enqueue", _dies)
            elif how == "dies_after_send":
                patched.setattr(DeadLetters, "_mark_sent", _dies)
            elif how == "dies_after_mark":
                patched.setattr(DeadLetters, "_mark_sent", mark_then_die)
            together = 2 if how == "two_at_once" else 1
            sqs = LapsingSqs(aws.sqs(), together=together)

            def replay_once() -> None:
                with contextlib.suppress(Died):
                    DeadLetters(sqs=sqs, audit=audit, clock=lanes.clock).replay("image", None, actor="admin")

            threads = [threading.Thread(target=replay_once) for _ in range(together)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    @settings(max_examples=60 if DEEP else 8, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(REPLAY_RUNS, min_size=1, max_size=5))
    def in_any_order(runs: list[str]) -> None:
        task_id = lanes.submit(IMAGE_TASK)
        drain(lanes, "image")
        dead_letter(IMAGE, {"task_id": task_id})
        for how in runs:
            if how == "lapse":
                lanes.clock.advance(REPLAY_VISIBILITY_S + 1)
            else:
                run(how)
        lanes.clock.advance(REPLAY_VISIBILITY_S + 1)
        run("whole")
        sent = [json.loads(record["body"])["task_id"] for record in lanes.receive("image")]
        drain(lanes, "image")
        assert visible_in_dlq(IMAGE) == [], runs
        assert set(sent) == {task_id}, runs  # never lost
        assert len(sent) <= 1 + runs.count("dies_after_send"), runs

    in_any_order()
