"""A JWKS URL whose identity provider misbehaves: garbage, outages, slowness.

Each test serves the key set from a real HTTP server on 127.0.0.1 (tests/authkit.py) and
changes what it answers while the app runs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from comments_api.app import create_app
from comments_api.identity import credentials
from comments_api.settings import Settings
from comments_api.store.repository import make_engine, migrate
from comments_api.web.common import EXTENSION_KEY

from .authkit import AUDIENCE, ISSUER, Signer, bearer, ec_signer, jwks, jwks_server, rsa_signer


def build_with(url: str, **keys: str):
    """An app on a migrated database trusting the key source in ``keys``."""
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = replace(
        Settings(database_url=url, ratelimit_enabled=False),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        **keys,
    )
    return create_app(settings)


def build(url: str, jwks_url: str):
    return build_with(url, jwt_jwks_url=jwks_url)


def post(client, token: str, body: str):
    return client.post("/api/v1/contents/a1/comments", json={"body": body}, headers=bearer(token))


def stored_bodies(client) -> list[str]:
    return [c["body"] for c in client.get("/api/v1/contents/a1/comments").json["items"]]


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert "identity provider" in response.json["detail"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"<html><body>502 Bad Gateway</body></html>"),  # a proxy's error page
        (200, b""),
        (200, b'{"keys": [{"kty": "RSA", "n": '),  # cut short
        (200, b"\xff\xfe{"),  # not UTF-8
        (200, b"[" * 100_000),  # nested past the JSON parser's recursion limit
        (200, b"[]"),
        (200, b"{}"),
        (200, b'{"keys": []}'),
        (200, b'{"keys": "none"}'),
        (200, b'{"keys": [{"kty": "XX", "kid": "k"}]}'),  # no key we can use
        (500, b"internal error"),
    ],
)
def test_a_jwks_endpoint_serving_no_usable_key_set_is_503_not_500(
    sqlite_url, monkeypatch, status, body
):
    """Only connection failures were 503: an HTML page, a cut body or an empty set raised
    out of PyJWT (a 500) or were blamed on the reader's token (a 401)."""
    monkeypatch.setattr(credentials, "_JWKS_RETRY", 0.0)  # the recovery below is immediate
    signer = rsa_signer()
    with jwks_server(jwks(signer)) as state:
        state["status"], state["body"] = status, body
        client = build(sqlite_url, state["url"]).test_client()
        assert_unavailable(post(client, signer.token(), "while broken"))
        # The provider recovers: the next request fetches the set again and gets in.
        state["status"], state["body"] = 200, json.dumps(jwks(signer)).encode()
        assert post(client, signer.token(), "after recovery").status_code == 201
    assert stored_bodies(client) == ["after recovery"]


def test_an_identity_provider_outage_keeps_the_keys_it_served_last(sqlite_url):
    """Once the cached set had expired, every reader got a 503 for as long as the provider
    was down, although the keys it signed their tokens with were known."""
    trusted = rsa_signer()
    with jwks_server(jwks(trusted)) as state:
        app = build(sqlite_url, state["url"])
        client = app.test_client()
        assert post(client, trusted.token(), "before").status_code == 201
        state["status"], state["body"] = 503, b"maintenance"
        # The set's lifespan runs out (as five minutes later): the next request refetches.
        cache = app.extensions[EXTENSION_KEY].identity.jwt._client.jwk_set_cache
        cache.jwk_set_with_timestamp.timestamp -= credentials._JWKS_MIN_REFRESH + 600
        hits = state["hits"]
        assert post(client, trusted.token(), "during the outage").status_code == 201
        assert state["hits"] == hits + 1  # it did try the provider
        # The old set is used for another lifespan, not refetched on every request.
        assert post(client, trusted.token(), "still during").status_code == 201
        assert state["hits"] == hits + 1
        # It still verifies: a key the provider never listed gets nothing.
        forger = rsa_signer()
        forger.kid = trusted.kid
        assert post(client, forger.token(), "forged").status_code == 401
    assert stored_bodies(client) == ["before", "during the outage", "still during"]


def test_a_slow_identity_provider_costs_one_timeout_not_one_per_request(sqlite_url):
    """Each request waited out the fetch timeout in turn (behind the client's lock): a
    provider that hangs made every signed-in request take 5 s, one after the other."""
    signer = rsa_signer()
    with jwks_server(jwks(signer)) as state:
        state["delay"] = 6.0  # past the 5 s fetch timeout
        client = build(sqlite_url, state["url"]).test_client()
        assert_unavailable(post(client, signer.token(), "first"))
        hits = state["hits"]
        started = time.monotonic()
        for i in range(3):
            assert_unavailable(post(client, signer.token(), f"queued {i}"))
        assert time.monotonic() - started < 2.0
        assert state["hits"] == hits  # nobody waited on the provider again
        state["delay"] = 0.0
    assert stored_bodies(client) == []


def test_tokens_without_a_kid_verify_against_each_trusted_key(sqlite_url, tmp_path):
    """`kid` is optional (RFC 7515): with two keys in the set (a rotation), a token naming
    none was checked against the first key only, and the other key's readers got "the
    token signature is invalid"."""
    old, new = rsa_signer(), rsa_signer()
    forger = rsa_signer()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(old, new)))
    file_client = build_with(sqlite_url, jwt_jwks_file=str(path)).test_client()
    # A provider whose set names no key either.
    unnamed = {
        "keys": [{k: v for k, v in key.items() if k != "kid"} for key in jwks(old, new)["keys"]]
    }
    with jwks_server(jwks(old, new)) as named, jwks_server(unnamed) as anonymous:
        url_clients = [
            build_with(
                f"sqlite:///{tmp_path / f'url{i}.db'}", jwt_jwks_url=state["url"]
            ).test_client()
            for i, state in enumerate((named, anonymous))
        ]
        for client in (file_client, *url_clients):
            for name, signer in (("old", old), ("new", new)):
                posted = post(client, signer.token(name, headers={"kid": None}), f"by {name}")
                assert posted.status_code == 201, (name, posted.json)
                assert posted.json["author"]["name"] == f"Reader {name}"
            forged = post(client, forger.token("forger", headers={"kid": None}), "forged")
            assert forged.status_code == 401
            assert forged.json["detail"] == "the token signature is invalid"
            assert stored_bodies(client) == ["by old", "by new"]


def test_an_es256_token_is_checked_only_against_p256_keys(sqlite_url, tmp_path):
    """A set holding a P-384 key (for ES384) beside the P-256 one: a kid-less ES256 token
    was tried against the P-384 key and refused as "malformed" (PyJWT rejects the curve),
    and a token naming the P-384 key was blamed on its claims, not on the key."""
    p384 = Signer("ES384", ec.generate_private_key(ec.SECP384R1()), kid="p384")
    p256 = ec_signer()
    p384_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(p384.key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**p384_jwk, "kid": "p384"}, p256.jwk()]}))
    client = build_with(sqlite_url, jwt_jwks_file=str(path)).test_client()
    assert post(client, p256.token("r1", headers={"kid": None}), "no kid").status_code == 201
    assert post(client, p256.token("r2"), "with kid").status_code == 201
    naming_p384 = Signer("ES256", ec.generate_private_key(ec.SECP256R1()), kid="p384")
    refused = post(client, naming_p384.token("x"), "wrong curve")
    assert refused.status_code == 401
    assert refused.json["detail"] == "the token was not signed by a key this service trusts"
    assert stored_bodies(client) == ["no kid", "with kid"]


def test_the_log_says_why_the_identity_provider_failed_and_the_caller_never_sees_it(
    sqlite_url, monkeypatch, caplog
):
    """Every failure was logged as the same "keys are unreachable": a timeout, a redirect
    and an HTML page could not be told apart."""
    monkeypatch.setattr(credentials, "_JWKS_RETRY", 0.0)
    signer = rsa_signer()
    with jwks_server(jwks(signer)) as state:
        client = build(sqlite_url, state["url"]).test_client()
        for status, body, cause in (
            (302, b"", "HTTP Error 302"),
            (404, b"not here", "HTTP Error 404"),
            (200, b"<html>login</html>", "Expecting value"),
        ):
            state["status"], state["body"] = status, body
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="comments_api.identity"):
                response = post(client, signer.token(), f"status {status}")
            assert_unavailable(response)
            assert cause in caplog.text, caplog.text
            assert cause not in response.get_data(as_text=True)


def test_a_key_file_beside_the_jwks_url_does_not_hide_the_providers_keys(sqlite_url, tmp_path):
    """JWT_JWKS_FILE (a PEM, or a set read by a token without a kid) and JWT_JWKS_URL
    together: the file's keys matched every such token, so the URL's were never fetched and
    each reader whose token the provider signed got "the token signature is invalid"."""
    pinned, provider, forger = rsa_signer(), rsa_signer(), rsa_signer()
    pem = tmp_path / "pinned.pem"
    pem.write_bytes(pinned.public_pem)
    with jwks_server(jwks(provider)) as state:
        client = build_with(
            sqlite_url, jwt_jwks_file=str(pem), jwt_jwks_url=state["url"]
        ).test_client()
        assert post(client, pinned.token("p"), "by pinned").status_code == 201
        for headers in ({}, {"kid": None}):
            posted = post(client, provider.token("u", headers=headers), f"by provider {headers}")
            assert posted.status_code == 201, posted.json
        forged = post(client, forger.token("f"), "forged")
        assert forged.status_code == 401
        assert forged.json["detail"] == "the token signature is invalid"
        # The provider down: the pinned key still verifies its tokens, and a token only the
        # provider's keys could check is a 503 (retry), not a 401 (a forgery).
        state["status"], state["body"] = 500, b"down"
        offline = build_with(
            f"sqlite:///{tmp_path / 'offline.db'}",
            jwt_jwks_file=str(pem),
            jwt_jwks_url=state["url"],
        ).test_client()
        assert post(offline, pinned.token("p"), "pinned offline").status_code == 201
        assert_unavailable(post(offline, provider.token("u"), "provider offline"))
    assert stored_bodies(client) == ["by pinned", "by provider {}", "by provider {'kid': None}"]
