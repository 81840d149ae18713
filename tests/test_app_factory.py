"""The app factory's startup checks, and its response class."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Response
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from comments_api.app import CommentsApp, CommentsResponse, _no_coroutines

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


# Responses as the app may build them: any status, with or without a length, a Location
# (relative, absolute, non-ASCII), a Content-Location, a streamed body.
_STATUSES = [101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 400, 404, 409, 429, 500, 503]
_EXTRA_HEADERS = st.lists(
    st.sampled_from(
        [
            ("Location", "/v1/comments/7"),
            ("Location", "https://example.test/a b/ç"),
            ("Content-Location", "/api/ünï"),
            ("ETag", '"abc"'),
            ("Cache-Control", "private, no-cache"),
            ("X-Request-ID", "0" * 32),
            ("Content-Encoding", "identity"),
        ]
    ),
    max_size=4,
)


def _respond(cls: type[Response], status: int, extra: list[tuple[str, str]], body: str) -> Any:
    if body == "stream":
        response = cls(iter([b"a", b"bc"]), status=status)
    elif body == "no-length":
        response = cls(b"abc", status=status)
        del response.headers["Content-Length"]
    else:
        response = cls(b'{"ok":true}', status=status, content_type="application/json")
    for name, value in extra:
        response.headers.add(name, value)
    return response


@settings(max_examples=400, deadline=None)
@given(
    status=st.sampled_from(_STATUSES),
    extra=_EXTRA_HEADERS,
    body=st.sampled_from(["bytes", "stream", "no-length"]),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_the_lean_response_sends_what_werkzeug_sends(status, extra, body, method):
    """CommentsResponse skips werkzeug's header copy only where that copy changes nothing:
    the status line, the headers and the body on the wire are werkzeug's, for every
    generated response (a dropped length, an unresolved Location or a 304 that keeps its
    entity headers would each differ), except that a 204 carries no Content-Type."""
    environ = EnvironBuilder(path="/api/comment/list/1", method=method).get_environ()
    sent = []
    for cls in (CommentsResponse, Response):
        response = _respond(cls, status, extra, body)
        captured: dict[str, Any] = {}

        def start_response(line: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
            captured["line"], captured["headers"] = line, headers  # noqa: B023

        chunks = b"".join(response(environ, start_response))
        sent.append((captured["line"], captured["headers"], chunks))
    ours, werkzeugs = sent
    if status == 204:
        # The one deliberate difference: no content, so no Content-Type (Flask's default).
        line, headers, chunks = werkzeugs
        werkzeugs = (line, [(n, v) for n, v in headers if n.lower() != "content-type"], chunks)
        assert not [n for n, _ in ours[1] if n.lower() == "content-type"]
    assert ours == werkzeugs


def test_the_app_answers_with_the_lean_response():
    """The shortcut is in use: a plain answer goes out with the response's own headers
    object, an answer with a Location through werkzeug's copy."""
    app = CommentsApp("factory-test")
    assert app.response_class is CommentsResponse
    environ = EnvironBuilder(path="/").get_environ()
    plain = CommentsResponse(b"{}", content_type="application/json")
    assert plain.get_wsgi_headers(environ) is plain.headers
    moved = CommentsResponse(b"", status=302, headers={"Location": "/elsewhere"})
    copied = moved.get_wsgi_headers(environ)
    assert copied is not moved.headers
    assert copied["Location"] == "/elsewhere"
