"""`make deploy` and `make destroy`: one stage's stack, from `build/<stage>/` (`make package`) to its outputs.

    python -m infra.deploy deploy --stage prod --artifacts-bucket B [--parameter CorsOrigins=https://app.example]
    python -m infra.deploy destroy --stage dev [--confirm arkflow-dev]

Deploying uploads the function and layer zips to the artifacts bucket under their content hash (what `aws
cloudformation package` does), then sends the template inline when it fits CloudFormation's 51,200-byte limit and
through the artifacts bucket otherwise, as a change set: CREATE for a new stack, UPDATE for an existing one, and,
for a stage that keeps its data, IMPORT first when the stack is gone but its retained tables and buckets are still
there (CloudFormation's resource import: the stack adopts them, then the update creates everything else).
Destroying a stage that keeps no data empties its buckets first (CloudFormation cannot delete a bucket holding
objects); a stage that keeps its data is deleted around its tables and buckets.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from infra.package import PROJECT_DIR, TEMPLATE_FILE
from infra.stages import STAGES, Stage
from infra.template import PARAMETERS, retained_resource_ids

# CloudFormation takes a template body of at most this many bytes; a longer one must come from S3 (up to 1 MB).
INLINE_TEMPLATE_LIMIT = 51_200
S3_TEMPLATE_LIMIT = 1_000_000
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
# Where each packaged resource type keeps the local zip that must be uploaded.
ARTIFACT_PROPERTIES = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
IMPORT_IDENTIFIERS = {"AWS::DynamoDB::Table": "TableName", "AWS::S3::Bucket": "BucketName"}
GONE = ("DELETE_COMPLETE",)
# A stack whose creation failed or was never executed holds nothing to update: it is deleted, then created anew.
NEVER_CREATED = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS")


class DeployError(RuntimeError):
    pass


def stack_name(stage: Stage) -> str:
    return stage.prefix


@dataclass
class Aws:
    """The clients a deploy uses (tests pass moto's, or fakes for CloudFormation, which moto cannot transform)."""

    cloudformation: Any
    s3: Any
    dynamodb: Any
    region: str
    account_id: str
    say: Callable[[str], None] = field(default=print)
    apigateway: Any = None


# --- artifacts and the template's way to CloudFormation ---------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def with_uploaded_artifacts(template: dict[str, Any], template_dir: Path, bucket: str,
                            key_prefix: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The template pointing at `s3://bucket/<key_prefix>/<sha256>.zip` for each local zip, and what to upload."""
    packaged = copy.deepcopy(template)
    uploads: dict[str, Path] = {}
    for resource in packaged["Resources"].values():
        prop = ARTIFACT_PROPERTIES.get(resource["Type"])
        local = resource.get("Properties", {}).get(prop) if prop else None
        if not isinstance(local, str) or local.startswith("s3://"):
            continue
        path = (template_dir / local).resolve()
        key = f"{key_prefix}/{_sha256(path)}{path.suffix}"
        uploads[key] = path
        resource["Properties"][prop] = f"s3://{bucket}/{key}"
    return packaged, uploads


def upload_artifacts(aws: Aws, bucket: str, uploads: dict[str, Path]) -> list[str]:
    """Upload what the bucket does not hold yet (keys are content hashes); returns the keys uploaded."""
    sent = []
    for key, path in sorted(uploads.items()):
        try:
            aws.s3.head_object(Bucket=bucket, Key=key)
            continue
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        aws.s3.upload_file(str(path), bucket, key)
        sent.append(key)
    return sent


def template_source(aws: Aws, body: str, bucket: str, key_prefix: str) -> dict[str, str]:
    """`TemplateBody` when the template fits inline, else `TemplateURL` of a copy put in the artifacts bucket."""
    size = len(body.encode())
    if size <= INLINE_TEMPLATE_LIMIT:
        return {"TemplateBody": body}
    if size > S3_TEMPLATE_LIMIT:
        raise DeployError(f"the template is {size} bytes; CloudFormation takes at most {S3_TEMPLATE_LIMIT}")
    key = f"{key_prefix}/{hashlib.sha256(body.encode()).hexdigest()}.template.json"
    aws.s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")
    return {"TemplateURL": f"https://{bucket}.s3.{aws.region}.amazonaws.com/{key}"}


# --- re-attaching what a deleted stack left behind ---------------------------------------------------------


def _resolve(value: Any, aws: Aws) -> str:
    """A physical name as written in the template: a string or an `Fn::Sub` of pseudo parameters only."""
    if isinstance(value, str):
        return value
    text = value["Fn::Sub"]
    return text.replace("${AWS::AccountId}", aws.account_id).replace("${AWS::Region}", aws.region)


def _exists(aws: Aws, resource_type: str, name: str) -> bool:
    try:
        if resource_type == "AWS::DynamoDB::Table":
            aws.dynamodb.describe_table(TableName=name)
        else:
            aws.s3.head_bucket(Bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ResourceNotFoundException", "404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if "Ref" in value:
            yield value["Ref"]
        if "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"][0]
        for inner in value.values():
            yield from _references(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _references(inner)


def leftovers(aws: Aws, stage: Stage, template: dict[str, Any]) -> dict[str, str]:
    """Logical id -> physical name of each retained table or bucket of `stage` that exists without its stack."""
    found = {}
    for logical_id in retained_resource_ids(stage):
        resource = template["Resources"][logical_id]
        name = _resolve(resource["Properties"][IMPORT_IDENTIFIERS[resource["Type"]]], aws)
        if _exists(aws, resource["Type"], name):
            found[logical_id] = name
    return found


def import_template(template: dict[str, Any], found: dict[str, str]) -> dict[str, Any]:
    """Only the resources to import, as the full template declares them (an import may create nothing else).

    A property referring to a resource that is not being imported is left for the update that follows.
    """
    resources = {}
    for logical_id in found:
        resource = copy.deepcopy(template["Resources"][logical_id])
        resource.pop("Metadata", None)
        resource["Properties"] = {
            name: value for name, value in resource["Properties"].items()
            if all(ref in found or ref.startswith("AWS::") or ref in PARAMETERS for ref in _references(value))
        }
        resources[logical_id] = resource
    used = {ref for resource in resources.values() for ref in _references(resource)}
    parameters = {name: spec for name, spec in template.get("Parameters", {}).items() if name in used}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Parameters": parameters, "Resources": resources}


# --- change sets -------------------------------------------------------------------------------------------


def _stack(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        [stack] = aws.cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in error.response["Error"]["Message"]:
            return None
        raise
    return None if stack["StackStatus"] in GONE else stack


def stack_status(aws: Aws, name: str) -> str | None:
    stack = _stack(aws, name)
    return stack["StackStatus"] if stack else None


def _parameters(aws: Aws, name: str, template: dict[str, Any], given: dict[str, str]) -> list[dict[str, Any]]:
    """What was given; else, for a parameter the stack already has, its previous value; else the default."""
    stack = _stack(aws, name) or {}
    previous = {parameter["ParameterKey"] for parameter in stack.get("Parameters", [])}
    parameters = []
    for key in template.get("Parameters", {}):
        if key in given:
            parameters.append({"ParameterKey": key, "ParameterValue": given[key]})
        elif key in previous:
            parameters.append({"ParameterKey": key, "UsePreviousValue": True})
    return parameters


def run_change_set(aws: Aws, name: str, change_set_type: str, source: dict[str, str],
                   parameters: list[dict[str, Any]], **extra: Any) -> bool:
    """Create, wait for, and execute one change set; False when it holds no change."""
    change_set = f"{name}-{change_set_type.lower()}-{int(time.time())}"
    aws.cloudformation.create_change_set(
        StackName=name, ChangeSetName=change_set, ChangeSetType=change_set_type, Capabilities=CAPABILITIES,
        Parameters=parameters, **source, **extra,
    )
    try:
        aws.cloudformation.get_waiter("change_set_create_complete").wait(
            StackName=name, ChangeSetName=change_set, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )
    except WaiterError:
        described = aws.cloudformation.describe_change_set(StackName=name, ChangeSetName=change_set)
        reason = described.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            aws.cloudformation.delete_change_set(StackName=name, ChangeSetName=change_set)
            return False
        raise DeployError(f"change set {change_set} failed: {reason}") from None
    aws.cloudformation.execute_change_set(StackName=name, ChangeSetName=change_set)
    waiter = {"CREATE": "stack_create_complete", "UPDATE": "stack_update_complete",
              "IMPORT": "stack_import_complete"}[change_set_type]
    try:
        aws.cloudformation.get_waiter(waiter).wait(StackName=name, WaiterConfig={"Delay": 10, "MaxAttempts": 360})
    except WaiterError as error:
        raise DeployError(f"{change_set_type.lower()} of {name} failed: see its events in the console") from error
    return True


def deploy(aws: Aws, stage: Stage, build_dir: Path, bucket: str, given: dict[str, str]) -> dict[str, str]:
    """Create or update the stage's stack from `build_dir/<stage>/`; returns its outputs."""
    template_path = build_dir / stage.name / TEMPLATE_FILE
    if not template_path.exists():
        raise DeployError(f"{template_path} is missing: run `make package` first")
    if aws.apigateway is not None and not aws.apigateway.get_account().get("cloudwatchRoleArn"):
        raise DeployError("API Gateway may not write access logs in this account and region yet: set its CloudWatch "
                          "role once (README, Deploying: what a stage needs)")
    name = stack_name(stage)
    key_prefix = f"{name}/templates"
    template, uploads = with_uploaded_artifacts(json.loads(template_path.read_text()), template_path.parent,
                                                bucket, f"{name}/artifacts")
    for key in upload_artifacts(aws, bucket, uploads):
        aws.say(f"uploaded s3://{bucket}/{key}")

    status = stack_status(aws, name)
    if status in NEVER_CREATED:
        aws.say(f"{name} is {status}: deleting it before creating it again")
        delete_stack(aws, name)
        status = None
    if status is not None and status.endswith("_IN_PROGRESS"):
        raise DeployError(f"{name} is {status}: wait for it to end")
    if status is None:
        found = leftovers(aws, stage, template)
        if found:
            aws.say(f"re-attaching what the deleted stack kept: {', '.join(sorted(found.values()))}")
            adopted = import_template(template, found)
            to_import = [
                {"ResourceType": template["Resources"][logical_id]["Type"], "LogicalResourceId": logical_id,
                 "ResourceIdentifier": {IMPORT_IDENTIFIERS[template["Resources"][logical_id]["Type"]]: physical}}
                for logical_id, physical in sorted(found.items())
            ]
            run_change_set(aws, name, "IMPORT", template_source(aws, json.dumps(adopted), bucket, key_prefix),
                           _parameters(aws, name, adopted, given), ResourcesToImport=to_import)
            status = "IMPORT_COMPLETE"
    source = template_source(aws, json.dumps(template), bucket, key_prefix)
    changed = run_change_set(aws, name, "CREATE" if status is None else "UPDATE", source,
                             _parameters(aws, name, template, given))
    if not changed:
        aws.say(f"{name} is up to date")
    return outputs(aws, name)


def outputs(aws: Aws, name: str) -> dict[str, str]:
    [stack] = aws.cloudformation.describe_stacks(StackName=name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


# --- deleting ----------------------------------------------------------------------------------------------


def empty_bucket(aws: Aws, bucket: str) -> int:
    """Delete every object version and delete marker; returns how many went."""
    deleted = 0
    paginator = aws.s3.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=bucket):
            objects = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                       for item in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if objects:
                aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                deleted += len(objects)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchBucket":
            raise
    return deleted


def _stack_buckets(aws: Aws, name: str) -> list[str]:
    listed = aws.cloudformation.describe_stack_resources(StackName=name)["StackResources"]
    return [item["PhysicalResourceId"] for item in listed
            if item["ResourceType"] == "AWS::S3::Bucket" and item.get("PhysicalResourceId")]


def delete_stack(aws: Aws, name: str) -> None:
    aws.cloudformation.delete_stack(StackName=name)
    aws.cloudformation.get_waiter("stack_delete_complete").wait(
        StackName=name, WaiterConfig={"Delay": 10, "MaxAttempts": 360}
    )


# S3 delivers access logs late, so a log bucket emptied before the deletion may hold new ones when its turn comes.
DELETE_ATTEMPTS = 3


def destroy(aws: Aws, stage: Stage) -> list[str]:
    """Delete the stage's stack; returns what it leaves behind (tables and buckets of a stage that keeps data)."""
    name = stack_name(stage)
    if stack_status(aws, name) is None:
        aws.say(f"{name} does not exist")
        return []
    kept = [] if not stage.retain_data else sorted(leftovers_of_stack(aws, name))
    for attempt in range(1, DELETE_ATTEMPTS + 1):
        if not stage.retain_data:
            for bucket in _stack_buckets(aws, name):
                aws.say(f"emptied s3://{bucket} ({empty_bucket(aws, bucket)} objects)")
        try:
            delete_stack(aws, name)
            return kept
        except WaiterError:
            if attempt == DELETE_ATTEMPTS:
                raise DeployError(f"{name} could not be deleted: see its events in the console") from None
            aws.say(f"{name} is not deleted yet (attempt {attempt}): trying again")
    return kept


def leftovers_of_stack(aws: Aws, name: str) -> list[str]:
    listed = aws.cloudformation.describe_stack_resources(StackName=name)["StackResources"]
    return [item["PhysicalResourceId"] for item in listed
            if item["ResourceType"] in IMPORT_IDENTIFIERS and item.get("PhysicalResourceId")]


# --- command line ------------------------------------------------------------------------------------------


def real_aws(region: str | None) -> Aws:
    import boto3

    session = boto3.session.Session(region_name=region)
    if not session.region_name:
        raise DeployError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)")
    account_id = session.client("sts").get_caller_identity()["Account"]
    return Aws(session.client("cloudformation"), session.client("s3"), session.client("dynamodb"),
               session.region_name, account_id, apigateway=session.client("apigateway"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["deploy", "destroy"])
    parser.add_argument("--stage", choices=sorted(STAGES), required=True)
    parser.add_argument("--artifacts-bucket", help="deploy: an S3 bucket of this account and region")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="a stack parameter (on an update, parameters not given keep their value)")
    parser.add_argument("--confirm", default="", help="destroy: the stack's name, for a stage that keeps data")
    parser.add_argument("--region")
    parser.add_argument("--build", type=Path, default=PROJECT_DIR / "build")
    args = parser.parse_args(argv)
    stage = STAGES[args.stage]
    try:
        given = dict(item.split("=", 1) for item in args.parameter if item.split("=", 1)[1:] != [""])
        unknown = set(given) - set(PARAMETERS)
        if unknown:
            raise DeployError(f"unknown parameters {sorted(unknown)}; the stack takes {sorted(PARAMETERS)}")
        if args.action == "deploy":
            if not args.artifacts_bucket:
                raise DeployError("deploy needs --artifacts-bucket (ARTIFACTS_BUCKET=...)")
            aws = real_aws(args.region)
            for key, value in sorted(deploy(aws, stage, args.build, args.artifacts_bucket, given).items()):
                print(f"{key:32} {value}")
        else:
            if stage.retain_data and args.confirm != stack_name(stage):
                raise DeployError(f"{stack_name(stage)} keeps users' data: pass CONFIRM={stack_name(stage)} to "
                                  "delete the stack (its tables and buckets stay)")
            for kept in destroy(real_aws(args.region), stage):
                print(f"kept {kept}")
    except (DeployError, ClientError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
