"""`make deploy` / `make destroy` against in-process S3 and DynamoDB (moto) and a recording CloudFormation (moto
cannot run the SAM transform): what is uploaded, how the template travels, which change sets are made, and that a
stage deletes cleanly or comes back onto what it kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, WaiterError
from moto import mock_aws

from infra import deploy
from infra.stages import STAGES
from infra.template import MEDIA_BUCKET_ID, MEDIA_LOG_BUCKET_ID, retained_resource_ids
from tests.infra.conftest import PACKAGED

pytestmark = PACKAGED

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ARTIFACTS = "arkflow-artifacts"


class FakeWaiter:
    def __init__(self, cloudformation: FakeCloudFormation, name: str) -> None:
        self.cloudformation, self.name = cloudformation, name

    def wait(self, **_: Any) -> None:
        if self.name in self.cloudformation.failing_waiters:
            self.cloudformation.failing_waiters.remove(self.name)
            raise WaiterError(self.name, "failed", {})


class FakeCloudFormation:
    """Records change sets and applies them to one stack's status, as far as deploying needs."""

    def __init__(self) -> None:
        self.stacks: dict[str, dict[str, Any]] = {}
        self.change_sets: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.failing_waiters: list[str] = []
        self.resources: list[dict[str, str]] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if StackName not in self.stacks:
            raise ClientError({"Error": {"Code": "ValidationError",
                                         "Message": f"Stack with id {StackName} does not exist"}}, "DescribeStacks")
        return {"Stacks": [self.stacks[StackName]]}

    def create_change_set(self, **change_set: Any) -> None:
        self.calls.append(f"create_change_set:{change_set['ChangeSetType']}")
        self.change_sets.append(change_set)

    def get_waiter(self, name: str) -> FakeWaiter:
        return FakeWaiter(self, name)

    def execute_change_set(self, StackName: str, ChangeSetName: str) -> None:
        change_set = next(item for item in self.change_sets if item["ChangeSetName"] == ChangeSetName)
        self.calls.append(f"execute:{change_set['ChangeSetType']}")
        parameters = [{"ParameterKey": item["ParameterKey"], "ParameterValue": item.get("ParameterValue", "")}
                      for item in change_set["Parameters"]]
        self.stacks[StackName] = {"StackName": StackName, "StackStatus": f"{change_set['ChangeSetType']}_COMPLETE",
                                  "Parameters": parameters,
                                  "Outputs": [{"OutputKey": "EndpointURL", "OutputValue": "https://api.example/api/"}]}

    def describe_change_set(self, **_: Any) -> dict[str, Any]:
        return {"StatusReason": "The submitted information didn't contain changes."}

    def delete_change_set(self, **_: Any) -> None:
        self.calls.append("delete_change_set")

    def describe_stack_resources(self, StackName: str) -> dict[str, Any]:
        return {"StackResources": self.resources}

    def delete_stack(self, StackName: str) -> None:
        self.calls.append("delete_stack")
        self.stacks[StackName]["StackStatus"] = "DELETE_COMPLETE"


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=ARTIFACTS, CreateBucketConfiguration={"LocationConstraint": REGION})
        said: list[str] = []
        yield deploy.Aws(FakeCloudFormation(), s3, boto3.client("dynamodb", region_name=REGION), REGION, ACCOUNT,
                         say=said.append)


@pytest.fixture
def build(packaged: dict[str, Path]) -> Path:
    return packaged["prod"].parent.parent


def _template_of(cloud: Any, change_set: dict[str, Any]) -> dict[str, Any]:
    if "TemplateBody" in change_set:
        return json.loads(change_set["TemplateBody"])
    url = change_set["TemplateURL"]
    assert url.startswith(f"https://{ARTIFACTS}.s3.{REGION}.amazonaws.com/")
    key = url.split(".amazonaws.com/", 1)[1]
    return json.loads(cloud.s3.get_object(Bucket=ARTIFACTS, Key=key)["Body"].read())


def test_the_packaged_template_goes_through_s3_and_a_small_one_inline(cloud, build, packaged) -> None:
    template = json.loads(packaged["prod"].read_text())
    body = json.dumps(deploy.with_uploaded_artifacts(template, packaged["prod"].parent, ARTIFACTS, "p")[0])
    assert len(body.encode()) > deploy.INLINE_TEMPLATE_LIMIT  # so a plain `aws cloudformation deploy` aborts
    source = deploy.template_source(cloud, body, ARTIFACTS, "arkflow-prod/templates")
    assert set(source) == {"TemplateURL"}
    assert _template_of(cloud, source) == json.loads(body)
    small = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    assert deploy.template_source(cloud, small, ARTIFACTS, "p") == {"TemplateBody": small}
    with pytest.raises(deploy.DeployError, match="at most"):
        deploy.template_source(cloud, "x" * (deploy.S3_TEMPLATE_LIMIT + 1), ARTIFACTS, "p")


def test_a_first_deploy_uploads_the_zips_once_and_creates_the_stack(cloud, build) -> None:
    outputs = deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    assert outputs == {"EndpointURL": "https://api.example/api/"}
    assert cloud.cloudformation.calls == ["create_change_set:CREATE", "execute:CREATE"]
    [change_set] = cloud.cloudformation.change_sets
    assert set(change_set["Capabilities"]) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    assert change_set["Parameters"] == [{"ParameterKey": "CorsOrigins", "ParameterValue": "https://app.example"}]
    template = _template_of(cloud, change_set)
    uris = [resource["Properties"].get("CodeUri") or resource["Properties"].get("ContentUri")
            for resource in template["Resources"].values()
            if resource["Type"] in deploy.ARTIFACT_PROPERTIES]
    assert uris and all(uri.startswith(f"s3://{ARTIFACTS}/arkflow-dev/artifacts/") for uri in uris)
    for uri in set(uris):
        cloud.s3.head_object(Bucket=ARTIFACTS, Key=uri.split("/", 3)[3])
    # The next deploy of the same code uploads nothing and updates, keeping the parameters it was not given.
    assert deploy.upload_artifacts(cloud, ARTIFACTS, deploy.with_uploaded_artifacts(
        json.loads((build / "dev" / "sam.json").read_text()), build / "dev", ARTIFACTS, "arkflow-dev/artifacts")[1]
    ) == []
    deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {})
    update = cloud.cloudformation.change_sets[-1]
    assert update["ChangeSetType"] == "UPDATE"
    assert update["Parameters"] == [{"ParameterKey": "CorsOrigins", "UsePreviousValue": True}]


def test_an_account_whose_api_gateway_cannot_log_is_told_before_anything_is_sent(cloud, build) -> None:
    cloud.apigateway = boto3.client("apigateway", region_name=REGION)
    with pytest.raises(deploy.DeployError, match="CloudWatch role"):
        deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    assert cloud.cloudformation.calls == []


def test_an_update_without_changes_is_not_an_error(cloud, build) -> None:
    deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    cloud.cloudformation.failing_waiters.append("change_set_create_complete")
    deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {})
    assert cloud.cloudformation.calls[-2:] == ["create_change_set:UPDATE", "delete_change_set"]


def _names(cloud: Any, template: dict[str, Any], logical_ids: list[str]) -> dict[str, str]:
    return {
        logical_id: deploy._resolve(template["Resources"][logical_id]["Properties"][
            deploy.IMPORT_IDENTIFIERS[template["Resources"][logical_id]["Type"]]], cloud)
        for logical_id in logical_ids
    }


def test_a_recreated_prod_stack_imports_the_tables_and_buckets_it_kept(cloud, build) -> None:
    template = json.loads((build / "prod" / "sam.json").read_text())
    kept = retained_resource_ids(STAGES["prod"])
    names = _names(cloud, template, kept)
    for logical_id, name in names.items():  # what the deleted stack left behind
        properties = template["Resources"][logical_id]["Properties"]
        if logical_id in (MEDIA_BUCKET_ID, MEDIA_LOG_BUCKET_ID):
            cloud.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        else:
            cloud.dynamodb.create_table(**{key: value for key, value in properties.items() if key in (
                "TableName", "KeySchema", "AttributeDefinitions", "BillingMode", "GlobalSecondaryIndexes")})

    deploy.deploy(cloud, STAGES["prod"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    assert cloud.cloudformation.calls == ["create_change_set:IMPORT", "execute:IMPORT",
                                          "create_change_set:UPDATE", "execute:UPDATE"]
    imported, update = cloud.cloudformation.change_sets
    assert {item["LogicalResourceId"]: next(iter(item["ResourceIdentifier"].values()))
            for item in imported["ResourcesToImport"]} == names
    adopted = _template_of(cloud, imported)
    assert "Transform" not in adopted and set(adopted["Resources"]) == set(kept)  # an import creates nothing else
    assert all(resource["DeletionPolicy"] == "Retain" for resource in adopted["Resources"].values())
    assert _template_of(cloud, update)["Resources"].keys() == template["Resources"].keys()


def test_a_partly_kept_stage_imports_what_is_there_and_leaves_references_to_the_update(cloud, build) -> None:
    template = json.loads((build / "prod" / "sam.json").read_text())
    media = _names(cloud, template, [MEDIA_BUCKET_ID])[MEDIA_BUCKET_ID]
    cloud.s3.create_bucket(Bucket=media, CreateBucketConfiguration={"LocationConstraint": REGION})
    found = deploy.leftovers(cloud, STAGES["prod"], template)
    assert found == {MEDIA_BUCKET_ID: media}
    adopted = deploy.import_template(template, found)
    # Its access logs go to a bucket that is not there yet: the update adds that, and the bucket.
    assert "LoggingConfiguration" not in adopted["Resources"][MEDIA_BUCKET_ID]["Properties"]
    assert adopted["Parameters"].keys() == {"CorsOrigins"}
    assert deploy.leftovers(cloud, STAGES["dev"], template) == {}  # dev keeps nothing to come back to


def test_dev_is_destroyed_with_its_buckets_emptied_even_when_logs_arrive_late(cloud, build) -> None:
    deploy.deploy(cloud, STAGES["dev"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    buckets = []
    for name in ("arkflow-dev-media-x", "arkflow-dev-media-logs-x"):
        cloud.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        for index in range(3):
            cloud.s3.put_object(Bucket=name, Key=f"tasks/t{index}/result.png", Body=b"x")
        buckets.append({"ResourceType": "AWS::S3::Bucket", "PhysicalResourceId": name})
    cloud.cloudformation.resources = buckets
    cloud.cloudformation.failing_waiters.append("stack_delete_complete")  # a log landed after the emptying
    assert deploy.destroy(cloud, STAGES["dev"]) == []
    assert cloud.cloudformation.calls[-2:] == ["delete_stack", "delete_stack"]
    for bucket in buckets:
        assert cloud.s3.list_objects_v2(Bucket=bucket["PhysicalResourceId"])["KeyCount"] == 0


def test_prod_is_deleted_around_its_data_and_only_when_named(cloud, build) -> None:
    deploy.deploy(cloud, STAGES["prod"], build, ARTIFACTS, {"CorsOrigins": "https://app.example"})
    cloud.s3.create_bucket(Bucket="arkflow-prod-media-x", CreateBucketConfiguration={"LocationConstraint": REGION})
    cloud.s3.put_object(Bucket="arkflow-prod-media-x", Key="tasks/t/result.png", Body=b"x")
    cloud.cloudformation.resources = [
        {"ResourceType": "AWS::S3::Bucket", "PhysicalResourceId": "arkflow-prod-media-x"},
        {"ResourceType": "AWS::DynamoDB::Table", "PhysicalResourceId": "arkflow-prod-users"},
    ]
    assert deploy.main(["destroy", "--stage", "prod"]) == 1  # refused before any AWS call
    assert deploy.destroy(cloud, STAGES["prod"]) == ["arkflow-prod-media-x", "arkflow-prod-users"]
    assert cloud.s3.list_objects_v2(Bucket="arkflow-prod-media-x")["KeyCount"] == 1
