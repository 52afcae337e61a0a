"""Each function's role allows every AWS call its handler really makes, on both packaged stages.

`infra.template.FUNCTION_ACCESS` gives each Lambda function only what it uses; this checks that against the code.
Each handler of `app.py` runs on moto with exactly the environment its function gets in the packaged template
(`build/<stage>/sam.json`, resolved for one deployment): the REST routes through Chalice's test client (the API
function), each lane with Lambda-shaped SQS records from its queue, the poller and the sweeper with schedule
events, the three WebSocket handlers with API Gateway's events. Secrets are read from Secrets Manager as on AWS,
never from the environment. Every AWS call is recorded as IAM sees it (`tests.infra.iam`) and checked against
the policy of the role that function gets in the template.

Every function of the template and every REST route must be run here, so a new one cannot go unchecked.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.loaders
import botocore.session
import chalice.test
import pytest
from chalice.test import Client
from moto import mock_aws
from PIL import Image

from arksim.server import RunningSimulator
from arksim.testing import running_simulator
from chalicelib import wiring
from chalicelib.media import storage
from chalicelib.resources import LANES, WEBHOOK_DELIVERY
from devstack.bootstrap import create_queues, create_tables
from infra.stages import STAGES, Stage
from infra.template import MEDIA_BUCKET_ID, WEBSOCKET_API_ID
from tests.conftest import reconfigure
from tests.infra import iam
from tests.infra.conftest import PACKAGED
from tests.polling import wait_for

pytestmark = PACKAGED

WEB_ORIGIN = "https://app.example.com"
ROLE_ACCESS_KEY = "testing"  # the role's credentials, as tests/conftest.py sets them
ARK_KEY = "sk-function-access"
SECRETS = {"ARK_API_KEY": ARK_KEY, "TOKEN_SIGNING_KEY": "function-access-signing-key-" * 3,
           "ADMIN_PASSWORD": "first-admin-password"}
ADMIN = ("admin", SECRETS["ADMIN_PASSWORD"])
DEMO, OTHER = ("demo", "demo-password"), ("other", "other-password")
# Nothing listens there: the simulator's callbacks fail quietly (the test posts the callback itself).
UNREACHABLE = "http://127.0.0.1:9"
# Variables the app reads that a function's environment sets on AWS, or that only the laptop sets (secrets): none
# may leak from the test process into a function that the template does not give them to.
APP_VARIABLES = ("ARKFLOW_PREFIX", "ARKFLOW_SECRET_ID", "RESULTS_BUCKET", "CORS_ORIGINS", "WS_ALLOWED_ORIGINS",
                 "ADMIN_USERNAME", "PUBLIC_API_URL", "WEBSOCKET_MANAGEMENT_URL", "WEBSOCKET_PUBLIC_URL",
                 "ARK_INPUTS_SIGNING_SECRET", "ARK_BASE_URL", "ARK_RESULT_HOSTS", "INTERNAL_SERVICE_TOKEN",
                 "WEBHOOK_ALLOW_LOOPBACK", "LOG_FORMAT", "EMF_METRICS", *SECRETS)


def inputs_signer_secret(stage: Stage) -> str:
    """The secret holding the long-term key that signs Ark's inputs (docs/storage.md), as a deployment names it."""
    return f"{stage.prefix}-ark-inputs-signer"


def png(width: int = 640, height: int = 360, color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(image: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(image).decode()}"


@dataclass
class Deployment:
    """One stage's packaged template run on moto: each handler in its function's own container and environment."""

    stage: Stage
    template: iam.Template
    ark: RunningSimulator
    recorder: iam.Recorder
    monkeypatch: pytest.MonkeyPatch
    client: Client
    routes_called: set[tuple[str, str]] = field(default_factory=set)
    functions_run: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)
    # Settings that are no AWS resource, set for the test's sake (the simulator, a faster poll, a deadline).
    overrides: dict[str, str] = field(default_factory=dict)
    _variables_set: set[str] = field(default_factory=set)

    def function_of(self, handler: str) -> str:
        """The template's logical id of the function whose handler is `app.<handler>`."""
        [function] = [name for name, properties in self.template.functions().items()
                      if properties["Handler"] == f"app.{handler}"]
        return function

    @contextmanager
    def container(self, function: str, **overrides: str) -> Iterator[None]:
        """A fresh Lambda container of `function`: its template environment, nothing cached from another, and
        every AWS call inside recorded as its own."""
        for name in {*APP_VARIABLES, *self._variables_set}:
            self.monkeypatch.delenv(name, raising=False)
        environment = {**self.template.environment(function), **self.overrides, **overrides}
        for name, value in environment.items():
            self.monkeypatch.setenv(name, value)
        self._variables_set = set(environment)
        wiring.new_container()
        self.functions_run.add(function)
        with self.recorder.running(function):
            yield

    # --- the API function ---

    def rest(self, method: str, route: str, body: Any = None, *, user: tuple[str, str] | None = None,
             expect: int = 200, query: str = "", **path: str) -> Any:
        if user is not None and user[0] not in self.tokens:
            login = self.rest("POST", "/api/users/login", {"username": user[0], "password": user[1]})
            self.tokens[user[0]] = login["token"]
        headers = {"Content-Type": "application/json", "Origin": WEB_ORIGIN}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user[0]]}"
        with self.container(self.function_of("app")):
            response = self.client.http.request(method, route.format(**path) + query, headers=headers,
                                                body=json.dumps(body) if body is not None else None)
        self.routes_called.add((route, method))
        assert response.status_code == expect, (method, route, response.body)
        return json.loads(response.body) if response.body else None

    # --- the other handlers, invoked as Lambda invokes them ---

    def invoke(self, handler: str, event: dict[str, Any], **overrides: str) -> Any:
        # Chalice's test client gives every invocation 3 s of Lambda time; a deployed function has its timeout
        # (which bounds a lane's deadlines and baton passes).
        config = self.client.lambda_._config
        timeout_ms = config.scope(config.chalice_stage, handler).lambda_timeout * 1000
        context = functools.partial(chalice.test.LambdaContext, max_runtime_ms=timeout_ms)
        with self.container(self.function_of(handler), **overrides), \
                pytest.MonkeyPatch.context() as patch:
            patch.setattr(chalice.test, "LambdaContext", context)
            return self.client.lambda_.invoke(handler, event).payload

    def lane_records(self, lane: str, task_ids: set[str], queue: str = "") -> list[dict[str, Any]]:
        """The visible messages of `task_ids` on the lane's queue (or `queue`), as Lambda hands them over (others
        stay)."""
        sqs = boto3.client("sqs")
        queue = queue or f"{self.stage.prefix}-lane-{lane}"
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        records = []
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                           WaitTimeSeconds=0).get("Messages", []):
            if json.loads(message["Body"])["task_id"] not in task_ids:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
                continue
            records.append({"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                            "body": message["Body"], "attributes": message["Attributes"], "messageAttributes": {},
                            "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs",
                            "eventSourceARN": f"arn:aws:sqs:{iam.REGION}:{iam.ACCOUNT}:{queue}",
                            "awsRegion": iam.REGION})
        assert {json.loads(record["body"])["task_id"] for record in records} == task_ids
        return records

    def run_lane(self, lane: str, *task_ids: str) -> None:
        handler = next(item.handler_name for item in LANES if item.name == lane)
        answer = self.invoke(handler, {"Records": self.lane_records(lane, set(task_ids))})
        assert answer == {"batchItemFailures": []}

    def schedule(self, handler: str, **overrides: str) -> dict[str, int]:
        event = self.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                     detail={}, resources=[])
        return self.invoke(handler, event, **overrides)

    def websocket(self, handler: str, route_key: str, connection_id: str, **event: Any) -> dict[str, Any]:
        api = iam.api_id(WEBSOCKET_API_ID)
        context = {"routeKey": route_key, "eventType": route_key.strip("$").upper(), "connectionId": connection_id,
                   "domainName": f"{api}.execute-api.{iam.REGION}.amazonaws.com", "stage": "api", "apiId": api,
                   "requestId": "request-1"}
        return self.invoke(handler, {"requestContext": context, "isBase64Encoded": False, **event})

    def connect(self, user: tuple[str, str], connection_id: str) -> None:
        ticket = self.rest("POST", "/api/ws/ticket", user=user)["ticket"]
        answer = self.websocket("ws_connect", "$connect", connection_id, headers={"Origin": WEB_ORIGIN},
                                queryStringParameters={"ticket": ticket})
        assert answer == {"statusCode": 200}, answer

    def task(self, task_id: str) -> dict[str, Any]:
        return boto3.client("dynamodb").get_item(TableName=f"{self.stage.prefix}-tasks",
                                                 Key={"task_id": {"S": task_id}}, ConsistentRead=True)["Item"]


def exercise(deployment: Deployment) -> None:
    """Every handler of app.py doing its work, in the order a day of use brings it."""
    run = deployment
    # A fresh stack: the sweeper's first run creates the default models.
    run.schedule("sweeper")

    # Admin work: the first admin is made at the first login.
    assert run.rest("GET", "/api/health") == {"status": "ok"}
    assert run.rest("GET", "/api/openapi.json")["openapi"].startswith("3.1")
    assert run.rest("GET", "/api/users/me", user=ADMIN)["role"] == "admin"
    model = {"model_id": "spare-image", "type": "image", "upstream_model": "doubao-seedream-4-5-251128",
             "concurrency": 1, "daily_quota": 10}
    run.rest("POST", "/api/admin/models", model, user=ADMIN, expect=201)
    run.rest("GET", "/api/admin/models", user=ADMIN)
    run.rest("GET", "/api/admin/ark-models", user=ADMIN)
    run.rest("GET", "/api/admin/models/{model_id}", user=ADMIN, model_id="spare-image")
    run.rest("PUT", "/api/admin/models/{model_id}", {"enabled": False}, user=ADMIN, model_id="spare-image")
    run.rest("DELETE", "/api/admin/models/{model_id}", user=ADMIN, model_id="spare-image")
    for username, password in (DEMO, OTHER):
        run.rest("POST", "/api/admin/users", {"username": username, "password": password, "role": "user"},
                 user=ADMIN, expect=201)
    run.rest("GET", "/api/admin/users", user=ADMIN)

    # A user's tasks: an image from an upload and an inline image, videos from inline frames.
    assert run.rest("GET", "/api/models", user=DEMO)["models"]
    frame, other_frame = png(), png(color=(200, 100, 0))
    form = run.rest("POST", "/api/uploads", {"content_type": "image/png", "size": len(frame)}, user=DEMO,
                    expect=201)
    # What the browser's POST of the form does.
    boto3.client("s3").put_object(Bucket=run.template.resolve({"Ref": MEDIA_BUCKET_ID}),
                                  Key=form["fields"]["key"], Body=frame, ContentType="image/png")
    image = run.rest("POST", "/api/tasks", {"type": "image", "model_id": "seedream-4.5", "prompt": "a fox",
                                            "images": [form["ref"], data_uri(other_frame)],
                                            "webhook_url": f"{UNREACHABLE}/hook"}, user=DEMO, expect=201)
    frames = {"type": "video", "model_id": "seedance-1.0-pro", "prompt": "waves", "params": {"duration": 5},
              "images": [data_uri(frame), data_uri(other_frame)]}
    clip = run.rest("POST", "/api/tasks", frames, user=DEMO, expect=201)
    cancelled = run.rest("POST", "/api/tasks", {**frames, "prompt": "never mind"}, user=DEMO, expect=201)
    failed = run.rest("POST", "/api/tasks", {"type": "image", "model_id": "seedream-4.5", "prompt": "an owl"},
                      user=DEMO, expect=201)
    run.rest("GET", "/api/tasks", user=DEMO)
    run.rest("GET", "/api/tasks/{task_id}", user=DEMO, task_id=image["id"])
    run.rest("GET", "/api/admin/tasks", user=ADMIN)

    # API keys: one made, used on a task route (its first use recorded), listed and revoked; another user's goes
    # with that user (below).
    key = run.rest("POST", "/api/keys", {"name": "backend"}, user=DEMO, expect=201)
    run.tokens["demo's key"] = key["key"]
    run.rest("GET", "/api/tasks", user=("demo's key", ""))
    run.rest("GET", "/api/keys", user=DEMO)
    run.rest("DELETE", "/api/keys/{key_id}", user=DEMO, key_id=key["id"])
    run.rest("POST", "/api/keys", {"name": "doomed"}, user=OTHER, expect=201)

    # Live updates: both users watch; the ping is answered through the management API.
    run.connect(DEMO, "conn-demo")
    run.connect(OTHER, "conn-other")
    assert run.websocket("ws_message", "$default", "conn-demo", body='{"action": "ping"}') == {"statusCode": 200}
    run.rest("POST", "/api/tasks/{task_id}/cancel", user=DEMO, task_id=cancelled["id"])
    run.rest("PUT", "/api/tasks/{task_id}/status", {"status": "failed", "error": {"code": "stopped",
             "message": "Stopped by an operator."}}, user=ADMIN, task_id=failed["id"])
    # Dead letters: listed (received and shown again), and replayed (a finished task's message deleted); the audit
    # trail of every admin action so far.
    sqs = boto3.client("sqs")
    image_dlq = sqs.get_queue_url(QueueName=f"{run.stage.prefix}-lane-image-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=image_dlq, MessageBody=json.dumps({"task_id": failed["id"]}))
    assert run.rest("GET", "/api/admin/dlq", user=ADMIN)["queues"][0]["messages"][0]["task_status"] == "failed"
    assert run.rest("POST", "/api/admin/dlq/{lane}/replay", user=ADMIN, lane="image")["dropped"] == 1
    assert run.rest("GET", "/api/admin/audit", user=ADMIN)["entries"]

    # The lanes: an image generated and its results copied; a video created (its second frame too large to go
    # inline here, so it is signed by the long-term key), a cancelled task's message acknowledged.
    run.monkeypatch.setattr(storage, "ARK_INLINE_BYTES", len(data_uri(frame)))
    run.run_lane("image", image["id"], failed["id"])
    assert run.task(image["id"])["status"]["S"] == "succeeded"

    # The image's webhook: signed with its owner's secret (made now), its first attempt refused by the receiver's
    # host (nothing listens), recorded, and its retry queued; then the owner reads the secret and the attempts.
    webhook = WEBHOOK_DELIVERY.queue_name(run.stage.prefix)
    answer = run.invoke(WEBHOOK_DELIVERY.handler_name,
                        {"Records": run.lane_records("", {image["id"]}, queue=webhook)})
    assert answer == {"batchItemFailures": []}
    assert run.rest("GET", "/api/webhooks/secret", user=DEMO)["secret"].startswith("whsec_")
    run.rest("POST", "/api/webhooks/secret/rotate", user=DEMO)
    [attempt] = run.rest("GET", "/api/webhooks/deliveries", user=DEMO, query=f"?task_id={image['id']}")["deliveries"]
    assert attempt["outcome"] == "retrying"
    run.run_lane("video", clip["id"], cancelled["id"])
    external_id = run.task(clip["id"])["external_id"]["S"]

    # Ark's callback (a hint), then the poller's read ends the video and hands its copy to the lane. A `queued`
    # one: a `running` one would tell the poller that callbacks arrive, and put its next read a minute away.
    token = parse_qs(urlsplit(run.ark.sim.tasks.tasks[external_id].callback_url).query)["token"][0]
    run.rest("POST", "/api/queue/callback", {"id": external_id, "status": "queued"},
             query=f"?task_id={clip['id']}&token={token}")
    wait_for(lambda: run.ark.sim.tasks.tasks[external_id].status == "succeeded")
    assert run.schedule("video_poller") == {"polled": 1}
    run.run_lane("video", clip["id"])
    assert "video_url" in run.task(clip["id"])
    # Only a draft renders: the same function creates a render as any task, after reading the draft.
    run.rest("POST", "/api/tasks/{task_id}/render", user=DEMO, task_id=clip["id"], expect=409)

    # Accounts end: a disabled user's socket is closed, a deleted task's files go, a logout closes its socket.
    run.rest("PUT", "/api/admin/users/{username}", {"disabled": True}, user=ADMIN, username=OTHER[0])
    run.rest("DELETE", "/api/admin/users/{username}", user=ADMIN, username=OTHER[0])
    assert run.websocket("ws_disconnect", "$disconnect", "conn-other") == {"statusCode": 200}
    run.rest("DELETE", "/api/tasks/{task_id}", user=DEMO, task_id=image["id"])
    late = run.rest("POST", "/api/tasks", {"type": "image", "model_id": "seedream-4.5", "prompt": "too late"},
                    user=DEMO, expect=201)
    run.rest("POST", "/api/users/logout", user=DEMO)

    # The sweeper times out what waited past its deadline.
    assert run.schedule("sweeper", TASK_DEADLINE_SECONDS="0")["timed_out"] == 1
    assert run.task(late["id"])["status"]["S"] == "failed"
    # The admin's figures of what ran (the roll-ups the transitions above wrote).
    assert run.rest("GET", "/api/admin/metrics", user=ADMIN, query="?window=24h")["window"] == "24h"
    assert "rows" in run.rest("GET", "/api/admin/usage", user=ADMIN, query="?days=2")
    # Closing a circuit by hand (one that is closed: the write and the audit entry all the same).
    closed = run.rest("POST", "/api/admin/models/{model_id}/circuit/close", user=ADMIN, model_id="seedream-4.5")
    assert closed["circuit"]["state"] == "closed"


@pytest.fixture
def deployment(request: pytest.FixtureRequest, templates: dict[str, dict[str, Any]],
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    stage = STAGES[request.param]
    template = iam.Template(templates[stage.name], {"CorsOrigins": WEB_ORIGIN,
                                                    "ArkInputsSigningSecret": inputs_signer_secret(stage)})
    recorder = iam.Recorder(ROLE_ACCESS_KEY)
    # Each container's clients come from new botocore sessions, as on Lambda; one loader for them all spares
    # re-reading botocore's service models each time (what they describe does not change).
    monkeypatch.setattr(botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader))
    with mock_aws(), recorder.installed(), running_simulator(
        api_key=ARK_KEY, image_latency_s=0.0, video_queue_s=0.0, video_run_s=0.1, callback_retries=0,
    ) as ark:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ROLE_ACCESS_KEY)
        # What a deployment holds before the stack's functions run: tables, queues, bucket and secrets.
        create_tables(boto3.client("dynamodb"), stage.prefix)
        create_queues(boto3.client("sqs"), stage.prefix)
        boto3.client("s3").create_bucket(Bucket=template.resolve({"Ref": MEDIA_BUCKET_ID}))
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name=stage.secret_name, SecretString=json.dumps(SECRETS))
        secrets.create_secret(Name=inputs_signer_secret(stage), SecretString=json.dumps(
            {"access_key_id": "AKIAARKINPUTSSIGNER1", "secret_access_key": "long-term-secret-of-the-inputs-user"}))
        from app import app

        yield Deployment(stage, template, ark, recorder, monkeypatch, Client(app), overrides={
            "ARK_BASE_URL": ark.base_url, "ARK_RESULT_HOSTS": ark.root_url, "PUBLIC_API_URL": UNREACHABLE,
            "VIDEO_POLL_INTERVAL_SECONDS": "0", "WEBHOOK_ALLOW_LOOPBACK": "1",
        })
        monkeypatch.undo()
    reconfigure()


def denied_calls(deployment: Deployment) -> dict[str, list[str]]:
    template = deployment.template
    return {
        function: sorted({str(call) for call in calls if not iam.allows(template.statements(function), call)})
        for function, calls in deployment.recorder.calls.items()
    }


def summary(deployment: Deployment) -> str:
    return ", ".join(f"{function}: {len(calls)}" for function, calls in sorted(deployment.recorder.calls.items()))


@pytest.mark.parametrize("deployment", sorted(STAGES), indirect=True)
def test_every_aws_call_of_every_handler_is_allowed_by_its_functions_role(deployment: Deployment) -> None:
    exercise(deployment)
    print(f"\n{deployment.stage.name}: AWS calls recorded per function: {summary(deployment)}")

    assert deployment.functions_run == set(deployment.template.functions())
    from app import app

    routes = {(path, method) for path, methods in app.routes.items() for method in methods if method != "OPTIONS"}
    assert routes - deployment.routes_called == set()
    assert not deployment.recorder.unsupported
    assert all(deployment.recorder.calls[function] for function in deployment.functions_run)
    assert {function: denied for function, denied in denied_calls(deployment).items() if denied} == {}
    # Ark's inputs too large to go inline were signed by the long-term key, not by the role.
    signer = {call.action for call in deployment.recorder.by_others[deployment.function_of("lane_video")]}
    assert signer == {"s3:GetObject"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_without_an_inputs_signing_secret_no_function_may_read_one(templates: dict[str, Any], stage: str) -> None:
    """The parameter left empty (its default): the lanes sign with their role, and no role names another secret."""
    template = iam.Template(templates[stage], {"CorsOrigins": WEB_ORIGIN})
    secret = iam.Call("secretsmanager:GetSecretValue",
                      f"arn:aws:secretsmanager:{iam.REGION}:{iam.ACCOUNT}:secret:-{iam.SECRET_ARN_SUFFIX[1:]}")
    for function in template.functions():
        assert template.environment(function).get("ARK_INPUTS_SIGNING_SECRET", "") == ""
        statements = template.statements(function)
        assert not iam.allows(statements, secret)
        assert {statement.get("Sid") for statement in statements}.isdisjoint({"ReadInputsSigningSecret"})


# --- the evaluation itself -------------------------------------------------------------------------------------


def statement(action: str | list[str], resource: str | list[str], effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


def test_allow_statements_match_with_wildcards_and_a_deny_wins() -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/arkflow-dev-tasks"
    get = iam.Call("dynamodb:GetItem", table)
    assert iam.allows([statement(["dynamodb:GetItem"], table)], get)
    assert iam.allows([statement("dynamodb:*", "arn:aws:dynamodb:*:*:table/arkflow-dev-*")], get)
    assert iam.allows([statement("DynamoDB:getitem", table)], get)  # actions ignore case
    assert not iam.allows([statement("dynamodb:GetItem", table.upper())], get)  # resources do not
    assert not iam.allows([statement("dynamodb:GetItem", f"{table}/index/*")], get)
    assert iam.allows([statement("dynamodb:Query", f"{table}/index/*")],
                      iam.Call("dynamodb:Query", f"{table}/index/by_user"))
    assert not iam.allows([statement("dynamodb:Query", table)], iam.Call("dynamodb:Query", f"{table}/index/by_user"))
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:arkflow-dev/app-secrets-??????"
    assert iam.allows([statement("secretsmanager:GetSecretValue", secret)],
                      iam.Call("secretsmanager:GetSecretValue", secret.replace("??????", "Ab12Cd")))
    assert not iam.allows([statement("secretsmanager:GetSecretValue", secret)],
                          iam.Call("secretsmanager:GetSecretValue", secret.replace("-??????", "-other-Ab12Cd")))
    assert not iam.allows([statement("*", "*"), statement("dynamodb:GetItem", table, effect="Deny")], get)
    assert not iam.allows([], get)


def test_calls_are_read_as_iam_authorizes_them() -> None:
    region, endpoint = "us-east-1", "https://abc123.execute-api.us-east-1.amazonaws.com/api"

    def calls(service: str, operation: str, **params: Any) -> list[str]:
        return [str(call) for call in iam.iam_calls(service, operation, params, region, endpoint)]

    transaction = [{"Put": {"TableName": "t1"}}, {"ConditionCheck": {"TableName": "t2"}}]
    assert calls("dynamodb", "TransactWriteItems", TransactItems=transaction) == [
        "dynamodb:PutItem on arn:aws:dynamodb:us-east-1:123456789012:table/t1",
        "dynamodb:ConditionCheckItem on arn:aws:dynamodb:us-east-1:123456789012:table/t2"]
    assert calls("s3", "HeadObject", Bucket="b", Key="k") == ["s3:GetObject on arn:aws:s3:::b/k"]
    assert calls("s3", "CopyObject", Bucket="b", Key="to", CopySource={"Bucket": "b", "Key": "from"}) == [
        "s3:GetObject on arn:aws:s3:::b/from", "s3:PutObject on arn:aws:s3:::b/to"]
    assert calls("s3", "ListObjectsV2", Bucket="b") == ["s3:ListBucket on arn:aws:s3:::b"]
    assert calls("sqs", "DeleteMessageBatch", QueueUrl="https://sqs.us-east-1.amazonaws.com/123456789012/q") == [
        "sqs:DeleteMessage on arn:aws:sqs:us-east-1:123456789012:q"]
    assert calls("apigatewaymanagementapi", "DeleteConnection", ConnectionId="c1") == [
        "execute-api:ManageConnections on arn:aws:execute-api:us-east-1:123456789012:abc123/api/DELETE/@connections/c1"]
    with pytest.raises(iam.Unsupported):
        calls("sts", "GetCallerIdentity")
