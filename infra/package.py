"""`make package`: the deployable CloudFormation of each stage, offline, into `build/<stage>/`.

Chalice packages the app twice: once as it is, so the merge template can be derived from the functions the app
really declares, then with that merge template (`chalice package --merge-template`). Both run in the packaging venv
(`infra.toolchain`), whose Python is the functions' runtime. Nothing here talks to AWS; building the dependency
layer downloads its wheels from PyPI the first time (Chalice keeps it under `.chalice/deployments/`).

    python -m infra.package [--stage prod] [--out build]   # package (default: every stage)
    python -m infra.package --write-config                 # rewrite .chalice/config.json and policy files
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from infra import toolchain
from infra.stages import CHALICE_DIR, STAGES, Stage, chalice_config
from infra.template import base_policy, merge_template, with_websocket_deployment_per_routes

PROJECT_DIR = CHALICE_DIR.parent
TEMPLATE_FILE = "sam.json"
# What the `chalice` console script runs; called through this interpreter so no PATH lookup is involved.
CHALICE_MAIN = "import sys; from chalice.cli import main; sys.argv[0] = 'chalice'; sys.exit(main())"


class ConfigOutOfDate(RuntimeError):
    pass


def config_files() -> dict[Path, dict[str, Any]]:
    """Every file under `.chalice/` this module owns, with the content it must have."""
    files = {CHALICE_DIR / "config.json": chalice_config()}
    for stage in STAGES.values():
        files[CHALICE_DIR / stage.policy_file] = base_policy(stage)
    return files


def write_config_files() -> list[Path]:
    written = []
    for path, content in config_files().items():
        path.write_text(json.dumps(content, indent=2) + "\n")
        written.append(path)
    return written


def stale_config_files() -> list[Path]:
    return [
        path
        for path, content in config_files().items()
        if not path.exists() or json.loads(path.read_text()) != content
    ]


def _chalice_package(python: Path, stage: Stage, out_dir: Path, merge_file: Path | None = None) -> dict[str, Any]:
    command = [str(python), "-c", CHALICE_MAIN, "--project-dir", str(PROJECT_DIR), "package", "--stage", stage.name]
    if merge_file is not None:
        command += ["--merge-template", str(merge_file)]
    # The region only fills ARNs Chalice builds itself; the template uses pseudo parameters where it matters.
    environment = {"AWS_DEFAULT_REGION": "us-east-1", **os.environ}
    # This interpreter running Chalice's CLI on arguments built here: no untrusted input.
    result = subprocess.run(  # noqa: S603
        [*command, str(out_dir)], env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"chalice package failed:\n{result.stdout}\n{result.stderr}")
    template = json.loads((out_dir / TEMPLATE_FILE).read_text())
    runtimes = {
        resource["Properties"]["Runtime"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    if runtimes != {toolchain.LAMBDA_RUNTIME}:
        raise RuntimeError(f"chalice packaged for {sorted(runtimes)}, not {toolchain.LAMBDA_RUNTIME}")
    return template


def package(stage: Stage, out_root: Path) -> Path:
    """Writes `<out_root>/<stage>/` (template and deployment zip); returns the template's path."""
    stale = stale_config_files()
    if stale:
        names = ", ".join(str(path.relative_to(PROJECT_DIR)) for path in stale)
        raise ConfigOutOfDate(f"{names} no longer match infra/: run `python -m infra.package --write-config`")
    python = toolchain.ensure_venv()
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_root) as scratch:
        plain = _chalice_package(python, stage, Path(scratch) / "plain")
        merge_file = out_root / f"merge-{stage.name}.json"
        merge_file.write_text(json.dumps(merge_template(stage, plain), indent=2) + "\n")
    out_dir = out_root / stage.name
    for stale_output in out_dir.glob("*"):
        stale_output.unlink()
    template = with_websocket_deployment_per_routes(_chalice_package(python, stage, out_dir, merge_file))
    path = out_dir / TEMPLATE_FILE
    path.write_text(json.dumps(template, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=sorted(STAGES), action="append", help="default: every stage")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "build")
    parser.add_argument("--write-config", action="store_true", help="rewrite .chalice/ files from infra/")
    args = parser.parse_args(argv)
    if args.write_config:
        for path in write_config_files():
            print(f"wrote {path.relative_to(PROJECT_DIR)}")
        return 0
    try:
        for name in args.stage or sorted(STAGES):
            print(f"packaged {name}: {package(STAGES[name], args.out)}")
    except (ConfigOutOfDate, RuntimeError) as error:  # ToolchainError is one
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
