"""Run at image build time (Dockerfile): compile the bytecode the server really uses.

The runtime root filesystem is read-only, so Python cannot cache bytecode at run time,
and compiling everything would double the image's Python payload. Instead this imports
what `comments-api serve` imports (CLI, gunicorn, app, migrations, one request of each
kind) once, with bytecode writing on, against the runtime image's own interpreter and
sources; only those modules get a __pycache__. Then it deletes itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="warm-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'warm.db'}",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        LOG_LEVEL="warning",
    )
    (workdir / "metrics").mkdir()

    import gunicorn.arbiter
    import gunicorn.workers.gthread
    import gunicorn.workers.sync  # noqa: F401

    from comments_api import cli, gunicorn_conf, server  # noqa: F401
    from comments_api.app import create_app
    from comments_api.settings import Settings
    from comments_api.storage import make_engine, migrate

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    client = create_app(settings).test_client()
    for method, path, body in (
        ("GET", "/readyz", None),
        ("POST", "/api/comment/new", {"email": "a@example.com", "comment": "hi", "content_id": 1}),
        ("GET", "/api/comment/list/1", None),
        ("GET", "/api/v1/contents/1/comments", None),
        ("GET", "/metrics", None),
        ("GET", "/no-such-page", None),
    ):
        client.open(path, method=method, json=body)

    for child in sorted(workdir.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    workdir.rmdir()
    Path(__file__).unlink()
    print(f"bytecode compiled for {len(sys.modules)} modules", flush=True)


if __name__ == "__main__":
    main()
