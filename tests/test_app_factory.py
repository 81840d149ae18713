"""The app factory's startup checks."""

from __future__ import annotations

import pytest

from comments_api.app import CommentsApp, _no_coroutines

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network


def test_an_async_view_or_hook_is_refused_at_startup():
    """CommentsApp skips Flask's per-request coroutine check, so an ``async def`` must
    never reach it: create_app refuses to start with one."""
    app = CommentsApp("factory-test")

    @app.get("/sync")
    def plain() -> str:
        return "ok"

    _no_coroutines(app)  # plain functions only: fine

    @app.before_request
    async def hook() -> None:
        return None

    with pytest.raises(RuntimeError, match="hook"):
        _no_coroutines(app)
