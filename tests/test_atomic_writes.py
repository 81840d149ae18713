"""Atomic abuse checks and idempotent creates under a real multi-worker `comments-api serve`.

Identical posts are released together from several threads (a barrier), so they reach
different gunicorn workers at the same instant: exactly one may be stored.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from comments_api.store.repository import comments, idempotency_keys, make_engine

from .support import ServiceProcess

WORKERS = 3
SIMULTANEOUS = 6
ROUNDS = 6


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'comments.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false"}
    with ServiceProcess(env, tmp_path, workers=WORKERS) as service:
        yield service, url


def fire_together(n: int, send) -> list[requests.Response]:
    """Run ``send(i)`` in n threads released at the same instant."""
    barrier = threading.Barrier(n)
    results: list[requests.Response | BaseException | None] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = send(i)
        except BaseException as exc:  # surfaced below, with the others
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in results:
        if not isinstance(r, requests.Response):
            raise AssertionError(f"a request failed: {r!r}")
    return results  # type: ignore[return-value]


def stored(url: str, where) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(comments).where(where)).scalar_one()
            )
    finally:
        engine.dispose()


def duplicate_rejections(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "comments_api_comments_rejected_total"
                and sample.labels.get("reason") == "duplicate"
            ):
                return sample.value
    return 0.0


def test_simultaneous_identical_posts_store_exactly_one(served):
    service, url = served
    before = duplicate_rejections(service.base)
    conflicts = 0
    v1 = f"{service.base}/api/v1/contents/race/comments"
    legacy = f"{service.base}/api/comment/new"
    for round_ in range(ROUNDS):
        text = f"same words, round {round_} {uuid.uuid4().hex[:6]}"

        def send(i: int, text: str = text) -> requests.Response:
            # Both APIs at once: they share one author key and one rule.
            if i % 2:
                return requests.post(
                    legacy,
                    json={"email": "Racer@example.com", "comment": text, "content_id": "race"},
                    timeout=30,
                )
            return requests.post(v1, json={"body": text, "email": "racer@example.com"}, timeout=30)

        statuses = sorted(r.status_code for r in fire_together(SIMULTANEOUS, send))
        accepted = [s for s in statuses if s in (200, 201)]
        assert len(accepted) == 1, statuses
        assert statuses.count(409) == SIMULTANEOUS - 1, statuses
        conflicts += SIMULTANEOUS - 1
        assert stored(url, comments.c.body == text) == 1
    # Every refusal is counted under the reason the README documents.
    assert duplicate_rejections(service.base) - before == conflicts


def test_simultaneous_posts_never_pass_the_flood_limit(tmp_path, postgres_url):
    env = {"DATABASE_URL": postgres_url, "RATELIMIT_ENABLED": "false", "THREAD_AUTHOR_MAX": "3"}
    with ServiceProcess(env, tmp_path, workers=WORKERS) as service:
        url = f"{service.base}/api/v1/contents/flood/comments"
        responses = fire_together(
            SIMULTANEOUS,
            lambda i: requests.post(
                url, json={"body": f"text {i}", "email": "fl@example.com"}, timeout=30
            ),
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 3 + [429] * (SIMULTANEOUS - 3), statuses
        assert stored(postgres_url, comments.c.content_id == "flood") == 3


def test_concurrent_retries_with_one_key_store_one_comment(served):
    service, url = served
    target = f"{service.base}/api/v1/contents/retry/comments"
    for round_ in range(3):
        key = str(uuid.uuid4())
        body = {"body": f"retried post {round_}", "author_name": "Rita"}

        def send(_: int, body: dict = body, key: str = key) -> requests.Response:
            return requests.post(target, json=body, headers={"Idempotency-Key": key}, timeout=30)

        responses = fire_together(SIMULTANEOUS, send)
        assert {r.status_code for r in responses} == {201}
        # Every caller sees the one comment: same body, same Location.
        assert len({r.text for r in responses}) == 1
        assert len({r.headers["Location"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == (
            SIMULTANEOUS - 1
        )
        assert stored(url, comments.c.body == body["body"]) == 1
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(idempotency_keys)).scalar() == 3
    finally:
        engine.dispose()


def test_a_retry_on_another_replica_replays(tmp_path, postgres_url):
    env = {"DATABASE_URL": postgres_url, "RATELIMIT_ENABLED": "false"}
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    with (
        ServiceProcess(env, first_dir, workers=1) as one,
        ServiceProcess(env, second_dir, workers=1) as other,
    ):
        body = {"body": "posted once, retried elsewhere"}
        headers = {"Idempotency-Key": "replica-key-1"}
        path = "/api/v1/contents/replicas/comments"
        original = requests.post(f"{one.base}{path}", json=body, headers=headers, timeout=10)
        retry = requests.post(f"{other.base}{path}", json=body, headers=headers, timeout=10)
        assert (original.status_code, retry.status_code) == (201, 201)
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.text == original.text
        assert retry.headers["Location"] == original.headers["Location"]
    assert stored(postgres_url, comments.c.content_id == "replicas") == 1
