"""checkov on both packaged stages: no failed check; a check not followed is skipped on its resource with the
reason written there, and only where a reason may stand (access logs, explicit encryption and prod's tracing never)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.template import MEDIA_LOG_BUCKET_ID
from tests.infra.conftest import PACKAGED, shared_once

pytestmark = PACKAGED

# Checks that may be skipped, with a reason on the resource (customer-managed keys, VPC placement, ...).
REASONED = {
    "CKV_AWS_119",  # DynamoDB with a customer-managed key
    "CKV_AWS_158",  # log groups with a customer-managed key
    "CKV_AWS_173",  # Lambda environment with a customer-managed key (it holds no secret)
    "CKV_AWS_117",  # Lambda in a VPC
    "CKV_AWS_116",  # Lambda dead-letter queue (no function is invoked asynchronously with anything to replay)
    "CKV_AWS_115",  # reserved concurrency for what serves users
    "CKV_AWS_120",  # API caching
    "CKV_AWS_21",  # bucket versioning
}
# Skipped only where it cannot apply: the access-log bucket itself is not logged.
ONLY_ON = {"CKV_AWS_18": {MEDIA_LOG_BUCKET_ID}}
DEV_ONLY = {"CKV_AWS_73"}  # API tracing: off in dev, on in prod


@pytest.fixture(scope="session")
def scanned(packaged: dict[str, Path], scan_python: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> dict[str, dict[str, Any]]:
    """One checkov run over both templates (its start-up is most of its time); results per stage."""

    def scan(out: Path) -> None:
        command = [str(scan_python), "-m", "checkov.main", "--framework", "cloudformation", "--output", "json",
                   "--compact", "--skip-download"]
        for path in packaged.values():
            command += ["--file", str(path)]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        (out / "report.json").write_text(run.stdout)

    reports = json.loads((shared_once(tmp_path_factory, "checkov", scan) / "report.json").read_text())
    reports = reports if isinstance(reports, list) else [reports]
    by_stage: dict[str, dict[str, Any]] = {stage: {"failed": [], "skipped": [], "passed": 0} for stage in packaged}
    for report in reports:
        for kind in ("failed", "skipped", "passed"):
            for check in report["results"][f"{kind}_checks"]:
                [stage] = [stage for stage, path in packaged.items()
                           if check["file_path"].endswith(f"/{stage}/{path.name}")]
                if kind == "passed":
                    by_stage[stage]["passed"] += 1
                else:
                    by_stage[stage][kind].append(check)
    return by_stage


def test_no_check_fails_on_either_stage(scanned: dict[str, dict[str, Any]]) -> None:
    for stage, result in scanned.items():
        assert result["passed"] > 100, stage  # the scan really ran over the stack
        failed = [f"{check['check_id']} {check['resource']}" for check in result["failed"]]
        assert failed == [], stage


def test_every_skip_has_a_reason_and_is_one_that_may_be_reasoned_away(scanned: dict[str, dict[str, Any]]) -> None:
    for stage, result in scanned.items():
        for check in result["skipped"]:
            check_id, resource = check["check_id"], check["resource"].split(".")[-1]
            assert len(check["check_result"].get("suppress_comment", "")) > 20, (check_id, resource)
            allowed = check_id in REASONED or resource in ONLY_ON.get(check_id, set()) or (
                check_id in DEV_ONLY and stage == "dev")
            assert allowed, (stage, check_id, resource)
