"""Translate a packaged SAM template to the CloudFormation that CloudFormation's own SAM transform would make.

Runs in the scanning venv (`make scan-tools`: aws-sam-translator pins a pydantic the app cannot use), so it imports
nothing of arkflow's. Offline: the templates name no managed policy, so none is looked up.

    python infra/sam_translate.py <sam.json> <out.json> [Name=value ...]
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """What SAM asks for when a function names a managed policy by name; arkflow's roles are its own."""

    def load(self) -> dict[str, str]:
        return {}


def main(argv: list[str]) -> int:
    source, target, *assignments = argv
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    parameters: dict[str, Any] = dict(assignment.split("=", 1) for assignment in assignments)
    with open(source) as file:
        template = json.load(file)
    translated = transform(template, parameters, NoManagedPolicies())
    with open(target, "w") as file:
        json.dump(translated, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
