"""A DynamoDB write that fails for any reason but a false condition is a failure of the store, never an answer:
not "the name is taken", not "the ticket was used". It propagates, and the same call succeeds once the store is
back."""

from __future__ import annotations

import pytest
from pynamodb.exceptions import DeleteError, PutError

from chalicelib.db import UserRecord
from chalicelib.users import ensure_user
from chalicelib.ws import TicketHolder, Tickets
from tests.conftest import DEMO, principal_of
from tests.dynamodb_faults import DynamoFaults, internal_server_error, on_table


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
