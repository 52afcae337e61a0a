"""Both stages packaged once per test session (the slow part: two Chalice runs per stage), shared by every test of
`tests/infra` that reads what `make package` produces; those tests share one xdist group, so one worker builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import package as packaging
from infra import toolchain
from infra.stages import STAGES

PACKAGED = pytest.mark.xdist_group("infra-package")


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stage name -> `sam.json`, beside its function and layer zips."""
    out = tmp_path_factory.mktemp("build")
    return {name: packaging.package(stage, out) for name, stage in STAGES.items()}


@pytest.fixture(scope="session")
def templates(packaged: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: json.loads(path.read_text()) for name, path in packaged.items()}


@pytest.fixture(scope="session")
def prod(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["prod"]


@pytest.fixture(scope="session")
def scan_python() -> Path:
    """The interpreter of the scanners' venv (checkov, aws-sam-translator)."""
    return toolchain.ensure_scan_venv()


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == resource_type}
