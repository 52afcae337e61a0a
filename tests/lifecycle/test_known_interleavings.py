"""Interleavings the lifecycle model found (or must always cover), replayed step by step on every run.

Each is the shortest run Hypothesis printed for one broken promise, kept so that it is checked whatever the random
search of `test_lifecycle` happens to try: the same rules and the same checks after every step, then the drain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.lifecycle.faults import Fault
from tests.lifecycle.harness import Environment
from tests.lifecycle.model import LifecycleModel


class Replay:
    """A model whose every rule call is followed by the invariants, as in a Hypothesis run."""

    def __init__(self, machine: LifecycleModel) -> None:
        self._machine = machine

    def __getattr__(self, name: str) -> Callable[..., Any]:
        rule = getattr(self._machine, name)

        def step(**arguments: Any) -> Any:
            result = rule(**arguments)
            self._machine.promises_hold()
            return result

        return step


@contextmanager
def replaying(env: Environment, image: int = 1, video: int = 1) -> Iterator[Replay]:
    machine = LifecycleModel(env)
    state = Replay(machine)
    state.configure_models(image=image, video=video, user_cap=None)
    try:
        yield state
    except BaseException:
        machine.world.close()
        raise
    machine.teardown()


def test_a_sweep_at_a_videos_lease_edge_leaves_it_running(lifecycle: Environment) -> None:
    """Its lease is stored rounded down, its deadline exactly: a sweep between the two must not queue it again."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=None)
        state.advance_to(task=task, moment="past_lease")
        state.run_sweeper(fault=None)


def test_a_crashed_create_never_adopts_another_users_video(lifecycle: Environment) -> None:
    """Two users, one seed and shape: reconciling after a crash must not take the other user's Ark task."""
    with replaying(lifecycle, video=2) as state:
        theirs = state.submit(user="other", kind="video", seed=42, duration=2)
        state.deliver(lane="video", fault=None)
        mine = state.submit(user="demo", kind="video", seed=42, duration=2)
        state.deliver(lane="video", fault=Fault("crash", at=2))
        state.advance_clock(seconds=121.0)
        state.deliver_duplicate(task=mine, fault=None)
        state.read_task(task=theirs, reader="demo")


def test_cancelling_a_video_ark_finished_keeps_its_result(lifecycle: Environment) -> None:
    """Our record still says Ark queues it, but Ark finished: a cancel must not delete the billed video."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=None)
        state.advance_clock(seconds=121.0)
        state.cancel(task=task, fault=None)


def test_the_deadline_never_drops_a_video_ark_finished(lifecycle: Environment) -> None:
    with replaying(lifecycle) as state:
        state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=None)
        state.advance_clock(seconds=10801.0)
        state.run_sweeper(fault=None)


def test_the_deadline_never_ends_an_image_mid_call(lifecycle: Environment) -> None:
    """A worker delivered just before the deadline is still inside its Ark call when a sweep runs after it."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="image", seed=None, duration=2)
        state.advance_to(task=task, moment="before_deadline")
        state.deliver(lane="image", fault=Fault("held_at_ark", at=0))
        state.advance_to(task=task, moment="past_deadline")
        state.run_sweeper(fault=None)
        state.submit(user="other", kind="image", seed=None, duration=2)
        state.deliver(lane="image", fault=None)


def test_the_deadline_counts_from_the_videos_create_at_ark(lifecycle: Environment) -> None:
    """Queued here for most of its deadline, then created at Ark: the deadline must not end it while Ark runs it."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="video", seed=None, duration=2)
        state.advance_to(task=task, moment="before_deadline")
        state.deliver(lane="video", fault=None)
        state.advance_clock(seconds=31.0)
        state.run_sweeper(fault=None)


def test_a_dynamodb_error_after_the_create_never_cancels_the_video(lifecycle: Environment) -> None:
    """Recording Ark's task id meets an InternalServerError: a retry, not a lost race that cancels at Ark."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=Fault("InternalServerError", at=1, task_id=task))  # after the claim


def test_a_dynamodb_error_while_recording_the_results_copy_is_retried(lifecycle: Environment) -> None:
    """The write pointing the task at its copies meets an InternalServerError: the copy is tried again, never
    deleted and forgotten."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="image", seed=None, duration=2)
        # The task's third write: after its claim and its success.
        state.deliver(lane="image", fault=Fault("InternalServerError", at=2, task_id=task))


def test_a_malformed_image_answer_is_not_billed_again(lifecycle: Environment) -> None:
    with replaying(lifecycle) as state:
        state.submit(user="demo", kind="image", seed=None, duration=2)
        state.deliver(lane="image", fault=Fault("usage_list", at=0))


def test_a_malformed_create_answer_never_records_a_made_up_ark_id(lifecycle: Environment) -> None:
    with replaying(lifecycle) as state:
        state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=Fault("created_null", at=0))


def test_a_malformed_status_read_does_not_abort_the_poller(lifecycle: Environment) -> None:
    with replaying(lifecycle) as state:
        state.submit(user="demo", kind="video", seed=None, duration=2)
        state.deliver(lane="video", fault=None)
        state.advance_clock(seconds=11.0)
        state.run_poller(fault=Fault("error_string", at=0))


def test_a_reused_username_sees_nothing_of_the_old_account(lifecycle: Environment) -> None:
    with replaying(lifecycle) as state:
        task = state.submit(user="other", kind="image", seed=None, duration=2)
        state.delete_user(user="other")
        state.recreate_user(user="other")
        state.read_task(task=task, reader="other")
        state.list_tasks(reader="other")


def test_a_stale_sweep_cannot_requeue_a_task_another_worker_claimed_again(lifecycle: Environment) -> None:
    """The transition's version condition: a sweep that read a running image whose worker died, then a worker that
    queued it again and claimed it anew: the sweep's write must not send it back to the queue, releasing the live
    worker's slot mid-call (and a third worker would call Ark for it once more)."""
    with replaying(lifecycle) as state:
        task = state.submit(user="demo", kind="image", seed=None, duration=2)
        state.deliver_and_die_at_ark(task=task)
        state.advance_clock(seconds=361.0)
        state.sweep_from_a_stale_read(task=task)
        state.deliver_and_hold_at_ark(task=task)
        state.resume(pick=0)


def test_a_requeue_published_after_the_deadline_ended_the_task_leaves_it_ended(lifecycle: Environment) -> None:
    """A worker requeues an image whose earlier worker died at Ark, then stalls before its next step; the deadline
    fails the task meanwhile. The late run and the late publish of its requeue must leave the task failed (readers
    order a task's changes by version)."""
    with replaying(lifecycle) as state:
        state.advance_clock(seconds=0.5)
        task = state.submit(duration=2, kind="image", seed=None, user="demo")
        state.deliver_and_die_at_ark(task=task)
        state.advance_to(moment="past_deadline", task=task)
        state.deliver_duplicate(fault=Fault("stall", 1), task=task)
        state.run_sweeper(fault=None)
        state.resume(pick=0)
