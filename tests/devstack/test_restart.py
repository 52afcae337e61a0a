"""Restarting the app and its workers mid-run (moto and Ark kept): every task still ends."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from arksim.testing import running_simulator
from devstack.moto_server import start_moto_server
from devstack.testing import LocalStack, free_stack_config, launch_local_stack
from tests.polling import wait_for

pytestmark = [pytest.mark.abuse, pytest.mark.stack]

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "restart"}
VIDEO_TASK = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "restart",
              "params": {"resolution": "480p", "duration": 2}}
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
VIDEO_RUN_S = 600  # well inside the hour Ark gives a video task before it expires


def login(stack: LocalStack) -> httpx.Client:
    client = httpx.Client(base_url=stack.api_url, timeout=30)
    response = client.post("/api/users/login", json={"username": stack.demo.username,
                                                     "password": stack.demo.password})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return client


def statuses(api: httpx.Client, task_ids: list[str]) -> dict[str, str]:
    return {task_id: api.get(f"/api/tasks/{task_id}").json()["status"] for task_id in task_ids}


def ended(api: httpx.Client, task_ids: list[str]) -> dict[str, str] | None:
    """Every task's status once all have ended; None before."""
    now = statuses(api, task_ids)
    return now if set(now.values()) <= TERMINAL else None


def test_restarting_the_app_mid_run_with_moto_and_ark_kept_ends_every_task(tmp_path: Path) -> None:
    """Safeguards: all task state lives in DynamoDB and SQS (no worker memory), a stopping worker finishes or
    gives back its message, and the new process's pump, poller and callback route pick up where the old left."""
    # The videos run at Ark until the test moves Ark's clock, after the restart: however slowly the machine runs,
    # the first process stops with work under way.
    with start_moto_server() as moto, running_simulator(image_latency_s=0.3, video_queue_s=0.5,
                                                        video_run_s=VIDEO_RUN_S) as ark:
        config = dataclasses.replace(free_stack_config(), moto_url=moto.endpoint_url)
        # Ark is external to the app: both processes use this simulator (as the "real" Ark, by key).
        ark_env = {"ARK_API_KEY": "sk-restart-test", "ARK_BASE_URL": ark.base_url,
                   "ARK_RESULT_HOSTS": ark.root_url, "ARKFLOW_SCHEDULE_INTERVAL_S": "1"}
        with launch_local_stack(tmp_path / "first.log", ark_env, config=config) as first:
            api = login(first)
            task_ids = [api.post("/api/tasks", json=IMAGE_TASK).json()["id"] for _ in range(10)]
            task_ids += [api.post("/api/tasks", json=VIDEO_TASK).json()["id"] for _ in range(3)]
            # Mid-run: something has finished, videos are at Ark, images still wait for their slots.
            wait_for(lambda: "succeeded" in statuses(api, task_ids).values() and ark.stats()["tasks"], timeout_s=60)
            before = statuses(api, task_ids)
            assert first.stop() == 0
        assert set(before.values()) - TERMINAL, "everything ended before the restart: nothing was tested"

        with launch_local_stack(tmp_path / "second.log", ark_env, config=config) as second:
            assert moto.endpoint_url in second.output()
            api = login(second)
            ark.advance(VIDEO_RUN_S)
            after = wait_for(lambda: ended(api, task_ids), timeout_s=60)

        assert set(after.values()) == {"succeeded"}, after
        assert ark.stats()["calls"]["images.generate"]["doubao-seedream-4-5-251128"] == 10
        assert sum(ark.stats()["calls"]["tasks.create"].values()) == 3
