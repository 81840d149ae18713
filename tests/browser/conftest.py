"""Real browser, real servers: Debian's chromium driven by Playwright, `comments-api serve`
processes for the API, and a second loopback origin playing the news site that embeds the
widget. Nothing is downloaded but axe-core, from npm, pinned by package-lock.json.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from ..authkit import AUDIENCE, ISSUER, Signer, hs_signer
from ..support import VENV_BIN, ServiceProcess, missing

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BANNED = "frobnicate"
# For locator.evaluate: where each character of an element's last text node is drawn, left
# to right on screen (the order the reader sees, whatever the order in the text).
DRAWN_LEFTS = """(el) => {
  const node = [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).pop();
  return [...node.data].map((_, i) => {
    const range = document.createRange();
    range.setStart(node, i);
    range.setEnd(node, i + 1);
    return range.getBoundingClientRect().left;
  });
}"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing(f"chromium at {CHROMIUM} (Debian package 'chromium')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package")
    with sync_playwright() as pw:
        # Never a downloaded browser: the distribution's chromium only.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's browser build, installed from package-lock.json on first use."""
    axe = HERE / "node_modules" / "axe-core" / "axe.min.js"
    # Each xdist worker has its own session: on a fresh clone two of them ran `npm ci` in
    # this one directory at once, and `npm ci` first deletes node_modules, under the other
    # worker's install or its read. One installs; the others wait, then find it there.
    with open(HERE / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not axe.exists():
            npm = shutil.which("npm")
            if npm is None:
                missing("npm (Debian package 'npm'), to install axe-core")
            subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=HERE,
                check=True,
                capture_output=True,
                timeout=180,
            )
        return axe.read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    site: HostSite

    def do_GET(self) -> None:
        page = self.site.pages.get(self.path.split("?")[0])
        if page is None:
            self.send_error(404)
            return
        body, content_type, csp = page
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class HostSite:
    """The news site: another origin (its own port) that embeds the widget from the API's."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[bytes, str, str | None]] = {}
        handler = type("Handler", (_Handler,), {"site": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        # The site's own script: records CSP violations and hands over the reader's token.
        self.add(
            "/host.js",
            "window.cspViolations = [];\n"
            "document.addEventListener('securitypolicyviolation', (e) =>\n"
            "  window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));\n"
            "window.getReaderToken = () => Promise.resolve(sessionStorage.getItem('token'));\n",
            "text/javascript",
            csp=None,
        )

    def add(
        self, path: str, body: str, content_type: str = "text/html", *, csp: str | None = ""
    ) -> str:
        self.pages[path] = (body.encode("utf-8"), content_type, csp)
        return self.origin + path

    def strict_csp(self, api: str) -> str:
        """What a careful site would send: no inline code, scripts only from itself and us."""
        return (
            f"default-src 'none'; script-src 'self' {api}; connect-src {api}; "
            "style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"
        )

    def thread_page(
        self,
        path: str,
        api: str,
        content_id: str,
        *,
        attrs: str = "",
        lang: str = "en",
        direction: str = "ltr",
        csp: bool = True,
        extra: str = "",
    ) -> str:
        body = f"""<!doctype html>
<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8"><title>Story {content_id}</title>
<script src="/host.js"></script>
<script src="{api}/widget/comments.js" defer></script>
</head><body><main><h1>Story {content_id}</h1>{extra}
<comments-thread content-id="{content_id}" {attrs}></comments-thread>
</main></body></html>"""
        return self.add(path, body, csp=self.strict_csp(api) if csp else None)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def site() -> Iterator[HostSite]:
    host = HostSite()
    yield host
    host.stop()


@dataclass
class Api:
    service: ServiceProcess
    env: dict[str, str]
    signer: Signer

    @property
    def base(self) -> str:
        return self.service.base

    def key(self, *scopes: str) -> str:
        """An API key made with the real CLI, as an operator would."""
        args = [str(VENV_BIN / "comments-api"), "keys", "create", "--name", "browser-tests"]
        for scope in scopes:
            args += ["--scope", scope]
        result = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    def post(
        self, content_id: str, body: str, token: str | None = None, **extra: object
    ) -> dict[str, Any]:
        """A comment posted anonymously, or with a reader's JWT (``token``)."""
        response = requests.post(
            f"{self.base}/api/v1/contents/{content_id}/comments",
            json={"body": body, **extra},
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=5,
        )
        assert response.status_code in (201, 202), response.text
        return response.json()

    def moderate(self, key: str, action: str, ids: list[int]) -> None:
        response = requests.post(
            f"{self.base}/api/v1/moderation/comments",
            json={"action": action, "ids": ids},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text

    def ban(self, key: str, email: str) -> None:
        response = requests.post(
            f"{self.base}/api/v1/moderation/bans",
            json={"email": email},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert response.status_code in (200, 201), response.text

    def token(self, subject: str, **claims: Any) -> str:
        return self.signer.token(subject, **claims)


def _start_api(tmp: Path, site: HostSite, **settings: str) -> Iterator[Api]:
    signer = hs_signer()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'comments.db'}",
        "CORS_ORIGINS": site.origin,
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "BANNED_WORDS": BANNED,
        **settings,
    }
    # One worker: the in-memory rate-limit counters are then exact.
    service = ServiceProcess(env, tmp, workers=1).start()
    try:
        yield Api(service, env, signer)
    finally:
        service.stop(signal.SIGINT)  # no drain needed: SIGINT stops at once


@pytest.fixture(scope="session")
def open_api(tmp_path_factory: pytest.TempPathFactory, site: HostSite) -> Iterator[Api]:
    """Post-moderation, anonymous posting; signed-in readers get a tiny write budget."""
    yield from _start_api(
        tmp_path_factory.mktemp("open-api"),
        site,
        AUTH_MODE="open",
        MODERATION_MODE="post",
        RATELIMIT_ENABLED="true",
        RATELIMIT_ANONYMOUS_WRITE="1000/minute",
        RATELIMIT_AUTHENTICATED_WRITE="2/minute",
        RATELIMIT_READ="5000/minute",
    )


PRE_MODERATION = {"AUTH_MODE": "open", "MODERATION_MODE": "pre", "RATELIMIT_ENABLED": "false"}


@pytest.fixture(scope="session")
def pre_api(tmp_path_factory: pytest.TempPathFactory, site: HostSite) -> Iterator[Api]:
    """Pre-moderation: every reader's comment waits for a moderator."""
    yield from _start_api(tmp_path_factory.mktemp("pre-api"), site, **PRE_MODERATION)


@pytest.fixture
def lone_pre_api(tmp_path: Path, site: HostSite) -> Iterator[Api]:
    """Pre-moderation on a server of the test's own, for a test that reads the queue of
    every content: on pre_api, the other tests' pending comments may fill its first page."""
    yield from _start_api(tmp_path, site, **PRE_MODERATION)


@pytest.fixture(scope="session")
def required_api(tmp_path_factory: pytest.TempPathFactory, site: HostSite) -> Iterator[Api]:
    """AUTH_MODE=required and a short comment limit, for what the widget reads itself."""
    yield from _start_api(
        tmp_path_factory.mktemp("required-api"),
        site,
        AUTH_MODE="required",
        MODERATION_MODE="post",
        MAX_COMMENT_LENGTH="300",
        RATELIMIT_ENABLED="false",
    )


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    # Uncaught script errors alone: console_errors also holds the network failures a test
    # may cause on purpose.
    page.page_errors = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
    )

    def script_error(exc: Any) -> None:
        page.console_errors.append(str(exc))  # type: ignore[attr-defined]
        page.page_errors.append(str(exc))  # type: ignore[attr-defined]

    page.on("pageerror", script_error)
    yield page
    context.close()


def screenshot(target: Any, name: str) -> Path:
    """Saved for CI artifacts; the best ones are copied to docs/img/ by hand."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


def run_axe(page: Any, axe_source: str) -> tuple[list[dict[str, Any]], set[str]]:
    """axe-core over the whole page, Shadow DOM included.

    Returns the serious and critical violations, and the rules that passed on nodes inside
    a shadow root (proof that the widget itself was examined, not only the host page).
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, so the page's CSP does not block it.
        page.evaluate(axe_source)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations', 'passes']});
            const shadow = (n) => Array.isArray(n.target[0]);
            return {
                violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => JSON.stringify(n.target)).slice(0, 5)})),
                shadowPasses: r.passes.filter(p => p.nodes.some(shadow)).map(p => p.id),
            };
        }"""
    )
    serious = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    return serious, set(result["shadowPasses"])


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two computed colors ("rgb(r, g, b)", opaque)."""

    def luminance(color: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", color)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
