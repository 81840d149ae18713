"""The answers the worker gives itself (comments_api.worker) carry the request's own
`X-Request-ID` (an ingress's) when the app would adopt it, in their header and their log
line, so one id follows a refused request from the ingress's log to ours. Real `serve`
processes, both workers."""

from __future__ import annotations

import json
import socket

import pytest

from comments_api import worker
from comments_api.telemetry.http_hooks import REQUEST_ID_RE

from .support import ServiceProcess
from .test_serve_server import parse_response, raw_request, read_until_closed


def _head(pending_bytes: bytes) -> worker.PendingRequest:
    pending = worker.PendingRequest(header_deadline=1e12, body_timeout=10, body_limit=4096)
    pending.feed(pending_bytes, 0.0)
    return pending


def test_the_incoming_id_is_taken_by_the_apps_rule_from_a_whole_header_section():
    valid = "ingress-1.a_B"
    assert REQUEST_ID_RE.fullmatch(valid)
    base = b"GET * HTTP/1.1\r\nHost: a\r\n"
    assert worker.request_id_for(
        _head(base + b"X-Request-ID: " + valid.encode() + b"\r\n\r\n")
    ) == (valid)
    assert worker.request_id_for(
        _head(base + b"x-request-id:\t" + valid.encode() + b" \r\n\r\n")
    ) == (valid)
    fresh = [
        base + b"X-Request-ID: not valid!\r\n\r\n",  # the app's rule refuses it
        base + b"X-Request-ID: " + b"a" * 129 + b"\r\n\r\n",
        base + b"X-Request-ID: a\r\nX-Request-ID: b\r\n\r\n",  # the app would see "a,b"
        base + b"X-Request-ID: " + valid.encode() + b"\r\n",  # the headers' end not read
        base + b"\r\n",
    ]
    for data in fresh:
        rid = worker.request_id_for(_head(data))
        assert rid != valid
        assert len(rid) == 32, data
        assert int(rid, 16) >= 0
    assert worker.request_id_for(None) != worker.request_id_for(None)


def _log_lines(service: ServiceProcess) -> list[dict]:
    lines = []
    for line in service.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_workers_own_answers_carry_the_incoming_request_id(tmp_path, threads):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        "LOG_LEVEL": "info",
        "THREADS": threads,
        "MAX_BODY_BYTES": "4096",
        "REQUEST_BODY_TIMEOUT": "1",
    }
    legacy = b"/api/comment/new"
    problem = b"/api/v1/contents/a/comments"
    # (request with {rid} for its X-Request-ID field, status): one for each way the
    # worker answers a request whose header section it has read.
    adopted = [
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n\r\n", 200),
        (b"GET * HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n\r\n", 400),
        (b"GET healthz HTTP/1.1\r\nX-Request-ID: {rid}\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n\r\n", 405),
        # no Host in HTTP/1.1, refused by the buffering
        (b"GET /healthz HTTP/1.1\r\nX-Request-ID: {rid}\r\n\r\n", 400),
        # a header line gunicorn's parser refuses (the worker's handle_error)
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\nBad Header\r\n\r\n", 400),
        # chunk sizes over MAX_BODY_BYTES
        (
            b"POST " + problem + b" HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2000\r\nxxxx",
            413,
        ),
        (
            b"POST " + legacy + b" HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        # a field over gunicorn's 8190 bytes in a header section read whole
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\nX-A: "
            + b"a" * 9000
            + b"\r\n\r\n",
            431,
        ),
        # the body never comes: 408 at REQUEST_BODY_TIMEOUT
        (
            b"POST " + legacy + b" HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
            408,
        ),
    ]
    # Not adopted: invalid by the app's rule, sent twice, or in a header section the
    # worker never read whole (431: over its 112 KiB; 414: the request line already is).
    fresh = [
        (b"GET * HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid} x\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\nX-Request-ID: {rid}\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}" + b"0" * 120 + b"\r\n\r\n", 400),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-ID: {rid}\r\nX-A: "
            + b"a" * 120000
            + b"\r\n\r\n",
            431,
        ),
        (b"GET /" + b"a" * (50 * 1024) + b" HTTP/1.1\r\nX-Request-ID: {rid}\r\n\r\n", 414),
    ]
    with ServiceProcess(env, tmp_path, workers=1) as service:
        answered: list[tuple[str, int, str]] = []
        for index, (data, expected) in enumerate(adopted + fresh):
            rid = f"ingress-{threads}-{index}"
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                sock.sendall(data.replace(b"{rid}", rid.encode()))
                status, headers, _ = parse_response(read_until_closed(sock))
            assert status == expected, (data[:120], status)
            answered.append((rid, status, headers["x-request-id"]))
        # The app's own answers still adopt it (the same rule).
        status, headers, _ = raw_request(
            service.port,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-ID: app-1\r\nConnection: close\r\n\r\n",
        )
        assert (status, headers["x-request-id"]) == (200, "app-1")
        lines = _log_lines(service)
    # OPTIONS *'s line names no status: it is answered, not refused.
    logged = {line["request_id"]: line.get("status", 200) for line in lines if "request_id" in line}
    for rid, status, sent in answered[: len(adopted)]:
        assert sent == rid, (status, sent)
        assert logged[rid] == status, (rid, logged.get(rid))
    for rid, status, sent in answered[len(adopted) :]:
        assert not sent.startswith(rid), (status, sent)
        assert len(sent) == 32
        assert int(sent, 16) >= 0
        assert not any(str(line.get("request_id", "")).startswith(rid) for line in lines)
        assert logged[sent] == status, (status, sent)
