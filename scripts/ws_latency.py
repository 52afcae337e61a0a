"""Delay from Ark's completion (the simulator) to the owner's WebSocket message, on the real local stack.

    .venv/bin/python -m scripts.ws_latency [--image-runs 5] [--video-runs 3]

Starts `python -m devstack` on free ports, connects a WebSocket as the demo user and, one task at a time, measures
from the simulator's own completion stamp (`GET /_sim/completions`: taken just before an image answer leaves, or
when a video task turns `succeeded`) to the arrival of the task's `succeeded` update:
- image;
- video, callbacks on;
- video, callbacks off: the simulator's callbacks fail (1 µs timeout, no retry), so only the scheduled poller
  notices (its timing is the stack's: schedule and poll intervals are printed).
Both ends are on this machine's wall clock (the simulator is another process on it), so a delay is never negative.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chalicelib.resources import DEFAULT_MODELS
from devstack.config import SIMULATOR_API_KEY
from devstack.testing import LocalStack, launch_local_stack

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "latency probe", "max_images": 1}
VIDEO_TASK = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "latency probe",
              "params": {"resolution": "480p", "duration": 3}}
SIM_POLL_S = 0.005
TASK_TIMEOUT_S = 120.0
UPSTREAM = {model.model_id: model.upstream_model for model in DEFAULT_MODELS}


class Watcher:
    """Reads the socket in the background and notes when each task's `succeeded` update arrived."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.arrivals: dict[str, float] = {}
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.socket:
                arrived = time.time()  # the wall clock, as the simulator's completion stamps
                message = json.loads(raw)
                if message.get("type") == "task_update" and message["data"]["status"] == "succeeded":
                    with self.changed:
                        self.arrivals.setdefault(message["data"]["id"], arrived)
                        self.changed.notify_all()
        except ConnectionClosed:
            return

    def succeeded_at(self, task_id: str) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: task_id in self.arrivals, timeout=TASK_TIMEOUT_S):
                raise TimeoutError(f"no `succeeded` update for {task_id} within {TASK_TIMEOUT_S:.0f} s")
            return self.arrivals[task_id]


def poll_until(check: Callable[[], bool], interval_s: float) -> float:
    """Call `check` every `interval_s` until it is true; returns when that was seen."""
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up polling")
        time.sleep(interval_s)
    return time.monotonic()


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/api/tasks", json=body)
    response.raise_for_status()
    return str(response.json()["id"])


def completions(sim: httpx.Client) -> list[dict[str, Any]]:
    return list(sim.get("/_sim/completions").json()["completions"])


def image_delay(api: httpx.Client, sim: httpx.Client, watcher: Watcher) -> float:
    """One image at a time: the simulator's one new image completion is this task's."""
    model = UPSTREAM[str(IMAGE_TASK["model_id"])]
    known = len(completions(sim))
    task_id = submit(api, IMAGE_TASK)
    arrived = watcher.succeeded_at(task_id)
    (completed,) = [done for done in completions(sim)[known:] if done["kind"] == "image" and done["model"] == model]
    return arrived - float(completed["completed_at"])


def video_delay(api: httpx.Client, sim: httpx.Client, watcher: Watcher) -> float:
    task_id = submit(api, VIDEO_TASK)
    arrived = watcher.succeeded_at(task_id)
    external_id = api.get(f"/api/tasks/{task_id}").json()["external_id"]
    (completed,) = [done for done in completions(sim) if done["kind"] == "video" and done["id"] == external_id]
    return arrived - float(completed["completed_at"])


def callbacks_settled(sim: httpx.Client) -> bool:
    counts = sim.get("/_sim/stats").json()["callbacks"]
    return bool(counts.get("attempts", 0) == counts.get("delivered", 0) + counts.get("failed_attempts", 0))


def summary(name: str, delays: list[float]) -> str:
    milliseconds = sorted(delay * 1000 for delay in delays)
    p95 = milliseconds[min(len(milliseconds) - 1, math.ceil(0.95 * len(milliseconds)) - 1)]
    return (f"  {name:<26} runs {len(milliseconds):>2}   p50 {statistics.median(milliseconds):8.1f} ms   "
            f"p95 {p95:8.1f} ms   min {milliseconds[0]:8.1f} ms")


def measure(stack: LocalStack, image_runs: int, video_runs: int) -> list[str]:
    api = httpx.Client(base_url=stack.api_url, timeout=30)
    token = api.post("/api/users/login", json={"username": stack.demo.username, "password": stack.demo.password})
    api.headers["Authorization"] = f"Bearer {token.json()['token']}"
    sim = httpx.Client(base_url=stack.sim_url, timeout=30, headers={"Authorization": f"Bearer {SIMULATOR_API_KEY}"})
    url = api.post("/api/ws/ticket").json()["url"]
    lines = []
    with connect(url, origin=stack.web_url, open_timeout=10) as socket:
        watcher = Watcher(socket)
        lines.append(summary("image", [image_delay(api, sim, watcher) for _ in range(image_runs)]))
        lines.append(summary("video, callbacks on", [video_delay(api, sim, watcher) for _ in range(video_runs)]))
        sim.put("/_sim/config", json={"callback_timeout_s": 1e-6, "callback_retries": 0}).raise_for_status()
        # The last `succeeded` callback may still be awaiting its answer: count from when none is in flight.
        poll_until(lambda: callbacks_settled(sim), SIM_POLL_S)
        delivered = sim.get("/_sim/stats").json()["callbacks"].get("delivered", 0)
        lines.append(summary("video, callbacks off", [video_delay(api, sim, watcher) for _ in range(video_runs)]))
        late = sim.get("/_sim/stats").json()["callbacks"].get("delivered", 0) - delivered
        lines.append(f"  (callbacks delivered while off: {late})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-runs", type=int, default=5)
    parser.add_argument("--video-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, launch_local_stack(Path(scratch) / "stack.log") as stack:
        lines = measure(stack, args.image_runs, args.video_runs)
        settings = httpx.get(stack.sim_url + "/_sim/config", timeout=10).json()
        print("Delay from Ark's completion to the WebSocket message (local stack, simulator):")
        print("\n".join(lines))
        timing = " ".join(f"{name}={settings[name]}" for name in ("image_latency_s", "video_queue_s", "video_run_s"))
        print(f"  simulator: {timing}; stack: schedules every {stack.config.schedule_interval_s:g} s, "
              "video polls per VIDEO_POLL_INTERVAL_SECONDS (default 10 s, backing off)")


if __name__ == "__main__":
    main()
