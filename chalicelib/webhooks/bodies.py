"""What the webhook routes answer and what a webhook carries, as pydantic models: the bodies are built through
them, so they are also their published schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from chalicelib.webhooks.events import WebhookEvent

Outcome = Literal["delivered", "retrying", "failed"]


class WebhookSecretBody(BaseModel):
    """`GET /api/webhooks/secret`, `POST /api/webhooks/secret/rotate`."""

    secret: str = Field(description="The Standard Webhooks signing secret (`whsec_` and base64).",
                        pattern=r"^whsec_[A-Za-z0-9+/=]+$")


class WebhookAttemptBody(BaseModel):
    webhook_id: str
    type: str = Field(description="The event, `task.<status>`.")
    attempt: int = Field(ge=1)
    at: str = Field(description="When the attempt was made.")
    status_code: int | None = Field(description="The receiver's status; null: no answer (timeout, no connection, "
                                    "an address webhooks may not reach).")
    duration_ms: int = Field(ge=0)
    error: str | None
    outcome: Outcome = Field(description="What came next: delivered, retrying (at `next_attempt_at`) or failed.")
    next_attempt_at: str | None = None


class WebhookDeliveriesBody(BaseModel):
    """`GET /api/webhooks/deliveries?task_id=`: the task's attempts, oldest first."""

    task_id: str
    deliveries: list[WebhookAttemptBody]


class WebhookPayload(BaseModel):
    """The body of a webhook: the event, when it happened, and the task as `GET /api/tasks/{id}` shows it when
    the attempt is made."""

    type: str = Field(pattern=r"^task\.(running|succeeded|failed|cancelled|expired)$")
    timestamp: str = Field(description="When the task entered the status (the same on every attempt).")
    data: dict[str, Any]

    @classmethod
    def of(cls, event: WebhookEvent, timestamp: str, task_body: dict[str, Any]) -> WebhookPayload:
        return cls(type=f"task.{event}", timestamp=timestamp, data=task_body)
