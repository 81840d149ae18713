"""The registry of problem types (comments_api.contract.problems) covers every error.

This replaces a scan of the source's syntax tree: the error handlers build every ``type``
from the registry's helpers, so the registry itself is what must be complete.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from http import HTTPStatus

import pytest
import werkzeug.exceptions

import comments_api
from comments_api.comments.rules import DomainError
from comments_api.contract.problems import (
    DOCS_PROBLEM_PREFIX,
    LEGACY_PREFIX,
    PROBLEM_JSON,
    SLUGS,
    problem_type_uri,
    problem_types,
    status_slug,
    status_title,
)
from comments_api.settings import Settings

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

# Statuses werkzeug has an exception for that this service never answers: nothing raises
# them and no route needs them. Adding a use of one of these must add a registry entry.
# 422 and 412 are answered, but never by status alone: only as "idempotency-key-reused",
# "if-match-failed" and "if-none-match-failed".
NEVER_ANSWERED = {402, 406, 410, 411, 412, 416, 418, 421, 422, 423, 424, 428, 451, 502, 504, 505}


def _all_subclasses(cls: type) -> set[type]:
    found, pending = set(), [cls]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def test_every_domain_error_code_is_registered():
    # Import every module so that every DomainError subclass exists.
    for info in pkgutil.walk_packages(comments_api.__path__, prefix="comments_api."):
        if ".migrations" not in info.name and not info.name.endswith(("wsgi", "gunicorn_conf")):
            importlib.import_module(info.name)
    codes = {cls.code for cls in _all_subclasses(DomainError) | {DomainError}}
    assert {"validation-error", "not-found", "conflict", "duplicate", "author-banned"} <= codes
    # The writes' preconditions (comments/conditional.py): each failure its own type.
    assert {"if-match-failed", "if-none-match-failed"} <= codes
    assert codes - SLUGS == set()


def test_every_status_werkzeug_can_raise_is_registered_or_never_answered():
    statuses = {
        cls.code
        for cls in vars(werkzeug.exceptions).values()
        if isinstance(cls, type)
        and issubclass(cls, werkzeug.exceptions.HTTPException)
        and cls.code
        and cls.code >= 400
    }
    assert {400, 404, 405, 413, 415, 429, 500, 503} <= statuses
    missing = {s for s in statuses - NEVER_ANSWERED if status_slug(s) not in SLUGS}
    assert missing == set(), "add these to problems.problem_types()"
    # The exclusions are real exclusions: none of them is registered after all.
    assert {status_slug(s) for s in NEVER_ANSWERED} & SLUGS == set()


def test_registry_entries_are_complete_and_consistent():
    types = problem_types(Settings())
    assert set(types) == SLUGS
    assert len(SLUGS) >= 15
    for slug, entry in types.items():
        assert entry["title"], slug
        assert entry["description"].strip(), slug
        assert 400 <= entry["status"] <= 599, slug
        assert problem_type_uri(slug) == f"{DOCS_PROBLEM_PREFIX}{slug}"
    # An error answered by status alone carries the slug of that status' entry.
    for slug, entry in types.items():
        if status_slug(entry["status"]) == slug:
            assert slug.replace("-", " ") == entry["title"].lower().replace("'", "")


def test_status_slugs_use_rfc_9110_names_and_follow_the_phrase():
    assert status_slug(413) == "content-too-large"
    assert status_slug(414) == "uri-too-long"
    assert status_slug(404) == "not-found"
    assert status_slug(431) == "request-header-fields-too-large"
    assert status_slug(HTTPStatus.IM_A_TEAPOT) == "im-a-teapot"


def test_the_http_servers_errors_agree_with_the_registry():
    # worker.py answers some errors before the app runs; same titles, slugs and shapes.
    from comments_api import worker

    for status in range(400, 600):
        content_type, body = worker.error_document(status, "detail", "/api/v1/x")
        problem = json.loads(body)
        assert content_type == PROBLEM_JSON
        assert problem["title"] == status_title(status)
        assert problem["type"] == problem_type_uri(status_slug(status))
        legacy = json.loads(worker.error_document(status, "detail", LEGACY_PREFIX + "new")[1])
        assert legacy["status"] == status_title(status).upper().replace(" ", "-")
    assert worker.LEGACY_PREFIX is LEGACY_PREFIX


def test_the_servers_errors_take_the_legacy_shape_wherever_the_app_does(monkeypatch):
    # The app routes by werkzeug's request.path: below the mount prefix, leading slashes
    # merged, an absolute URI's path; it answers all of these in the legacy shape, and the
    # worker's own 408/413/414/400 must too (they were problem+json).
    from comments_api import worker

    def shape(target: str) -> str:
        return worker.error_document(414, "d", target)[0]

    monkeypatch.setenv("SCRIPT_NAME", "/c")
    assert shape("/c/api/comment/list/x") == "application/json"
    assert shape("/c//api/comment/new") == "application/json"
    assert shape("/c/api/v1/counts") == PROBLEM_JSON
    monkeypatch.delenv("SCRIPT_NAME")
    assert shape("//api/comment/list/x") == "application/json"
    assert shape("http://h.example/api/comment/list/x") == "application/json"
    assert shape("http://h.example//api/comment/new") == "application/json"
    assert shape("http://h.example") == PROBLEM_JSON
    assert shape("//api/v1/counts") == PROBLEM_JSON
    assert shape("/x/api/comment/new") == PROBLEM_JSON


def test_web_errors_uses_the_registry_constants():
    from comments_api.web import errors

    assert errors.LEGACY_PREFIX is LEGACY_PREFIX
    assert errors.PROBLEM_JSON is PROBLEM_JSON


def test_the_servers_413_and_408_name_their_instance_and_other_refusals_do_not():
    from comments_api import worker

    def instance(status: int, target: str) -> str | None:
        return json.loads(worker.error_document(status, "d", target)[1]).get("instance")

    assert instance(413, "/api/v1/contents/a%2Fb/comments?x=1") == "/api/v1/contents/a%2Fb/comments"
    # Not a clean origin-form path: left out rather than echoed.
    assert instance(413, "/api/v1/contents/<script>/comments") is None
    assert instance(413, "http://other.example/x") is None
    assert instance(408, "/api/v1/contents/a/comments") == "/api/v1/contents/a/comments"
    # The path may be what a 400 or 414 is about: never echoed there.
    assert instance(400, "/api/v1/counts") is None
    assert instance(414, "/api/v1/counts") is None


def test_what_the_server_answers_while_buffering_is_registered_without_instance():
    """The worker's own 405 (CONNECT) and 501 (a coding before chunked) link to a problem
    type /docs explains, and name no `instance`: their target is not a path."""
    from comments_api import worker

    for status, detail in ((405, worker.CONNECT_NOT_SERVED), (501, worker.UNSUPPORTED_CODING)):
        problem = json.loads(worker.error_document(status, detail, "example.com:443")[1])
        assert problem["type"] == problem_type_uri(status_slug(status))
        assert status_slug(status) in SLUGS
        assert "instance" not in problem
    # A 405 lists the methods, as RFC 9110 15.5.6 requires; nothing else does.
    head = worker.error_response_bytes(405, worker.CONNECT_NOT_SERVED, None).split(b"\r\n\r\n")[0]
    assert f"\r\nAllow: {worker.SERVED_METHODS}\r\n".encode() in head
    assert b"Allow:" not in worker.error_response_bytes(501, worker.UNSUPPORTED_CODING, None)
