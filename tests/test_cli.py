"""The command line operators use."""

from __future__ import annotations

import os
import subprocess

from .support import VENV_BIN


def run(*args, env=None):
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_help_explains_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate"):
        assert command in result.stdout
    for command in ("serve", "migrate"):
        sub = run(command, "--help")
        assert sub.returncode == 0
        assert len(sub.stdout.split("\n\n")[1].strip()) > 20  # a real sentence, not a stub
    assert "SHUTDOWN_DELAY" in run("serve", "--help").stdout


def test_bad_configuration_is_a_clear_error_not_a_traceback(tmp_path):
    result = run("migrate", env={"PORT": "eighty", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode != 0
    assert "PORT must be an integer" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("migrate", env={"DATABASE_URL": "mysql://x"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
