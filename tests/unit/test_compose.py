"""docker-compose.yml is valid for users, though no Docker engine runs on these machines.

It is checked against the Compose specification's JSON schema (vendored by check-jsonschema),
and every Python command it runs must name a module and subcommand that exist.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def test_compose_file_validates_against_the_compose_specification():
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert checker, "check-jsonschema is a dev dependency: make setup installs it"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_service_runs_a_module_of_this_project():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    python_services = {n: s for n, s in services.items() if s.get("command", [None])[0] == "python"}
    assert {"worker", "transactions-producer", "emails-producer"} <= set(python_services)
    for name, service in python_services.items():
        command = service["command"]
        assert command[1] == "-m", name
        assert importlib.util.find_spec(command[2]) is not None, f"{name}: no module {command[2]}"
        help_run = subprocess.run(
            [sys.executable, "-m", command[2], "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert help_run.returncode == 0, f"{name}: {help_run.stderr}"


def test_the_image_copies_every_package_the_services_import():
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("models", "producers", "stream", "batch", "dashboards"):
        assert f"COPY {package} ./{package}" in dockerfile
