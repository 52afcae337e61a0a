"""Both stages packaged once per test run (the slow part: two Chalice runs per stage), shared by every test of
`tests/infra` that reads what `make package` produces, in whichever xdist worker it runs: the first worker to
need a shared result builds it under a lock in the run's common temporary directory, the others read it."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import package as packaging
from infra import toolchain
from infra.stages import STAGES

# Kept together where `--dist loadgroup` groups them; `shared_once` keeps the packaging single either way.
PACKAGED = pytest.mark.xdist_group("infra-package")


def shared_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`<run's temp root>/<name>`, made by `build` once per test run, whatever the number of workers."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # workers' common parent
    target = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            target.mkdir(exist_ok=True)
            build(target)
            (root / f"{name}.done").touch()
    return target


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stage name -> `sam.json`, beside its function and layer zips."""

    def build(out: Path) -> None:
        for stage in STAGES.values():
            packaging.package(stage, out)

    out = shared_once(tmp_path_factory, "infra-build", build)
    return {name: out / name / packaging.TEMPLATE_FILE for name in STAGES}


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
