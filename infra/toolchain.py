"""The interpreter that packages the app, which is also the Lambda runtime it runs on.

Chalice takes a function's runtime from the Python running `chalice package`, and builds the dependency layer for
that version. So packaging runs in a venv of its own on one pinned Python: the newest that both Lambda and Chalice
1.34 support and that this project's machines (and CI) have. The venv holds Chalice and exactly the runtime set of
`requirements.txt` (Chalice imports the app to find its functions); a change of either makes a new one.

    python -m infra.toolchain            # find or build the packaging venv; prints its interpreter
    python -m infra.toolchain --scan     # find or build the scanners' venv (checkov, aws-sam-translator)
    python -m infra.toolchain --lock     # re-resolve requirements.in into requirements.txt on Python 3.13
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON_VERSION = (3, 13)
LAMBDA_RUNTIME = f"python{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"
# The CPython tag of wheels built for that runtime.
WHEEL_PYTHON_TAG = f"cp{PYTHON_VERSION[0]}{PYTHON_VERSION[1]}"
# Built venvs are kept per content (interpreter and every pin), outside the work tree: a fresh clone on the same
# machine (CI's) reuses them instead of installing a hundred packages again.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "arkflow"
SCAN_REQUIREMENTS = PROJECT_DIR / "requirements-scan.txt"
RUNTIME_REQUIREMENTS = PROJECT_DIR / "requirements.txt"
DIRECT_REQUIREMENTS = PROJECT_DIR / "requirements.in"
LOCK_HEADER = """\
# The functions' whole runtime set, transitive dependencies included: what the layer ships is what the tests ran.
# Generated from requirements.in by `make lock` (pip on the Lambda runtime's Python); do not edit by hand.
"""
DEV_REQUIREMENTS = PROJECT_DIR / "requirements-dev.txt"
# Chalice 1.34 refuses pip 26.3 and later.
PIP_PIN = "pip<26.3"
INTERPRETER_ENV = "ARKFLOW_PACKAGING_PYTHON"


class ToolchainError(RuntimeError):
    pass


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        # Our own lookup of an interpreter path: no untrusted input.
        out = subprocess.run(  # noqa: S603
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]), int(out[1])


def find_interpreter() -> str:
    """`ARKFLOW_PACKAGING_PYTHON` if set (refused unless it is the pinned version), else python3.13 on PATH or
    under pyenv."""
    wanted = ".".join(map(str, PYTHON_VERSION))
    explicit = os.environ.get(INTERPRETER_ENV)
    if explicit:
        if _version_of(explicit) != PYTHON_VERSION:
            raise ToolchainError(f"{INTERPRETER_ENV}={explicit} is not Python {wanted}: the Lambda runtime is "
                                 f"{LAMBDA_RUNTIME}, and Chalice packages for the interpreter it runs on")
        return explicit
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{wanted}") or ""]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{wanted}.*/bin/python{wanted}"), reverse=True)
    for candidate in filter(None, candidates):
        if _version_of(candidate) == PYTHON_VERSION:
            return candidate
    raise ToolchainError(f"packaging needs Python {wanted} (the Lambda runtime {LAMBDA_RUNTIME}); none found on "
                         f"PATH or under {pyenv_root}/versions: install it, or set {INTERPRETER_ENV}")


def chalice_requirement() -> str:
    """The Chalice pin of the dev requirements: packaging uses the very version the tests run."""
    for line in DEV_REQUIREMENTS.read_text().splitlines():
        if re.match(r"chalice==", line.strip()):
            return line.strip()
    raise ToolchainError(f"no chalice== pin in {DEV_REQUIREMENTS.name}")


def _fingerprint(interpreter_version: str, requirements: list[str]) -> str:
    files = [Path(arg).read_text() for arg in requirements if arg.endswith(".txt")]
    content = "\n".join([interpreter_version, PIP_PIN, *requirements, *files])
    return hashlib.sha256(content.encode()).hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ensure(name: str, interpreter: str, requirements: list[str]) -> Path:
    """The interpreter of the venv `name` made by `interpreter` with `requirements`, building it the first time."""
    version = _run([interpreter, "-VV"]).strip()
    venv = CACHE_DIR / f"{name}-{_fingerprint(version, requirements)[:16]}"
    python = venv_python(venv)
    stamp = venv / ".arkflow-venv-complete"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # two test processes never build one venv at once
        if not stamp.exists():
            print(f"building {venv} with {interpreter}", file=sys.stderr)
            _run([interpreter, "-m", "venv", "--clear", str(venv)])
            _run([str(python), "-m", "pip", "install", "-q", PIP_PIN])
            _run([str(python), "-m", "pip", "install", "-q", *requirements])
            stamp.touch()
    return python


def ensure_venv() -> Path:
    """The packaging venv's interpreter: Python 3.13, Chalice and exactly the runtime set."""
    return _ensure("package", find_interpreter(), [chalice_requirement(), "-r", str(RUNTIME_REQUIREMENTS)])


def ensure_scan_venv() -> Path:
    """The scanners' venv (checkov, aws-sam-translator), on the Python running this."""
    return _ensure("scan", sys._base_executable, ["-r", str(SCAN_REQUIREMENTS)])


def _run(step: list[str]) -> str:
    # Fixed commands on paths built here.
    result = subprocess.run(step, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise ToolchainError(f"{' '.join(step)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def lock() -> Path:
    """Resolve requirements.in afresh on the pinned Python and write every resolved pin to requirements.txt."""
    interpreter = find_interpreter()
    with tempfile.TemporaryDirectory() as scratch:
        python = str(venv_python(Path(scratch)))
        _run([interpreter, "-m", "venv", scratch])
        _run([python, "-m", "pip", "install", "-q", PIP_PIN])
        _run([python, "-m", "pip", "install", "-q", "-r", str(DIRECT_REQUIREMENTS)])
        frozen = _run([python, "-m", "pip", "freeze", "--all", "--exclude", "pip"])
    pins = sorted((line for line in frozen.splitlines() if "==" in line), key=str.lower)
    RUNTIME_REQUIREMENTS.write_text(LOCK_HEADER + "\n".join(pins) + "\n")
    return RUNTIME_REQUIREMENTS


def main() -> int:
    try:
        arguments = sys.argv[1:]
        print(lock() if "--lock" in arguments else ensure_scan_venv() if "--scan" in arguments else ensure_venv())
    except ToolchainError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
