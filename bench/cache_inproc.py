"""In-process cost of a cached read (issue 11 item 2), without HTTP server or network.

Flask test client on a temporary SQLite file, metrics and access log off; CPU time per
request, best of 7 batches of 500. Compares the cache off, on (with SQLite's
`PRAGMA data_version` first check), on without that check, and a 304 revalidation.
Run: .venv/bin/python bench/cache_inproc.py
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from comments_api.app import create_app
from comments_api.settings import Settings
from comments_api.store.repository import make_engine, migrate
from comments_api.web.common import EXTENSION_KEY


def main() -> None:
    logging.disable(logging.INFO)  # no access log lines
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()

        def app(**overrides: object) -> Flask:
            settings = Settings(database_url=url, ratelimit_enabled=False, metrics_enabled=False)
            return create_app(replace(settings, **overrides))  # type: ignore[arg-type]

        writer = app().test_client()
        for i in range(25):
            writer.post(
                "/api/comment/new",
                json={"email": f"u{i}@b.example", "comment": f"comment {i}", "content_id": "1"},
            )
        cases = {
            "cache off (READ_CACHE_ENTRIES=0)": app(read_cache_entries=0),
            "cache on": app(),
            "cache on, no data_version check": app(),
        }
        markers = cases["cache on, no data_version check"].extensions[EXTENSION_KEY]
        markers.comments.cache.markers.generation = lambda: None
        ids = "&".join(f"content_id={i}" for i in range(50))
        routes = {
            "legacy list": "/api/comment/list/1",
            "v1 page": "/api/v1/contents/1/comments",
            "counts 50": f"/api/v1/counts?{ids}",
        }
        for route, path in routes.items():
            for name, application in cases.items():
                print(f"{route:12} {name:34} {_cost(application.test_client(), path):7.1f} us")
            client = cases["cache on"].test_client()
            etag = {"If-None-Match": client.get(path).headers["ETag"]}
            print(f"{route:12} {'304 (If-None-Match)':34} {_cost(client, path, etag):7.1f} us")


def _cost(client: FlaskClient, path: str, headers: dict[str, str] | None = None) -> float:
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(500):
            client.get(path, headers=headers)
        best = min(best, (time.process_time() - start) / 500)
    return best * 1e6


if __name__ == "__main__":
    main()
