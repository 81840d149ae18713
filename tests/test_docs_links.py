"""README.md and docs/*.md: every relative link points at a file that exists and, with a
#fragment, at a heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # the fast tier: no servers, no network

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s)://, mailto: ...
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        if fragment and file.suffix == ".md":
            assert fragment in anchors(file), f"{page.name}: no heading for {target}"


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The two commands come first, and every document under docs/ is linked from it.
    assert readme.index("make run") < readme.index("## Quick tour")
    assert readme.index("make test") < readme.index("## Quick tour")
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in readme, f"README does not link docs/{doc.name}"
    assert len(readme.encode()) < 12_000, "depth belongs in docs/"


# --- what the documents name exists: routes, problem types, modules, widget texts ---

DOCS = {page.relative_to(ROOT).as_posix(): page.read_text(encoding="utf-8") for page in PAGES}
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
# A curl line (with its continuation lines) from a fenced block: method and local path.
CURL_URL = re.compile(r"localhost:8000(/[^\s'\"?]*)")
# `GET /api/v1/...` in prose and tables; {placeholders} and <placeholders> are one segment.
METHOD_PATH = re.compile(r"`(GET|POST|PATCH|PUT|DELETE|HEAD) (/[^`\s?]*)")
# A table whose first column is a path (the widget's files, the health probes): a GET.
TABLE_PATH = re.compile(r"^\| `(/[^`\s?]*)", re.M)


def documented_requests() -> set[tuple[str, str, str]]:
    """(page, method, path) of every curl example and documented call."""
    found: set[tuple[str, str, str]] = set()
    for name, text in DOCS.items():
        for block in FENCED.findall(text):
            for command in re.sub(r"\\\n", " ", block).splitlines():
                if not command.lstrip().startswith("curl "):
                    continue
                explicit = re.search(r"-X ([A-Z]+)", command)
                method = explicit.group(1) if explicit else ("POST" if " -d " in command else "GET")
                found.update((name, method, path) for path in CURL_URL.findall(command))
        for method, path in METHOD_PATH.findall(text):
            found.add((name, method, re.sub(r"\{[^}]*\}|<[^>]*>", "1", path)))
        found.update((name, "GET", path) for path in TABLE_PATH.findall(text))
    return found


def test_documented_requests_name_routes_the_app_serves(sqlite_url):
    from werkzeug.exceptions import HTTPException

    from comments_api.app import create_app
    from comments_api.settings import Settings

    app = create_app(Settings(database_url=sqlite_url, ratelimit_enabled=False))
    adapter = app.url_map.bind("localhost")
    requests = documented_requests()
    assert len(requests) > 20, "the curl examples and call tables were not found"
    unserved = []
    for page, method, path in sorted(requests):
        if path == "/metrics":
            continue  # answered before routing (telemetry/http_hooks.py), not in the url_map
        try:
            adapter.match(path, method=method)
        except HTTPException:
            unserved.append(f"{page}: {method} {path}")
    assert not unserved, f"documented but not served: {unserved}"


def test_problem_links_in_the_docs_are_problem_types():
    from comments_api.contract.problems import problem_types
    from comments_api.settings import Settings

    known = set(problem_types(Settings()))
    for name, text in DOCS.items():
        for slug in re.findall(r"/docs#problem-([a-z0-9-]+)", text):
            assert slug in known, f"{name}: /docs#problem-{slug} is no problem type"


def test_development_layout_names_every_module():
    # The layout in docs/development.md is where a newcomer looks for a module: each file
    # of src/comments_api (migrations aside) and each package must be named in it.
    layout = FENCED.findall(DOCS["docs/development.md"])[0]
    named = set(re.findall(r"[\w]+\.py|[\w]+/", layout))
    package = ROOT / "src" / "comments_api"
    for module in sorted(package.rglob("*.py")):
        relative = module.relative_to(package)
        if module.name == "__init__.py" or "migrations" in relative.parts:
            continue
        assert module.name in named, f"docs/development.md's layout does not name {relative}"
        for parent in relative.parts[:-1]:
            assert f"{parent}/" in named, f"docs/development.md's layout does not name {parent}/"


def widget_script() -> str:
    return (ROOT / "src" / "comments_api" / "static" / "comments.js").read_text(encoding="utf-8")


def test_widget_docs_list_every_text_key():
    english = re.search(r"^    en: \{\n(.*?)^    \},", widget_script(), re.M | re.S)
    assert english, "MESSAGES.en not found in comments.js"
    keys = re.findall(r"^      (\w+):", english.group(1), re.M)
    listed = re.search(r"^Keys: (.*?)\. `\{n\}`", DOCS["docs/widget.md"], re.M | re.S)
    assert listed, "the Keys: list not found in docs/widget.md"
    assert re.findall(r"`(\w+)`", listed.group(1)) == keys


def test_widget_docs_give_the_theme_properties_and_defaults():
    css = widget_script()

    def declared(selector: str) -> dict[str, str]:
        rule = re.search(re.escape(selector) + r"\{(.*?)\}", css, re.S)
        assert rule, f"{selector} not found in comments.js"
        return dict(re.findall(r"(--comments-[\w-]+):([^;}]+)", rule.group(1)))

    rows = [
        [cell.strip().strip("`") for cell in line.split("|")[1:4]]
        for line in DOCS["docs/widget.md"].splitlines()
        if line.startswith("| `--comments-")
    ]
    assert {name: light for name, light, _ in rows} == declared(":host")
    assert {name: dark for name, _, dark in rows if dark} == declared(":host([theme=dark])")
