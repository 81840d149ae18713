"""lean_requests.py against gunicorn's own parser: for every request it accepts, the WSGI
environ, the body and what the response writer reads (method, version, whether to close)
must be exactly gunicorn's; whatever gunicorn refuses, it must decline. Requests are
generated (hypothesis) around the edges gunicorn cares about: methods, targets, versions,
field names and values, repeated and special fields, bodies and their lengths."""

from __future__ import annotations

import ast
import importlib.util
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn import http
from gunicorn.config import Config
from gunicorn.http import wsgi
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from comments_api.lean_requests import LeanReader
from comments_api.worker import PendingRequest, unusual_request

pytestmark = pytest.mark.unit  # the fast tier: parsing only, no servers

PEER = ("127.0.0.1", 40123)
SOCK = object()  # the client socket: passed through as gunicorn.socket, never used
IGNORED = {"wsgi.input", "wsgi.errors", "wsgi.early_hints"}


# The values comments_api/gunicorn_conf.py sets that the parser reads. A copy: importing
# that module sets up a multiprocess metrics directory for the whole test process, so
# test_the_limits_are_those_of_gunicorn_conf reads them from its source instead.
SERVE_LIMITS = {
    "limit_request_line": 0,
    "limit_request_fields": 50,
    "limit_request_field_size": 8190,
}


def serve_config() -> Config:
    cfg = Config()
    for name, value in {**SERVE_LIMITS, "workers": 2}.items():
        cfg.set(name, value)
    return cfg


def test_the_limits_are_those_of_gunicorn_conf() -> None:
    spec = importlib.util.find_spec("comments_api.gunicorn_conf")
    assert spec is not None
    assert spec.origin is not None
    module = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    assigned = {
        target.id: ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in SERVE_LIMITS
    }
    assert assigned == SERVE_LIMITS


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def gunicorns(cfg: Config, data: bytes, listener: socket.socket) -> tuple[Any, dict, bytes]:
    req = next(http.get_parser(cfg, [data], PEER))
    _, environ = wsgi.create(req, SOCK, PEER, listener.getsockname(), cfg)
    return req, environ, environ["wsgi.input"].read()


def buffered(raw: bytes) -> PendingRequest | None:
    pending = PendingRequest(time.monotonic() + 10, 10, 1 << 20)
    pending.feed(raw, time.monotonic())
    if not pending.exact or pending.refuse:
        return None
    return pending


def compare(raw: bytes, listener: socket.socket) -> bool:
    """True when lean accepted (and agreed); False when it declined."""
    cfg = serve_config()
    pending = buffered(raw)
    if pending is None:
        return False  # the worker never asks lean about these
    lean = LeanReader(cfg).read(
        pending.data, pending.header_end, pending.content_length, SOCK, PEER, listener
    )
    if lean is None:
        return False
    req, environ = lean
    try:
        theirs_req, theirs, theirs_body = gunicorns(cfg, bytes(pending.data), listener)
    except Exception as exc:  # gunicorn refuses it: lean must have declined
        pytest.fail(f"lean accepted what gunicorn refuses ({exc!r}): {raw!r}")
    assert {k: v for k, v in environ.items() if k not in IGNORED} == {
        k: v for k, v in theirs.items() if k not in IGNORED
    }, raw
    assert environ["wsgi.input"].read() == theirs_body
    assert (req.method, req.path, req.uri, req.version) == (
        theirs_req.method,
        theirs_req.path,
        theirs_req.uri,
        theirs_req.version,
    )
    if pending.unusual is not None:
        # What the worker tells gunicorn's parse: "close" among other Connection options
        # closes (RFC 9112 9.6), where gunicorn heeds only a field that is exactly "close".
        unusual_request(theirs_req, pending.unusual)
    assert req.should_close() == theirs_req.should_close(), raw
    return True


def request(
    method: str, target: str, version: str, fields: list[tuple[str, str]], body: bytes
) -> bytes:
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}:{v}\r\n" for n, v in fields)
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


ORDINARY = [
    request("GET", "/api/comment/list/1", "HTTP/1.1", [("Host", " 127.0.0.1:8000")], b""),
    request(
        "GET", "/api/v1/counts?content_id=a&content_id=%C3%A9", "HTTP/1.1", [("Host", " a")], b""
    ),
    request("HEAD", "/healthz", "HTTP/1.0", [], b""),
    request(
        "POST",
        "/api/comment/new",
        "HTTP/1.1",
        [("Host", " a"), ("Content-Type", " application/json"), ("Content-Length", " 13")],
        b'{"comment":1}',
    ),
    request(
        "PATCH",
        "/api/v1/comments/7",
        "HTTP/1.1",
        [
            ("Host", "a"),
            ("Authorization", " Bearer x.y.z"),
            ("Connection", " keep-alive"),
            ("Content-Length", "2"),
            ("X-Request-ID", "\tabc "),
        ],
        b"{}",
    ),
    request(
        "GET",
        "/a%20b/%2F?q=%zz",
        "HTTP/1.1",
        [("Host", "a"), ("Connection", "close"), ("Cookie", "")],
        b"",
    ),
]


@pytest.mark.parametrize("raw", ORDINARY)
def test_ordinary_requests_are_read_exactly_as_gunicorn_reads_them(raw, listener):
    assert compare(raw, listener)


@pytest.mark.parametrize(
    ("value", "version", "close"),
    [
        ("keep-alive, close", "HTTP/1.1", True),
        ("TE,Close", "HTTP/1.1", True),
        ("close ,\tkeep-alive", "HTTP/1.0", True),
        ("TE", "HTTP/1.1", False),
        ("closed, TE", "HTTP/1.1", False),
        ("keep-alive, TE", "HTTP/1.0", True),  # gunicorn: neither exactly, so by version
    ],
)
def test_a_close_option_among_others_closes(value, version, close, listener):
    raw = request("GET", "/", version, [H, ("Connection", value)], b"")
    pending = buffered(raw)
    assert pending is not None
    lean = LeanReader(serve_config()).read(
        pending.data, pending.header_end, 0, SOCK, PEER, listener
    )
    assert lean is not None
    assert lean[0].should_close() is close
    assert compare(raw, listener)  # and gunicorn's parse, as the worker adjusts it


# Each with a Host: without one, an HTTP/1.1 request never reaches the lean reader.
H = ("Host", "a")
DECLINED = [
    request("GET", "/", "HTTP/1.1", [H, ("X_Forwarded_For", "1.2.3.4")], b""),  # underscore
    request("GET", "/", "HTTP/1.1", [H, ("X-Forwarded-Proto", "https")], b""),  # scheme
    request("GET", "/", "HTTP/1.1", [H, ("Forwarded", "proto=https")], b""),
    request("GET", "/", "HTTP/1.1", [("Host", "a"), ("Host", "b")], b""),  # repeated
    request("GET", "/", "HTTP/1.1", [H, ("Expect", "100-continue")], b""),
    request("GET", "/", "HTTP/1.1", [H, ("Upgrade", "h2c")], b""),
    request("GET", "/", "HTTP/1.1", [H, ("X-A", "caf\u00e9")], b""),  # not ASCII
    request("GET", "/", "HTTP/1.1", [H, ("X-A", "a\x01b")], b""),  # control
    request("GET", "/", "HTTP/1.1", [H, ("X A", "b")], b""),  # not a token
    request("GET", "//double", "HTTP/1.1", [H], b""),
    request("GET", "/a#frag", "HTTP/1.1", [H], b""),
    request("GET", "http://a/b", "HTTP/1.1", [H], b""),
    request("OPTIONS", "*", "HTTP/1.1", [H], b""),
    request("CONNECT", "example.com:443", "HTTP/1.1", [H], b""),
    request("POST", "/", "HTTP/1.1", [H, ("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n"),
    request("get", "/", "HTTP/1.1", [H], b""),
    request("GET", "/", "HTTP/2.0", [], b""),
    request("GET", "/", "HTTP/1.1", [H, *(("X-A", str(i)) for i in range(51))], b""),
    request("GET", "/", "HTTP/1.1", [H, ("X-Long", "x" * 8200)], b""),
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n",
]


@pytest.mark.parametrize("raw", DECLINED)
def test_requests_gunicorn_treats_specially_are_left_to_it(raw, listener):
    assert not compare(raw, listener)


METHODS = st.sampled_from(
    [
        "GET",
        "POST",
        "HEAD",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "PUT",
        "get",
        "GE",
        "G" * 21,
        "GET\t",
        "M-SEARCH",
    ]
)
TARGET_CHARS = st.sampled_from([*"abcXYZ019/?&=%._~-+:@!$'()*,;", *'# \t\u00e9\x00_"[]^`{|}\\'])
TARGETS = st.one_of(
    st.builds(lambda s: "/" + s, st.text(TARGET_CHARS, max_size=40)),
    st.sampled_from(["*", "//a", "http://h/p", "h:80", "", "/%", "/%zz", "/%C3%A9?x=%00"]),
)
VERSIONS = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/01.1"]
)
NAMES = st.one_of(
    st.sampled_from(
        [
            "Host",
            "Content-Type",
            "content-type",
            "Connection",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "X-Forwarded-Proto",
            "X-Forwarded-For",
            "X_Forwarded_For",
            "Forwarded",
            "Authorization",
            "Cookie",
            "If-None-Match",
            "X-Request-ID",
            "Upgrade",
            "Keep-Alive",
        ]
    ),
    st.text(st.sampled_from(list("aZ09-!#$%&'*+.^`|~_ :\u00e9@")), min_size=0, max_size=12),
)
VALUE_CHARS = st.sampled_from(
    [*'abc 019,;="/\t\x01\x7f\u00e9', "close", "keep-alive", "Close", "chunked", "https"]
)
VALUES = st.lists(VALUE_CHARS, max_size=8).map("".join)


@st.composite
def requests_(draw: Any) -> bytes:
    body = draw(st.binary(max_size=20))
    fields = draw(st.lists(st.tuples(NAMES, VALUES), max_size=8))
    length = draw(st.sampled_from(["right", "none", "wrong", "twice", "text"]))
    if length == "right" or (length == "none" and body):
        fields.append(("Content-Length", f" {len(body)}"))
    elif length == "wrong":
        fields.append(("Content-Length", str(len(body) + 1)))
    elif length == "twice":
        fields += [("Content-Length", str(len(body)))] * 2
    elif length == "text":
        fields.append(("Content-Length", "+1"))
    # Always a Host: the worker refuses HTTP/1.1 without one before lean reads it, and
    # such examples would test nothing here (test_serve_server covers that refusal).
    fields.append(("Host", " a"))
    position = draw(st.integers(0, len(fields)))
    fields = [*fields[position:], *fields[:position]]
    return request(draw(METHODS), draw(TARGETS), draw(VERSIONS), fields, body)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=requests_())
def test_generated_requests_are_read_as_gunicorn_reads_them_or_left_to_it(raw, listener):
    event("accepted" if compare(raw, listener) else "declined")


@pytest.mark.parametrize(
    "raw",
    [
        request("OPTIONS", "*", "HTTP/1.1", [H], b""),
        request("CONNECT", "example.com:443", "HTTP/1.1", [H], b""),
        request("GET", "http://a/b", "HTTP/1.1", [H], b""),
        request("GET", "healthz", "HTTP/1.0", [], b""),
        request("POST", "/", "HTTP/1.1", [H, ("Transfer-Encoding", "chunked")], b""),
    ],
)
def test_a_target_that_is_not_a_path_or_a_coding_is_declined_by_lean_itself(raw, listener):
    """The worker answers these before lean could see them (or never hands a chunked
    body to it); lean declines them too, so only gunicorn's parser would ever read one."""
    head_end = raw.index(b"\r\n\r\n") + 4
    lean = LeanReader(serve_config()).read(raw, head_end, 0, SOCK, PEER, listener)
    assert lean is None


def test_the_lean_reader_is_on_under_serves_settings():
    assert LeanReader(serve_config()).enabled
    ssl = serve_config()
    ssl.set("certfile", "/nonexistent.pem")
    ssl.set("keyfile", "/nonexistent.key")
    assert not LeanReader(ssl).enabled


TOKEN = st.text(st.sampled_from([*"abcXYZ09-!#$%&'*+.^`|~"]), min_size=1, max_size=16)
VISIBLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
SAFE_PATH = st.text(st.sampled_from([*"abcXYZ019/-._~%?&=+:@!$'()*,;"]), max_size=40)


def _without_host(names: list[str]) -> bool:
    return all(name.lower() != "host" for name in names)


@st.composite
def plausible_requests(draw: Any) -> bytes:
    """Mostly well-formed requests, so that most are accepted and compared field by field."""
    body = draw(st.binary(max_size=30))
    names = draw(st.lists(TOKEN, max_size=10, unique_by=str.upper).filter(_without_host))
    fields = [(name, draw(st.sampled_from(["", " ", "\t"])) + draw(VISIBLE)) for name in names]
    # Host once, anywhere: the worker refuses HTTP/1.1 without it before lean reads.
    fields.insert(draw(st.integers(0, len(fields))), ("Host", " " + draw(VISIBLE)))
    if body or draw(st.booleans()):
        fields.append(("Content-Length", f" {len(body)}"))
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    return request(method, "/" + draw(SAFE_PATH), version, fields, body)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=plausible_requests())
def test_plausible_requests_are_read_as_gunicorn_reads_them(raw, listener):
    event("accepted" if compare(raw, listener) else "declined")
