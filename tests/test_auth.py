"""Credentials: API keys (CLI and storage), JWTs (HS256, JWKS file/URL, PEM), auth modes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import replace

import pytest

from comments_api.app import create_app
from comments_api.identity.credentials import SCOPE_ADMIN, SCOPE_MODERATE, SCOPE_WRITE
from comments_api.settings import Settings, SettingsError
from comments_api.store.repository import make_engine, migrate
from comments_api.web.common import EXTENSION_KEY

from .authkit import (
    AUDIENCE,
    ISSUER,
    Signer,
    api_key,
    bearer,
    confused_token,
    ec_signer,
    hs_signer,
    jwks,
    jwks_server,
    rsa_signer,
    unsigned_token,
)
from .support import VENV_BIN

KEY_RE = re.compile(r"^cak_[0-9a-f]{12}_[A-Za-z0-9_-]{40,}$")


def build(url: str, **overrides: object):
    base = Settings(database_url=url, ratelimit_enabled=False)
    settings = replace(base, **overrides)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return create_app(settings)


def jwt_settings(**extra: object) -> dict[str, object]:
    return {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, **extra}


def post_v1(client, headers=None, content_id="a1", **body):
    return client.post(
        f"/api/v1/contents/{content_id}/comments",
        json={"body": "hello", **body},
        headers=headers or {},
    )


def cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- API keys -------------------------------------------------------------------------
def test_cli_key_lifecycle_create_use_list_revoke(make_app, database_url):
    app = make_app(auth_mode="required")  # migrates the database the CLI will use
    client = app.test_client()
    created = cli(
        "keys",
        "create",
        "--name",
        "backend",
        "--scope",
        "comments:write",
        database_url=database_url,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone on stdout: KEY=$(...) works
    assert KEY_RE.match(key)
    key_id = key.split("_")[1]

    response = post_v1(client, bearer(key))
    assert response.status_code == 201, response.json

    listed = cli("keys", "list", database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    name, scopes, _created, last_used, revoked = row.split("\t")[1:]
    assert (name, scopes, revoked) == ("backend", "comments:write", "-")
    assert last_used != "-"  # the request above was recorded
    record = app.extensions[EXTENSION_KEY].repo.get_api_key(key_id)
    assert key not in listed.stdout
    assert record.key_hash not in listed.stdout  # never the hash either
    assert key not in record.key_hash  # only a hash is stored

    revoked = cli("keys", "revoke", key_id, database_url=database_url)
    assert revoked.returncode == 0, revoked.stderr
    rejected = post_v1(client, bearer(key), body="after revocation")
    assert rejected.status_code == 401
    assert "revoked" in rejected.json["detail"]
    assert 'error="invalid_token"' in rejected.headers["WWW-Authenticate"]
    again = cli("keys", "revoke", key_id, database_url=database_url)
    assert again.returncode != 0
    assert "no active key" in again.stderr


def test_cli_rejects_unknown_scopes_and_unmigrated_databases(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    fresh = cli("keys", "create", "--name", "x", "--scope", "comments:write", database_url=url)
    assert fresh.returncode != 0
    assert "comments-api migrate" in fresh.stderr
    assert fresh.stdout == ""
    bad = cli("keys", "create", "--name", "x", "--scope", "root", database_url=url)
    assert bad.returncode != 0
    assert "root" in bad.stderr


def test_other_authorization_schemes_are_not_ours_and_mean_anonymous(make_app):
    # e.g. Basic credentials a password-protected staging proxy passes through.
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    open_client = make_app().test_client()
    assert open_client.get("/api/v1/counts?content_id=1", headers=basic).status_code == 200
    assert post_v1(open_client, basic).status_code == 201
    required = make_app(auth_mode="required").test_client()
    refused = post_v1(required, basic)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="comments-api"'


def test_storage_created_key_last_used_and_scopes(make_app):
    app = make_app()
    client = app.test_client()
    repo = app.extensions[EXTENSION_KEY].repo
    writer = api_key(app, SCOPE_WRITE)
    moderator = api_key(app, SCOPE_MODERATE)
    admin = api_key(app, SCOPE_ADMIN)
    writer_id = writer.split("_")[1]
    assert repo.get_api_key(writer_id).last_used_at is None
    assert post_v1(client, bearer(writer)).status_code == 201
    assert repo.get_api_key(writer_id).last_used_at is not None

    # Scope enforcement: 403 (authenticated, but not allowed), not 401.
    assert post_v1(client, bearer(moderator), body="no write scope").status_code == 403
    assert client.get("/api/v1/moderation/pending", headers=bearer(writer)).status_code == 403
    assert client.get("/api/v1/admin/audit-log", headers=bearer(moderator)).status_code == 403
    assert client.get("/api/v1/moderation/pending", headers=bearer(moderator)).status_code == 200
    # admin implies every scope.
    assert client.get("/api/v1/admin/audit-log", headers=bearer(admin)).status_code == 200
    assert post_v1(client, bearer(admin), body="admin writes").status_code == 201


@pytest.mark.parametrize(
    "header",
    [
        "Bearer cak_000000000000_" + "x" * 43,  # well-formed, unknown
        "Bearer cak_nothex_secret",  # malformed
        "Bearer ",  # empty
    ],
)
def test_bad_credentials_are_401_even_on_reads_and_in_open_mode(make_app, header):
    app = make_app()
    client = app.test_client()
    api_key(app, SCOPE_WRITE)  # a real key exists, the presented one is not it
    for response in (
        client.get("/api/v1/counts?content_id=1", headers={"Authorization": header}),
        client.post(
            "/api/comment/new",
            json={"email": "a@example.com", "comment": "x", "content_id": 1},
            headers={"Authorization": header},
        ),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="comments-api"')
        assert response.is_json
    # Legacy errors keep the legacy shape.
    assert response.json["status"] == "UNAUTHORIZED"


# --- JWTs -----------------------------------------------------------------------------
@pytest.fixture(
    params=["hs256", "rs256-jwks-file", "es256-pem-file", "rs256-jwks-url", "es256-jwks-url"]
)
def jwt_app(request, sqlite_url, tmp_path):
    """An app trusting one key source, and the signer whose tokens it must accept."""
    kind = request.param
    if kind == "hs256":
        signer = hs_signer()
        yield build(sqlite_url, **jwt_settings(jwt_hs256_secret=signer.key)), signer, None
        return
    signer = rsa_signer() if kind.startswith("rs") else ec_signer()
    if kind.endswith("jwks-file"):
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(jwks(signer)))
        yield build(sqlite_url, **jwt_settings(jwt_jwks_file=str(path))), signer, None
    elif kind.endswith("pem-file"):
        path = tmp_path / "public.pem"
        path.write_bytes(signer.public_pem)
        yield build(sqlite_url, **jwt_settings(jwt_jwks_file=str(path))), signer, None
    else:
        # Another key in the set first: the verifier must pick by kid.
        with jwks_server(jwks(rsa_signer(), signer)) as state:
            yield build(sqlite_url, **jwt_settings(jwt_jwks_url=state["url"])), signer, state


def test_valid_token_identity_comes_from_claims(jwt_app):
    app, signer, server = jwt_app
    client = app.test_client()
    token = signer.token("alice", email="alice@readers.example", name="Alice A.")
    response = post_v1(client, bearer(token))
    assert response.status_code == 201, response.json
    assert response.json["author"]["name"] == "Alice A."
    stored = app.extensions[EXTENSION_KEY].repo.get(response.json["id"])
    assert (stored.author_subject, stored.email) == ("alice", "alice@readers.example")
    if server is not None:
        for i in range(3):
            assert post_v1(client, bearer(token), body=f"more {i}").status_code == 201
        assert server["hits"] == 1  # the JWKS is cached, not fetched per request


def test_rejected_tokens(jwt_app):
    app, signer, _ = jwt_app
    client = app.test_client()
    now = int(time.time())
    # Same kid and algorithm, another key: what a forger without our keys can do.
    if signer.alg == "HS256":
        impostor = hs_signer()
    else:
        other = rsa_signer() if signer.alg == "RS256" else ec_signer()
        impostor = Signer(signer.alg, other.key, kid=signer.kid)
    cases = {
        "forged signature": impostor.token(),
        "expired": signer.token(exp=now - 120, iat=now - 600),  # beyond the 30 s leeway
        "wrong audience": signer.token(aud="another-site"),
        "wrong issuer": signer.token(iss="https://evil.example"),
        "not yet valid": signer.token(nbf=now + 600),
        "no expiry": signer.token(exp=None),
        "no subject": signer.token(subject=None),
        "alg none": unsigned_token(),
        "garbage": "not.a.jwt",
    }
    if signer.alg == "RS256":
        cases["HS256 signed with the RSA public key"] = confused_token(signer)
    for case, token in cases.items():
        response = post_v1(client, bearer(token), body=f"as {case}")
        assert response.status_code == 401, (case, response.json)
        assert "invalid_token" in response.headers["WWW-Authenticate"], case
    # Nothing got in.
    page = client.get("/api/v1/contents/a1/comments").json
    assert page["items"] == []
    # Within leeway is still fine (clock skew between the IdP and us).
    assert post_v1(client, bearer(signer.token(exp=now - 5))).status_code == 201


def test_token_header_alg_that_is_not_a_name_is_401_not_500(jwt_app):
    """An "alg" that is a list or an object was a 500 (unhashable in the algorithm table)."""
    import base64

    app, signer, _ = jwt_app
    client = app.test_client()

    def b64(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = b64({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60})
    for alg in (["HS256"], ["RS256", "ES256"], {"alg": "HS256"}, 256, None):
        token = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': signer.kid})}.{claims}.c2ln"
        response = post_v1(client, bearer(token), body=f"alg {alg!r}")
        assert response.status_code == 401, (alg, response.json)
        assert response.json["detail"] == "malformed token: its header has no algorithm name"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert client.get("/api/v1/contents/a1/comments").json["items"] == []


def test_a_trusted_token_with_claims_of_the_wrong_type_is_not_called_a_forgery(jwt_app):
    """Signed by our key, but "exp" a string or "sub" a number: the 401 said "signature is
    invalid", which sends an identity provider's integrator to check the wrong thing."""
    app, signer, _ = jwt_app
    client = app.test_client()
    now = int(time.time())
    for claims in ({"subject": 42}, {"exp": "tomorrow"}, {"iat": "today"}, {"jti": 7}):
        token = signer.token(**claims)
        response = post_v1(client, bearer(token), body=f"as {claims}")
        assert response.status_code == 401, (claims, response.json)
        assert response.json["detail"].startswith("malformed token:"), claims
    # A real forgery still says what it is.
    if signer.alg == "HS256":
        forger = hs_signer()
    else:
        other = rsa_signer() if signer.alg == "RS256" else ec_signer()
        forger = Signer(signer.alg, other.key, kid=signer.kid)
    forged = post_v1(client, bearer(forger.token(exp=now + 60)))
    assert forged.status_code == 401
    assert forged.json["detail"] == "the token signature is invalid"
    assert client.get("/api/v1/contents/a1/comments").json["items"] == []


def test_hs_rs_confusion_rejected_even_when_hs256_is_enabled(sqlite_url, tmp_path):
    signer = rsa_signer()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(signer)))
    app = build(
        sqlite_url,
        **jwt_settings(jwt_jwks_file=str(path), jwt_hs256_secret=hs_signer().key),
    )
    client = app.test_client()
    assert post_v1(client, bearer(signer.token())).status_code == 201
    assert post_v1(client, bearer(confused_token(signer)), body="x").status_code == 401


def test_body_identity_is_ignored_when_a_token_is_present(sqlite_url):
    signer = hs_signer()
    app = build(sqlite_url, **jwt_settings(jwt_hs256_secret=signer.key), legacy_email="full")
    client = app.test_client()
    token = signer.token("bob", email="bob@readers.example", name="Bob")
    v1 = post_v1(client, bearer(token), email="victim@example.com", author_name="The Editor")
    assert v1.status_code == 201
    assert v1.json["author"]["name"] == "Bob"
    stored = app.extensions[EXTENSION_KEY].repo.get(v1.json["id"])
    assert stored.email == "bob@readers.example"
    legacy = client.post(
        "/api/comment/new",
        json={"email": "victim@example.com", "comment": "legacy", "content_id": "a1"},
        headers=bearer(token),
    )
    assert legacy.status_code == 200
    assert legacy.json["status"] == "SUCCESS"
    # With a token the legacy body needs no email at all.
    no_email = client.post(
        "/api/comment/new", json={"comment": "no email", "content_id": "a1"}, headers=bearer(token)
    )
    assert no_email.status_code == 200
    emails = {c["email"] for c in client.get("/api/comment/list/a1").json}
    assert emails == {"bob@readers.example"}
    # A token without email/name claims: the reader is anonymous-looking, never the body.
    bare = signer.token("carol", email=None, name=None)
    response = post_v1(client, bearer(bare), email="victim@example.com", author_name="Victim")
    assert response.json["author"] == {"name": "anonymous", "email_hash": None}


def test_jwks_url_unreachable_is_503_not_401(sqlite_url):
    signer = rsa_signer()
    with jwks_server(jwks(signer)) as state:
        url = state["url"]
    app = build(sqlite_url, **jwt_settings(jwt_jwks_url=url))  # server is gone now
    response = post_v1(app.test_client(), bearer(signer.token()))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_unknown_kids_refetch_the_jwks_at_most_once_per_cooldown(sqlite_url):
    trusted, forger = rsa_signer(), rsa_signer()
    with jwks_server(jwks(trusted)) as state:
        app = build(sqlite_url, **jwt_settings(jwt_jwks_url=state["url"]))
        client = app.test_client()
        assert post_v1(client, bearer(trusted.token())).status_code == 201
        assert state["hits"] == 1
        # A kid the provider doesn't list: rejected; the first one may trigger one refetch
        # (a key rotation), the flood after it must not reach the provider again.
        for i in range(5):
            forger.kid = f"forged-{i}"
            assert post_v1(client, bearer(forger.token()), body=f"f{i}").status_code == 401
        assert state["hits"] <= 2
        assert post_v1(client, bearer(trusted.token()), body="still fine").status_code == 201


def test_jwt_settings_are_validated_and_secrets_read_from_files(tmp_path, sqlite_url):
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 40 + "\n")
    settings = Settings.from_env(
        {
            "DATABASE_URL": sqlite_url,
            "JWT_HS256_SECRET_FILE": str(secret_file),
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
        }
    )
    assert settings.jwt_hs256_secret == "s" * 40
    assert "s" * 40 not in repr(settings)
    with pytest.raises(SettingsError, match="JWT_ISSUER and JWT_AUDIENCE"):
        build(sqlite_url, jwt_hs256_secret="s" * 40)
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        build(sqlite_url, **jwt_settings(jwt_hs256_secret="short"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError, match="JWT_JWKS_FILE"):
        build(sqlite_url, **jwt_settings(jwt_jwks_file=str(bad)))
    # No JWT configured: tokens are refused, API keys still work.
    app = build(sqlite_url)
    assert post_v1(app.test_client(), bearer(hs_signer().token())).status_code == 401


# --- auth modes -----------------------------------------------------------------------
def _sample_path(rule: str, comment_id: int) -> str:
    return (
        rule.replace("<content_id>", "a1")
        .replace("<comment_id>", str(comment_id))
        .replace("<path:target>", "email:x@example.com")
    )


def test_required_mode_makes_every_anonymous_write_impossible(make_app):
    app = make_app(auth_mode="required")
    client = app.test_client()
    writer = api_key(app, SCOPE_WRITE)
    existing = post_v1(client, bearer(writer)).json["id"]
    writes = [
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH", "DELETE"})
    ]
    assert len(writes) >= 6  # legacy create, v1 create/edit/delete, moderation
    for rule, method in writes:
        path = _sample_path(rule, existing)
        response = client.open(path, method=method, json={"body": "x", "comment": "x"})
        assert response.status_code == 401, (method, rule, response.json)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), rule
    # Legacy walkthrough without credentials: refused in its own shape.
    legacy = client.post(
        "/api/comment/new", json={"email": "a@example.com", "comment": "x", "content_id": "a1"}
    )
    assert legacy.json["status"] == "UNAUTHORIZED"
    # Nothing anonymous was stored; reads stay public.
    items = client.get("/api/v1/contents/a1/comments").json["items"]
    assert [c["id"] for c in items] == [existing]
    assert client.get("/api/comment/list/a1").status_code == 200


def test_open_mode_keeps_the_legacy_walkthrough(make_app):
    client = make_app().test_client()
    created = client.post(
        "/api/comment/new",
        json={"email": "alice@example.com", "comment": "first!", "content_id": 1},
    )
    assert created.status_code == 200
    assert created.json == {
        "status": "SUCCESS",
        "message": "comment created and associated with content_id 1",
    }
    listed = client.get("/api/comment/list/1")
    assert [c["comment"] for c in listed.json] == ["first!"]


def test_hostile_token_headers_get_a_clean_401_from_real_gunicorn(tmp_path):
    """Header values must survive gunicorn's latin-1 encoding, whatever "alg" says."""
    import base64

    import requests

    from .support import ServiceProcess

    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "JWT_HS256_SECRET": hs_signer().key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "METRICS_ENABLED": "false",
    }

    def b64(data: dict) -> str:
        raw = json.dumps(data, ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    with ServiceProcess(env, tmp_path, workers=1) as service:
        for alg in ('\u20acvil"\r\nX-Injected: 1', "HS512", "RS384", "PS256", None):
            token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64({'sub': 'x'})}.c2ln"
            response = requests.post(
                f"{service.base}/api/v1/contents/a1/comments",
                json={"body": "x"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert response.status_code == 401, alg
            assert "X-Injected" not in response.headers
            assert response.json()["status"] == 401
