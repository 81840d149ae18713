"""CORS on the answers the worker writes itself (comments_api.worker), against real `serve`
processes: a page on an allowed origin (the reader widget posts comments cross-origin)
must be able to read a 413 or a 408 the worker refused before the app, a 400 of
gunicorn's parser or the 500 of a request aborted by the worker timeout, not see an opaque
network error. The app's own answer to the same Origin is the reference."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable

import pytest
import requests

from comments_api import worker
from comments_api.web.protection import CORS_EXPOSE_HEADERS

from .support import ServiceProcess, wait_until
from .test_serve_server import feed_all, parse_response, raw_request, sqlite_env  # noqa: F401

ALLOWED = "https://news.example"
ALSO_ALLOWED = "http://localhost:8080"
PATH = b"/api/v1/contents/cors/comments"

# The Origin field(s) a request carries, and the origin an answer may echo (None: none).
ORIGINS: dict[str, tuple[bytes, str | None]] = {
    "allowed": (f"Origin: {ALLOWED}\r\n".encode(), ALLOWED),
    "another allowed": (f"Origin: {ALSO_ALLOWED}\r\n".encode(), ALSO_ALLOWED),
    "not allowed": (b"Origin: https://evil.example\r\n", None),
    "an allowed one's prefix": (f"Origin: {ALLOWED}.evil.example\r\n".encode(), None),
    "none": (b"", None),
    # The app sees the two joined ("a,a"): no origin it allows.
    "twice": (f"Origin: {ALLOWED}\r\nOrigin: {ALLOWED}\r\n".encode(), None),
}


def cors_of(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k == "vary" or k.startswith("access-control-")}


def post_head(origin: bytes, framing: bytes) -> bytes:
    return (
        b"POST "
        + PATH
        + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        + origin
        + framing
        + b"\r\n"
    )


# The worker's own answers reachable once the request's headers are in, each as
# (status, the request's bytes with its Origin fields).
WORKER_ANSWERS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    # Chunk sizes past MAX_BODY_BYTES: refused as soon as they are read.
    "413": (413, lambda o: post_head(o, b"Transfer-Encoding: chunked\r\n") + b"2000\r\n" + b"x"),
    "501": (501, lambda o: post_head(o, b"Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n"),
    "400": (400, lambda o: b"POST " + PATH + b" HTTP/1.1\r\n" + o + b"\r\n"),  # no Host
    "405": (405, lambda o: b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n" + o + b"\r\n"),
    "200": (200, lambda o: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n" + o + b"\r\n"),
}


# Requests the buffering hands to gunicorn's parser, which refuses them (handle_error), each
# with its whole header section read.
PARSER_REFUSALS: dict[str, Callable[[bytes], bytes]] = {
    "a field name with a space": lambda o: post_head(o, b"Bad Name: x\r\nContent-Length: 0\r\n"),
    "two Host fields": lambda o: post_head(o, b"Host: b\r\nContent-Length: 0\r\n"),
    "Content-Length not a number": lambda o: post_head(o, b"Content-Length: +2\r\n") + b"{}",
}


def app_413(port: int, origin: bytes) -> dict[str, str]:
    """The app's own 413 (a Content-Length over MAX_BODY_BYTES goes to the app): the
    reference for every CORS header."""
    status, headers, _ = raw_request(
        port, post_head(origin, b"Content-Length: 100000\r\n") + b"x" * 4000, timeout=10
    )
    assert status == 413
    assert written_by_the_app(headers)
    return headers


def written_by_the_app(headers: dict[str, str]) -> bool:
    """Whether gunicorn's response writer wrote this head (the app answered): its heads
    start with Date (worker.CoalescingResponse.default_headers), the worker's own answers
    (worker.error_response_bytes) with Connection. It told them apart by `Server:
    gunicorn` until that header was dropped."""
    return next(iter(headers)) == "date"


def check_cors(answer: dict[str, str], reference: dict[str, str], echoed: str | None) -> None:
    assert not written_by_the_app(answer)  # the worker's own answer, not the app's
    assert cors_of(answer) == cors_of(reference)
    assert answer["vary"] == "Origin"
    if echoed is None:
        assert not [name for name in answer if name.startswith("access-control-")]
    else:
        assert answer["access-control-allow-origin"] == echoed
        assert answer["access-control-allow-credentials"] == "true"
        assert answer["access-control-expose-headers"] == CORS_EXPOSE_HEADERS


@pytest.fixture
def cors_env(sqlite_env) -> dict[str, str]:  # noqa: F811
    return {
        **sqlite_env,
        "CORS_ORIGINS": f"{ALLOWED},{ALSO_ALLOWED}",
        "MAX_BODY_BYTES": "4096",
        "REQUEST_HEADER_TIMEOUT": "1",
        "REQUEST_BODY_TIMEOUT": "1",
    }


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_workers_own_answers_carry_the_apps_cors_headers(cors_env, tmp_path, threads):
    """For an allowed Origin, the worker's 413, 501, 400, 405, 408 and its 200 to
    `OPTIONS *` carry Access-Control-Allow-Origin with that origin, as the app's answers
    do; for any other Origin, or none, only the app's `Vary: Origin`. They carried none,
    so the widget saw a network error where the app's 413 would have told it why."""
    env = {**cors_env, "THREADS": threads}
    with ServiceProcess(env, tmp_path, workers=1) as service:
        references = {case: app_413(service.port, origin) for case, (origin, _) in ORIGINS.items()}
        assert references["allowed"]["access-control-allow-origin"] == ALLOWED
        for case, (origin, echoed) in ORIGINS.items():
            for name, (expected, request) in WORKER_ANSWERS.items():
                status, headers, _ = raw_request(service.port, request(origin), timeout=5)
                assert status == expected, (case, name)
                check_cors(headers, references[case], echoed)
        # 408: a body that stops coming, one connection per Origin case, all at once.
        stalled = {}
        for case, (origin, _) in ORIGINS.items():
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=5)
            sock.sendall(post_head(origin, b"Content-Length: 100\r\n") + b"x" * 10)
            stalled[case] = sock
        for case, sock in stalled.items():
            with sock:
                out = b""
                while chunk := sock.recv(65536):
                    out += chunk
            status, headers, _ = parse_response(out)
            assert status == 408, case
            check_cors(headers, references[case], ORIGINS[case][1])


@pytest.mark.parametrize("threads", ["1", "2"])
def test_no_origin_is_echoed_before_the_headers_are_read(cors_env, tmp_path, threads):
    """A 414 (request line over its limit), a 431 (header section over its limit) and a
    408 before the end of the headers are refused before the worker reads the whole
    header section: an Origin among the bytes is never echoed, as a later field could
    still be another one. CORS is on, so they say `Vary: Origin` like every answer."""
    env = {**cors_env, "THREADS": threads}
    origin = ORIGINS["allowed"][0]
    requests_ = {
        414: b"GET /" + b"a" * worker.LIMIT_REQUEST_LINE + b" HTTP/1.1\r\nHost: a\r\n" + origin,
        431: b"GET / HTTP/1.1\r\nHost: a\r\n"
        + origin
        + b"X-Big: "
        + b"b" * (worker.LIMIT_REQUEST_LINE + worker.LIMIT_HEADER_SECTION)
        + b"\r\n\r\n",
        408: b"GET / HTTP/1.1\r\nHost: a\r\n" + origin,  # and then nothing
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        for expected, data in requests_.items():
            status, headers, _ = raw_request(service.port, data, timeout=5)
            assert status == expected
            assert "access-control-allow-origin" not in headers
            assert cors_of(headers) == {"vary": "Origin"}


def test_the_origin_is_read_only_from_a_whole_header_section():
    allowed = frozenset({ALLOWED})
    whole = b"POST / HTTP/1.1\r\nHost: a\r\n" + ORIGINS["allowed"][0]
    done, pending = feed_all(whole + b"Transfer-Encoding: gzip, chunked\r\n\r\n")
    assert done
    assert pending.refuse == (501, worker.UNSUPPORTED_CODING)
    assert worker.request_origin(pending) == ALLOWED
    assert worker.cors_lines(pending, allowed).startswith(
        f"Vary: Origin\r\nAccess-Control-Allow-Origin: {ALLOWED}\r\n"
    )
    # CORS off (no CORS_ORIGINS): nothing, as the app adds nothing.
    assert worker.cors_lines(pending, frozenset()) == ""
    # Header section not ended yet: not read, whatever it holds so far.
    done, pending = feed_all(whole)
    assert not done
    assert worker.request_origin(pending) is None
    assert worker.cors_lines(pending, allowed) == "Vary: Origin\r\n"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_gunicorns_parser_refusals_carry_the_apps_cors_headers(cors_env, tmp_path, threads):
    """A request whose header section the worker read whole but gunicorn's parser refuses
    (400, handle_error) carries the app's CORS headers: the allowed Origin echoed, any
    other Origin (or two) never. It carried none at all, not even `Vary: Origin`."""
    env = {**cors_env, "THREADS": threads}
    with ServiceProcess(env, tmp_path, workers=1) as service:
        references = {case: app_413(service.port, origin) for case, (origin, _) in ORIGINS.items()}
        for case, (origin, echoed) in ORIGINS.items():
            for name, request in PARSER_REFUSALS.items():
                status, headers, body = raw_request(service.port, request(origin), timeout=5)
                assert status == 400, (case, name, body)
                assert headers["content-type"] == "application/problem+json"
                check_cors(headers, references[case], echoed)
        assert "refused a request the server could not parse" in service.log()


def test_a_request_aborted_by_the_worker_timeout_carries_the_apps_cors_headers(cors_env, tmp_path):
    """The 500 "the request took too long and was aborted" (the sync worker, stuck in the
    app past WORKER_TIMEOUT: here a create waiting on SQLite's write lock, held by the
    test) carries the allowed Origin as the app's answers do, so the widget can tell the
    user; a disallowed Origin, or two, are never echoed. It carried no CORS header."""
    env = {**cors_env, "WORKER_TIMEOUT": "2", "DB_STATEMENT_TIMEOUT": "30", "THREADS": "1"}
    body = b'{"body": "stuck"}'
    framing = b"Content-Length: %d\r\n" % len(body)
    with ServiceProcess(env, tmp_path, workers=1) as service:
        references = {case: app_413(service.port, origin) for case, (origin, _) in ORIGINS.items()}
        database = sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=5)
        try:
            for case in ("allowed", "not allowed", "twice"):
                origin, echoed = ORIGINS[case]
                database.execute("BEGIN IMMEDIATE")  # the write lock, until rollback
                try:
                    status, headers, answer = raw_request(
                        service.port, post_head(origin, framing) + body, timeout=15
                    )
                finally:
                    database.rollback()
                assert status == 500, (case, answer)
                assert b"the request took too long and was aborted" in answer
                check_cors(headers, references[case], echoed)
                # The aborted worker is replaced before the next case.
                assert wait_until(
                    lambda: requests.get(f"{service.base}/readyz", timeout=5).status_code == 200
                )
        finally:
            database.close()
        assert service.log().count("request aborted: the worker exceeded its timeout") == 3
