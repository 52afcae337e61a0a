"""A DynamoDB write that fails for any reason but a false condition is a failure of the store, never an answer:
not "the name is taken", not "the ticket was used". It propagates, and the same call succeeds once the store is
back."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from pynamodb.exceptions import DeleteError, PutError

from chalicelib.accounts.users import ensure_user
from chalicelib.live import TicketHolder, Tickets
from chalicelib.settings import get_settings
from chalicelib.store import quota
from chalicelib.store.records import IdempotencyRecord, TaskRecord, UserRecord
from tests.api_client import Api
from tests.conftest import reconfigure
from tests.dynamodb_faults import DynamoFaults, internal_server_error, on_table
from tests.factories import ADMIN, DEMO, principal_of


@pytest.fixture
def faults(seeded: None, monkeypatch: pytest.MonkeyPatch) -> DynamoFaults:
    return DynamoFaults.installed(monkeypatch)


def test_an_internal_error_seeding_a_user_is_not_taken_for_an_existing_one(faults: DynamoFaults) -> None:
    faults.add("PutItem", internal_server_error(), when=on_table("users"))

    with pytest.raises(PutError):
        ensure_user("operator", "a long enough password")

    assert ensure_user("operator", "a long enough password")  # created once the store answers
    assert UserRecord.get("operator", consistent_read=True).role == "user"


def test_an_internal_error_redeeming_a_ticket_does_not_use_it_up(faults: DynamoFaults) -> None:
    tickets = Tickets()
    demo = principal_of(DEMO)
    ticket = tickets.issue(demo).ticket
    faults.add("DeleteItem", internal_server_error(), when=on_table("ws-tickets"))

    with pytest.raises(DeleteError):
        tickets.redeem(ticket)

    assert tickets.redeem(ticket) == TicketHolder(demo.user_id, demo.session_id)
    assert tickets.redeem(ticket) is None


# --- through the API: AWS failing for now answers 503 with when to retry -------------------------------------

IMAGE_TASK = {"type": "image", "model_id": "seedream-4.5", "prompt": "a red fox in snow"}
AWS_TEXT = "Internal error on table arkflow-secret-tasks"


def aws_error(code: str, status: int) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": AWS_TEXT}, "ResponseMetadata": {"HTTPStatusCode": status}}


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.body
    assert response.data["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert b"arkflow-secret" not in response.body and b"InternalServerError" not in response.body


def aws_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "chalicelib.api.http"]


@pytest.mark.parametrize("fault", [
    aws_error("InternalServerError", 500),
    aws_error("ProvisionedThroughputExceededException", 400),
    aws_error("ThrottlingException", 400),
    EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
], ids=["internal-error", "throughput-exceeded", "throttling", "endpoint-unreachable"])
def test_listing_tasks_while_dynamodb_fails_answers_503_and_logs_it_once(
    api: Api, faults: DynamoFaults, caplog: pytest.LogCaptureFixture, fault: Any
) -> None:
    token = api.token(DEMO)
    faults.add("Query", fault, when=on_table("tasks"))

    with caplog.at_level(logging.WARNING):
        response = api.request("GET", "/api/tasks", token=token)

    assert_unavailable(response)
    [logged] = aws_warnings(caplog)
    assert "list_tasks" in logged.getMessage() and "request" in logged.getMessage()
    assert api.request("GET", "/api/tasks", token=token).status_code == 200


def test_a_request_dynamodb_refuses_as_invalid_stays_a_500(api: Api, faults: DynamoFaults) -> None:
    token = api.token(DEMO)
    faults.add("Query", aws_error("ValidationException", 400), when=on_table("tasks"))

    response = api.request("GET", "/api/tasks", token=token)

    assert response.status_code == 500 and response.data["error"]["code"] == "internal_error"


def test_creating_a_task_while_the_model_cannot_be_read_answers_503(api: Api, faults: DynamoFaults) -> None:
    token = api.token(DEMO)
    faults.add("GetItem", aws_error("InternalServerError", 500), when=on_table("models"))

    assert_unavailable(api.request("POST", "/api/tasks", IMAGE_TASK, token=token))
    assert TaskRecord.count() == 0


def test_a_task_whose_creating_write_failed_is_not_half_written_and_its_retry_creates_it_once(
    api: Api, faults: DynamoFaults
) -> None:
    token, headers = api.token(DEMO), {"Idempotency-Key": "order-503"}
    counter = quota.model_counter_key("seedream-4.5", quota.quota_day(time.time(), get_settings().quota_timezone))
    faults.add("TransactWriteItems", aws_error("InternalServerError", 500))

    assert_unavailable(api.request("POST", "/api/tasks", IMAGE_TASK, token=token, headers=headers))
    assert (TaskRecord.count(), IdempotencyRecord.count(), quota.used(counter)) == (0, 0, 0)

    created = api.request("POST", "/api/tasks", IMAGE_TASK, token=token, headers=headers)
    again = api.request("POST", "/api/tasks", IMAGE_TASK, token=token, headers=headers)
    assert created.status_code == again.status_code == 201 and created.data == again.data
    assert [task.task_id for task in TaskRecord.scan()] == [created.data["id"]]
    assert quota.used(counter) == 1


def test_creating_a_user_while_dynamodb_fails_answers_503_not_that_the_name_is_taken(
    api: Api, faults: DynamoFaults
) -> None:
    token = api.token(ADMIN)
    faults.add("PutItem", aws_error("InternalServerError", 500), when=on_table("users"))
    user = {"username": "newcomer", "password": "a long enough password", "role": "user"}

    assert_unavailable(api.request("POST", "/api/admin/users", user, token=token))
    assert api.request("POST", "/api/admin/users", user, token=token).status_code == 201


def test_a_login_while_the_stages_secret_cannot_be_read_answers_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On AWS the signing key comes from the stage's secret; here that secret does not exist (a cold container
    # whose Secrets Manager read fails holds no copy to fall back on).
    monkeypatch.delenv("TOKEN_SIGNING_KEY")
    monkeypatch.setenv("ARKFLOW_SECRET_ID", "arkflow-test-missing")
    reconfigure()

    assert_unavailable(api.request("POST", "/api/users/login", {"username": DEMO[0], "password": DEMO[1]}))


def test_creating_a_model_while_dynamodb_fails_answers_503_not_that_the_model_exists(
    api: Api, faults: DynamoFaults
) -> None:
    token = api.token(ADMIN)
    faults.add("PutItem", aws_error("InternalServerError", 500), when=on_table("models"))
    model = {"model_id": "seedream-spare", "type": "image", "upstream_model": "doubao-seedream-4-5-251128",
             "display_name": "Spare", "concurrency": 1, "daily_quota": 10}

    assert_unavailable(api.request("POST", "/api/admin/models", model, token=token))
    assert api.request("POST", "/api/admin/models", model, token=token).status_code == 201
