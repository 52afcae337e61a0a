"""The deployable stages and the `.chalice/config.json` that follows from them and `chalicelib.resources`.

Chalice reads its config file before anything of ours runs, so the file is committed;
`python -m infra.package --write-config` rewrites it, and `make package` and the tests refuse a file that no longer
matches what this module generates.

No environment variables live in config.json: the local stack loads the `dev` stage the way `chalice local` does,
which copies a stage's variables into the process and would point it at AWS names. Every variable is set per
function in the merge template (`infra.template`), where stack-derived values and secrets resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.resources import QUEUES

APP_NAME = "arkflow"
API_GATEWAY_STAGE = "api"
CHALICE_DIR = Path(__file__).resolve().parent.parent / ".chalice"
API_HANDLER = "api_handler"


@dataclass(frozen=True)
class Stage:
    name: str
    # API Gateway gives up on an integration after 29 s; the handler must end before that.
    api_timeout_s: int = 28
    # argon2 password hashing takes 64 MiB per login on top of the runtime.
    api_memory_mb: int = 512
    # Schedules and WebSocket handlers: short reads and writes.
    default_timeout_s: int = 60
    default_memory_mb: int = 256
    log_retention_days: int = 30
    # Tables and buckets survive a stack deletion, so deleting a stack never deletes users' data; re-creating the
    # stack imports them back (`infra.deploy`).
    retain_data: bool = True
    # X-Ray traces of the REST API and every function (Powertools' Tracer: AWS calls and Ark's).
    tracing: bool = True
    # The models' failure-rate alarm: more than this share of a model's finished tasks failed, in each of
    # `failure_rate_windows` five-minute windows in a row (each with a finished task, so that many tasks at least).
    failure_rate_threshold: float = 0.25
    failure_rate_windows: int = 3

    @property
    def prefix(self) -> str:
        """Resource names of this stage: `ARKFLOW_PREFIX`."""
        return f"{APP_NAME}-{self.name}"

    @property
    def secret_name(self) -> str:
        """The Secrets Manager secret holding ARK_API_KEY, TOKEN_SIGNING_KEY and ADMIN_PASSWORD."""
        return f"{self.prefix}/app-secrets"

    @property
    def policy_file(self) -> str:
        return f"policy-{self.name}.json"


STAGES: dict[str, Stage] = {
    # A development stage is torn down and re-made freely; X-Ray stays off there to keep its cost and noise out.
    "dev": Stage("dev", log_retention_days=7, retain_data=False, tracing=False),
    "prod": Stage("prod"),
}


def stage_config(stage: Stage) -> dict[str, Any]:
    functions: dict[str, Any] = {
        API_HANDLER: {"lambda_timeout": stage.api_timeout_s, "lambda_memory_size": stage.api_memory_mb},
    }
    for queue in QUEUES:
        functions[queue.handler_name] = {
            "lambda_timeout": queue.lambda_timeout_s,
            "lambda_memory_size": queue.lambda_memory_mb,
            "reserved_concurrency": queue.reserved_concurrency,
        }
    return {
        "api_gateway_stage": API_GATEWAY_STAGE,
        "autogen_policy": False,
        # Dependencies go to one layer keyed by requirements.txt alone, so a code change repackages only the
        # app's own files (fast, and offline once the layer is built).
        "automatic_layer": True,
        "iam_policy_file": stage.policy_file,
        "lambda_timeout": stage.default_timeout_s,
        "lambda_memory_size": stage.default_memory_mb,
        "log_retention_in_days": stage.log_retention_days,
        "lambda_functions": functions,
    }


def chalice_config() -> dict[str, Any]:
    return {
        "version": "2.0",
        "app_name": APP_NAME,
        "stages": {name: stage_config(stage) for name, stage in STAGES.items()},
    }
