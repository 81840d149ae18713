"""Real credentials for the auth tests: API keys through storage, JWTs signed with keys
generated here (RSA, EC, HS256), and a JWKS document served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from comments_api.identity.credentials import generate_api_key
from comments_api.web.common import EXTENSION_KEY

ISSUER = "https://id.news.example"
AUDIENCE = "comments-api"


def api_key(app: Flask, *scopes: str, name: str = "tests") -> str:
    """A key created through the real storage API, as `keys create` does."""
    new = generate_api_key()
    app.extensions[EXTENSION_KEY].repo.add_api_key(new.key_id, name, new.key_hash, list(scopes))
    return new.key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Signer:
    """One signing key and the claims a well-behaved identity provider would issue."""

    alg: str
    key: Any  # private key, or the shared secret for HS256
    kid: str = field(default_factory=lambda: secrets.token_hex(4))

    def token(
        self, subject: str = "reader-1", headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        body = {
            "sub": subject,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "email": f"{subject}@readers.example",
            "name": f"Reader {subject}",
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        # As with claims, None leaves a header out (``headers={"kid": None}``: no kid).
        header = {k: v for k, v in {"kid": self.kid, **(headers or {})}.items() if v is not None}
        return jwt.encode(body, self.key, algorithm=self.alg, headers=header)

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        data = json.loads(algo.to_jwk(self.key.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}


def rsa_signer() -> Signer:
    return Signer("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_signer() -> Signer:
    return Signer("ES256", ec.generate_private_key(ec.SECP256R1()))


def hs_signer() -> Signer:
    return Signer("HS256", secrets.token_hex(32))


def jwks(*signers: Signer) -> dict[str, Any]:
    return {"keys": [s.jwk() for s in signers]}


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Serve ``document`` at http://127.0.0.1:PORT/jwks.json; yields url and hit count.

    A test changes what is served through the yielded state: ``body`` (bytes), ``status``
    and ``delay`` (seconds before answering: a slow identity provider)."""
    state: dict[str, Any] = {
        "hits": 0,
        "body": json.dumps(document).encode(),
        "status": 200,
        "delay": 0.0,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"] += 1
            time.sleep(state["delay"])
            body = state["body"]
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def unsigned_token(subject: str = "reader-1") -> str:
    """``alg: none``: what a forger sends hoping the server skips verification."""
    now = int(time.time())
    claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    return jwt.encode(claims, None, algorithm="none")


def confused_token(signer: Signer, subject: str = "reader-1") -> str:
    """HS256 "signed" with the RSA public key PEM as the HMAC secret (algorithm confusion).

    PyJWT refuses to build this, so it is assembled by hand, as an attacker would.
    """
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    claims = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(signer.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"
