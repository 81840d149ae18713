"""A rollout's mixed fleet, run for real: the release before this one (d46602b, before
migration 0016) serves beside this release on one database, migrated by this release, as
during a rolling upgrade and after `rollout undo` (docs/deployment.md, "Migrations:
expand, then contract"). Its code comes from the repository's own history (`git archive`),
so the test needs a clone with history; in CI a missing one fails, it does not skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from .support import VENV_BIN, ServiceProcess, missing

ROOT = Path(__file__).resolve().parent.parent
# The release before 0016 (0015 is its newest migration).
PREVIOUS_RELEASE = "d46602b"
DECOMPOSED = unicodedata.normalize("NFD", "jos\u00e9@example.com")
COMPOSED = unicodedata.normalize("NFC", DECOMPOSED)


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's src/, as shipped."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        missing("git and the repository's history")
    assert git is not None
    found = subprocess.run(
        [git, "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:  # e.g. a shallow clone
        missing(f"commit {PREVIOUS_RELEASE} in the repository's history")
    target = tmp_path_factory.mktemp("previous-release")
    archive = target / "src.tar"
    subprocess.run(
        [git, "-C", str(ROOT), "archive", "-o", str(archive), PREVIOUS_RELEASE, "src"],
        check=True,
    )
    # tar(1), not tarfile: Debian 12's Python 3.11.2 predates extractall's filter.
    subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(target)], check=True)
    return target / "src"


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, previous_release: Path, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, ServiceProcess, dict[str, str]]]:
    """(this release, the previous one, a moderator's key header) on one database."""
    url = request.getfixturevalue(f"{request.param}_url")
    env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "warning"}
    migrated = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"], env={**os.environ, **env}, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(
        [str(VENV_BIN / "comments-api"), "keys", "create", "--name", "m", "--scope", "admin"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    key = {"Authorization": f"Bearer {created.stdout.strip()}"}
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    new = ServiceProcess({**env, "MIGRATE_ON_START": "false"}, tmp_path / "new", workers=1)
    old = ServiceProcess(
        {**env, "MIGRATE_ON_START": "false", "PYTHONPATH": str(previous_release)},
        tmp_path / "old",
        workers=1,
    )
    with new, old:
        yield new, old, key


def _post(server: ServiceProcess, email: str, text: str) -> requests.Response:
    return requests.post(
        f"{server.base}/api/comment/new",
        json={"email": email, "comment": text, "content_id": "fleet"},
        timeout=10,
    )


@pytest.mark.parametrize("fleet", ["sqlite", "postgres"], indirect=True)
def test_the_previous_release_beside_this_one_on_its_schema(fleet):
    new, old, key = fleet
    assert requests.get(f"{old.base}/readyz", timeout=5).json()["schema_revision"] == "0017"

    # A write by one is in the very next read from the other, cached or not.
    thread = "/api/v1/contents/fleet/comments"
    for writer, reader in ((old, new), (new, old)):
        seen = requests.get(f"{reader.base}{thread}", timeout=5)
        posted = requests.post(f"{writer.base}{thread}", json={"body": "hi"}, timeout=5)
        assert posted.status_code == 201, posted.text
        again = requests.get(
            f"{reader.base}{thread}", headers={"If-None-Match": seen.headers["ETag"]}, timeout=5
        )
        assert again.status_code == 200
        assert posted.json()["id"] in [c["id"] for c in again.json()["items"]]

    # A keyed retry sent to the other release replays the first answer; a cursor one
    # release issued pages at the other.
    keyed = {"Idempotency-Key": "fleet-1"}
    first = requests.post(f"{old.base}{thread}", json={"body": "once"}, headers=keyed, timeout=5)
    retry = requests.post(f"{new.base}{thread}", json={"body": "once"}, headers=keyed, timeout=5)
    assert (first.status_code, first.content) == (retry.status_code, retry.content)
    page = requests.get(f"{old.base}{thread}?limit=1", timeout=5).json()
    rest = requests.get(f"{new.base}{thread}?limit=5&cursor={page['next_cursor']}", timeout=5)
    assert [c["body"] for c in rest.json()["items"]] == ["hi", "once"]

    # The previous release bans the address typed decomposed (under that form's key).
    banned = requests.post(
        f"{old.base}/api/v1/moderation/bans", json={"email": DECOMPOSED}, headers=key, timeout=5
    )
    assert banned.status_code == 201, banned.text
    assert banned.json()["target"] == f"email:{DECOMPOSED}"  # that release's code, not ours
    # Banned here again, typed precomposed: a repeat ban (it stored a second row, 201), and
    # the ban's URL here finds that release's ban.
    again = requests.post(
        f"{new.base}/api/v1/moderation/bans", json={"email": COMPOSED}, headers=key, timeout=5
    )
    assert (again.status_code, again.json()["created"]) == (200, False), again.text
    standing = requests.get(f"{new.base}{again.headers['Location']}", headers=key, timeout=5)
    assert standing.json()["target"] == f"email:{DECOMPOSED}", standing.text
    # This release refuses the mailbox in either form, through both APIs; it let the
    # precomposed form (as most readers type it) post.
    for email in (DECOMPOSED, COMPOSED, COMPOSED.upper()):
        assert _post(new, email, f"legacy {email}").status_code == 403, email
        v1 = requests.post(
            f"{new.base}{thread}", json={"body": f"v1 {email}", "email": email}, timeout=5
        )
        assert v1.status_code == 403, (email, v1.text)
    assert _post(old, DECOMPOSED, "at the previous release").status_code == 403

    # Lifted here by the address as usually typed: no form of the ban is left standing.
    lifted = requests.delete(
        f"{new.base}/api/v1/moderation/bans/{quote(f'email:{COMPOSED}')}", headers=key, timeout=5
    )
    assert lifted.status_code == 204, lifted.text
    assert (
        requests.get(f"{old.base}/api/v1/moderation/bans", headers=key, timeout=5).json()["items"]
        == []
    )
    assert _post(old, DECOMPOSED, "decomposed, at the previous release").status_code == 200
    assert _post(new, COMPOSED, "composed, here").status_code == 200

    # An erasure here finds what the previous release keyed decomposed as well.
    erased = requests.post(
        f"{new.base}/api/v1/moderation/comments",
        json={"action": "delete", "author": f"email:{COMPOSED}"},
        headers=key,
        timeout=5,
    )
    assert len(erased.json()["changed"]) == 2, erased.text
    listed = requests.get(f"{old.base}/api/comment/list/fleet", timeout=5).json()
    assert [c["comment"] for c in listed] == ["hi", "hi", "once"]

    # The ban list pages here (0017's index) whichever release made the bans, newest first,
    # and the previous release, which knows nothing of pages, still lists every ban.
    bans = "/api/v1/moderation/bans"
    for server, subject in ((old, "fleet-1"), (new, "fleet-2"), (old, "fleet-3")):
        made = requests.post(
            f"{server.base}{bans}", json={"subject": subject}, headers=key, timeout=5
        )
        assert made.status_code == 201, made.text
    paged, url = [], f"{new.base}{bans}?limit=1"
    while url:
        page = requests.get(url, headers=key, timeout=5)
        assert page.status_code == 200, page.text
        paged += [b["target"] for b in page.json()["items"]]
        url = page.links["next"]["url"] if "next" in page.links else ""
        if url:
            url = f"{new.base}{url}"
    assert paged == ["sub:fleet-3", "sub:fleet-2", "sub:fleet-1"]
    every = requests.get(f"{old.base}{bans}", headers=key, timeout=5).json()
    assert [b["target"] for b in every["items"]] == ["sub:fleet-1", "sub:fleet-2", "sub:fleet-3"]
