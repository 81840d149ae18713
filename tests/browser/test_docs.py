"""/docs in Debian's chromium against a real `comments-api serve`: Swagger UI renders every
operation of /openapi.json at 1280 px, a try-it-out call reaches the API and shows its
answer, problem links land on their anchors, and the page's CSP is never violated."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from .conftest import Api, screenshot

pytestmark = pytest.mark.browser

METHODS = ("get", "post", "put", "patch", "delete")
# Recorded before any page script runs (the CSP does not apply to DevTools-injected code).
CSP_RECORDER = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture
def docs(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    context.add_init_script(CSP_RECORDER)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.requests = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
    )
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))  # type: ignore[attr-defined]
    page.on("request", lambda r: page.requests.append(r.url))  # type: ignore[attr-defined]
    page.on(
        "response",
        lambda r: r.status >= 400 and page.console_errors.append(f"{r.status} {r.url}"),  # type: ignore[attr-defined]
    )
    yield page
    context.close()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in spec["paths"].items()
        for method in METHODS
        if method in item
    ]


def no_csp_trouble(page: Any) -> None:
    assert page.evaluate("window.cspViolations") == [], page.evaluate("window.cspViolations")
    assert not [e for e in page.console_errors if "Content Security Policy" in e], (
        page.console_errors
    )


def test_docs_lists_every_operation_and_runs_a_try_it_out_call(docs, open_api: Api):
    spec = requests.get(f"{open_api.base}/openapi.json", timeout=5).json()
    ops = operations(spec)
    assert len(ops) >= 30
    docs.goto(f"{open_api.base}/docs")
    blocks = docs.locator(".opblock")
    expect(blocks).to_have_count(len(ops))
    for path, method, op in ops:
        # Swagger UI's own id for an operation: operations-<tag>-<operationId>.
        block = docs.locator(f"#operations-{op['tags'][0]}-{op['operationId']}")
        expect(block).to_have_count(1)
        expect(block.locator(".opblock-summary-method")).to_have_text(method.upper())
        # Swagger UI breaks long paths with zero-width spaces.
        shown = block.locator(".opblock-summary-path").inner_text().replace("\u200b", "")
        assert shown == path
    # The prose from the document's description is on the page.
    expect(docs.get_by_role("heading", name="Authentication")).to_be_visible()
    expect(docs.get_by_text("curl -s http://127.0.0.1:8000/api/comment/list/1")).to_be_visible()
    docs.locator("#operations-tag-v1").scroll_into_view_if_needed()
    screenshot(docs, "docs-reference")

    # Nothing runs past 1280 px, and no two operation summaries overlap.
    assert docs.evaluate("document.documentElement.scrollWidth") <= 1280
    boxes = [b.bounding_box() for b in blocks.locator(".opblock-summary").all()]
    for above, below in itertools.pairwise(boxes):
        assert above["y"] + above["height"] <= below["y"] + 0.5, (above, below)

    # Try it out: GET /api/v1/counts for two contents, one with a comment.
    content = "docs-try-it"
    open_api.post(content, "counted by the docs page")
    block = docs.locator("#operations-v1-countComments")
    block.locator(".opblock-summary-control").click()
    block.get_by_role("button", name="Try it out").click()
    items = block.locator(".parameters input[type=text]")
    expect(items.first).to_be_visible()
    while items.count() < 2:
        block.get_by_role("button", name=re.compile("Add (string )?item")).click()
    items.nth(0).fill(content)
    items.nth(1).fill("docs-nothing-here")
    block.get_by_role("button", name="Execute").click()
    live = block.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("200")
    answer = live.locator("tr.response .response-col_description")
    expect(answer).to_contain_text(f'"{content}": 1')
    expect(answer).to_contain_text('"docs-nothing-here": 0')
    expect(block.locator(".request-url")).to_contain_text(
        f"/api/v1/counts?content_id={content}&content_id=docs-nothing-here"
    )
    screenshot(block, "docs-try-it-out")

    # Everything came from the API's own origin: no CDN, no validator, no font host.
    assert [u for u in docs.requests if not u.startswith(open_api.base)] == []
    no_csp_trouble(docs)
    assert docs.console_errors == [], docs.console_errors


def test_problem_links_land_on_their_anchor(docs, open_api: Api):
    spec = requests.get(f"{open_api.base}/openapi.json", timeout=5).json()
    # A real error body, and where its `type` leads.
    problem = requests.get(f"{open_api.base}/api/v1/comments/999999", timeout=5).json()
    assert problem["type"] == "/docs#problem-not-found"
    docs.goto(open_api.base + problem["type"])
    expect(docs.locator(".opblock").first).to_be_visible()
    target = docs.locator("#problem-not-found")
    expect(target).to_be_in_viewport()
    expect(target).to_contain_text("Not found")
    # Every problem the document lists has its entry on the page.
    for entry in spec["x-problem-types"]:
        expect(docs.locator(f"#problem-{entry['slug']}")).to_contain_text(entry["title"])
    no_csp_trouble(docs)
