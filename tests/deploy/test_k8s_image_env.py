"""A pod's settings are the image's ENV with the pod's on top: they must load.

The app refuses a setting given both as NAME and as NAME_FILE. The image once set
DATABASE_URL (SQLite on /data, for `docker run`) while the pods read DATABASE_URL_FILE from
a Secret, so every app pod and the migration Job exited at start ("set either DATABASE_URL
or DATABASE_URL_FILE, not both"; reproduced with the built image and the staging overlay's
settings). The image now sets no DATABASE_URL (its default SQLite file is /data's from
WORKDIR /). Checked here for every overlay through the app's own Settings.from_env, the
same call `serve` and `migrate` make first.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from comments_api.settings import Settings

from .conftest import OVERLAYS, Secrets, image_env, pod_env, pod_templates, secret_names

pytestmark = pytest.mark.k8s

DATABASE_URL = "postgresql+psycopg://app:secret@comments-db-rw:5432/app"
REDIS_URL = "redis://:secret@comments-redis:6379/0"


def secrets_for(docs: list[dict[str, Any]]) -> Secrets:
    """Every Secret the overlay's pods mount, with the keys docs/deployment.md gives them."""
    known: Secrets = {
        "comments-api": {"database-url": DATABASE_URL, "client-ip-hash-salt": "0" * 64},
        "comments-api-database": {"database-url": DATABASE_URL},  # production-aws
        "comments-redis": {"url": REDIS_URL, "redis.conf": "requirepass secret\n"},
        "comments-db-credentials": {"username": "app", "password": "secret"},
    }
    mounted = set().union(*(secret_names(pod) for _, pod in pod_templates(docs)))
    assert mounted <= set(known), mounted - set(known)
    return known


def test_the_image_leaves_every_file_setting_free() -> None:
    """No setting the pods (or deploy.sh) read from a file is in the image's ENV, so no
    pod has to unset one; the image's database is the default's /data file instead."""
    env = image_env()
    assert "DATABASE_URL" not in env
    file_settings = {f.name.upper() for f in fields(Settings) if f.metadata.get("file")}
    assert "DATABASE_URL" in file_settings
    assert not file_settings & set(env), file_settings & set(env)


@pytest.mark.parametrize("env", OVERLAYS)
@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "comments-api"), ("Job", "comments-api-migrate")]
)
def test_pod_settings_load_on_top_of_the_image_env(
    rendered: dict[str, list[dict[str, Any]]], env: str, kind: str, name: str, tmp_path: Path
) -> None:
    docs = rendered[env]
    values = pod_env(docs, kind, name, tmp_path, secrets_for(docs), image_env())
    settings = Settings.from_env(values)  # raised SettingsError before the fix
    # The Secret's database, never the image's SQLite file on the read-only root.
    assert settings.database_url == DATABASE_URL
    if kind == "Deployment":
        assert settings.client_ip_hash_salt == "0" * 64
        assert settings.ratelimit_storage_url == REDIS_URL
    # Nothing else the image sets is given twice.
    for variable in image_env():
        if variable + "_FILE" in values:
            assert values[variable] == "", f"{variable} and {variable}_FILE both set"
