"""No 500 from client input (issue 8), against `comments-api serve` on SQLite and PostgreSQL.

Each case was a 500 (or a wrong answer) before the fix. They go over a raw socket to real
gunicorn, because some only exist there: chunked bodies are decoded by gunicorn, and
undecodable percent-escapes never survive the Flask test client's own URL handling.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator

from comments_api.app import SECURITY_HEADERS
from comments_api.identity.credentials import SCOPE_ADMIN, generate_api_key
from comments_api.moderation.rules import encode_listing_cursor
from comments_api.store.repository import Repository, make_engine

from .authkit import AUDIENCE, ISSUER, bearer, hs_signer
from .support import ServiceProcess

MAX_BODY = 64 * 1024  # the default MAX_BODY_BYTES, stated so the tests do not drift
PROBLEM = "application/problem+json"
BIG = 18446744073709551617  # 2**64 + 1
# RFC 3986 URI reference characters (percent-escapes checked separately).
URI_REFERENCE = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Live:
    service: ServiceProcess
    key: str

    def send(self, raw: bytes) -> Reply:
        """One request exactly as written; gunicorn's sync workers close after answering."""
        with socket.create_connection(("127.0.0.1", self.service.port), timeout=10) as sock:
            sock.sendall(raw)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Reply(int(status_line.split()[1]), headers, body)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        auth: bool = False,
        chunks: list[bytes] | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        if auth:
            lines.append(f"Authorization: Bearer {self.key}")
        payload = b""
        if chunks is not None:
            lines += [f"Content-Type: {content_type}", "Transfer-Encoding: chunked"]
            payload = b"".join(chunks)
        elif body is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
            payload = body
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request, tmp_path_factory) -> Iterator[Live]:
    workdir: Path = tmp_path_factory.mktemp(f"input-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'comments.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"input_{uuid.uuid4().hex[:12]}")
    env = {
        "DATABASE_URL": url,
        "RATELIMIT_ENABLED": "false",
        "MAX_BODY_BYTES": str(MAX_BODY),
        "LOG_LEVEL": "info",
    }
    service = ServiceProcess(env, workdir).start()
    # A moderator/admin key made through the real storage API, as `keys create` does.
    engine = make_engine(url)
    new = generate_api_key()
    Repository(engine).add_api_key(new.key_id, "input-tests", new.key_hash, [SCOPE_ADMIN])
    engine.dispose()
    live = Live(service, new.key)
    for text in ("one", "two", "three"):
        created = live.request(
            "POST", "/api/v1/contents/inputs/comments", b'{"body": "%s"}' % text.encode()
        )
        assert created.status == 201, created.body
    yield live
    log = service.log()
    assert service.stop() == 0, log
    # No case may have reached the catch-all handler.
    assert "unhandled error" not in log, log


def assert_problem(reply: Reply, status: int) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == PROBLEM, reply.headers
    body = reply.json
    assert isinstance(body, dict)
    assert body["status"] == status
    assert URI_REFERENCE.fullmatch(body["instance"]), body["instance"]
    return body


def thread(live: Live, content_id: str = "inputs") -> list[str]:
    reply = live.request("GET", f"/api/v1/contents/{content_id}/comments?limit=100")
    assert reply.status == 200, reply.body
    return [c["body"] for c in reply.json["items"]]


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- lone surrogates and deep nesting ---------------------------------------------------


@pytest.mark.parametrize(
    ("target", "body", "auth"),
    [
        (
            "/api/comment/new",
            b'{"email":"a@b.co","comment":"\\ud800","content_id":"inputs"}',
            False,
        ),
        ("/api/v1/contents/inputs/comments", b'{"body":"x\\udfff"}', False),
        ("/api/v1/contents/inputs/comments", b'{"body":"ok","author_name":"\\ud83d"}', False),
        ("/api/v1/moderation/bans", b'{"subject":"\\ud800"}', True),
        ("/api/v1/moderation/bans", b'{"email":"a@b.co","reason":"\\udc00"}', True),
        ("/api/v1/contents/inputs/comments", b'{"\\ud800":1}', False),
    ],
)
def test_lone_surrogates_are_400_and_store_nothing(live, target, body, auth):
    before = thread(live)
    reply = live.request("POST", target, body, auth=auth)
    assert reply.status == 400, reply.body
    assert b"surrogate" in reply.body
    assert thread(live) == before


def test_a_paired_surrogate_escape_is_an_ordinary_character(live):
    reply = live.request("POST", "/api/v1/contents/emoji/comments", b'{"body":"\\ud83d\\udc4d"}')
    assert reply.status == 201, reply.body
    assert thread(live, "emoji") == ["\U0001f44d"]


@pytest.mark.parametrize(
    "body", [b"[" * 30000, b'{"a":' * 12000, b"[" * 30000 + b"]" * 30000, b"[" * 1000]
)
def test_deeply_nested_json_is_400(live, body):
    assert len(body) <= MAX_BODY
    reply = live.request("POST", "/api/v1/contents/inputs/comments", body)
    problem = assert_problem(reply, 400)
    assert "nested too deeply" in problem["detail"]


# --- duplicate keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "body", "key", "auth"),
    [
        (
            "/api/comment/new",
            b'{"email":"a@b.co","comment":"x","content_id":"inputs","content_id":"other"}',
            "content_id",
            False,
        ),
        ("/api/v1/contents/inputs/comments", b'{"body":"hello","body":"<b>x</b>"}', "body", False),
        (
            "/api/v1/contents/inputs/comments",
            b'{"body":"x","\\udfff":1,"\\udfff":2}',
            "\\udfff",
            False,
        ),
        ("/api/v1/moderation/comments", b'{"action":"hide","ids":[1],"ids":[2]}', "ids", True),
        ("/api/v1/moderation/bans", b'{"subject":"a","subject":"b"}', "subject", True),
    ],
)
def test_duplicate_keys_are_400_naming_the_key_and_change_nothing(live, target, body, key, auth):
    # The last key won: a proxy or WAF that reads the first key judged another request.
    before = thread(live), thread(live, "other")
    reply = live.request("POST", target, body, auth=auth)
    assert reply.status == 400, reply.body
    answer = reply.json
    assert isinstance(answer, dict)
    if target.startswith("/api/comment/"):
        assert answer["status"] == "BAD-REQUEST"
        detail = answer["message"]
    else:
        detail = assert_problem(reply, 400)["detail"]
    assert detail.startswith(f'the request body has the key "{key}" more than once'), detail
    assert (thread(live), thread(live, "other")) == before
    bans = live.request("GET", "/api/v1/moderation/bans", auth=True)
    assert bans.json == {"items": [], "next_cursor": None}


# --- the Content-Type's charset -----------------------------------------------------------


@pytest.mark.parametrize("charset", ["punycode", "undefined", "utf-16", "no-such-codec"])
def test_a_charset_parameter_is_ignored_json_is_utf8(live, charset):
    # Each of these named a codec the body was decoded with: punycode and undefined were
    # 500s. Valid UTF-8 is read as UTF-8, on both APIs.
    content_type = f"application/json; charset={charset}"
    body = f"caf\u00e9 {charset}"
    reply = live.request(
        "POST",
        "/api/v1/contents/charsets/comments",
        json.dumps({"body": body}, ensure_ascii=False).encode(),
        content_type=content_type,
    )
    assert reply.status == 201, reply.body
    legacy = live.request(
        "POST",
        "/api/comment/new",
        json.dumps(
            {"email": "c@b.co", "comment": f"{body} legacy", "content_id": "charsets"},
            ensure_ascii=False,
        ).encode(),
        content_type=content_type,
    )
    assert legacy.status == 200, legacy.body
    assert {body, f"{body} legacy"} <= set(thread(live, "charsets"))


@pytest.mark.parametrize(("charset", "encoding"), [("utf-16", "utf-16"), ("iso-8859-1", "latin-1")])
def test_a_body_that_is_not_utf8_is_400_whatever_the_charset_says(live, charset, encoding):
    before = thread(live)
    reply = live.request(
        "POST",
        "/api/v1/contents/inputs/comments",
        '{"body": "caf\u00e9"}'.encode(encoding),
        content_type=f"application/json; charset={charset}",
    )
    problem = assert_problem(reply, 400)
    assert "not valid UTF-8" in problem["detail"]
    assert thread(live) == before


# --- the Content-Type's media type --------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/+json", "+json", "text/+json", "json+json", "/vnd.x+json"]
)
def test_a_json_suffix_without_a_subtype_name_is_415(live, content_type):
    """ "application/+json" and "+json" ended with "+json", so they were read as JSON and
    stored a comment; a media type needs a type and a subtype name before the suffix."""
    before = thread(live)
    reply = live.request(
        "POST", "/api/v1/contents/inputs/comments", b'{"body": "suffix"}', content_type=content_type
    )
    problem = assert_problem(reply, 415)
    assert problem["type"] == "/docs#problem-unsupported-media-type"
    assert "Content-Type: application/json" in problem["detail"]
    legacy = live.request(
        "POST",
        "/api/comment/new",
        b'{"email": "s@b.co", "comment": "suffix", "content_id": "inputs"}',
        content_type=content_type,
    )
    assert legacy.status == 415, legacy.body
    assert thread(live) == before


@pytest.mark.parametrize("content_type", ["application/vnd.example+json", "Application/LD+JSON"])
def test_a_named_json_suffix_type_is_read_as_json(live, content_type):
    reply = live.request(
        "POST",
        "/api/v1/contents/suffixes/comments",
        json.dumps({"body": content_type}).encode(),
        content_type=content_type,
    )
    assert reply.status == 201, reply.body
    assert content_type in thread(live, "suffixes")


@pytest.mark.parametrize(
    ("target", "body", "auth"),
    [
        ("/api/comment/new", b'{"email": "a@b.co", "comment": "x", "content_id": "inputs"}', False),
        ("/api/v1/contents/inputs/comments", b'{"body": "typed"}', False),
        ("/api/v1/moderation/bans", b'{"email": "a@b.co"}', True),
    ],
)
def test_a_415_names_the_media_type_to_send_in_accept(live, target, body, auth):
    """RFC 9110, section 12.5.1: a 415's Accept tells the client what to send instead. A
    client that posted a form or text/plain learnt "application/json" only from prose."""
    before = thread(live)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        reply = live.request("POST", target, body, auth=auth, content_type=content_type)
        assert reply.status == 415, reply.body
        assert reply.headers.get("accept") == "application/json", reply.headers
    # A gzip body is JSON in the wrong coding: Accept and Accept-Encoding both.
    gz = gzip.compress(body)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + (f"Authorization: Bearer {live.key}\r\n" if auth else "")
        + "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(gz)}\r\n\r\n"
    )
    reply = live.send(head.encode() + gz)
    assert reply.status == 415, reply.body
    assert reply.headers.get("accept") == "application/json", reply.headers
    assert reply.headers.get("accept-encoding") == "identity", reply.headers
    assert thread(live) == before


# --- integers past BIGINT -----------------------------------------------------------------


def test_huge_parent_id_and_moderation_ids_are_400(live):
    body = json.dumps({"body": "reply", "parent_id": BIG}).encode()
    problem = assert_problem(live.request("POST", "/api/v1/contents/inputs/comments", body), 400)
    assert problem["errors"][0]["field"] == "parent_id"
    bulk = json.dumps({"action": "hide", "ids": [BIG]}).encode()
    problem = assert_problem(
        live.request("POST", "/api/v1/moderation/comments", bulk, auth=True), 400
    )
    assert problem["errors"][0]["field"] == "ids"


@pytest.mark.parametrize(
    ("target", "auth"),
    [
        ("/api/v1/contents/inputs/comments?cursor={o}", False),
        ("/api/v1/contents/inputs/comments?order=newest&cursor={n}", False),
        ("/api/v1/moderation/pending?cursor={pending}", True),
        ("/api/v1/admin/audit-log?cursor={log}", True),
    ],
)
def test_cursors_past_bigint_are_positions_not_500s(live, target, auth):
    # 19 digits over 2**63 - 1: a position after (oldest) or before (newest) every id.
    over = {
        "o": cursor(b"o9999999999999999999"),
        "n": cursor(b"n9999999999999999999"),
        "log": cursor(b"l9999999999999999999"),  # the audit log's: newest first
    }
    over["pending"] = encode_listing_cursor(over["o"], "pending", None)  # bound to its listing
    reply = live.request("GET", target.format(**over), auth=auth)
    assert reply.status == 200, reply.body
    items = reply.json["items"]  # type: ignore[index]
    if "newest" in target:
        assert [c["body"] for c in items] == ["three", "two", "one"]
    elif "audit" not in target:
        assert items == []
    # 20 digits is no cursor this API issues.
    too_long = {
        "o": cursor(b"o18446744073709551617"),
        "n": cursor(b"n18446744073709551617"),
        "log": cursor(b"l18446744073709551617"),
    }
    too_long["pending"] = encode_listing_cursor(too_long["o"], "pending", None)
    assert_problem(live.request("GET", target.format(**too_long), auth=auth), 400)


# --- ids and numbers: ASCII digits only ---------------------------------------------------


@pytest.mark.parametrize(
    "segment", ["%C2%B2", "%D9%A3", "%EF%BC%93", "3%20", "+3", "0", "9223372036854775808"]
)
def test_only_ascii_digit_ids_name_comments(live, segment):
    # Comment 3 exists; U+0663 (Arabic-Indic three) and U+FF13 (full-width) must not reach it.
    assert live.request("GET", "/api/v1/comments/3").status == 200
    body = assert_problem(live.request("GET", f"/api/v1/comments/{segment}"), 404)
    assert body["detail"] == "comment not found"


@pytest.mark.parametrize("limit", ["%D9%A3", "%C2%B2", "1_0", "%203", "1.0"])
def test_only_ascii_digit_limits(live, limit):
    body = assert_problem(
        live.request("GET", f"/api/v1/contents/inputs/comments?limit={limit}"), 400
    )
    assert body["errors"][0]["field"] == "limit"


# --- chunked bodies -------------------------------------------------------------------------


def test_malformed_chunk_size_is_400_json(live):
    reply = live.request(
        "POST", "/api/v1/contents/inputs/comments", chunks=[b"zz\r\nabc\r\n", b"0\r\n\r\n"]
    )
    body = assert_problem(reply, 400)
    assert "could not be read" in body["detail"]


def test_chunked_body_over_the_limit_is_413_not_truncated(live):
    before = thread(live)
    body = json.dumps({"body": "a" * (2 * MAX_BODY)}).encode()
    reply = live.request(
        "POST", "/api/v1/contents/inputs/comments", chunks=[chunk(body), b"0\r\n\r\n"]
    )
    assert_problem(reply, 413)
    assert thread(live) == before


def test_chunked_body_of_exactly_the_limit_is_read_whole(live):
    text = "exactly at the limit"
    body = json.dumps({"body": text}).encode()
    body += b" " * (MAX_BODY - len(body))  # trailing whitespace is still JSON
    reply = live.request(
        "POST",
        "/api/v1/contents/exact/comments",
        chunks=[chunk(body[:100]), chunk(body[100:]), b"0\r\n\r\n"],
    )
    assert reply.status == 201, reply.body
    assert thread(live, "exact") == [text]


# --- URLs: undecodable escapes, instance, detail -------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "legacy"),
    [
        ("POST", "/api/v1/contents/%FF/comments", False),
        ("POST", "/api/v1/contents/%FE/comments", False),
        ("GET", "/api/v1/contents/%FF/comments", False),
        ("GET", "/api/comment/list/%C3", True),
        ("POST", "/api/comment/new?x=%FF", True),
        ("GET", "/api/v1/counts?content_id=%FF", False),
    ],
)
def test_percent_escapes_that_are_not_utf8_are_400(live, method, target, legacy):
    body = b'{"body": "collide?"}'
    if legacy and method == "POST":
        body = b'{"email": "a@b.co", "comment": "collide?", "content_id": "\xef\xbf\xbd"}'
    reply = live.request(method, target, body if method == "POST" else None)
    assert reply.status == 400, reply.body
    if legacy:
        assert reply.json == {
            "status": "BAD-REQUEST",
            "message": "the URL is not valid UTF-8 once percent-decoded",
        }
    else:
        # The path the client sent, not U+FFFD's escapes (the byte is not UTF-8).
        assert assert_problem(reply, 400)["instance"] == target.partition("?")[0]
    # Nothing was stored under the replacement character either.
    assert thread(live, "%EF%BF%BD") == []


ZWSP = "%E2%80%8B"  # U+200B ZERO WIDTH SPACE, percent-encoded UTF-8
INVISIBLE_ONLY = "%E2%81%A0%EF%BB%BF"  # U+2060 WORD JOINER, U+FEFF BOM


@pytest.mark.parametrize(
    ("method", "target", "body", "auth"),
    [
        ("POST", f"/api/v1/contents/{ZWSP}/comments", b'{"body": "seen?"}', False),
        ("GET", f"/api/v1/contents/{INVISIBLE_ONLY}/comments", None, False),
        ("GET", f"/api/v1/counts?content_id=a&content_id={ZWSP}", None, False),
        ("GET", f"/api/v1/moderation/comments?content_id={ZWSP}", None, True),
        ("GET", f"/api/v1/moderation/pending?content_id={INVISIBLE_ONLY}", None, True),
    ],
)
def test_invisible_only_content_ids_are_400_problems(live, method, target, body, auth):
    reply = live.request(method, target, body, auth=auth)
    problem = assert_problem(reply, 400)
    assert problem["errors"] == [
        {
            "field": "content_id",
            "message": "must not consist only of characters that print nothing",
        }
    ]


def test_the_legacy_api_refuses_invisible_only_content_ids_as_it_refuses_blank_ones(live):
    for content_id in ("\\u200b", "\\u2060\\ufeff", " "):
        body = b'{"email":"a@b.co","comment":"seen?","content_id":"%s"}' % content_id.encode()
        reply = live.request("POST", "/api/comment/new", body)
        assert reply.status == 400, reply.body
        assert reply.json["status"] == "BAD-REQUEST"
        assert reply.json["message"].startswith("content_id: must not"), reply.json
    listed = live.request("GET", f"/api/comment/list/{ZWSP}")
    assert listed.status == 400, listed.body
    assert listed.json == {
        "status": "BAD-REQUEST",
        "message": "content_id: must not consist only of characters that print nothing",
    }


def test_tag_characters_alone_are_refused_and_nothing_is_stored(live):
    # U+E0041 U+E0042 as JSON's surrogate-pair escapes, and as UTF-8 bytes.
    for tags in (b"\\udb40\\udc41\\udb40\\udc42", "\U000e0041\U000e0042".encode()):
        legacy = b'{"email":"a@b.co","comment":"%s","content_id":"tags"}' % tags
        reply = live.request("POST", "/api/comment/new", legacy)
        assert reply.status == 400, reply.body
        assert reply.json == {
            "status": "BAD-REQUEST",
            "message": "comment: must not be empty or whitespace only",
        }
        reply = live.request("POST", "/api/v1/contents/tags/comments", b'{"body":"%s"}' % tags)
        assert assert_problem(reply, 400)["errors"] == [
            {"field": "body", "message": "must not be empty or whitespace only"}
        ]
    assert thread(live, "tags") == []
    beside = live.request("POST", "/api/v1/contents/tags/comments", b'{"body":"a\\udb40\\udc41"}')
    assert beside.status == 201, beside.body
    assert thread(live, "tags") == ["a\U000e0041"]


# "." and ".." are the URL path's dot segments: a browser (the WHATWG URL parser, fetch,
# the widget) resolves /contents/../comments, and %2e%2e, before sending it, so no client
# built on one could read or post to such a thread. Refused as content ids on every route.
DOT_SEGMENT_MESSAGE = 'must not be "." or ".." (a URL path resolves them away)'


@pytest.mark.parametrize(
    ("method", "target", "body", "auth"),
    [
        ("POST", "/api/v1/contents/./comments", b'{"body": "seen?"}', False),
        ("POST", "/api/v1/contents/%2e%2e/comments", b'{"body": "seen?"}', False),
        ("GET", "/api/v1/contents/%2E/comments", None, False),
        ("GET", "/api/v1/contents/../comments", None, False),
        ("GET", "/api/v1/counts?content_id=a&content_id=..", None, False),
        ("GET", "/api/v1/counts?content_id=%2e", None, False),
        ("GET", "/api/v1/moderation/comments?content_id=.", None, True),
        ("GET", "/api/v1/moderation/pending?content_id=%2E%2E", None, True),
    ],
)
def test_dot_segment_content_ids_are_400_problems(live, method, target, body, auth):
    reply = live.request(method, target, body, auth=auth)
    problem = assert_problem(reply, 400)
    assert problem["errors"] == [{"field": "content_id", "message": DOT_SEGMENT_MESSAGE}]


def test_the_legacy_api_refuses_dot_segment_content_ids(live):
    for content_id in (".", "..", "\\u002e"):
        body = b'{"email":"a@b.co","comment":"seen?","content_id":"%s"}' % content_id.encode()
        reply = live.request("POST", "/api/comment/new", body)
        assert reply.status == 400, (content_id, reply.body)
        assert reply.json == {
            "status": "BAD-REQUEST",
            "message": f"content_id: {DOT_SEGMENT_MESSAGE}",
        }
    for segment in (".", "%2e%2e"):
        listed = live.request("GET", f"/api/comment/list/{segment}")
        assert listed.status == 400, listed.body
        assert listed.json == {
            "status": "BAD-REQUEST",
            "message": f"content_id: {DOT_SEGMENT_MESSAGE}",
        }


def test_dots_beside_other_characters_make_a_content_id(live):
    for content_id in ("...", ".a", "a/..", "%2e%2e%2e"):
        target = f"/api/v1/contents/{content_id.replace('/', '%2F')}/comments"
        assert live.request("POST", target, b'{"body": "kept"}').status == 201, content_id
    reply = live.request("GET", "/api/v1/counts?content_id=...&content_id=.a&content_id=a/..")
    assert reply.status == 200, reply.body
    assert reply.json == {"counts": {"...": 2, ".a": 1, "a/..": 1}}


def test_invisible_characters_beside_visible_ones_make_a_content_id(live):
    target = f"/api/v1/contents/a{ZWSP}/comments"
    assert live.request("POST", target, b'{"body": "kept"}').status == 201
    assert thread(live, f"a{ZWSP}") == ["kept"]
    assert thread(live, "a") == []  # another content


def test_a_real_replacement_character_is_still_a_valid_content_id(live):
    reply = live.request("GET", "/api/v1/counts?content_id=%EF%BF%BD&content_id=%25FF")
    assert reply.status == 200, reply.body
    assert reply.json == {"counts": {"\ufffd": 0, "%FF": 0}}


def test_problem_instance_is_a_uri_reference_and_detail_does_not_echo_the_path(live):
    reply = live.request("GET", "/api/v1/no%20such/%3Cscript%3E/%E2%82%AC")
    body = assert_problem(reply, 404)
    assert body["instance"] == "/api/v1/no%20such/%3Cscript%3E/%E2%82%AC"
    assert body["detail"] == "no such route; see /openapi.json for the API"


def test_control_characters_in_ban_fields_and_targets_are_400(live):
    for payload in (
        {"subject": "a\x00b"},
        {"email": "a\x00@b.co"},
        {"email": "a@b.co", "reason": "\x00"},
    ):
        reply = live.request(
            "POST", "/api/v1/moderation/bans", json.dumps(payload).encode(), auth=True
        )
        assert_problem(reply, 400)
    assert_problem(live.request("DELETE", "/api/v1/moderation/bans/sub:a%00b", auth=True), 400)
    listed = live.request("GET", "/api/v1/moderation/bans", auth=True)
    assert listed.status == 200
    assert listed.json == {"items": [], "next_cursor": None}


# --- addresses that lower-casing lengthens ------------------------------------------------


# "\u0130" lower-cases to two characters ("i\u0307"): an address of 254 characters fits,
# while its author key ("email:" and the address lower-cased; 300 characters in
# comments.author_key and bans.target) may not.
def keyed(local: int, domain: int) -> str:
    """An address of ``local`` U+0130 and a dotted domain of ``domain`` ASCII characters."""
    return "\u0130" * local + "@" + "a" * (domain - 4) + ".com"


def test_an_address_whose_author_key_does_not_fit_is_400_on_both_databases(live):
    """PostgreSQL refused the key (a 500) where SQLite stored it: both now answer 400 and
    store nothing, and an address whose key just fits is taken on both."""
    too_long, fits = keyed(64, 166), keyed(64, 165)  # keys of 301 and 300 characters
    for target, payload, auth in (
        ("/api/v1/contents/keys/comments", {"body": "x", "email": too_long}, False),
        ("/api/v1/moderation/bans", {"email": too_long}, True),
        ("/api/v1/moderation/bans", {"email": "\u0130" * 253 + "@"}, True),
    ):
        reply = live.request("POST", target, json.dumps(payload).encode(), auth=auth)
        assert assert_problem(reply, 400)["errors"][0]["field"] == "email"
    legacy = {"email": too_long, "comment": "x", "content_id": "keys"}
    reply = live.request("POST", "/api/comment/new", json.dumps(legacy).encode())
    assert reply.status == 400, reply.body
    assert reply.json["status"] == "BAD-REQUEST"
    assert thread(live, "keys") == []
    listed = live.request("GET", "/api/v1/moderation/bans", auth=True).json
    assert listed == {"items": [], "next_cursor": None}

    posted = {"body": "fits", "email": fits}
    reply = live.request("POST", "/api/v1/contents/keys/comments", json.dumps(posted).encode())
    assert reply.status == 201, reply.body
    author = quote(f"email:{fits}", safe="")
    listed = live.request(
        "GET", f"/api/v1/moderation/comments?status=published&author={author}", auth=True
    )
    assert [c["body"] for c in listed.json["items"]] == ["fits"]
    banned = live.request(
        "POST", "/api/v1/moderation/bans", json.dumps({"email": fits}).encode(), auth=True
    )
    assert banned.status == 201, banned.body
    target = quote(banned.json["target"], safe="")
    assert live.request("DELETE", f"/api/v1/moderation/bans/{target}", auth=True).status == 204


# --- token claims ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"name": "a\x00b"}, 201),  # an unusable display name is dropped, as a bad email was
        ({"email": "a\x00@b.co"}, 201),
        ({"name": "\ud800"}, 201),
        ({"sub": "x\x00y"}, 401),  # the subject is the identity: no usable one, no access
        ({"sub": "\udfff"}, 401),
    ],
)
def test_control_characters_in_token_claims_are_not_a_500(make_app, claims, status):
    signer = hs_signer()
    app = make_app(jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    claims = dict(claims)  # parametrize shares the dict between both databases
    token = signer.token(subject=claims.pop("sub", "reader-1"), **claims)
    response = client.post(
        "/api/v1/contents/claims/comments", json={"body": "hello"}, headers=bearer(token)
    )
    assert response.status_code == status, response.data
    if status == 201:
        assert response.json["author"]["name"] != "a\x00b"


# --- errors the HTTP server answers itself ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /api/v1/counts?content_id=" + b"x" * 60000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 60 + b"\r\n", 431),
        (b"BAD\x01 / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400),  # no Host
    ],
)
def test_server_errors_match_the_published_problem_schema(live, raw, status):
    reply = live.send(raw)
    assert reply.status == status, reply.body
    # The app's security headers, as on every answer the app gives (docs/security.md).
    for name, value in SECURITY_HEADERS:
        assert reply.headers.get(name.lower()) == value, name
    # RFC 9110 6.6.1: a server with a clock sends Date on every 4xx, as on the app's answers.
    sent = parsedate_to_datetime(reply.headers["date"])
    assert abs((sent - datetime.now(UTC)).total_seconds()) < 60
    # The OpenAPI promises X-Request-ID on every response; the worker's own ones too.
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers.get("x-request-id", "")), reply.headers
    spec = live.request("GET", "/openapi.json").json
    assert isinstance(spec, dict)
    problem = spec["components"]["schemas"]["Problem"]
    body = reply.json
    Draft202012Validator(problem, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        {k: v for k, v in body.items() if k != "errors"}  # type: ignore[union-attr]
    )
    # Its `type` is explained on /docs.
    slug = body["type"].removeprefix("/docs#problem-")  # type: ignore[index]
    docs = live.request("GET", "/docs").body.decode()
    assert f'id="problem-{slug}"' in docs, slug


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /api/v1/counts?content_id=" + b"x" * 300_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: " + b"b" * 300_000 + b"\r\n\r\n", 431),
        # Lines ended by LF alone: refused as soon as the first read shows one.
        (b"POST /api/v1/contents/a/comments HTTP/1.1\nX-A: " + b"b" * 300_000, 400),
    ],
    ids=["414", "431", "400"],
)
def test_a_refusal_reaches_a_client_still_sending(live, raw, status):
    # The server refuses after its first 64 KiB read. Closed outright with the rest unread,
    # the connection was reset and the client's read failed (ECONNRESET) instead of ending
    # at the answer. Now the answer is followed by FIN while the server drains the rest.
    reply = live.send(raw)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/problem+json"


def test_an_http11_request_without_host_is_400_and_says_why(live):
    # RFC 9112 3.2: a MUST. It used to be served, with Flask's SERVER_NAME standing in for
    # the host the client never named.
    reply = live.send(b"GET /api/v1/counts?content_id=a HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.status == 400, reply.body
    assert reply.headers["content-type"] == PROBLEM
    assert reply.json == {
        "type": "/docs#problem-bad-request",
        "title": "Bad Request",
        "status": 400,
        "detail": "an HTTP/1.1 request needs a Host header",
    }
    # HTTP/1.0 has no such rule; an empty Host is what a client sends with no authority.
    for raw in (
        b"GET /api/v1/counts?content_id=a HTTP/1.0\r\n\r\n",
        b"GET /api/v1/counts?content_id=a HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    ):
        assert live.send(raw).status == 200
