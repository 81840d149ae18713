"""docs/configuration.md lists every variable Settings reads, with its real default."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from comments_api import settings_reference
from comments_api.settings import Settings

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.read: set[str] = set()

    def get(self, key, default=None):  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def variables_settings_reads() -> set[str]:
    env = RecordingEnv()
    Settings.from_env(env)
    return env.read


def documented_rows() -> dict[str, str]:
    """Variable -> default cell, from the committed document's generated table."""
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(settings_reference.BEGIN) : text.index(settings_reference.END)]
    rows = {}
    for line in block.splitlines():
        if match := re.match(r"\| `([A-Z0-9_]+)`(?: or `[A-Z0-9_]+_FILE`)? \| ([^|]+) \|", line):
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_every_variable_settings_reads_is_documented():
    read = variables_settings_reads()
    # The recorder must see what we know is read, or it is recording nothing.
    assert {"PORT", "DATABASE_URL", "DATABASE_URL_FILE", "CORS_ORIGINS"} <= read
    rows = documented_rows()
    text = DOC.read_text(encoding="utf-8")
    for name in sorted(read):
        if name.endswith("_FILE") and name not in rows:
            base = name.removesuffix("_FILE")
            assert f"| `{base}` or `{name}` |" in text, f"{name} is not documented"
        else:
            assert name in rows, f"{name} is read by Settings but missing from {DOC.name}"
    # ... and nothing documented is a variable Settings ignores.
    assert set(rows) <= read, set(rows) - read


def test_every_field_has_one_description_and_its_variable():
    read = variables_settings_reads()
    for item in fields(Settings):
        if of := item.metadata.get("path_of"):
            # Where a secret was read from (DATABASE_URL_FILE): documented with that secret.
            (owner,) = [f for f in fields(Settings) if f.name == of]
            assert owner.metadata.get("file"), item.name
            continue
        assert str(item.metadata.get("doc", "")).strip(), f"{item.name}: no description"
        assert item.name.upper() in read, f"{item.name}: no environment variable reads it"
        # NAME_FILE is read exactly for the settings documented as taking one.
        assert (f"{item.name.upper()}_FILE" in read) == bool(item.metadata.get("file")), item.name


def test_documented_defaults_are_the_real_ones():
    """Each default, set explicitly in the environment, gives what leaving it unset gives."""
    defaults = Settings()
    checked = 0
    for item in fields(Settings):
        if "path_of" in item.metadata:  # no variable of its own (see the test above)
            continue
        cell = documented_rows()[item.name.upper()]
        if "default" in item.metadata:  # computed at start-up (e.g. from the CPU count)
            continue
        if cell == settings_reference.UNSET:
            assert getattr(defaults, item.name) in (None, ()), item.name
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        assert literal, f"{item.name.upper()}: default {cell!r} is not a literal"
        explicit = Settings.from_env({item.name.upper(): literal.group(1)})
        assert getattr(explicit, item.name) == getattr(defaults, item.name), item.name
        checked += 1
    assert checked >= 30


def test_the_generated_table_is_current():
    text = DOC.read_text(encoding="utf-8")
    assert settings_reference.render(text) == text, "run `make docs`"


def test_check_mode_fails_on_a_stale_table(tmp_path):
    stale = tmp_path / "configuration.md"
    text = DOC.read_text(encoding="utf-8")
    stale.write_text(re.sub(r"\n\| `PORT` \|[^\n]*", "", text), encoding="utf-8")
    command = [sys.executable, "-m", "comments_api.settings_reference", "--check", str(stale)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result
    assert "make docs" in result.stderr
    # Regenerating repairs it.
    subprocess.run([*command[:3], str(stale)], check=True)
    assert stale.read_text(encoding="utf-8") == text
