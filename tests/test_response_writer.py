"""The workers' response writer (comments_api.worker.CoalescingResponse) puts exactly the
bytes on the wire that gunicorn's own Response does - only in fewer sends. Both write the
same app's answers to real socket pairs and the outputs are compared byte for byte (the
Date and the made-up request id aside, and gunicorn's `Server` header, which ours drops)."""

from __future__ import annotations

import io
import re
import select
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest
from gunicorn import http
from gunicorn.config import Config
from gunicorn.http import wsgi
from hypothesis import given, settings
from hypothesis import strategies as st

from comments_api.app import create_app
from comments_api.settings import Settings
from comments_api.store.repository import make_engine, migrate
from comments_api.worker import CoalescingResponse, Outbound, _DateHeader

pytestmark = pytest.mark.unit  # the fast tier: socket pairs, no servers

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def streamed(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    # No Content-Length: gunicorn frames it chunked on HTTP/1.1.
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"first ", b"", b"second"])


def empty(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("204 No Content", [("X-Test", "1")])
    return []


def on_the_wire(
    app: WsgiApp,
    request: bytes,
    response_class: Any,
    *args: Any,
    unsent: list[memoryview] | None = None,
    slow_reader: bool = False,
    blocking: bool = True,
) -> bytes:
    """What a response writer puts on a socket pair for ``app``'s answer. Ours gets
    ``unsent`` (the workers' list for what the socket does not take at once), which is
    then sent as the workers' main loops do (Outbound). ``slow_reader``: a 4 KiB send
    buffer and a reader that starts only after the writer has returned, so a large answer
    cannot go out at once and a writer that waited for the reader would hang. ``blocking``:
    the socket's mode (gunicorn's parser leaves it blocking, our lean reader not)."""
    cfg = Config()
    ours, theirs = socket.socketpair()
    received: list[bytes] = []
    written = threading.Event()

    def read_all() -> None:
        if slow_reader:
            written.wait(10)
        while chunk := theirs.recv(65536):
            received.append(chunk)

    with ours, theirs:
        if slow_reader:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(blocking)
        if unsent is not None:
            args = (*args, unsent)
        reader = threading.Thread(target=read_all)
        reader.start()
        req = next(http.get_parser(cfg, [request], ("127.0.0.1", 40000)))
        resp, environ = wsgi.create(
            req, ours, ("127.0.0.1", 40000), ("127.0.0.1", 8000), cfg, response_class, args
        )
        respiter = app(environ, resp.start_response)
        if isinstance(respiter, environ["wsgi.file_wrapper"]):
            resp.write_file(respiter)  # as the workers do: sendfile when it can
        else:
            for item in respiter:
                resp.write(item)
        resp.close()
        if hasattr(respiter, "close"):
            respiter.close()  # as the workers do (it closes the file of a file wrapper)
        written.set()
        if unsent:
            rest = Outbound.waiting(list(unsent), complete=True)
            while not rest.send(ours):
                select.select([], [ours], [], 5)
        ours.shutdown(socket.SHUT_WR)
        reader.join(timeout=10)
        out = b"".join(received)
    if response_class is wsgi.Response:
        # The one difference by design: ours names no server software (its head has no
        # `Server: gunicorn`, test_serve_server.py); every other byte is gunicorn's.
        assert b"\r\nServer: gunicorn\r\n" in out
        out = out.replace(b"\r\nServer: gunicorn\r\n", b"\r\n", 1)
    # The time, and the request id the app makes up for each request.
    out = re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", out)
    return re.sub(rb"\r\nX-Request-ID: [0-9a-f]{32}\r\n", b"\r\nX-Request-ID: -\r\n", out)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> WsgiApp:
    url = f"sqlite:///{tmp_path_factory.mktemp('writer') / 'comments.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = replace(Settings(database_url=url), ratelimit_enabled=False, metrics_enabled=False)
    flask_app = create_app(settings)
    client = flask_app.test_client()
    for i in range(3):
        client.post(
            "/api/comment/new",
            json={"email": f"u{i}@b.example", "comment": f"c{i}", "content_id": "w"},
        )
    return flask_app


def etag_of(app: WsgiApp) -> str:
    return app.test_client().get("/api/comment/list/w").headers["ETag"]  # type: ignore[attr-defined]


REQUESTS = {
    "list": b"GET /api/comment/list/w HTTP/1.1\r\nHost: a\r\n\r\n",
    "list, closing": b"GET /api/comment/list/w HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "list, HTTP/1.0": b"GET /api/comment/list/w HTTP/1.0\r\n\r\n",
    "HEAD": b"HEAD /api/comment/list/w HTTP/1.1\r\nHost: a\r\n\r\n",
    "not found": b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad JSON": (
        b"POST /api/comment/new HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 3\r\n\r\n{x}"
    ),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_apps_answers_are_byte_identical(app, name):
    request = REQUESTS[name]
    theirs = on_the_wire(app, request, wsgi.Response)
    ours = on_the_wire(app, request, CoalescingResponse, _DateHeader(), unsent=[])
    assert theirs.startswith(b"HTTP/1.")
    assert ours == theirs


def test_a_304_is_byte_identical(app):
    request = (
        b"GET /api/comment/list/w HTTP/1.1\r\nHost: a\r\nIf-None-Match: "
        + etag_of(app).encode()
        + b"\r\n\r\n"
    )
    theirs = on_the_wire(app, request, wsgi.Response)
    assert theirs.startswith(b"HTTP/1.1 304 ")
    assert on_the_wire(app, request, CoalescingResponse, _DateHeader(), unsent=[]) == theirs


@pytest.mark.parametrize("other", [streamed, empty], ids=["chunked", "204"])
def test_chunked_and_empty_answers_are_byte_identical(other):
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    theirs = on_the_wire(other, request, wsgi.Response)
    assert on_the_wire(other, request, CoalescingResponse, _DateHeader(), unsent=[]) == theirs
    if other is streamed:
        assert b"Transfer-Encoding: chunked" in theirs
        assert theirs.endswith(b"6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n")


BIG = bytes(range(256)) * 4096  # 1 MiB: far more than the 4 KiB send buffer


def big_body(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", str(len(BIG)))])
    return [BIG]


def big_file(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Length", str(len(BIG)))])
    return environ["wsgi.file_wrapper"](io.BytesIO(BIG))


def big_streamed(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    # Chunked: the head goes out with the small first piece, the large one after it.
    start_response("200 OK", [])
    return iter([b"first", BIG, b"tail"])


def big_real_file(tmp_path: Any) -> WsgiApp:
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", str(len(BIG)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # the wrapper closes it

    return app


@pytest.mark.parametrize("blocking", [False, True], ids=["lean path", "parser path"])
@pytest.mark.parametrize("name", ["body", "file object", "sendfile", "streamed"])
def test_a_large_answer_waits_for_the_client_without_blocking(name, blocking, tmp_path):
    """A client that does not read yet: the writer returns at once with what the socket
    did not take left in ``unsent`` (the reader only starts after it has returned), on a
    non-blocking or a blocking socket. Sent afterwards, the bytes equal gunicorn's."""
    app = {
        "body": big_body,
        "file object": big_file,
        "sendfile": big_real_file(tmp_path),
        "streamed": big_streamed,
    }[name]
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    theirs = on_the_wire(app, request, wsgi.Response)
    assert len(theirs) > len(BIG)
    unsent: list[memoryview] = []
    ours = on_the_wire(
        app,
        request,
        CoalescingResponse,
        _DateHeader(),
        unsent=unsent,
        slow_reader=True,
        blocking=blocking,
    )
    assert ours == theirs
    assert sum(len(chunk) for chunk in unsent) > len(BIG) - 64 * 1024  # it had to wait


def test_a_small_answer_goes_out_whole_at_once(app):
    unsent: list[memoryview] = []
    ours = on_the_wire(
        app,
        REQUESTS["list"],
        CoalescingResponse,
        _DateHeader(),
        unsent=unsent,
        slow_reader=True,
        blocking=False,
    )
    assert ours == on_the_wire(app, REQUESTS["list"], wsgi.Response)
    assert unsent == []  # one send(), nothing left for the main loop


def test_the_date_is_formatted_once_a_second():
    date = _DateHeader()
    first = date()
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", first)
    assert date() is first  # the same string object within the second


def test_a_head_not_yet_sent_is_not_on_the_wire(app):
    """gunicorn's headers_sent turns True when the head is built; ours holds it back for
    the body, so a failure in between can still be answered with a clean JSON 500."""
    cfg = Config()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        req = next(http.get_parser(cfg, [REQUESTS["list"]], ("127.0.0.1", 40000)))
        resp = CoalescingResponse(req, ours, cfg, _DateHeader(), [])
        resp.start_response("200 OK", [("Content-Length", "2")])
        resp.send_headers()
        assert resp.headers_sent
        assert not resp.on_the_wire
        resp.write(b"ok")
        assert resp.on_the_wire
        resp.close()
        ours.shutdown(socket.SHUT_WR)
        assert theirs.recv(65536).endswith(b"\r\n\r\nok")


def _processed(response_class: Any, headers: list[tuple[Any, Any]]) -> tuple[Any, ...]:
    """What process_headers makes of ``headers``: the kept list, framing facts, or the
    error it raises (type and message)."""
    cfg = Config()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        req = next(http.get_parser(cfg, [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], ("h", 1)))
        args = (_DateHeader(), []) if response_class is CoalescingResponse else ()
        resp = response_class(req, ours, cfg, *args)
        try:
            resp.process_headers(headers)
        except Exception as exc:  # the error itself is what is compared
            return ("raised", type(exc), str(exc))
        return (resp.headers, resp.response_length, resp.upgrade)


HEADER_CASES = [
    [("Content-Type", "application/json"), ("Content-Length", "12"), ("ETag", '"x"')],
    [("X-Padded", " \tvalue\t "), ("content-length", " 7 ")],
    [("Connection", "close"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked")],
    [("Connection", "Upgrade"), ("Upgrade", "WebSocket"), ("Upgrade", "h2c")],
    [("Bad Name", "x")],
    [("X-Evil", "a\r\nSet-Cookie: b")],
    [("X-Latin", "caf\xe9"), ("X-Control", "a\x7fb")],
    [("", "empty name")],
    [(b"X-Bytes", "v")],
    [("X-Int", 5)],
    [("Content-Length", "not a number")],
]


@pytest.mark.parametrize("headers", HEADER_CASES, ids=range(len(HEADER_CASES)))
def test_header_processing_matches_gunicorn(headers):
    ours = _processed(CoalescingResponse, headers)
    assert ours == _processed(wsgi.Response, headers)
    assert ours == _processed(CoalescingResponse, headers)  # cached names: same answer


_chars = st.characters(min_codepoint=0, max_codepoint=0x17F)
_names = st.text(_chars, max_size=12) | st.sampled_from(
    ["Content-Length", "Connection", "Upgrade", "Keep-Alive", "TE", "X-RateLimit-Limit"]
)
_values = st.text(_chars, max_size=16) | st.sampled_from([" 12 ", "upgrade", "WebSocket"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=6))
def test_generated_header_lists_are_processed_as_gunicorn_does(headers):
    assert _processed(CoalescingResponse, headers) == _processed(wsgi.Response, headers)
