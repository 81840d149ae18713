"""Rotating the HS256 secret: JWT_HS256_PREVIOUS_SECRET keeps the tokens signed with the
old secret working for one token lifetime (docs/security.md#rotating-the-hs256-secret)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from comments_api.settings import Settings, SettingsError

from .authkit import AUDIENCE, ISSUER, Signer, bearer, hs_signer
from .support import VENV_BIN, ServiceProcess, free_port
from .test_auth import build, jwt_settings, post_v1


def test_tokens_of_the_current_and_the_previous_secret_verify_and_no_other(sqlite_url):
    old, new, stranger = hs_signer(), hs_signer(), hs_signer()
    app = build(
        sqlite_url, **jwt_settings(jwt_hs256_secret=new.key, jwt_hs256_previous_secret=old.key)
    )
    client = app.test_client()
    for signer, subject in ((new, "signed-new"), (old, "signed-old")):
        created = post_v1(client, bearer(signer.token(subject)), body=f"from {subject}")
        assert created.status_code == 201, created.json
        assert created.json["author"]["name"] == f"Reader {subject}"
    refused = post_v1(client, bearer(stranger.token()))
    assert refused.status_code == 401
    assert refused.json["detail"] == "the token signature is invalid"
    # The previous secret verifies the signature, then the claims are checked as usual.
    expired = old.token(exp=int(time.time()) - 3600)
    assert post_v1(client, bearer(expired)).json["detail"] == "the token has expired"
    other_audience = old.token(aud="another-site")
    assert post_v1(client, bearer(other_audience)).json["detail"] == (
        "the token is for another audience"
    )


@pytest.mark.parametrize(
    ("previous", "current", "message"),
    [
        ("p" * 31, "c" * 40, "JWT_HS256_PREVIOUS_SECRET must be at least 32 bytes"),
        ("c" * 40, "c" * 40, "JWT_HS256_PREVIOUS_SECRET is the same as JWT_HS256_SECRET"),
        ("p" * 40, None, "JWT_HS256_PREVIOUS_SECRET is only accepted beside JWT_HS256_SECRET"),
    ],
    ids=["short", "same-as-current", "without-current"],
)
def test_unusable_previous_secrets_are_refused(sqlite_url, previous, current, message):
    settings = jwt_settings(jwt_hs256_secret=current, jwt_hs256_previous_secret=previous)
    with pytest.raises(SettingsError, match=message) as refused:
        build(sqlite_url, **settings)
    assert previous not in str(refused.value)


def test_the_previous_secret_is_read_like_the_current_one(tmp_path):
    # Stripped, from a file, and never in repr(): the same reading as JWT_HS256_SECRET.
    previous = tmp_path / "previous"
    previous.write_text("p" * 40 + "\n")
    settings = Settings.from_env(
        {"JWT_HS256_SECRET": "c" * 40, "JWT_HS256_PREVIOUS_SECRET_FILE": str(previous)}
    )
    assert settings.jwt_hs256_previous_secret == "p" * 40
    assert "p" * 40 not in repr(settings)


def _serve_refusal(tmp_path: Path, **secrets: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "PORT": str(free_port()),
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "METRICS_ENABLED": "false",
        **secrets,
    }
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_a_bad_previous_secret_in_one_line_without_its_value(tmp_path):
    current = hs_signer().key
    short_file = tmp_path / "short"
    short_file.write_text("short-previous-secret\n")
    cases = {
        "JWT_HS256_PREVIOUS_SECRET must be at least 32 bytes": {
            "JWT_HS256_SECRET": current,
            "JWT_HS256_PREVIOUS_SECRET_FILE": str(short_file),
        },
        "JWT_HS256_PREVIOUS_SECRET is the same as JWT_HS256_SECRET": {
            "JWT_HS256_SECRET": current,
            "JWT_HS256_PREVIOUS_SECRET": current,
        },
        "JWT_HS256_PREVIOUS_SECRET is only accepted beside JWT_HS256_SECRET": {
            "JWT_HS256_PREVIOUS_SECRET": current,
        },
    }
    for message, secrets in cases.items():
        result = _serve_refusal(tmp_path, **secrets)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: configuration error: {message}"), line
        output = result.stdout + result.stderr
        assert current not in output
        assert "short-previous-secret" not in output


def _post(service: ServiceProcess, signer: Signer, subject: str) -> requests.Response:
    return requests.post(
        f"{service.base}/api/v1/contents/a1/comments",
        json={"body": f"hello from {subject}"},
        headers=bearer(signer.token(subject)),
        timeout=10,
    )


def test_a_rotation_on_real_serve_signs_no_reader_out(tmp_path):
    """The documented procedure, step by step, on `comments-api serve` (gunicorn, two
    workers) with the secrets in mounted files."""
    old, new, stranger = hs_signer(), hs_signer(), hs_signer()
    current_file, previous_file = tmp_path / "jwt-hs256-secret", tmp_path / "previous"
    base = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_HS256_SECRET_FILE": str(current_file),
        "DUPLICATE_WINDOW": "0",  # the same reader posts the same text on each worker
    }
    logs = []

    current_file.write_text(old.key + "\n")
    with ServiceProcess(base, tmp_path) as service:
        assert _post(service, old, "before").status_code == 201
        logs.append(service.log())

    # Step 1: the new secret is current, the old one previous; issuers still sign with old.
    current_file.write_text(new.key + "\n")
    previous_file.write_text(old.key + "\n")
    rotating = {**base, "JWT_HS256_PREVIOUS_SECRET_FILE": str(previous_file)}
    with ServiceProcess(rotating, tmp_path) as service:
        for _ in range(4):  # both workers
            assert _post(service, old, "still-old").status_code == 201
            assert _post(service, new, "already-new").status_code == 201
            refused = _post(service, stranger, "stranger")
            assert refused.status_code == 401
            assert refused.json()["detail"] == "the token signature is invalid"
        logs.append(service.log())

    # Step 3: the previous secret removed after the longest token lifetime.
    with ServiceProcess(base, tmp_path) as service:
        assert _post(service, old, "too-late").status_code == 401
        assert _post(service, new, "new").status_code == 201
        logs.append(service.log())

    for log in logs:
        assert old.key not in log
        assert new.key not in log
