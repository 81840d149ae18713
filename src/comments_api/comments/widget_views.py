"""The reader widget, the "N comments" badge script, the demo page and the moderation console.

Plain files shipped as package data (``comments_api/static``): no build step, so
``make run`` on a machine with Python alone serves them. Each response sets its own
Content-Security-Policy (the app's default, ``default-src 'none'``, is only a fallback):
the pages load scripts and styles from this origin only, and never inline ones.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import quote

from flask import Blueprint, Response, request

from ..contract.requests import parse_content_id
from ..contract.responses import ASSET_MAX_AGE
from ..web.common import revalidated
from .rules import FieldError, InvalidInput

bp = Blueprint("widget", __name__)


# For the HTML pages we serve. 'self' only: the widget's Shadow DOM styles are
# constructable stylesheets (adoptedStyleSheets), which CSP does not treat as inline.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# For the scripts and the stylesheet themselves: nothing may run in their name.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

JS = "text/javascript"
DEMO_LANGS = ("en", "pt-BR")
DEMO_THEMES = ("auto", "light", "dark")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")  # {{name}} in demo.html


@dataclass(frozen=True)
class _Asset:
    data: bytes
    etag: str


@cache
def _asset(name: str) -> _Asset:
    # importlib.resources: works from a wheel, an editable install and the image alike.
    data = (resources.files("comments_api") / "static" / name).read_bytes()
    return _Asset(data, hashlib.sha256(data).hexdigest()[:32])


def _serve(name: str, mimetype: str, *, cross_origin: bool = False) -> Response:
    asset = _asset(name)
    response = Response(asset.data, mimetype=mimetype)
    response.set_etag(asset.etag)
    response.cache_control.public = True
    response.cache_control.max_age = ASSET_MAX_AGE
    response.headers["Content-Security-Policy"] = ASSET_CSP
    if cross_origin:
        # Other sites embed these scripts; a page with COEP may only load them if we say so.
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return revalidated(response, asset.etag)  # 304 when the browser's copy is current


def _page(text: str) -> Response:
    response = Response(text, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    # A page that opened this one (a link with target=_blank) gets no handle on it, so it
    # cannot later send the moderator's tab to a look-alike page.
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.cache_control.no_cache = True
    return response


@bp.get("/widget/comments.js")
def widget_script() -> Response:
    return _serve("comments.js", JS, cross_origin=True)


@bp.get("/widget/count.js")
def count_script() -> Response:
    return _serve("count.js", JS, cross_origin=True)


@bp.get("/widget/page.css")
def page_stylesheet() -> Response:
    return _serve("page.css", "text/css")


@bp.get("/widget/demo")
def demo_page() -> Response:
    """The widget embedded against this server, for trying it out (and for the tests)."""
    # A bad content_id gets the API's usual JSON 400, before any HTML is produced.
    content_id = parse_content_id(request.args.get("content_id") or "demo")
    lang = _choice("lang", DEMO_LANGS)
    theme = _choice("theme", DEMO_THEMES)
    values = {
        "content_id": html.escape(content_id, quote=True),
        "content_id_url": html.escape(quote(content_id, safe=""), quote=True),
        "lang": lang,
        "theme": theme,
    }
    page = _asset("demo.html").data.decode("utf-8")
    # One pass over the template: replacing each name in turn also replaced the
    # placeholders inside a value already substituted (the content id "{{theme}}" showed
    # and loaded the thread of the content "dark").
    return _page(_PLACEHOLDER.sub(lambda m: values[m.group(1)], page))


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    value = request.args.get(name) or allowed[0]
    if value not in allowed:
        raise InvalidInput([FieldError(name, f"must be one of {', '.join(allowed)}")])
    return value


@bp.get("/moderation")
def console_page() -> Response:
    return _page(_asset("moderation.html").data.decode("utf-8"))


@bp.get("/moderation/console.js")
def console_script() -> Response:
    return _serve("console.js", JS)
