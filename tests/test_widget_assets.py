"""The widget, badge and console files as served: headers, CSP, size, and no unsafe DOM APIs.

Their behaviour in a browser is tested in tests/browser/.
"""

from __future__ import annotations

import gzip
import re
from importlib import resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

STATIC = resources.files("comments_api") / "static"
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("comments.js", "count.js", "console.js")
WIDGET_BUDGET = 15 * 1024  # gzipped bytes (issue 13)


@pytest.fixture
def client(sqlite_url):
    from comments_api.app import create_app
    from comments_api.settings import Settings

    return create_app(Settings(database_url=sqlite_url, ratelimit_enabled=False)).test_client()


def test_widget_script_fits_the_size_budget():
    raw = (STATIC / "comments.js").read_bytes()
    size = len(gzip.compress(raw, compresslevel=9))
    assert size <= WIDGET_BUDGET, f"comments.js is {size} bytes gzipped (budget {WIDGET_BUDGET})"


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_never_parse_html_or_evaluate_code(name):
    source = (STATIC / name).read_text(encoding="utf-8")
    for pattern in (
        r"\.innerHTML\b",
        r"\.outerHTML\b",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\s*\(",
        r"new\s+Function\b",
        r"setTimeout\(\s*['\"`]",
        r"\.style\s*=",
        r"setAttribute\(\s*['\"]style",
    ):
        assert not re.search(pattern, source), f"{name} uses {pattern}"


def test_badges_leave_out_the_content_ids_the_api_refuses_by_its_own_rule():
    # count.js skips ids the API would refuse (one fails its whole counts call): its copy
    # of the rule must stay the API's.
    from comments_api.comments.rules import BLANK_PATTERN, CONTENT_ID_PATTERN, MAX_CONTENT_ID_LENGTH

    source = (STATIC / "count.js").read_text(encoding="utf-8")
    assert f"const CONTENT_ID = /{CONTENT_ID_PATTERN}/;" in source
    assert f"const BLANK = /{BLANK_PATTERN}/;" in source
    assert f"const MAX_CONTENT_ID = {MAX_CONTENT_ID_LENGTH};" in source
    # comments.js names such an id in place of the thread (" . ": not a 400 read as "could not
    # be loaded"), by the same rule.
    widget = (STATIC / "comments.js").read_text(encoding="utf-8")
    assert f"const CONTENT_ID = /{CONTENT_ID_PATTERN}/;" in widget
    assert f"const BLANK = /{BLANK_PATTERN}/;" in widget
    assert f"const MAX_CONTENT_ID = {MAX_CONTENT_ID_LENGTH};" in widget


def test_every_text_the_widget_shows_is_a_documented_key_in_both_languages():
    # Sites replace texts by key (docs/widget.md, "Languages"): a key missing from the list
    # cannot be found, and one missing from pt-BR falls back to English mid-sentence.
    source = (STATIC / "comments.js").read_text(encoding="utf-8")
    languages = re.search(r"const MESSAGES = \{\n(.*?)\n  \};", source, re.S)
    assert languages is not None
    keys = {
        lang: re.findall(r"^      (\w+):", block, re.M)
        for lang, block in re.findall(
            r'^    "?([\w-]+)"?: \{\n(.*?)^    \}', languages[1], re.M | re.S
        )
    }
    assert set(keys) == {"en", "pt-BR"}, keys
    assert len(keys["en"]) > 40
    assert keys["pt-BR"] == keys["en"]
    documented = (ROOT / "docs" / "widget.md").read_text(encoding="utf-8")
    listed = re.search(r"^Keys: (.*?)\. `\{n\}`", documented, re.M | re.S)
    assert listed is not None
    assert re.findall(r"`(\w+)`", listed[1]) == keys["en"]


@pytest.mark.parametrize("name", ["comments.js", "console.js"])
def test_the_widget_and_console_tell_blank_lines_by_the_apis_rule(name):
    # They shorten runs of blank lines in what they show: a line the API would call blank
    # (whitespace and invisible characters) is blank to them too.
    from comments_api.comments.rules import BLANK_PATTERN

    source = (STATIC / name).read_text(encoding="utf-8")
    assert f"const BLANK = /{BLANK_PATTERN}/;" in source


@pytest.mark.parametrize("name", ["comments.js", "console.js"])
def test_the_widget_and_console_take_plane_14_as_the_api_does(name):
    # The range the API adds to BLANK's set, which only a u-flag pattern can name.
    from comments_api.comments.rules import INVISIBLE_ASTRAL

    first, last = (f"\\u{{{ord(c):x}}}" for c in INVISIBLE_ASTRAL.split("-"))
    source = (STATIC / name).read_text(encoding="utf-8")
    assert f"const PLANE_14 = /[{first}-{last}]/gu;" in source


def test_the_widget_and_console_shorten_blank_lines_alike():
    # Two copies, for the widget is one classic script that sites embed and the console an
    # ES module of its own: they must stay the same function.
    def function(name: str) -> str:
        source = (STATIC / name).read_text(encoding="utf-8")
        found = re.search(r"^( *)function withoutBlankRuns\(.*?^\1\}$", source, re.M | re.S)
        assert found is not None, name
        return re.sub(r"^" + found[1], "", found[0], flags=re.M)

    assert function("comments.js") == function("console.js")


@pytest.mark.parametrize("name", ["demo.html", "moderation.html"])
def test_pages_have_no_inline_code_or_styles(name):
    page = (STATIC / name).read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/widget/comments.js", "text/javascript"),
        ("/widget/count.js", "text/javascript"),
        ("/moderation/console.js", "text/javascript"),
        ("/widget/page.css", "text/css"),
    ],
)
def test_assets_are_served_cacheable_with_validators(client, path, mimetype):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "max-age=300" in response.headers["Cache-Control"]
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    etag = response.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    if path.startswith("/widget/") and path.endswith(".js"):
        # Embedded by other sites' pages, including ones that send COEP.
        assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


@pytest.mark.parametrize("path", ["/widget/demo", "/moderation"])
def test_pages_carry_a_strict_csp(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    header = response.headers["Content-Security-Policy"]
    csp = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    # An opener (a page with a target=_blank link) keeps no handle on the console's tab.
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_demo_page_escapes_the_content_id(client):
    content_id = '"><script>alert(1)</script>'
    response = client.get("/widget/demo", query_string={"content_id": content_id, "lang": "pt-BR"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert 'content-id="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page or (
        'content-id="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    )
    assert '<html lang="pt-BR">' in page
    assert "{{" not in page


@pytest.mark.parametrize(
    ("query", "field"),
    [({"lang": "fr"}, "lang"), ({"theme": "neon"}, "theme"), ({"content_id": " x"}, "content_id")],
)
def test_demo_page_rejects_bad_parameters_with_json(client, query, field):
    response = client.get("/widget/demo", query_string=query)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in {e["field"] for e in response.json["errors"]}


@pytest.mark.parametrize("path", ["/widget/nope.js", "/static/comments.js", "/widget/demo.html"])
def test_only_the_listed_files_are_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


ASSET_PATHS = ("/widget/comments.js", "/widget/page.css", "/moderation/console.js")
DOCS_ASSET_PATHS = ("/docs/docs.js", "/docs/swagger-ui.css")


@pytest.mark.parametrize("path", ASSET_PATHS + DOCS_ASSET_PATHS)
@pytest.mark.parametrize(
    "header",
    [
        {"If-Match": '"not-this-file"'},
        {"If-Match": "*"},
        {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    ],
)
def test_a_write_precondition_on_an_asset_gets_the_asset_not_a_cacheable_412(client, path, header):
    """werkzeug's make_conditional answered these 412 (``If-Match: *`` too, which any
    existing file satisfies) with the file as the body and ``public, max-age=300``: an
    error a shared cache could keep and serve to every reader for five minutes. The files
    honour If-None-Match only (the API's reads also judge If-Match, with a no-store 412;
    nothing sends If-Match for a script or a stylesheet)."""
    plain = client.get(path)
    response = client.get(path, headers=header)
    assert response.status_code == 200
    assert response.data == plain.data
    assert response.headers["ETag"] == plain.headers["ETag"]


@pytest.mark.parametrize("path", ASSET_PATHS + DOCS_ASSET_PATHS)
def test_an_asset_is_revalidated_by_any_tag_it_matches(client, path):
    etag = client.get(path).headers["ETag"]
    for header in (etag, f'"x", {etag}', f"W/{etag}", "*"):
        response = client.get(path, headers={"If-None-Match": header})
        assert (response.status_code, response.data) == (304, b""), header
        assert response.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"x"'}).status_code == 200


@pytest.mark.parametrize("content_id", ["{{theme}}", "{{lang}}", "{{content_id_url}}", "a{{x}}"])
def test_demo_page_shows_a_content_id_that_looks_like_a_placeholder(client, content_id):
    # The template's placeholders were replaced one after another, so one inside the
    # content id (already substituted) was replaced too: "{{theme}}" became "dark".
    response = client.get("/widget/demo", query_string={"content_id": content_id, "theme": "dark"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'content-id="{content_id}"' in page
    assert f"<code>{content_id}</code>" in page
    assert '<body class="demo theme-dark">' in page
