"""Read-your-write through the per-worker read caches, on real `comments-api serve`.

One instance with two workers on SQLite, and two instances (two workers each) sharing one
real PostgreSQL: a write acknowledged by one worker or instance is in the very next legacy
list, v1 page and counts answered by any other, and so are moderation hides, deletes and
edits. Each request opens its own connection, so the kernel spreads them over the workers;
the access log proves both workers answered reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from comments_api.identity.credentials import SCOPE_MODERATE, generate_api_key
from comments_api.store.repository import Repository, make_engine, migrate

from .authkit import AUDIENCE, ISSUER, bearer, hs_signer
from .support import ServiceProcess

ROUNDS = 20  # writes per check; each followed by reads from the other side
CONTENT = "rw-1"


@pytest.fixture
def signer():
    return hs_signer()


def _env(database_url: str, signer) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "info",  # the access log says which worker answered
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }


def _moderator_key(database_url: str) -> str:
    engine = make_engine(database_url)
    migrate(engine)
    new = generate_api_key()
    Repository(engine).add_api_key(new.key_id, "rw-moderator", new.key_hash, [SCOPE_MODERATE])
    engine.dispose()
    return new.key


class Reader:
    """Reads one content through every cached route of one instance, new connection each,
    revalidating what it holds as a browser does: a 304 is served from the bytes it kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.held: dict[str, tuple[str, bytes]] = {}  # path -> (ETag, body)

    def get(self, path: str, conditional: bool) -> bytes:
        headers = {"Connection": "close"}
        if conditional and path in self.held:
            headers["If-None-Match"] = self.held[path][0]
        response = requests.get(f"{self.base}{path}", headers=headers, timeout=10)
        assert response.status_code in (200, 304, 404), response.text
        if response.status_code == 304:
            # Only for the very bytes a fresh read gives (an ETag names bytes, not writes:
            # an edit leaves the counts as they were, and their tag with them).
            fresh = requests.get(f"{self.base}{path}", headers={"Connection": "close"}, timeout=10)
            assert (fresh.headers["ETag"], fresh.content) == self.held[path], path
            return self.held[path][1]
        if response.status_code == 200:
            self.held[path] = (response.headers["ETag"], response.content)
        return response.content if response.status_code == 200 else b"[]"

    def warm(self) -> None:
        """Plain reads: whichever worker answers caches the current state."""
        self.state(conditional=False)

    def state(
        self, conditional: bool = True
    ) -> tuple[list[str], list[tuple[int, str | None]], int]:
        legacy = json.loads(self.get(f"/api/comment/list/{CONTENT}", conditional))
        page = json.loads(self.get(f"/api/v1/contents/{CONTENT}/comments?limit=100", conditional))
        counts = json.loads(
            self.get(f"/api/v1/counts?content_id={CONTENT}&content_id=other", conditional)
        )
        return (
            [c["comment"] for c in legacy],
            [(c["id"], c["body"]) for c in page["items"]],
            counts["counts"][CONTENT],
        )


def _read_your_writes(writers: list[str], readers: list[Reader], signer, moderator: str) -> None:
    """Writes alternate over ``writers``; every write is checked on every reader next."""
    alice = {**bearer(signer.token("alice")), "Connection": "close"}
    mod = {**bearer(moderator), "Connection": "close"}
    expected: list[tuple[int, str]] = []
    for i in range(ROUNDS):
        for reader in readers:
            reader.warm()
        body = f"comment {i}"
        created = requests.post(
            f"{writers[i % len(writers)]}/api/v1/contents/{CONTENT}/comments",
            json={"body": body},
            headers=alice,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        expected.append((created.json()["id"], body))
        for reader in readers:
            legacy, page, count = reader.state()
            assert page == expected, reader.base
            assert legacy == [b for _, b in expected], reader.base
            assert count == len(expected), reader.base

    def then(check_writer: str, method: str, path: str, **kw) -> None:
        response = requests.request(method, f"{check_writer}{path}", timeout=10, **kw)
        assert response.status_code in (200, 204), response.text

    first, second, third = (cid for cid, _ in expected[:3])
    steps = [
        ("POST", "/api/v1/moderation/comments", {"json": {"action": "hide", "ids": [first]}}, mod),
        ("PATCH", f"/api/v1/comments/{second}", {"json": {"body": "edited"}}, alice),
        ("DELETE", f"/api/v1/comments/{third}", {}, mod),
    ]
    for n, (method, path, kw, headers) in enumerate(steps):
        for reader in readers:
            reader.warm()
        then(writers[n % len(writers)], method, path, headers=headers, **kw)
        if method == "POST":
            expected = [(cid, b) for cid, b in expected if cid != first]
        elif method == "PATCH":
            expected = [(cid, "edited" if cid == second else b) for cid, b in expected]
        for reader in readers:
            legacy, page, count = reader.state()
            published = [
                (cid, b) for cid, b in expected if not (method == "DELETE" and cid == third)
            ]
            assert legacy == [b for _, b in published], (method, reader.base)
            assert count == len(published), (method, reader.base)
            if method == "DELETE":
                # The tombstone keeps its place in the v1 thread, without its text.
                assert page == [(cid, None if cid == third else b) for cid, b in expected]
            else:
                assert page == expected, (method, reader.base)


def _list_pids(svc: ServiceProcess) -> set[int]:
    pids = set()
    for line in svc.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        route = str(record.get("route"))
        if record.get("logger") == "comments_api.access" and record.get("method") == "GET":
            pids.update([record["pid"]] if "comments" in route or "list" in route else [])
    return pids


@pytest.fixture
def sqlite_service(tmp_path: Path, signer) -> Iterator[tuple[ServiceProcess, str]]:
    url = f"sqlite:///{tmp_path / 'comments.db'}"
    key = _moderator_key(url)
    with ServiceProcess(_env(url, signer), tmp_path, workers=2) as svc:
        yield svc, key


def test_read_your_write_across_the_workers_of_one_instance(sqlite_service, signer) -> None:
    svc, key = sqlite_service
    _read_your_writes([svc.base], [Reader(svc.base)], signer, key)
    assert len(_list_pids(svc)) == 2, "every read went to one worker: nothing was proven"
    metrics = requests.get(f"{svc.base}/metrics", timeout=10).text
    server_errors = [
        line for line in metrics.splitlines() if 'status="5' in line and not line.endswith(" 0.0")
    ]
    assert server_errors == []  # each route's 5xx series is there from the start, at 0


def test_read_your_write_across_two_instances_on_one_postgresql(
    postgres_url: str, tmp_path: Path, signer
) -> None:
    key = _moderator_key(postgres_url)
    env = _env(postgres_url, signer)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        ServiceProcess(env, tmp_path / "a", workers=2) as a,
        ServiceProcess(env, tmp_path / "b", workers=2) as b,
    ):
        # Writes alternate between the instances; both read after every one.
        _read_your_writes([a.base, b.base], [Reader(b.base), Reader(a.base)], signer, key)
        assert len(_list_pids(a)) == 2
        assert len(_list_pids(b)) == 2
        # Same state, same code: both instances give one ETag (a CDN can revalidate either).
        tags = {
            requests.get(f"{s.base}/api/v1/contents/{CONTENT}/comments", timeout=10).headers["ETag"]
            for s in (a, b)
        }
        assert len(tags) == 1
        etag = tags.pop()
        for s in (a, b):
            response = requests.get(
                f"{s.base}/api/v1/contents/{CONTENT}/comments",
                headers={"If-None-Match": etag},
                timeout=10,
            )
            assert response.status_code == 304
            assert response.content == b""
