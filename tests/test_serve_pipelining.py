"""Requests pipelined on one keep-alive connection behind a request with a chunked body,
against real `serve` processes (sync worker and THREADS=2), over a raw socket: every
request in one write, every answer read from the same connection.

The sync worker closed the connection after a chunked request's answer, so the requests
pipelined behind it were lost. It now keeps it when the buffering's end of the request
(after the last chunk and the trailer section) is where gunicorn's parser ends it too;
a body whose framing the two would read differently is answered and the connection
closed, with nothing after it served as a request."""

from __future__ import annotations

import json
import socket

import pytest

from .support import ServiceProcess
from .test_serve_server import (  # noqa: F401
    parse_response,
    read_response,
    read_until_closed,
    sqlite_env,
)

PATH = b"/api/v1/contents/pipelined/comments"
LIST = b"GET " + PATH + b" HTTP/1.1\r\nHost: a\r\n\r\n"


def chunked_post(body: bytes, trailers: bytes = b"") -> bytes:
    """A create whose JSON body comes in two chunks (the second with an extension)."""
    half = len(body) // 2
    return (
        b"POST " + PATH + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (half, body[:half])
        + b"%x;ext=1\r\n%s\r\n" % (len(body) - half, body[half:])
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


def comment(text: str) -> bytes:
    return json.dumps({"body": text}).encode()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_requests_pipelined_behind_a_chunked_one_are_answered(
    sqlite_env,  # noqa: F811
    tmp_path,
    threads,
):
    """A chunked create (without, then with a trailer field), each followed by a list of
    the comments, all four in one write: four answers in order on the one connection,
    each "keep-alive", and the connection then serves a further request."""
    env = {**sqlite_env, "THREADS": threads}
    with (
        ServiceProcess(env, tmp_path, workers=1) as service,
        socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock,
    ):
        sock.sendall(
            chunked_post(comment("first"))
            + LIST
            + chunked_post(comment("second"), b"X-Checksum: 1\r\n")
            + LIST
        )
        answers = [read_response(sock) for _ in range(4)]
        assert [(status, h["connection"]) for status, h, _ in answers] == [
            (201, "keep-alive"),
            (200, "keep-alive"),
            (201, "keep-alive"),
            (200, "keep-alive"),
        ]
        assert json.loads(answers[0][2])["body"] == "first"
        assert [c["body"] for c in json.loads(answers[1][2])["items"]] == ["first"]
        assert json.loads(answers[2][2])["body"] == "second"
        assert [c["body"] for c in json.loads(answers[3][2])["items"]] == ["first", "second"]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, body = read_response(sock)
        assert (status, json.loads(body)["status"]) == (200, "ok")


# Chunked bodies framed so that a lax reader would end them before a request hidden in
# them, or find one after them: gunicorn's parser refuses each.
MISFRAMED = {
    # Chunk data not followed by CRLF: counting the size alone skips "XX" as if it were.
    "chunk data without its CRLF": b"5\r\nabcdeXX0\r\n\r\n",
    # Whitespace before the size, which the buffering's walk strips.
    "a space before the size": b" 5\r\nabcde\r\n0\r\n\r\n",
    # A trailer section ended by bare LFs.
    "trailers ended by bare LFs": b"0\r\nX-T: 1\n\n",
}


@pytest.mark.parametrize("case", MISFRAMED)
@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_misframed_chunked_body_closes_the_connection(
    sqlite_env,  # noqa: F811
    tmp_path,
    threads,
    case,
):
    """A chunked body gunicorn's parser cannot read to an end is answered once (a JSON
    400, or nothing when the connection is cut) and the connection is closed: the request
    pipelined behind it, whose bytes a lax reader would take for the next request, is
    never answered."""
    env = {**sqlite_env, "THREADS": threads}
    smuggled = b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n"
    with (
        ServiceProcess(env, tmp_path, workers=1) as service,
        socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + MISFRAMED[case] + smuggled
        )
        out = read_until_closed(sock)
        assert out.count(b"HTTP/1.1 ") == 1, out
        status, headers, body = parse_response(out)
        assert status == 400, out
        assert headers["connection"] == "close"
        assert "problem+json" in headers["content-type"] or "json" in headers["content-type"]
        assert b'"ready"' not in body
