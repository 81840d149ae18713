"""comments_api_database_errors_total: each database refusal the app answers is counted
under its cause. The drills that make a real database refuse on purpose (read-only, a
sequence behind max(id), a full volume, a held lock) assert their counts in
tests/test_fault_drills.py with ``database_errors`` below."""

from __future__ import annotations

import contextlib
from collections import Counter

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from comments_api.app import create_app
from comments_api.settings import Settings
from comments_api.store.repository import migrate
from comments_api.telemetry.metrics import DATABASE_ERROR_CAUSES
from comments_api.web.common import EXTENSION_KEY

from .support import free_port

NAME = "comments_api_database_errors_total"


def database_errors(exposition: str) -> Counter[str]:
    """The counter by cause, from a /metrics answer; every cause must have its series
    before anything failed (rate() and the alerts need them from the start)."""
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == NAME:
                found[sample.labels["cause"]] = int(sample.value)
    assert set(found) == set(DATABASE_ERROR_CAUSES), found
    return found


def scraped(client: FlaskClient) -> Counter[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return database_errors(response.get_data(as_text=True))


def test_a_database_that_does_not_answer_is_counted_per_request_not_per_probe() -> None:
    # Nothing listens on this port: every connection attempt is refused.
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    client = create_app(Settings(database_url=url, db_pool_timeout=1)).test_client()
    before = scraped(client)
    # Readiness probes (and the scrape, which asks readiness for comments_api_ready) fail
    # without counting: a probe every few seconds per pod would count the probe interval,
    # not refused readers, and comments_api_ready already says the database is unreachable.
    for _ in range(3):
        assert client.get("/readyz").status_code == 503
    assert scraped(client) == before
    assert client.post("/api/v1/contents/1/comments", json={"body": "x"}).status_code == 503
    assert client.get("/api/v1/contents/1/comments").status_code == 503
    after = scraped(client)
    assert after - before == Counter({"unavailable": 2})


def test_an_exhausted_pool_is_counted_as_pool_exhausted(tmp_path) -> None:
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path}/c.db", db_pool_size=1, db_pool_timeout=0.2)
    )
    client = app.test_client()
    engine = app.extensions[EXTENSION_KEY].repo.engine
    migrate(engine)
    before = scraped(client)
    with contextlib.ExitStack() as held:
        # The pool's size and its overflow, all checked out (as tests/test_health.py does).
        for _ in range(engine.pool.size() + engine.pool._max_overflow):  # type: ignore[attr-defined]
            held.enter_context(engine.connect())
        assert client.get("/api/v1/contents/pool/comments").status_code == 503
    assert scraped(client) - before == Counter({"pool_exhausted": 1})
