"""What IAM would be asked for each AWS call the app makes, and whether a role's policy allows it.

Three parts, used by `test_function_access.py`:

* `Template`: a packaged template's values resolved as CloudFormation would resolve them for one deployment
  (pseudo parameters, parameters, `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::If`...), for the functions' environments
  and their roles' policies;
* `Recorder`: a botocore `provide-client-params` hook on every client made while it is installed (boto3's and
  pynamodb's alike: both create their clients through `botocore.session.Session.create_client`), turning each
  call, presigned links included, into the `(IAM action, resource ARN)` pairs IAM authorizes it by;
* `allows`: IAM's evaluation of identity-policy statements (`*` and `?` wildcards, an explicit Deny wins).
"""

from __future__ import annotations

import functools
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.session

# The account and region the functions run in here: moto's default account, the tests' region.
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                     "AWS::URLSuffix": "amazonaws.com"}
# Secrets Manager appends six random characters to a secret's name in its ARN.
SECRET_ARN_SUFFIX = "-Ab12Cd"


class Unsupported(Exception):
    """A template construct, policy element or AWS call this module does not know how to read: extend it."""


# --- the template, resolved ------------------------------------------------------------------------------------

_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_API_TYPES = {"AWS::Serverless::Api", "AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api"}


class Template:
    """A packaged template as one deployment of it sees its values: `parameters` are that deployment's."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.resources: dict[str, Any] = template["Resources"]
        self.parameters: dict[str, str] = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in parameters:
                self.parameters[name] = parameters[name]
            elif "Default" in spec:
                self.parameters[name] = spec["Default"]
            else:
                raise Unsupported(f"parameter {name} has no default: give its value")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            [(key, argument)] = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::GetAtt":
                name, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
                return self._attribute(name, attribute)
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(self.resolve(items))
            if key == "Fn::Split":
                separator, text = argument
                return self.resolve(text).split(separator)
            if key == "Fn::If":
                condition, if_true, if_false = argument
                return self.resolve(if_true if self.condition(condition) else if_false)
            if key == "Fn::Equals":
                first, second = argument
                return self.resolve(first) == self.resolve(second)
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Condition":
                return self.condition(argument)
            if key.startswith("Fn::"):
                raise Unsupported(key)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::S3::Bucket":
            return self.resolve(properties["BucketName"])
        if resource["Type"] == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.resolve(properties['QueueName'])}"
        if resource["Type"] == "AWS::DynamoDB::Table":
            return self.resolve(properties["TableName"])
        if resource["Type"] in _API_TYPES:
            return api_id(name)
        raise Unsupported(f"Ref to {resource['Type']} {name}")

    def _attribute(self, name: str, attribute: str) -> Any:
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        if (resource["Type"], attribute) == ("AWS::S3::Bucket", "Arn"):
            return f"arn:aws:s3:::{self.resolve(properties['BucketName'])}"
        if (resource["Type"], attribute) == ("AWS::SQS::Queue", "Arn"):
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.resolve(properties['QueueName'])}"
        if (resource["Type"], attribute) == ("AWS::DynamoDB::Table", "Arn"):
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.resolve(properties['TableName'])}"
        raise Unsupported(f"Fn::GetAtt {name}.{attribute} ({resource['Type']})")

    def _sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def value_of(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self._attribute(*name.split(".", 1)))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(value_of, text)

    # --- what a function gets ---

    def functions(self) -> dict[str, dict[str, Any]]:
        return {name: resource["Properties"] for name, resource in self.resources.items()
                if resource["Type"] == "AWS::Serverless::Function"}

    def environment(self, function: str) -> dict[str, str]:
        variables = self.functions()[function].get("Environment", {}).get("Variables", {})
        return {name: str(value) for name, value in self.resolve(variables).items()}

    def statements(self, function: str) -> list[dict[str, Any]]:
        """Every statement of the identity policies of the function's role."""
        properties = self.functions()[function]
        if "Policies" in properties:
            raise Unsupported(f"{function}: SAM policies beside the role")
        role = self.resources[properties["Role"]["Fn::GetAtt"][0]]["Properties"]
        if role.get("ManagedPolicyArns"):
            raise Unsupported(f"{function}: managed policies {role['ManagedPolicyArns']}")
        statements: list[dict[str, Any]] = []
        for policy in self.resolve(role.get("Policies", [])):
            statement = policy["PolicyDocument"]["Statement"]
            statements += statement if isinstance(statement, list) else [statement]
        return statements


def api_id(logical_id: str) -> str:
    """The id an API of the stack gets here (API Gateway's are ten random characters)."""
    return logical_id.lower()


# --- IAM's evaluation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Call:
    """One action on one resource, as IAM authorizes a request."""

    action: str
    resource: str

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


def _matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(statements: list[dict[str, Any]], call: Call) -> bool:
    """Whether identity-policy `statements` allow `call`: some Allow matches its action (case-insensitive) and
    resource (case-sensitive), with `*` and `?` wildcards, and no Deny does."""
    allowed = False
    for statement in statements:
        unknown = set(statement) - {"Sid", "Effect", "Action", "Resource"}
        if unknown:
            raise Unsupported(f"statement {statement.get('Sid')!r} has {sorted(unknown)}")
        if not (any(_matches(pattern, call.action, ignore_case=True) for pattern in _listed(statement["Action"]))
                and any(_matches(pattern, call.resource) for pattern in _listed(statement["Resource"]))):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = allowed or statement["Effect"] == "Allow"
    return allowed


# --- AWS calls as IAM sees them --------------------------------------------------------------------------------

_TRANSACT_WRITE_ACTIONS = {"ConditionCheck": "ConditionCheckItem", "Put": "PutItem", "Update": "UpdateItem",
                           "Delete": "DeleteItem"}
# S3 operations IAM authorizes under another action name, on the object or on the bucket.
_S3_OBJECT_ACTIONS = {
    "GetObject": "GetObject", "HeadObject": "GetObject", "PutObject": "PutObject", "DeleteObject": "DeleteObject",
    "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject", "CompleteMultipartUpload": "PutObject",
    "AbortMultipartUpload": "AbortMultipartUpload", "ListParts": "ListMultipartUploadParts",
}
_S3_BUCKET_ACTIONS = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket", "HeadBucket": "ListBucket"}
_CONNECTION_METHODS = {"PostToConnection": "POST", "DeleteConnection": "DELETE", "GetConnection": "GET"}


def _dynamodb(operation: str, params: dict[str, Any], region: str) -> list[Call]:
    def table(name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    if operation == "TransactWriteItems":
        return [Call(f"dynamodb:{_TRANSACT_WRITE_ACTIONS[kind]}", table(body["TableName"]))
                for item in params["TransactItems"] for kind, body in item.items()]
    if operation == "TransactGetItems":
        return [Call("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in params["TransactItems"]]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Call(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
    if "TableName" in params:
        return [Call(f"dynamodb:{operation}", table(params["TableName"], params.get("IndexName")))]
    raise Unsupported(f"dynamodb {operation}")


def _sqs(operation: str, params: dict[str, Any], region: str) -> list[Call]:
    if operation == "GetQueueUrl":
        arn = f"arn:aws:sqs:{region}:{params.get('QueueOwnerAWSAccountId', ACCOUNT)}:{params['QueueName']}"
    else:
        url = urlsplit(params["QueueUrl"])
        account, name = url.path.strip("/").split("/")
        arn = f"arn:aws:sqs:{url.hostname.split('.')[1]}:{account}:{name}"  # type: ignore[union-attr]
    # A batch is authorized as its single-message action.
    return [Call(f"sqs:{operation.removesuffix('Batch')}", arn)]


def _s3(operation: str, params: dict[str, Any], presign: bool) -> list[Call]:
    def bucket_object(bucket: str, key: str) -> str:
        return f"arn:aws:s3:::{bucket}/{key}"

    if presign and operation == "CreateBucket":
        # A presigned POST: its form uploads (s3:PutObject) a key botocore is not told here.
        return [Call("s3:PutObject", bucket_object(params["Bucket"], "*"))]
    if operation in _S3_OBJECT_ACTIONS:
        return [Call(f"s3:{_S3_OBJECT_ACTIONS[operation]}", bucket_object(params["Bucket"], params["Key"]))]
    if operation in _S3_BUCKET_ACTIONS:
        return [Call(f"s3:{_S3_BUCKET_ACTIONS[operation]}", f"arn:aws:s3:::{params['Bucket']}")]
    if operation == "DeleteObjects":
        return [Call("s3:DeleteObject", bucket_object(params["Bucket"], item["Key"]))
                for item in params["Delete"]["Objects"]]
    if operation in ("CopyObject", "UploadPartCopy"):
        source = params["CopySource"]
        if isinstance(source, str):
            source_bucket, _, source_key = unquote(source.split("?")[0]).lstrip("/").partition("/")
        else:
            source_bucket, source_key = source["Bucket"], source["Key"]
        return [Call("s3:GetObject", bucket_object(source_bucket, source_key)),
                Call("s3:PutObject", bucket_object(params["Bucket"], params["Key"]))]
    raise Unsupported(f"s3 {operation}")


def _secretsmanager(operation: str, params: dict[str, Any], region: str) -> list[Call]:
    if operation not in ("GetSecretValue", "DescribeSecret"):
        raise Unsupported(f"secretsmanager {operation}")
    secret = params["SecretId"]
    arn = secret if secret.startswith("arn:") else f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret}" \
        f"{SECRET_ARN_SUFFIX}"
    return [Call(f"secretsmanager:{operation}", arn)]


def _connections(operation: str, params: dict[str, Any], region: str, endpoint_url: str) -> list[Call]:
    if operation not in _CONNECTION_METHODS:
        raise Unsupported(f"apigatewaymanagementapi {operation}")
    endpoint = urlsplit(endpoint_url)
    api = endpoint.hostname.split(".")[0]  # type: ignore[union-attr]
    stage = endpoint.path.strip("/")
    resource = f"arn:aws:execute-api:{region}:{ACCOUNT}:{api}/{stage}/{_CONNECTION_METHODS[operation]}" \
        f"/@connections/{params['ConnectionId']}"
    return [Call("execute-api:ManageConnections", resource)]


def iam_calls(service: str, operation: str, params: dict[str, Any], region: str, endpoint_url: str,
              presign: bool = False) -> list[Call]:
    """The action-resource pairs IAM checks for one API call (a presigned link: those its use will need)."""
    if service == "dynamodb":
        return _dynamodb(operation, params, region)
    if service == "sqs":
        return _sqs(operation, params, region)
    if service == "s3":
        return _s3(operation, params, presign)
    if service == "secretsmanager":
        return _secretsmanager(operation, params, region)
    if service == "apigatewaymanagementapi":
        return _connections(operation, params, region, endpoint_url)
    raise Unsupported(f"{service} {operation}")


class Recorder:
    """Every AWS call made while a function runs (`running`), as IAM sees it, by function.

    Calls on a client holding other credentials than the function's (a signer with an IAM user's key) are
    what that principal does, not the role: they are kept apart (`by_others`). Nothing here ever raises into the
    app: a call this module cannot map is kept in `unsupported`.
    """

    def __init__(self, role_access_key: str) -> None:
        self.role_access_key = role_access_key
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.by_others: dict[str, list[Call]] = defaultdict(list)
        self.unsupported: dict[str, list[str]] = defaultdict(list)
        self.function: str | None = None
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[Recorder]:
        original = botocore.session.Session.create_client

        def create_client(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("provide-client-params", functools.partial(self._on_call, client))
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
        try:
            yield self
        finally:
            botocore.session.Session.create_client = original  # type: ignore[method-assign]

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        """The calls made inside (from any thread: S3's transfers use their own) are `function`'s."""
        self.function = function
        try:
            yield
        finally:
            self.function = None

    def _on_call(self, client: Any, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                 **_: Any) -> None:
        function = self.function
        if function is None:
            return  # the test's own set-up and checks
        service = client.meta.service_model.service_name
        try:
            calls = iam_calls(service, model.name, params, client.meta.region_name, client.meta.endpoint_url,
                              presign=bool((context or {}).get("is_presign_request")))
        except Exception as error:  # a hook must never fail the app's call: the test reports it instead
            with self._lock:
                self.unsupported[function].append(f"{service} {model.name}: {error!r}")
            return
        credentials = client._get_credentials()
        with self._lock:
            if credentials is not None and credentials.access_key != self.role_access_key:
                self.by_others[function] += calls
            else:
                self.calls[function] += calls
