"""The image itself: metadata, no shell, non-root, read-only root, size budget."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from comments_api import __version__

from .conftest import RUNTIME_UID, docker

pytestmark = pytest.mark.docker

# Issue #5: <= 80 MB uncompressed. Measured on the distroless stand-in: base 50.8 MB +
# venv 24.6 MB (cryptography's Rust module 11.6 MB, psycopg-binary 2.2 MB once its bundled
# OpenSSL and Kerberos link to the base's, every module once as bytecode, pure Python in a
# zip) + 2.6 MB of standard-library bytecode (scripts/image_pack_venv.py,
# image_warm_bytecode.py).
SIZE_BUDGET_MB = 80


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def test_size_within_budget(image, budgets):
    size_mb = inspect(image)["Size"] / 1e6
    budgets["image_size_mb"] = round(size_mb, 1)
    assert size_mb <= SIZE_BUDGET_MB


def test_metadata_exec_form_non_root_and_oci_labels(image):
    config = inspect(image)["Config"]
    assert config["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert config["Entrypoint"] == ["/venv/bin/comments-api"]
    assert config["Cmd"] == ["serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"  # exec form: no shell needed
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/data" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "8000"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # No DATABASE_URL: it would clash with DATABASE_URL_FILE. The default's ./data is /data.
    assert "DATABASE_URL" not in env
    assert config["WorkingDir"] == "/"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    datetime.fromisoformat(labels["org.opencontainers.image.created"].replace("Z", "+00:00"))
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_no_shell_package_manager_or_build_tools(image):
    probe = (
        "import os, shutil, json; "
        "paths = ['/bin/sh', '/bin/bash', '/usr/bin/apt-get', '/usr/bin/dpkg', '/usr/bin/gcc', "
        "'/usr/bin/strip', '/venv/bin/pip']; "
        "found = [p for p in paths if os.path.lexists(p)]; "
        "mods = [m for m in ('pip', 'setuptools') if __import__('importlib.util').util."
        "find_spec(m)]; "
        "print(json.dumps({'found': found, 'mods': mods}))"
    )
    result = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/venv/bin/python", image, "-c", probe
    )
    assert json.loads(result.stdout) == {"found": [], "mods": []}
    # And a shell entrypoint really cannot start.
    shell = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, check=False
    )
    assert shell.returncode != 0


def test_bad_configuration_fails_fast_with_a_clear_message(image):
    result = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--env",
        "PORT=eighty",
        image,
        check=False,
    )
    assert result.returncode != 0
    assert "PORT must be an integer" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
