"""The API holds to its own document: schemathesis fuzzes every operation of `GET /api/openapi.json` on the real local
stack (`python -m devstack`, a stack of its own: the fuzz creates, changes and deletes users, models and tasks), and
every answer must be no 5xx, have a documented status and content type, and match its documented schema.

Two parts, one test each: every operation on its own (positive and negative cases: bodies, parameters and headers
the schemas accept, then ones they refuse), and the document's links as a state machine (a created task is read,
cancelled and deleted; a created user or model changed and deleted). Operations that would end the run's own
sessions (logout; changing or deleting users, which may disable a user or change a password) get a fresh login
for each case, so the rest of the run keeps its tokens. Budgets are examples per operation (`EXAMPLES`) and state
machine runs (`STATEFUL_RUNS`); `make test-deep` (HYPOTHESIS_PROFILE=deep) runs more of both.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chalicelib.resources import DEFAULT_MODELS
from chalicelib.schemas import TASK_SCHEMAS
from devstack.testing import LocalStack, launch_local_stack

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
# Per operation and generation mode; API_FUZZ_EXAMPLES sets another budget for one run.
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", 0)) or (200 if DEEP else 6)
STATEFUL_RUNS = 200 if DEEP else 8
STATEFUL_STEPS = 12
# The timeout is for a stack that stopped answering; the default budgets keep the whole fuzz far under it on 2 cores.
pytestmark = [pytest.mark.stack, pytest.mark.hypothesis, pytest.mark.xdist_group("api-fuzz"),
              pytest.mark.timeout(max(300, 30 * EXAMPLES))]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Their own sessions: logout ends the token's; a user update may change the password or disable the user.
OWN_SESSION_OPERATIONS = {"logout": "user", "admin_update_user": "admin", "admin_delete_user": "admin"}
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Accounts:
    """The run's accounts (names no case can guess) and their tokens."""

    api_url: str
    user: tuple[str, str]
    admin: tuple[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def login(self, who: str) -> str:
        username, password = self.user if who == "user" else self.admin
        response = httpx.post(f"{self.api_url}/api/users/login", json={"username": username, "password": password},
                              timeout=REQUEST_TIMEOUT_S)
        response.raise_for_status()
        return response.json()["token"]

    def throwaway(self) -> str:
        """A new account for one case to change or delete."""
        username = f"fuzz-throwaway-{uuid.uuid4().hex}"
        httpx.post(f"{self.api_url}/api/admin/users", headers=self.headers_for_access("admin"),
                   json={"username": username, "password": uuid.uuid4().hex},
                   timeout=REQUEST_TIMEOUT_S).raise_for_status()
        return username

    def guard(self, case: Case, pick: int) -> None:
        """Keep the run's own accounts out of what a case could do to them: schemathesis reuses names it saw in
        earlier answers (`GET /api/admin/users`), and a user changed or deleted, or a login failed five times, would
        lock the run out. Cases that change or delete a user get an account of their own instead."""
        name = case.operation.definition.raw["operationId"]
        own = {self.user[0], self.admin[0]}
        if name in ("admin_update_user", "admin_delete_user"):
            username = str((case.path_parameters or {}).get("username", "")).lower()
            if username in own or (pick and case.meta and case.meta.generation.mode == GenerationMode.POSITIVE):
                case.path_parameters["username"] = self.throwaway()
        elif name == "login" and isinstance(case.body, dict) and str(case.body.get("username", "")).lower() in own:
            case.body["username"] = f"fuzz-nobody-{uuid.uuid4().hex}"

    def headers_for_access(self, who: str) -> dict[str, str]:
        if who not in self.tokens:
            self.tokens[who] = self.login(who)
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def headers_for(self, operation: Any) -> dict[str, str]:
        """The token the operation needs: a fresh one for operations that may end it, the run's otherwise."""
        access = operation.definition.raw.get("x-access", "user")
        if access == "public":
            return {}
        who = "user" if access == "user" else "admin"
        if operation.definition.raw["operationId"] in OWN_SESSION_OPERATIONS:
            return {"Authorization": f"Bearer {self.login(who)}"}
        return self.headers_for_access(who)


TASK_EXAMPLES = {kind: schema.model_config["json_schema_extra"]["examples"][0] for kind, schema in TASK_SCHEMAS.items()}
UPSTREAMS = {kind: [model.upstream_model for model in DEFAULT_MODELS if model.type == kind]
             for kind in ("image", "video")}


@dataclass
class LiveIds:
    """Ids that name something on the stack, which random data never does: a positive case that names a model gets
    a live one two times in three (its random one otherwise, for the 404), and one task in three is the document's
    example. Tasks are created with the default models; the admin routes of one model change and delete models of
    the run's own, so the defaults stay."""

    admin_models: list[str]
    task_models: dict[str, list[str]] = field(default_factory=lambda: {
        kind: [model.model_id for model in DEFAULT_MODELS if model.type == kind] for kind in ("image", "video")})

    def fill(self, case: Case, pick: int) -> None:
        if pick == 0 or case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
            return
        name = case.operation.definition.raw["operationId"]
        if name == "create_task" and isinstance(case.body, dict) and case.body.get("type") in self.task_models:
            if pick == 2:  # random prompts and sizes are mostly refused: the document's example is a task made
                case.body = dict(TASK_EXAMPLES[case.body["type"]])
            models = self.task_models[case.body["type"]]
            case.body["model_id"] = models[pick % len(models)]
        elif name == "admin_create_model" and isinstance(case.body, dict) and case.body.get("type") in UPSTREAMS:
            case.body["upstream_model"] = UPSTREAMS[case.body["type"]][pick % len(UPSTREAMS[case.body["type"]])]
        elif name.startswith("admin_") and "model_id" in (case.path_parameters or {}):
            case.path_parameters["model_id"] = self.admin_models[pick % len(self.admin_models)]


@dataclass
class Tally:
    """Calls made, by operation and by the status each answered."""

    examples: int = 0
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)

    def count(self, case: Case, status: int) -> None:
        self.examples += 1
        statuses = self.by_operation.setdefault(case.operation.label, {})
        statuses[status] = statuses.get(status, 0) + 1

    def report(self) -> str:
        return "\n".join(f"  {label}: {dict(sorted(statuses.items()))}" for label, statuses in
                         sorted(self.by_operation.items()))


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with launch_local_stack(tmp_path_factory.mktemp("fuzz-stack") / "stack.log") as stack:
        yield stack


@pytest.fixture(scope="module")
def accounts(fuzz_stack: LocalStack) -> Accounts:
    admin_token = httpx.post(f"{fuzz_stack.api_url}/api/users/login", json={
        "username": fuzz_stack.admin.username, "password": fuzz_stack.admin.password}).json()["token"]
    made = {}
    for role in ("user", "admin"):
        username, password = f"fuzz-{role}-{uuid.uuid4().hex}", uuid.uuid4().hex
        httpx.post(f"{fuzz_stack.api_url}/api/admin/users", headers={"Authorization": f"Bearer {admin_token}"},
                   json={"username": username, "password": password, "role": role,
                         "requests_per_minute": 10_000}).raise_for_status()
        made[role] = (username, password)
    return Accounts(fuzz_stack.api_url, made["user"], made["admin"])


@pytest.fixture(scope="module")
def live_ids(fuzz_stack: LocalStack, accounts: Accounts) -> LiveIds:
    admin = {"Authorization": f"Bearer {accounts.login('admin')}"}
    made = []
    for kind in ("image", "video"):
        default = next(model for model in DEFAULT_MODELS if model.type == kind)
        model_id = f"fuzz-{kind}-{uuid.uuid4().hex[:8]}"
        httpx.post(f"{fuzz_stack.api_url}/api/admin/models", headers=admin, json={
            "model_id": model_id, "type": kind, "upstream_model": default.upstream_model, "concurrency": 2,
            "daily_quota": 1000}).raise_for_status()
        made.append(model_id)
    return LiveIds(made)


@pytest.fixture(scope="module")
def schema(fuzz_stack: LocalStack) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_stack.api_url}/api/openapi.json")


def _settings(examples: int, **more: Any) -> settings:
    # The run's own budget on the loaded profile's randomness (derandomized under `ci`, as `make test` runs).
    return settings(settings.default, max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    **more)


def test_every_operation_answers_as_its_document_says(schema: Any, accounts: Accounts, live_ids: LiveIds) -> None:
    tally = Tally()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        takes_input = bool(operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):
            @_settings(EXAMPLES)
            @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, 2))
            def fuzz(case: Case, pick: int) -> None:
                live_ids.fill(case, pick)
                accounts.guard(case, pick)
                response = case.call(headers=accounts.headers_for(case.operation), timeout=REQUEST_TIMEOUT_S)
                tally.count(case, response.status_code)
                case.validate_response(response, checks=CHECKS)

            fuzz()
    print(f"\nschemathesis: {len(operations)} operations, {tally.examples} examples, 0 failures, "
          f"{time.monotonic() - started:.1f} s\n{tally.report()}")
    assert len(operations) >= 20
    assert set(tally.by_operation) == {operation.label for operation in operations}


def test_linked_operations_answer_as_the_document_says(schema: Any, accounts: Accounts, live_ids: LiveIds) -> None:
    steps = Tally()
    started = time.monotonic()

    class Links(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            live_ids.fill(case, pick=2)  # tasks made from the example: their links are followed
            accounts.guard(case, pick=0)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": accounts.headers_for(case.operation), "timeout": REQUEST_TIMEOUT_S}

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            steps.count(case, response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:
                failures.append(f"{case.operation.label} -> {response.status_code}: {failure}")
                raise

    failures: list[str] = []
    # As schemathesis's own runner does: against a live stack a replayed scenario may draw otherwise (a link's source
    # answered differently the second time, so other links are open), which Hypothesis calls flaky. Every call's
    # checks still count: a failed one is in `failures`.
    with contextlib.suppress(Flaky):
        Links.run(settings=_settings(STATEFUL_RUNS, stateful_step_count=STATEFUL_STEPS))
    assert failures == []
    print(f"\nschemathesis stateful: {STATEFUL_RUNS} runs, {steps.examples} calls over "
          f"{len(steps.by_operation)} operations, 0 failures, {time.monotonic() - started:.1f} s\n{steps.report()}")
    linked = {"POST /api/tasks", "GET /api/tasks/{task_id}", "POST /api/admin/users", "POST /api/admin/models"}
    assert linked <= set(steps.by_operation)
