"""Ark-style callbacks from the simulator: one POST per status change, retried for final states."""

from __future__ import annotations

import httpx

from tests.polling import wait_for

from .conftest import VIDEO_MODEL, auth

TASKS = "/contents/generations/tasks"


def create(ark, callback_url: str, text: str = "a cat") -> str:
    body = {"model": VIDEO_MODEL, "content": [{"type": "text", "text": text}], "callback_url": callback_url,
            "resolution": "480p"}
    response = httpx.post(f"{ark.base_url}{TASKS}", json=body, headers=auth())
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_each_status_change_is_posted_with_the_get_body(ark, callback_receiver):
    task_id = create(ark, callback_receiver.url)
    wait_for(lambda: callback_receiver.statuses() == ["queued", "running", "succeeded"])
    final = callback_receiver.received[-1]
    assert final == httpx.get(f"{ark.base_url}{TASKS}/{task_id}", headers=auth()).json()
    assert final["content"]["video_url"].startswith(ark.root_url)


def test_a_failed_final_callback_is_retried_three_times(ark, callback_receiver):
    ark.configure(video_run_s=30.0)
    create(ark, callback_receiver.url)
    wait_for(lambda: callback_receiver.statuses() == ["queued", "running"])
    callback_receiver.fail_first = callback_receiver.attempts + 3  # the next three attempts fail
    ark.advance(30)
    wait_for(lambda: callback_receiver.statuses() == ["queued", "running", "succeeded"])
    assert callback_receiver.attempts == 6
    assert ark.stats()["callbacks"] == {"attempts": 6, "delivered": 3, "failed_attempts": 3}


def test_a_final_callback_is_abandoned_after_the_retries(ark, callback_receiver):
    callback_receiver.fail_first = 100
    create(ark, callback_receiver.url, "SIM_SENSITIVE_OUTPUT")
    wait_for(lambda: ark.stats()["callbacks"].get("given_up") == 3)
    # queued and running: one attempt each; failed: one attempt plus three retries.
    assert callback_receiver.attempts == 6


def test_a_receiver_slower_than_the_acknowledgement_window_counts_as_failed(ark, callback_receiver):
    ark.configure(callback_timeout_s=0.2, callback_retries=1)
    callback_receiver.delay_s = 0.5
    create(ark, callback_receiver.url)
    counters = wait_for(lambda: (stats := ark.stats()["callbacks"]).get("given_up") == 3 and stats)
    assert counters["failed_attempts"] == 4  # queued, running, and succeeded twice


def test_cancelled_is_never_pushed(ark, callback_receiver):
    ark.configure(video_queue_s=60.0)
    task_id = create(ark, callback_receiver.url)
    wait_for(lambda: callback_receiver.statuses() == ["queued"])
    assert httpx.delete(f"{ark.base_url}{TASKS}/{task_id}", headers=auth()).status_code == 200
    ark.advance(120)
    wait_for(lambda: ark.stats()["tasks"]["cancelled"] == 1)
    assert ark.stats()["callbacks"] == {"attempts": 1, "delivered": 1}
