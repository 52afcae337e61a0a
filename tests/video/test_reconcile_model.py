"""A model-based test of creating videos exactly once while workers crash around the create.

Two users submit videos of one seed and shape (what makes their Ark tasks look alike); workers die before the
create, after Ark accepted it, or after owning Ark's id but before recording it; each delivery comes past the
create grace, after the poller ended what Ark finished (the too-early redelivery has tests of its own). After
every step:
  * no Ark task is held by two tasks, and a task holds only an Ark task it created itself (never another
    user's, never a sibling's);
  * no task sent more than one create to Ark;
  * the model's slot holders are exactly the running tasks (no crash leaks one).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from arksim.clock import SimClock
from arksim.server import RunningSimulator
from arksim.testing import running_simulator
from chalicelib.ark.client import VolcVideoClient
from chalicelib.lanes.worker import LaneWorker
from chalicelib.store import slots
from chalicelib.store.records import SlotRecord, TaskRecord
from chalicelib.video.stages import CREATE_GRACE_S
from chalicelib.video.submit import VideoSubmitter, claim_ark_task
from tests.clocks import FrozenClock
from tests.factories import DEMO, OTHER, VIDEO_MODEL
from tests.factories import SHORT_VIDEO_TASK as VIDEO_TASK
from tests.lane_fixtures import ARK_KEY, Lanes, record_for
from tests.video.test_video_lane import CrashAfterCreate

ALIKE = {**VIDEO_TASK, "params": {"duration": 2, "seed": 42}}
CRASHES = ("none", "before_create", "after_create", "after_owning")
# Few tasks, so that deliveries meet the same ones again: the interleavings of interest are short.
MAX_TASKS = 3
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
EXAMPLES, STEPS = (400, 25) if DEEP else (20, 12)
# Shrinking a stateful run against moto takes minutes: only the deep run spends them; the quick one reports the
# failing steps as found.
PHASES = tuple(Phase) if DEEP else (Phase.explicit, Phase.reuse, Phase.generate)


class CreatesRecorded(VolcVideoClient):
    """Ark's video API, remembering which task each create was sent for."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, ARK_KEY)
        self.sending_for: str | None = None
        self.creator: dict[str, str | None] = {}

    def create_video_task(self, *args: Any, **kwargs: Any) -> str:
        external_id = super().create_video_task(*args, **kwargs)
        self.creator[external_id] = self.sending_for
        return external_id


class CrashAfterOwning(VideoSubmitter):
    """The worker dies after recording itself as the Ark task's owner, before storing the id on the task."""

    def record_submitted(self, task: Any, external_id: str, **_: Any) -> Any:
        claim_ark_task(external_id, task.task_id, self.clock.now())
        raise RuntimeError("the Lambda was killed here")


@pytest.fixture
def ark(frozen_clock: FrozenClock) -> Iterator[RunningSimulator]:
    """The simulator on the workers' clock: Ark's creation times and the reconcile window agree, as on AWS."""
    clock = SimClock(frozen_at=frozen_clock.now())
    with running_simulator(clock, image_latency_s=0.0, video_queue_s=0.0, video_run_s=0.2, callback_retries=0) as sim:
        yield sim


def _killed(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the Lambda was killed before the create left")


def crashing_worker(lanes: Lanes, videos: VolcVideoClient, crash: str) -> LaneWorker:
    if crash in ("none", "before_create"):
        worker = lanes.worker("video", video_client=videos)
        if crash == "before_create":
            worker.videos.submitter.create = _killed  # type: ignore[method-assign]
        return worker
    return lanes.video_worker(CrashAfterCreate if crash == "after_create" else CrashAfterOwning, video_client=videos)


@pytest.mark.hypothesis  # what `make test-deep` selects
@pytest.mark.timeout(3 * 3600 if DEEP else 180)
def test_videos_are_created_once_and_only_their_own_are_adopted(lanes: Lanes) -> None:
    lanes.set_model(VIDEO_MODEL, concurrency=50, daily_quota=100_000)
    videos = CreatesRecorded(lanes.ark.base_url)
    workers = {crash: crashing_worker(lanes, videos, crash) for crash in CRASHES}  # made once: clients are costly
    poller = lanes.video(video_client=videos)

    class Creates(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            # Each example starts from an empty Ark, free slots and no tasks (each example deletes its own).
            lanes.ark.sim.reset(everything=True)
            videos.creator.clear()
            SlotRecord(VIDEO_MODEL).delete()
            self.tasks: list[str] = []
            self.receives: Counter[str] = Counter()

        @initialize(owners=st.lists(st.sampled_from([DEMO, OTHER]), min_size=2, max_size=MAX_TASKS))
        def submit(self, owners: list[tuple[str, str]]) -> None:
            self.tasks = [lanes.submit(ALIKE, user) for user in owners]

        @rule(data=st.data(), crash=st.sampled_from(CRASHES))
        def deliver_later(self, data: st.DataObject, crash: str) -> None:
            """Past the create grace (the poller ran meanwhile), one task's message is handled once more."""
            lanes.clock.advance(CREATE_GRACE_S + 1)
            lanes.ark.clock.advance(CREATE_GRACE_S + 1)  # Ark applies what became due at its next request
            poller.poll_due(10)
            task_id = data.draw(st.sampled_from(self.tasks))
            self.receives[task_id] += 1
            videos.sending_for = task_id
            workers[crash].handle([record_for(task_id, self.receives[task_id])])

        @invariant()
        def created_once_held_once_by_its_creator_and_no_slot_leaked(self) -> None:
            tasks = [TaskRecord.get(task_id, consistent_read=True) for task_id in self.tasks]
            held = {task.task_id: task.external_id for task in tasks if task.external_id}
            assert len(set(held.values())) == len(held), held
            for task_id, external_id in held.items():
                assert videos.creator.get(external_id) == task_id, (task_id, external_id, videos.creator)
            assert all(count <= 1 for count in Counter(videos.creator.values()).values()), videos.creator
            assert set(slots.holders(VIDEO_MODEL)) == {task.task_id for task in tasks if task.status == "running"}

        def teardown(self) -> None:
            # Leftovers would slow every later example (moto reads whole tables) and hold nothing of interest.
            for task_id in self.tasks:
                TaskRecord(task_id).delete()

    run_state_machine_as_test(Creates, settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS,
                                                         deadline=None, database=None, phases=PHASES))
