"""Video creates at Ark: each sent exactly once, and reconciled through Ark's task list after a crash, never blindly
created again (docs/design.md, "Videos").

Every create carries `safety_identifier` (a hash of the owner's user id: Ark's end-user field), a seed where the
model takes one (the user's, or one derived from the task id) and `execution_expires_after` no longer than the
platform's deadline (`TASK_DEADLINE_SECONDS`, within Ark's bounds).

A task found `submitting` after a crash is reconciled through Ark's task list and never created blindly again.
A listed task is a candidate only when what Ark echoes equals what this task sent: model, seed, resolution,
ratio, duration or frames, `safety_identifier`, and a creation time within the claim window; a field Ark does not
echo counts as no match. An Ark id another task owns is never a candidate: every task records itself as the
owner of its Ark id (`ArkTaskOwnerRecord`, conditionally) in the transaction that stores it, and the reconcile
takes that record before adopting. One candidate is adopted; none means create (once); two or more fail the task with
`reconcile_ambiguous` rather than guess (and become that task's, so no later reconcile adopts them). While a
sibling (a running task of the same user and model, still `submitting`) could equally have made a candidate,
nothing is decided: the sibling may still claim it. Each look first takes a round (`create_attempt`, a conditional
increment), so of two deliveries reconciling at once only one goes on to create.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError

from chalicelib.ark import capabilities
from chalicelib.ark.answers import VideoTask
from chalicelib.ark.capabilities import SEED, VIDEO_TASK_RETENTION_S
from chalicelib.ark.client import VolcVideoClient, draft_content, image_content, media_content, text_content
from chalicelib.clock import SYSTEM_CLOCK, Clock, epoch_of, iso
from chalicelib.media import storage
from chalicelib.settings import Settings
from chalicelib.store import slots, statemachine, writes
from chalicelib.store.errors import StaleTask
from chalicelib.store.records import ArkTaskOwnerRecord, TaskRecord
from chalicelib.video.stages import ARK_QUEUED, SUBMITTING, expires_after, video_deadline
from chalicelib.video.status import VideoStatus, callback_token, poll_schedule

CALLBACK_PATH = "/api/queue/callback"
# Ark's list may lag a create by a moment, and clocks differ: look this far around the claim.
RECONCILE_SLACK_S = 120
# Ark keeps a task (and lists it) this long; the owner record outlives that by a day.
ARK_OWNER_RETENTION_S = VIDEO_TASK_RETENTION_S + 24 * 3600
RECONCILE_PAGE_SIZE = 100
RECONCILE_MAX_PAGES = 5


def safety_identifier_of(user_id: str) -> str:
    """Ark's end-user id for a task's owner: a hash (64 hex characters, Ark's limit), never the id itself."""
    return hashlib.sha256(f"arkflow-user:{user_id}".encode()).hexdigest()



def seed_of(task: TaskRecord) -> int:
    """The user's seed, else one derived from the task id: random to the user, reproducible for reconciling."""
    seed = (task.params or {}).get("seed")
    if seed is not None and seed >= 0:
        return int(seed)
    return int(hashlib.sha256(task.task_id.encode()).hexdigest(), 16) % (SEED.maximum + 1)



@dataclass(frozen=True)
class Submission:
    """What a create sends, minus the callback secret."""

    body: dict[str, Any]

    @classmethod
    def of(cls, task: TaskRecord, s3: Any, settings: Settings) -> Submission:
        """The create in Ark's shape: the prompt and inputs as `content` (first/last frames, reference media, or
        for a render only the draft), the params as body fields. The seed goes only to models that take one."""
        entry = capabilities.find(task.family or task.upstream_model)
        params = {key: value for key, value in (task.params or {}).items() if key != "seed"}
        expiry = min(params.pop("execution_expires_after", None) or expires_after(settings), expires_after(settings))
        body: dict[str, Any] = {"content": cls._content(task, s3, settings), "model": task.upstream_model,
                                "safety_identifier": safety_identifier_of(task.user_id),
                                "execution_expires_after": expiry, **params}
        takes_seed = entry is None or (entry.video is not None and entry.video.seed)
        if takes_seed and not task.draft_external_id:  # a render reuses the draft's seed
            body["seed"] = seed_of(task)
        return cls(body)

    @staticmethod
    def _content(task: TaskRecord, s3: Any, settings: Settings) -> list[dict[str, Any]]:
        if task.draft_external_id:
            return [draft_content(task.draft_external_id)]
        content: list[dict[str, Any]] = []
        if task.prompt:
            content.append(text_content(task.prompt))
        refs = storage.urls_for_ark(s3, task.images, settings)
        roles = ["first_frame", "last_frame"] if len(refs) == 2 else ["first_frame"]
        content += [image_content(url, role) for url, role in zip(refs, roles, strict=False)]
        references = task.references or []
        urls = storage.urls_for_ark(s3, [reference["url"] for reference in references], settings)
        content += [image_content(url, "reference_image") if reference["type"] == "image"
                    else media_content(reference["type"], url) for reference, url in zip(references, urls, strict=True)]
        return content

    def matches(self, remote: VideoTask) -> bool:
        """Whether `remote` (from Ark's list) may be what this submission created: every field Ark echoes that
        this submission set is equal. A field Ark did not echo is no match (it cannot tell two users apart)."""
        body = self.body
        model = body["model"]
        # An endpoint id is echoed as the model behind it; the list is filtered by the endpoint at Ark.
        if not remote.model or (not model.startswith("ep-") and remote.model != model):
            return False
        fields = ["seed", "safety_identifier", "resolution", "duration", "frames"]
        if body.get("ratio") != "adaptive":  # Ark echoes the ratio it picked, not `adaptive`
            fields.append("ratio")
        return all(getattr(remote, field) == body[field] for field in fields if body.get(field) is not None)


class ArkTaskTaken(StaleTask):
    """Another task owns this Ark task (it recorded itself as its owner first)."""


@dataclass(frozen=True)
class Reconciliation:
    """What Ark's list says of a `submitting` task: one Ark task to adopt, nothing (create once), several that
    fit (`ambiguous`: fail rather than guess), or some a sibling may still claim (`undecided`: look again)."""

    adopt: VideoTask | None = None
    ambiguous: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)


def _owner_record(external_id: str, task_id: str, now: float) -> ArkTaskOwnerRecord:
    return ArkTaskOwnerRecord(external_id, task_id=task_id, expires_at_epoch=int(now) + ARK_OWNER_RETENTION_S)


def _owned_by(task_id: str) -> Any:
    """The condition of writing an owner record: nobody owns that Ark task yet, or `task_id` does already."""
    return ArkTaskOwnerRecord.external_id.does_not_exist() | (ArkTaskOwnerRecord.task_id == task_id)


def claim_ark_task(external_id: str, task_id: str, now: float) -> bool:
    """Record `task_id` as the owner of Ark task `external_id`; False when another task owns it. Idempotent."""
    try:
        _owner_record(external_id, task_id, now).save(condition=_owned_by(task_id))
    except PutError as error:
        if writes.condition_failed(error):
            return False
        raise
    return True


def owners_of(external_ids: list[str]) -> dict[str, str]:
    """Ark task id -> the task that owns it, for those owned."""
    if not external_ids:
        return {}
    return {record.external_id: record.task_id
            for record in ArkTaskOwnerRecord.batch_get(set(external_ids), consistent_read=True)}



class VideoSubmitter:
    def __init__(self, client: VolcVideoClient, *, s3: Any, status: VideoStatus, settings: Settings,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.s3 = s3
        self.status = status
        self.settings = settings
        self.clock = clock

    # --- submitting -----------------------------------------------------------------------------------------

    def callback_url(self, task_id: str) -> str | None:
        """Where Ark posts the task's status changes (none without a public API URL), with the task's signed token."""
        if not self.settings.public_api_url:
            return None
        query = urlencode({"task_id": task_id, "token": callback_token(self.settings, task_id)})
        return f"{self.settings.public_api_url.rstrip('/')}{CALLBACK_PATH}?{query}"

    def create(self, task: TaskRecord, callback_url: str | None) -> str:
        """Send the create (once: the client never retries) and return Ark's task id."""
        body = dict(Submission.of(task, self.s3, self.settings).body)
        return self.client.create_video_task(body.pop("content"), body.pop("model"), callback_url, **body)

    def record_submitted(self, task: TaskRecord, external_id: str, *, created_at: float | None = None,
                         expiry_s: int | None = None) -> TaskRecord:
        """Own Ark's task, store its id and hand the task to the poller, in one transaction; its deadline counts
        from the create (`created_at`, Ark's when known, else now; `expiry_s` as sent). StaleTask when another task
        owns the id or this one moved on (the Ark task is then still recorded as this one's, so no other task adopts
        it, and dropped if Ark still queues it). A failed write raises as it is: the create is reconciled later,
        never undone."""
        now = self.clock.now()
        deadline = video_deadline(now if created_at is None else created_at, expiry_s or expires_after(self.settings))
        owner = _owner_record(external_id, task.task_id, now)
        try:
            return statemachine.update_fields_together(
                task,
                {"external_id": external_id, "stage": ARK_QUEUED, "deadline_at": deadline,
                 **poll_schedule(task, now, self.settings)},
                together=lambda transaction: transaction.save(owner, condition=_owned_by(task.task_id)),
                publish=True,
                condition=TaskRecord.stage == SUBMITTING,
                clock=self.clock,
            )
        except TransactWriteError as error:
            if writes.condition_failed(error):
                raise ArkTaskTaken(f"Ark task {external_id} belongs to another task.") from None
            raise
        except StaleTask:
            if not claim_ark_task(external_id, task.task_id, now):
                raise ArkTaskTaken(f"Ark task {external_id} belongs to another task.") from None
            try:
                current = TaskRecord.get(task.task_id, consistent_read=True)
            except DoesNotExist:
                current = None
            if current is None or current.external_id != external_id:
                # It ended meanwhile (an operator failed it): this Ark task is no running task's.
                self.status.drop_if_queued(external_id)
            raise

    def find_submitted(self, task: TaskRecord) -> Reconciliation:
        """What Ark holds of a create a crashed worker may have sent for `task` (Ark's list, never a create)."""
        now = self.clock.now()
        window = (epoch_of(task.started_at or task.updated_at) - RECONCILE_SLACK_S, now + RECONCILE_SLACK_S)
        submission = Submission.of(task, self.s3, self.settings)
        listed: list[VideoTask] = []
        for page_num in range(1, RECONCILE_MAX_PAGES + 1):
            page = self.client.list_tasks(page_num=page_num, page_size=RECONCILE_PAGE_SIZE,
                                          model=task.upstream_model)
            listed += [item for item in page.items
                       if window[0] <= item.created_at <= window[1] and submission.matches(item)]
            if len(page.items) < RECONCILE_PAGE_SIZE or page.items[-1].created_at < window[0]:
                break
        owners = owners_of([item.id for item in listed])
        if own := [item for item in listed if owners.get(item.id) == task.task_id]:
            return Reconciliation(adopt=own[0])  # it crashed after taking the id: certainly this task's
        siblings = self._siblings(task)
        taken = {sibling.external_id for sibling in siblings if sibling.external_id}
        candidates = [item for item in listed if item.id not in owners and item.id not in taken]
        contested = [item.id for item in candidates if any(self._could_own(sibling, item) for sibling in siblings)]
        if contested:
            return Reconciliation(undecided=contested)
        if len(candidates) > 1:
            return Reconciliation(ambiguous=[item.id for item in candidates])
        return Reconciliation(adopt=candidates[0] if candidates else None)

    def _siblings(self, task: TaskRecord) -> list[TaskRecord]:
        """The other running tasks of the same user and model (its slot's holders): the tasks whose creates
        look like this one's at Ark."""
        found = []
        for task_id, holder in slots.holders(task.model_id).items():
            if task_id == task.task_id or holder.user_id != task.user_id:
                continue
            try:
                sibling = TaskRecord.get(task_id, consistent_read=True)
            except DoesNotExist:
                continue
            if sibling.status == statemachine.RUNNING and sibling.type == "video":
                found.append(sibling)
        return found

    def _could_own(self, sibling: TaskRecord, candidate: VideoTask) -> bool:
        """Whether `sibling`, not yet holding an Ark id, may have created `candidate` itself."""
        if sibling.external_id or sibling.stage != SUBMITTING:
            return False
        claimed_at = epoch_of(sibling.started_at or sibling.updated_at)
        return (candidate.created_at >= claimed_at - RECONCILE_SLACK_S
                and Submission.of(sibling, self.s3, self.settings).matches(candidate))

    def set_aside(self, task: TaskRecord, external_ids: list[str]) -> None:
        """After `task` failed as ambiguous: its candidates become its own (so no later reconcile adopts one) and
        are dropped at Ark while still queued; nobody will take them as a result."""
        for external_id in external_ids:
            if claim_ark_task(external_id, task.task_id, self.clock.now()):
                self.status.drop_if_queued(external_id)

    def adopt(self, task: TaskRecord, remote: VideoTask) -> TaskRecord:
        """Own a reconciled Ark task, record it as this task's and apply what Ark says about it. StaleTask when
        another task took it first."""
        task = self.record_submitted(task, remote.id, created_at=float(remote.created_at),
                                     expiry_s=remote.execution_expires_after)
        return self.status.apply_remote(task, remote)



def take_reconcile_round(task: TaskRecord, restart_grace_at: float | None) -> TaskRecord:
    """Claim the next round of reconciling a video left `submitting`; StaleTask when another took it (or the task
    moved on). `restart_grace_at` also stamps `updated_at`, so other deliveries wait the grace before looking."""
    actions = [TaskRecord.create_attempt.add(1)]
    if restart_grace_at is not None:
        actions.append(TaskRecord.updated_at.set(iso(restart_grace_at)))
    return statemachine.write_fields(
        task, actions,
        condition=(TaskRecord.status == statemachine.RUNNING) & (TaskRecord.stage == SUBMITTING)
        & same_create_attempt(task),
        stale_message="Another delivery took this reconcile round, or the task moved on.")


def same_create_attempt(task: TaskRecord) -> Any:
    """The condition that `create_attempt` is still what `task` read (a record from before it counts as 0)."""
    attempt = int(task.create_attempt or 0)
    same = TaskRecord.create_attempt == attempt
    return same | TaskRecord.create_attempt.does_not_exist() if attempt == 0 else same
