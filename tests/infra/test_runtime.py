"""What runs on Lambda is what the tests ran: one pinned Python, a layer of wheels for exactly that runtime, and
the whole runtime set locked (transitive dependencies and boto3 beside its botocore included)."""

from __future__ import annotations

import json
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from chalicelib.settings import DEFAULT_MAX_BODY_BYTES, LAMBDA_PAYLOAD_LIMIT_BYTES
from infra import toolchain
from tests.infra.conftest import PACKAGED, resources_of

# Amazon Linux 2023, under Lambda's python3.13, has glibc 2.34.
RUNTIME_GLIBC = (2, 34)
LOCKED = {
    canonicalize_name(name): version
    for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", toolchain.RUNTIME_REQUIREMENTS.read_text(), re.M)
}


def _layer(packaged: dict[str, Path]) -> zipfile.ZipFile:
    return zipfile.ZipFile(packaged["prod"].parent / "layer-deployment.zip")


def _dist_infos(layer: zipfile.ZipFile) -> dict[str, str]:
    """dist-info directory -> its METADATA."""
    return {
        name.rsplit("/", 2)[-2]: layer.read(name).decode()
        for name in layer.namelist() if name.endswith(".dist-info/METADATA")
    }


def _tag_fits_the_runtime(tag: str) -> bool:
    python, abi, platform = tag.split("-")
    if platform != "any":
        legacy = {"manylinux2014_x86_64": (2, 17), "manylinux2010_x86_64": (2, 12), "manylinux1_x86_64": (2, 5)}
        match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
        glibc = (int(match[1]), int(match[2])) if match else legacy.get(platform)
        if glibc is None or glibc > RUNTIME_GLIBC:
            return False
    if abi == "none":
        return python.startswith("py3") or python == toolchain.WHEEL_PYTHON_TAG
    if abi == "abi3":
        return python.startswith("cp3") and int(python[3:]) <= int(toolchain.WHEEL_PYTHON_TAG[3:])
    return python == abi == toolchain.WHEEL_PYTHON_TAG


@PACKAGED
def test_every_function_and_the_layer_are_for_the_pinned_runtime(templates) -> None:
    for template in templates.values():
        runtimes = {f["Properties"]["Runtime"] for f in resources_of(template, "AWS::Serverless::Function").values()}
        assert runtimes == {toolchain.LAMBDA_RUNTIME}
        [layer] = resources_of(template, "AWS::Serverless::LayerVersion").values()
        assert layer["Properties"]["CompatibleRuntimes"] == [toolchain.LAMBDA_RUNTIME]


@PACKAGED
def test_every_wheel_in_the_layer_fits_the_runtime(packaged) -> None:
    layer = _layer(packaged)
    site = f"python/lib/{toolchain.LAMBDA_RUNTIME}/site-packages/"
    assert all(name.startswith(site) for name in layer.namelist())
    wheels = [name for name in layer.namelist() if name.endswith(".dist-info/WHEEL")]
    assert wheels
    for wheel in wheels:
        tags = [line.split(":", 1)[1].strip() for line in layer.read(wheel).decode().splitlines()
                if line.startswith("Tag:")]
        assert tags and any(_tag_fits_the_runtime(tag) for tag in tags), (wheel, tags)
    for name in layer.namelist():
        if name.endswith(".so"):
            assert ".abi3." in name or f".cpython-{toolchain.WHEEL_PYTHON_TAG[2:]}-x86_64-linux-gnu." in name, name


@PACKAGED
def test_the_layer_ships_exactly_the_locked_runtime_set(packaged) -> None:
    shipped = {}
    for text in _dist_infos(_layer(packaged)).values():
        fields = dict(re.findall(r"^(Name|Version): (.+)$", text, re.M))
        shipped[canonicalize_name(fields["Name"])] = fields["Version"]
    assert shipped == LOCKED
    assert shipped["boto3"] and shipped["botocore"] == shipped["boto3"]  # one release train, tested together


@PACKAGED
def test_the_lock_is_closed_and_consistent_on_the_runtime(packaged) -> None:
    """Every dependency of every locked package, on Lambda's Python, is locked too, at a version it accepts."""
    environment = {**default_environment(), "python_version": ".".join(map(str, toolchain.PYTHON_VERSION)),
                   "python_full_version": ".".join(map(str, toolchain.PYTHON_VERSION)) + ".0",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    for text in _dist_infos(_layer(packaged)).values():
        for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            assert name in LOCKED, line
            assert requirement.specifier.contains(Version(LOCKED[name]), prereleases=True), line


def test_the_tests_run_the_locked_versions() -> None:
    for name, version in LOCKED.items():
        assert metadata.version(name) == version, name


def test_packaging_refuses_another_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sys.version_info[:2] != toolchain.PYTHON_VERSION  # the dev venv's Python is not the runtime's
    monkeypatch.setenv(toolchain.INTERPRETER_ENV, sys.executable)
    with pytest.raises(toolchain.ToolchainError, match=toolchain.LAMBDA_RUNTIME):
        toolchain.find_interpreter()


def test_a_body_the_app_accepts_fits_in_the_event_lambda_is_sent() -> None:
    """API Gateway's proxy event at the app's body limit: the body as a JSON string, the headers twice (single and
    multi-value, at REST API's 10 KB limit), the request context. Over Lambda's limit it would be a gateway 5xx,
    not the app's 413."""
    headers = {f"x-header-{index}": "v" * 300 for index in range(32)}  # ~10 KB, API Gateway's header limit
    image = "A" * (DEFAULT_MAX_BODY_BYTES - 200)  # inline base64: nothing in it is escaped
    body = json.dumps({"type": "image", "model_id": "seedream-4.5", "prompt": 'a "quoted" fox', "images": [image]})
    body = body[: DEFAULT_MAX_BODY_BYTES - 2] + '"}'
    event = {
        "resource": "/api/tasks", "path": "/api/tasks", "httpMethod": "POST",
        "headers": headers, "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
        "stageVariables": None, "isBase64Encoded": False, "body": body,
        "requestContext": {"resourceId": "abc123", "resourcePath": "/api/tasks", "httpMethod": "POST",
                           "extendedRequestId": "x" * 16, "requestTime": "01/Dec/2026:10:00:00 +0000",
                           "path": "/api/api/tasks", "accountId": "123456789012", "protocol": "HTTP/1.1",
                           "stage": "api", "domainPrefix": "abcdef1234", "requestTimeEpoch": 1796000000000,
                           "requestId": "r" * 36, "identity": {"sourceIp": "203.0.113.7", "userAgent": "u" * 200},
                           "domainName": "abcdef1234.execute-api.eu-west-1.amazonaws.com", "apiId": "abcdef1234"},
    }
    assert len(body.encode()) <= DEFAULT_MAX_BODY_BYTES
    assert len(json.dumps(event).encode()) < LAMBDA_PAYLOAD_LIMIT_BYTES


@PACKAGED
def test_the_functions_code_holds_the_app_and_every_chalicelib_module_and_nothing_local_only(
    packaged: dict[str, Path], prod: dict[str, Any]
) -> None:
    """Every module under `chalicelib/` (its packages too) ships; the local stack, simulator and tests never do."""
    code_uris = {resource["Properties"]["CodeUri"] for resource in prod["Resources"].values()
                 if resource["Type"] == "AWS::Serverless::Function"}
    assert len(code_uris) == 1  # every function runs the same app
    with zipfile.ZipFile(packaged["prod"].parent / code_uris.pop()) as code:
        shipped = set(code.namelist())
    repo = Path(__file__).resolve().parents[2]
    modules = {"app.py", *(str(path.relative_to(repo)) for path in (repo / "chalicelib").rglob("*.py"))}
    assert modules - shipped == set()
    assert [name for name in shipped if name.split("/")[0] in ("devstack", "arksim", "tests", "scripts")] == []


# Lambda's limit on a function's code and its layers together, unzipped; zipped, one direct upload takes 50 MB.
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
ZIPPED_UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024


@PACKAGED
def test_the_functions_code_and_layer_fit_lambdas_size_limits(packaged: dict[str, Path]) -> None:
    """With room to spare: the layer is every runtime dependency (Powertools, the X-Ray SDK and pydantic's core are
    the large ones)."""
    for stage, template in packaged.items():
        zips = [template.parent / "deployment.zip", template.parent / "layer-deployment.zip"]
        unzipped = 0
        for path in zips:
            assert path.stat().st_size < ZIPPED_UPLOAD_LIMIT_BYTES, (stage, path.name)
            with zipfile.ZipFile(path) as archive:
                unzipped += sum(entry.file_size for entry in archive.infolist())
        assert unzipped < UNZIPPED_LIMIT_BYTES / 2, stage
