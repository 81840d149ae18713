"""Credentials and authorisation rules: API keys, JWTs, scopes. Plain Python, no Flask.

Two kinds of caller:
- API keys (``cak_<keyid>_<secret>``) for trusted callers: the site's backend, moderators,
  ops. Only a SHA-256 hash is stored; the key is high-entropy, so a fast hash suffices.
- JWTs from the site's identity provider for logged-in readers. The token's claims are
  the author identity: a reader never chooses who they post as.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..comments.rules import Comment, DomainError, is_blank, is_single_line_text
from ..settings import Settings, SettingsError

log = logging.getLogger(__name__)

SCOPE_WRITE = "comments:write"
SCOPE_MODERATE = "comments:moderate"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_WRITE, SCOPE_MODERATE, SCOPE_ADMIN)

KIND_API_KEY = "api_key"
KIND_JWT = "jwt"

API_KEY_PREFIX = "cak_"
_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")

# Only these algorithms exist for us, each bound to one key type: "none", HS384, PS*,
# and HS256 verified with an RSA public key (algorithm confusion) can never succeed.
_ASYMMETRIC = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}
_HMAC = "HS256"
_JWKS_MIN_REFRESH = 60.0  # unknown kids never make us hammer the identity provider
_JWKS_LIFESPAN = 300.0  # a fetched key set is used this long before it is fetched again
_JWKS_TIMEOUT = 5.0
_JWKS_RETRY = 5.0  # with no key set yet, a failed fetch is not retried sooner (Retry-After)
# An email address inside a provider's name claim. Auth0 sets `name` to the address of a
# reader who gave none, Entra ID's `preferred_username` is usually the sign-in address:
# shown as the author, it published the address public answers never show.
_ADDRESS_IN_NAME = re.compile(r"[^\s@<>()\[\]]+@[^\s@<>()\[\]]+\.[^\s@<>()\[\]]+")


class AuthError(Exception):
    """The credential is invalid (401). The message is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(DomainError):
    """A known caller may not do this (not the author, edit window closed...): 403."""

    code = "forbidden"
    http_status = 403


class AuthUnavailable(Exception):
    """We cannot check the credential right now (identity provider unreachable): 503.

    The message says why, for the log; the caller only learns to retry."""


@dataclass(frozen=True)
class Identity:
    kind: str  # api_key | jwt
    id: str  # the key id, or the token subject
    scopes: frozenset[str]
    email: str | None = None
    name: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log and rate limiter name this caller."""
        return f"{self.kind}:{self.id}"

    @property
    def is_reader(self) -> bool:
        return self.kind == KIND_JWT

    def has(self, scope: str) -> bool:
        return SCOPE_ADMIN in self.scopes or scope in self.scopes


# --- API keys -----------------------------------------------------------------------
@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    key: str  # shown once, never stored
    key_hash: str


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def parse_scopes(values: Iterable[str]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(SCOPES)}")
    return scopes


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> NewApiKey:
    key_id = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key_id=key_id, key=key, key_hash=hash_api_key(key))


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def api_key_id(token: str) -> str:
    """The key id embedded in a presented key; AuthError when it cannot be one of ours."""
    key_id, sep, secret = token[len(API_KEY_PREFIX) :].partition("_")
    if not sep or not secret or not _KEY_ID_RE.match(key_id):
        raise AuthError("malformed API key")
    return key_id


def check_api_key(token: str, record: ApiKeyRecord | None) -> Identity:
    """The identity of a presented key, given the stored record for its id."""
    if record is None or not hmac.compare_digest(hash_api_key(token), record.key_hash):
        raise AuthError("unknown API key")
    if record.revoked_at is not None:
        raise AuthError("this API key has been revoked")
    return Identity(kind=KIND_API_KEY, id=record.id, scopes=frozenset(record.scopes))


# --- JWTs ---------------------------------------------------------------------------
class JwtVerifier:
    """Verifies reader tokens against the configured keys; built once per process."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway
        self._secret = settings.jwt_hs256_secret
        self._previous_secret = settings.jwt_hs256_previous_secret
        self._static_keys: list[tuple[str | None, Any]] = []
        self._client: jwt.PyJWKClient | None = None
        if settings.jwt_jwks_file:
            self._static_keys = _load_key_file(settings.jwt_jwks_file)
        if settings.jwt_jwks_url:
            # PyJWKClient caches the set for `lifespan` and refetches it for an unknown kid
            # at most once per `cooldown_duration` (public API, PyJWT >= 2.15 as declared):
            # forged kids can't make us hammer the identity provider.
            try:
                self._client = _JwksClient(settings.jwt_jwks_url)
            except jwt.PyJWKClientError as exc:  # e.g. a URL without http(s)://
                raise SettingsError(f"JWT_JWKS_URL: {exc}") from None
        self.enabled = bool(self._secret or self._static_keys or self._client)
        if self.enabled and not (self.issuer and self.audience):
            # A token minted for another site of the same provider must not work here.
            raise SettingsError("JWT_ISSUER and JWT_AUDIENCE are required when JWTs are enabled")
        # Never the values themselves: this message is printed and may be logged.
        if self._secret is not None and len(self._secret.encode("utf-8")) < 32:
            raise SettingsError("JWT_HS256_SECRET must be at least 32 bytes")
        if self._previous_secret is not None:
            if self._secret is None:
                # Alone it would accept tokens from a secret being retired and nothing else.
                raise SettingsError(
                    "JWT_HS256_PREVIOUS_SECRET is only accepted beside JWT_HS256_SECRET "
                    "(the secret being rotated in)"
                )
            if len(self._previous_secret.encode("utf-8")) < 32:
                raise SettingsError("JWT_HS256_PREVIOUS_SECRET must be at least 32 bytes")
            if self._previous_secret == self._secret:
                # Most likely the new secret was never put in place: the rotation would
                # silently not happen.
                raise SettingsError(
                    "JWT_HS256_PREVIOUS_SECRET is the same as JWT_HS256_SECRET; set "
                    "JWT_HS256_SECRET to the new secret, or unset the previous one"
                )

    def verify(self, token: str) -> Identity:
        if not self.enabled:
            raise AuthError("this service does not accept JWTs; use an API key")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            # A list or object here is a client's mistake; as a dict key it raised TypeError.
            raise AuthError("malformed token: its header has no algorithm name")
        if alg == _HMAC and self._secret is None:
            raise AuthError("HS256 tokens are not accepted here")
        if alg != _HMAC and alg not in _ASYMMETRIC:
            raise AuthError(f"tokens signed with {alg[:16]!r} are not accepted")
        try:
            claims = self._claims(token, header.get("kid"), alg)
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token comes from an issuer this service does not trust") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token signature is invalid") from None
        except jwt.PyJWTError:
            # Undecodable, or signed by a trusted key with claims of the wrong type ("exp" a
            # string, "sub" a number): not a forgery, and saying so sends the IdP's
            # integrator to look at their keys instead of their claims.
            raise AuthError(
                "malformed token: its payload or a claim's type is not what RFC 7519 requires"
            ) from None
        return identity_from_claims(claims)

    def _decode(self, token: str, keys: list[Any], alg: str) -> dict[str, Any]:
        """The verified claims, with the first of ``keys`` the signature holds for (the
        signature is checked before any claim, so a claim's error means the key was right).
        """

        def decode(key: Any) -> dict[str, Any]:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )

        for key in keys[:-1]:
            with contextlib.suppress(jwt.InvalidSignatureError):
                return decode(key)
        return decode(keys[-1])

    def _claims(self, token: str, kid: object, alg: str) -> dict[str, Any]:
        """The verified claims. RS256/ES256 tokens are checked against the key file's keys
        first, then (unless a file key names the token's kid) the provider's: a pinned PEM
        beside JWT_JWKS_URL has no kid, so it matched every token and used to hide the
        provider's keys. The provider is only asked when the file's keys refuse the token."""
        if alg == _HMAC:
            # The current secret first: after the issuers switch, most tokens are its.
            hs_keys = [self._secret, self._previous_secret]
            return self._decode(token, [key for key in hs_keys if key is not None], alg)
        kid = kid if isinstance(kid, str) else None
        local = [
            key
            for key_kid, key in self._static_keys
            if _verifies(alg, key) and (kid is None or key_kid in (None, kid))
        ]
        named = kid is not None and any(
            key_kid == kid and _verifies(alg, key) for key_kid, key in self._static_keys
        )
        if local:
            if named or self._client is None:
                return self._decode(token, local, alg)
            with contextlib.suppress(jwt.InvalidSignatureError):
                return self._decode(token, local, alg)
        client = self._client
        if client is None:
            raise AuthError("the token was not signed by a key this service trusts")
        # Unreachable: a 503 even when the file's keys refused the token, since the
        # provider's, which may have signed it, could not be asked.
        remote = _provider_keys(client, kid, alg)
        if not remote:
            if local:
                raise AuthError("the token signature is invalid")
            raise AuthError("the token was not signed by a key this service trusts")
        return self._decode(token, remote, alg)


def _provider_keys(client: jwt.PyJWKClient, kid: str | None, alg: str) -> list[Any]:
    """The JWKS URL's keys that may have signed the token: the one its ``kid`` names or,
    without one (optional in RFC 7515), every key of the algorithm's type: a provider
    that rotates keys without naming them must not see half its tokens refused."""
    try:
        if kid is None:
            # Every signing key, named or not (get_signing_keys skips kid-less ones).
            jwks = [jwk for jwk in client.get_jwk_set().keys if jwk.public_key_use in ("sig", None)]
        else:
            jwks = [client.get_signing_key(kid)]
    except jwt.PyJWKClientConnectionError as exc:
        # Logged, never shown: operators must tell a timeout from a redirect or junk.
        raise AuthUnavailable(f"the identity provider's keys are unreachable: {exc}") from None
    except jwt.PyJWKClientError:
        return []
    return [jwk.key for jwk in jwks if _verifies(alg, jwk.key)]


def _verifies(alg: str, key: Any) -> bool:
    """Whether ``key`` can check an ``alg`` signature: its type and, for ES256, its curve
    (a P-384 key in the set is for ES384 tokens, and PyJWT refuses it as a bad key)."""
    if not isinstance(key, _ASYMMETRIC[alg]):
        return False
    return not isinstance(key, ec.EllipticCurvePublicKey) or isinstance(key.curve, ec.SECP256R1)


class _JwksClient(jwt.PyJWKClient):
    """PyJWKClient that survives a broken identity provider.

    - Anything the endpoint sends that is not a usable key set (an HTML error page, a
      truncated body, an empty set) is a connection error: a 503, not a 500.
    - When a refresh fails, the last good set stays in use for another lifespan: the keys
      the provider signed with minutes ago still verify its readers' tokens.
    - With no set yet, a failure is remembered for ``_JWKS_RETRY`` seconds: requests queued
      on the client's lock behind a slow provider fail at once instead of each waiting out
      the timeout in turn.
    """

    def __init__(self, uri: str) -> None:
        super().__init__(
            uri,
            lifespan=_JWKS_LIFESPAN,
            timeout=_JWKS_TIMEOUT,
            cooldown_duration=_JWKS_MIN_REFRESH,
        )
        self._last_good: jwt.PyJWKSet | None = None
        self._retry_at = 0.0

    def fetch_data(self) -> Any:
        if self._last_good is None and time.monotonic() < self._retry_at:
            raise jwt.PyJWKClientConnectionError("the last fetch failed moments ago")
        try:
            data = super().fetch_data()  # stores the parsed set in the cache on success
        except (jwt.PyJWTError, ValueError, OSError, RecursionError) as exc:
            if self._last_good is not None:
                log.warning("cannot refresh the JWKS, still using the last good one: %s", exc)
                return self._last_good  # get_jwk_set caches it again for a lifespan
            self._retry_at = time.monotonic() + _JWKS_RETRY
            raise jwt.PyJWKClientConnectionError(f"unusable JWKS: {exc}") from None
        if self.jwk_set_cache is not None:
            self._last_good = self.jwk_set_cache.get()
        return data


def _load_key_file(path: str) -> list[tuple[str | None, Any]]:
    """A JWKS document or a PEM public key, as (kid, public key) pairs."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"JWT_JWKS_FILE: cannot read {path}: {exc}") from None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return [(None, load_pem_public_key(raw))]
        keys = jwt.PyJWKSet.from_dict(json.loads(raw)).keys
        return [(k.key_id, k.key) for k in keys]
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise SettingsError(
            f"JWT_JWKS_FILE: {path} is not a JWKS or PEM public key: {exc}"
        ) from None


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """Readers may always comment; moderation scopes only when the provider grants them."""
    subject = claims.get("sub")
    # Claims are stored with the comment: a NUL or a lone surrogate there was a 500.
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > 200
        or not is_single_line_text(subject)
    ):
        raise AuthError("the token's 'sub' claim is not usable")
    granted: list[str] = []
    for claim in ("scope", "scp"):
        # Each as a space-separated string (RFC 9068; Azure AD's scp) or a list of strings
        # (Okta's scp): providers differ, the grant they mean does not.
        value = claims.get(claim)
        if isinstance(value, str):
            granted += value.split()
        elif isinstance(value, list):
            granted += [s for s in value if isinstance(s, str)]
    scopes = frozenset({SCOPE_WRITE, *(s for s in granted if s in SCOPES)})
    email = claims.get("email")
    verified = claims.get("email_verified")
    if (
        # An address the provider says it has not verified is whatever the reader typed:
        # shown as their avatar hash and to moderators, it could be anyone's (OIDC Core 5.1).
        # Sign in with Apple sends the claim as a string ("false") as often as a boolean.
        verified is False
        or (isinstance(verified, str) and verified.strip().lower() == "false")
        or not isinstance(email, str)
        or "@" not in email
        or len(email) > 254
        or not is_single_line_text(email)
    ):
        email = None
    # The first usable of the two. A name that prints nothing (empty, a zero-width space,
    # tag characters) is no name, as for the body's author_name, nor one holding an email
    # address; with neither the reader is anonymous.
    names = (
        raw.strip()[:80]
        for raw in (claims.get("name"), claims.get("preferred_username"))
        if isinstance(raw, str)
        and is_single_line_text(raw)
        and _ADDRESS_IN_NAME.search(raw) is None
    )
    name = next((n for n in names if not is_blank(n)), None)
    return Identity(kind=KIND_JWT, id=subject, scopes=scopes, email=email, name=name)


# --- authorisation decisions --------------------------------------------------------
def is_author(identity: Identity | None, comment: Comment) -> bool:
    """Authorship is proven only by a token subject: an email in a body proves nothing."""
    return (
        identity is not None
        and identity.is_reader
        and comment.author_subject is not None
        # As bytes: compare_digest raises TypeError for a str with non-ASCII ("josé").
        and hmac.compare_digest(
            comment.author_subject.encode("utf-8", "surrogatepass"),
            identity.id.encode("utf-8", "surrogatepass"),
        )
    )


def may_delete(identity: Identity | None, comment: Comment) -> bool:
    return identity is not None and (identity.has(SCOPE_MODERATE) or is_author(identity, comment))


def edit_window_open(comment: Comment, now: datetime, window_seconds: float) -> bool:
    return now - comment.created_at <= timedelta(seconds=window_seconds)
