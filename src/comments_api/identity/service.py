"""IdentityService: API keys (issue, list, revoke) and who a bearer token is. No Flask.

The CLI issues and revokes keys through it; the request guard (identity/guards.py) asks
it who a token belongs to. Time (a key's created/revoked/last-used stamps) comes from the
injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..clock import Clock, utcnow
from ..store.repository import Repository
from .credentials import (
    ApiKeyRecord,
    AuthError,
    Identity,
    JwtVerifier,
    NewApiKey,
    api_key_id,
    check_api_key,
    generate_api_key,
    is_api_key,
    parse_scopes,
)

MAX_KEY_NAME_LENGTH = 100


class IdentityService:
    def __init__(
        self, repo: Repository, jwt: JwtVerifier | None = None, clock: Clock = utcnow
    ) -> None:
        self.repo = repo
        self.jwt = jwt  # None: bearer tokens other than API keys are refused
        self.clock = clock

    def authenticate(self, token: str) -> Identity:
        """The identity behind a bearer token; AuthError or AuthUnavailable otherwise."""
        if is_api_key(token):
            record = self.repo.get_api_key(api_key_id(token))
            identity = check_api_key(token, record)
            assert record is not None
            self.repo.touch_api_key(record, now=self.clock())
            return identity
        if self.jwt is not None:
            return self.jwt.verify(token)
        raise AuthError("this service does not accept JWTs; use an API key")

    def issue_key(self, name: str, scopes: Iterable[str]) -> NewApiKey:
        """A new key; only its hash is stored, so the caller must show it now or never.

        ValueError for a bad name or scope list."""
        if not name.strip() or len(name) > MAX_KEY_NAME_LENGTH:
            raise ValueError(f"must be 1 to {MAX_KEY_NAME_LENGTH} characters")
        name = name.strip()
        chosen = parse_scopes(scopes)
        new = generate_api_key()
        self.repo.add_api_key(new.key_id, name, new.key_hash, chosen, now=self.clock())
        return new

    def list_keys(self) -> list[ApiKeyRecord]:
        return self.repo.list_api_keys()

    def revoke_key(self, key_id: str) -> bool:
        """False when there is no active key with this id."""
        return self.repo.revoke_api_key(key_id, now=self.clock())
