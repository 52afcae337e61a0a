"""`python -m chalicelib.migrations user-ids` on records in the shape they had when usernames owned things."""

from __future__ import annotations

import time
from typing import Any

import pytest
from chalice.test import Client
from pynamodb.exceptions import DoesNotExist

from chalicelib import wiring
from chalicelib.accounts.auth import Principal, hash_password
from chalicelib.clock import SYSTEM_CLOCK, iso
from chalicelib.migrations import UserIdMigration, main
from chalicelib.settings import get_settings
from chalicelib.store import quota, slots, statemachine
from chalicelib.store.records import (
    ConnectionRecord,
    IdempotencyRecord,
    QuotaRecord,
    SessionRecord,
    SlotRecord,
    TaskRecord,
    UploadRecord,
    UserRecord,
    WsTicketRecord,
)
from tests.api_client import Api
from tests.factories import DEMO, user_id_of
from tests.slot_helpers import hold_slot

MODEL = "seedream-4.5"
IMAGE_TASK = {"type": "image", "model_id": MODEL, "prompt": "an old fox"}
LEGACY_USER_SLOT = slots.user_slot_key(MODEL, "demo")


def old_user(username: str, password: str, created_at: str) -> None:
    UserRecord(username, password_hash=hash_password(password), role="user", disabled=False, password_version=7,
               created_at=created_at, updated_at=created_at).save()


def old_task(username: str, *, created_at: str | None = None, idempotency_key: str | None = None) -> TaskRecord:
    """A task as intake wrote it when the owner was the username (no `username` attribute)."""
    service = wiring.current().intake
    owner = Principal(user_id=username, username=username, role="user")
    task_id = service.create(owner, IMAGE_TASK, idempotency_key).body["id"]
    actions = [TaskRecord.username.remove()]
    if created_at:
        actions += [TaskRecord.created_at.set(created_at), TaskRecord.created_key.set(f"{created_at}#{task_id}")]
    task = TaskRecord.get(task_id, consistent_read=True)
    task.update(actions=actions)
    return task


@pytest.fixture
def old_stage(aws_resources: None) -> dict[str, Any]:
    """A stage's records as the code before user ids left them."""
    from chalicelib import catalog

    catalog.ensure_default_models()
    model = catalog.get_model(MODEL)
    model.update(actions=[type(model).user_daily_quota.set(10), type(model).max_running_per_user.set(2)])
    now = time.time()
    old_user("demo", DEMO[1], iso(now - 3600))
    old_user("carol", "carol-pass", iso(now - 60))  # made again after an earlier carol was deleted

    queued = old_task("demo", idempotency_key="order-1")
    finished = statemachine.transition(old_task("demo"), statemachine.CANCELLED)
    running = old_task("demo")
    assert hold_slot(MODEL, running.task_id, 4, now + 600, user_id="demo", user_cap=2)
    running = statemachine.transition(running, statemachine.RUNNING)
    # A holding a worker left on the name's record after its task ended (claimed while being migrated).
    SlotRecord(LEGACY_USER_SLOT).update(actions=[SlotRecord.holders[finished.task_id].set(int(now + 600)),
                                                 SlotRecord.count.add(1)])
    earlier_carols = old_task("carol", created_at=iso(now - 7200))
    ghosts = old_task("ghost")

    UploadRecord("0" * 32, user_id="demo", object_key="uploads/" + "0" * 32, content_type="image/png",
                 max_bytes=1000, created_at=iso(now), expires_at_epoch=int(now) + 3600).save()
    ConnectionRecord("demo-socket=", user_id="demo", connected_at=iso(now), expires_at_epoch=int(now) + 3600).save()
    SessionRecord("old-session", username="demo", expires_at_epoch=int(now) + 3600).save()
    WsTicketRecord("0" * 64, user_id="demo", expires_at_epoch=int(now) + 60).save()
    return {"queued": queued.task_id, "finished": finished.task_id, "running": running.task_id,
            "earlier_carols": earlier_carols.task_id, "ghosts": ghosts.task_id}


def exists(table: Any, key: str) -> bool:
    try:
        table.get(key, consistent_read=True)
    except DoesNotExist:
        return False
    return True


def snapshot() -> dict[str, list[dict[str, Any]]]:
    tables = (UserRecord, TaskRecord, QuotaRecord, IdempotencyRecord, SlotRecord, UploadRecord, ConnectionRecord,
              SessionRecord, WsTicketRecord)
    return {table.__name__: sorted((record.to_dynamodb_dict() for record in table.scan(consistent_read=True)),
                                   key=repr) for table in tables}


def test_the_migration_moves_everything_a_username_owned_to_the_account_id(old_stage: dict[str, Any]) -> None:
    report = UserIdMigration().run()
    assert not report.pending

    demo_id, carol_id = user_id_of("demo"), user_id_of("carol")
    assert demo_id.startswith("usr_") and carol_id.startswith("usr_") and demo_id != carol_id
    tasks = {name: TaskRecord.get(task_id, consistent_read=True) for name, task_id in old_stage.items()}
    for name in ("queued", "finished", "running"):
        assert (tasks[name].user_id, tasks[name].username) == (demo_id, "demo"), name
    day = quota.quota_day(SYSTEM_CLOCK.now(), get_settings().quota_timezone)
    assert tasks["queued"].quota_keys == [quota.model_counter_key(MODEL, day),
                                          quota.user_counter_key(demo_id, MODEL, day)]
    # Older than the account now holding its name, or of no account: owned by an id nobody has.
    for name, username in (("earlier_carols", "carol"), ("ghosts", "ghost")):
        assert tasks[name].username == username
        assert tasks[name].user_id.startswith("usr_") and tasks[name].user_id not in (demo_id, carol_id)

    assert quota.used(quota.user_counter_key(demo_id, MODEL, day)) == 2  # the cancelled task gave its back
    assert quota.used(quota.user_counter_key("demo", MODEL, day)) == 0
    assert IdempotencyRecord.get(f"{demo_id}#order-1").task_id == old_stage["queued"]
    assert IdempotencyRecord.count("demo#order-1") == 0
    assert UploadRecord.get("0" * 32).user_id == demo_id
    assert ConnectionRecord.get("demo-socket=").user_id == demo_id
    assert SessionRecord.count("old-session") == 0 and WsTicketRecord.count("0" * 64) == 0

    # The running task moved with its slots; the name's slot record, stale holding freed, is gone.
    model_slot = SlotRecord.get(MODEL, consistent_read=True)
    assert model_slot.owners.as_dict() == {old_stage["running"]: demo_id}
    user_slot = SlotRecord.get(slots.user_slot_key(MODEL, demo_id), consistent_read=True)
    assert (list(user_slot.holders.as_dict()), user_slot.count) == ([old_stage["running"]], 1)
    assert not exists(SlotRecord, LEGACY_USER_SLOT)

    before = snapshot()
    again = UserIdMigration().run()
    assert list(again.lines()) == ["nothing to migrate"]
    assert snapshot() == before

    # The running task's end frees what it holds under the id.
    statemachine.transition(tasks["running"], statemachine.FAILED)
    assert slots.in_use(slots.user_slot_key(MODEL, demo_id)) == 0 and slots.in_use(MODEL) == 0


def test_after_the_migration_owners_find_their_tasks_and_keys_and_nobody_inherits(old_stage: dict[str, Any]) -> None:
    from app import app

    assert UserIdMigration().run().pending == {}
    with Client(app) as client:
        api = Api(client)
        listed = api.request("GET", "/api/tasks", as_user=DEMO).data["tasks"]
        assert {task["id"] for task in listed} == {old_stage[name] for name in ("queued", "finished", "running")}
        replay = api.request("POST", "/api/tasks", IMAGE_TASK, as_user=DEMO, headers={"Idempotency-Key": "order-1"})
        assert replay.data["id"] == old_stage["queued"]
        assert api.request("GET", "/api/tasks", as_user=("carol", "carol-pass")).data["tasks"] == []
        assert api.request("GET", f"/api/tasks/{old_stage['earlier_carols']}", as_user=("carol", "carol-pass")) \
            .status_code == 404


def test_a_dry_run_counts_and_writes_nothing(old_stage: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    before = snapshot()
    report = UserIdMigration(dry_run=True).run()
    assert report.changed["tasks"] == 5 and report.changed["users given an id"] == 2
    assert snapshot() == before

    assert main(["user-ids", "--dry-run"]) == 0
    assert "tasks: 5" in capsys.readouterr().out
    assert main(["user-ids"]) == 0
    assert all(task.username for task in TaskRecord.scan())
