"""The widget and the badges on a host page they do not control: the site's CSS around
them, the site's own calls overlapping theirs."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from .conftest import Api, HostSite
from .test_widget import new_content, open_with_token_provider

pytestmark = pytest.mark.browser


def badge_page(site: HostSite, api: Api, path: str, badges: str) -> str:
    return site.add(
        path,
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Badges</title>
<script src="{api.base}/widget/count.js" defer></script></head>
<body><main><h1>Archive</h1><p id="list">{badges}</p></main></body></html>""",
        csp=site.strict_csp(api.base),
    )


def test_a_late_count_answer_does_not_undo_a_newer_one(page, site: HostSite, open_api: Api):
    # The page's first counts call is slow; meanwhile a comment is posted and the site asks
    # again (as count.js does itself on comments:posted). The first answer, read before the
    # comment, arrives last: the badge keeps the newer count.
    content = new_content()
    link = f'<a href="#" data-comments-count="{content}">Comments</a>'
    url = badge_page(site, open_api, "/late-counts.html", link)
    held: list[tuple[Any, Any]] = []

    def hold_first(route) -> None:
        if held or route.request.method != "GET":
            route.continue_()
            return
        held.append((route, route.fetch()))  # the API's real answer, read now, given later

    page.route("**/api/v1/counts?*", hold_first)
    page.goto(url)
    badge = page.locator(f'[data-comments-count="{content}"]')
    for _ in range(50):  # the route handler runs while the page is waited on
        if held:
            break
        page.wait_for_timeout(100)
    assert len(held) == 1
    expect(badge).to_have_text("Comments")
    assert held[0][1].json()["counts"][content] == 0
    open_api.post(content, "the first comment")
    page.evaluate("CommentsCount.refresh()")
    expect(badge).to_have_text("1 comment")
    route, answer = held[0]
    with page.expect_event("requestfinished", lambda r: "/api/v1/counts" in r.url):
        route.fulfill(response=answer)
    page.wait_for_timeout(300)  # the late answer's handler has run by now
    expect(badge).to_have_text("1 comment")
    assert badge.get_attribute("data-comments-count-value") == "1"


def test_refresh_given_a_badge_itself_counts_it(page, site: HostSite, open_api: Api):
    # A single-page app adds one link and hands it to CommentsCount.refresh, as the docs say.
    content = new_content()
    open_api.post(content, "counted")
    url = badge_page(site, open_api, "/added-badge.html", "")
    page.goto(url)
    page.evaluate(
        """(id) => {
            const a = document.createElement("a");
            a.href = "#";
            a.dataset.commentsCount = id;
            a.textContent = "Comments";
            document.getElementById("list").append(a);
            return CommentsCount.refresh(a);
        }""",
        content,
    )
    expect(page.locator(f'[data-comments-count="{content}"]')).to_have_text("1 comment")


def test_a_site_with_a_small_root_font_size_does_not_shrink_the_widget(
    page, site: HostSite, open_api: Api
):
    # html{font-size:62.5%} (1rem = 10px, a common way to size a site in rem) with the text
    # itself at 18px: the widget's sizes follow the text it sits in, not the root.
    content = new_content()
    open_api.post(content, "a comment", author_name="Ana")
    site.add(
        "/small-root.css",
        "html{font-size:62.5%} body{font-size:18px}",
        "text/css",
        csp=None,
    )
    url = site.thread_page(
        f"/{content}.html",
        open_api.base,
        content,
        extra='<link rel="stylesheet" href="/small-root.css">',
    )
    page.goto(url)
    widget = page.locator("comments-thread")
    expect(widget.locator("article")).to_have_count(1)

    def size(selector: str) -> float:
        px = widget.locator(selector).first.evaluate("(el) => getComputedStyle(el).fontSize")
        return float(px.removesuffix("px"))

    assert size("article .text") == 18
    assert size("article .meta") == pytest.approx(18 * 0.875)
    assert size("h2") == pytest.approx(18 * 1.25)
    assert size("form label") == pytest.approx(18 * 0.875)
    padding = widget.locator("section").evaluate("(el) => getComputedStyle(el).paddingTop")
    assert float(padding.removesuffix("px")) == 18


def test_an_apps_navigation_to_another_story_with_a_comment_link_shows_that_comment(
    page, site: HostSite, open_api: Api
):
    # A single-page app keeps the element and, on a click to the next story's comment,
    # pushes the address (no hashchange) and sets the new content-id.
    first, second = new_content(), new_content()
    open_api.post(first, "on the first story")
    posted = [open_api.post(second, f"second story {n}") for n in range(3)]
    wanted = posted[2]
    url = site.thread_page(f"/app-{first}.html", open_api.base, first, attrs='page-size="1"')
    page.goto(url)
    widget = page.locator("comments-thread")
    expect(widget.locator("p.text")).to_have_text(["on the first story"])
    page.evaluate(
        """([id, comment]) => {
            history.pushState(null, "", `/app-${id}.html#comment-${comment}`);
            document.querySelector("comments-thread").setAttribute("content-id", id);
        }""",
        [second, wanted["id"]],
    )
    linked = widget.locator(f"#comment-{wanted['id']}")
    expect(linked).to_be_focused()  # read on through the pages before it
    expect(linked).to_have_class(re.compile(r"\blinked\b"))
    expect(widget.locator("article")).to_have_count(3)
    # Sorted again, the thread is the same one: the focus stays on the menu.
    widget.get_by_label("Sort").select_option("newest")
    expect(widget.locator("article")).to_have_count(1)
    page.wait_for_timeout(300)
    expect(widget.get_by_label("Sort")).to_be_focused()


def test_count_script_loaded_twice_counts_once_per_comment_posted(
    page, site: HostSite, open_api: Api
):
    # A single-page app adds the badge script's tag again on a route it renders. The page's
    # badges are counted anew, and a comment posted costs one counts call, not one per copy.
    content = new_content()
    badge = f'<p><a href="#comments" data-comments-count="{content}">Comments</a></p>'
    url = site.thread_page(
        f"/twice-{content}.html",
        open_api.base,
        content,
        extra=f'{badge}<script src="{open_api.base}/widget/count.js" defer></script>',
    )
    calls: list[str] = []
    page.on("request", lambda r: "/api/v1/counts?" in r.url and calls.append(r.url))
    page.goto(url)
    link = page.locator(f'a[data-comments-count="{content}"]')
    expect(link).to_have_text("0 comments")
    widget = page.locator("comments-thread")
    expect(widget.locator("p.meta", has_text="No comments yet")).to_be_visible()
    open_api.post(content, "posted elsewhere")
    page.evaluate(
        """(src) => new Promise((done) => {
            const again = document.createElement("script");
            again.src = src;
            again.onload = done;
            document.head.append(again);
        })""",
        f"{open_api.base}/widget/count.js",
    )
    expect(link).to_have_text("1 comment")  # the running copy counted the page anew
    page.wait_for_timeout(300)
    before = len(calls)
    widget.get_by_label("Your comment").fill("posted here")
    widget.get_by_role("button", name="Post comment").click()
    expect(link).to_have_text("2 comments")
    page.wait_for_timeout(500)  # a second copy's call, if any, has been made by now
    assert len(calls) - before == 1, calls[before:]
    assert page.evaluate("typeof CommentsCount.refresh") == "function"


def test_a_post_waiting_for_the_token_goes_to_the_story_it_was_written_on(
    page, site: HostSite, open_api: Api
):
    # The reader posts on one story; the site's token provider takes its time; meanwhile
    # the app navigates to the next story (same element, new content-id). The comment is
    # stored on the story it was written on, never on the one shown now.
    first, second = new_content(), new_content()
    provider = (
        "window.waiting = [];\n"
        "window.heldToken = () =>\n"
        "  window.hold ? new Promise((done) => waiting.push(done)) : Promise.resolve(null);\n"
        "window.giveToken = (token) => waiting.splice(0).forEach((done) => done(token));\n"
    )
    widget = open_with_token_provider(page, site, open_api, first, "heldToken", provider)
    widget.get_by_label("Your comment").fill("about the first story")
    page.evaluate("window.hold = true")
    widget.get_by_role("button", name="Post comment").click()
    expect(widget.get_by_role("button", name="Posting…")).to_be_visible()
    page.evaluate(
        "(id) => document.querySelector('comments-thread').setAttribute('content-id', id)",
        second,
    )
    expect(widget.get_by_text("No comments yet")).to_be_visible()
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.evaluate("window.giveToken(null)")
    assert answer.value.status == 201

    def stored(content: str) -> list[str]:
        url = f"{open_api.base}/api/v1/contents/{content}/comments"
        return [c["body"] for c in requests.get(url, timeout=5).json()["items"]]

    assert stored(second) == []
    assert stored(first) == ["about the first story"]
    # The story shown now shows nothing of it, and its form is empty.
    expect(widget.locator("article")).to_have_count(0)
    expect(widget.get_by_label("Your comment")).to_have_value("")
