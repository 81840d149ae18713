"""`comments-api export` / `import` / `backup`: 100,000 comments SQLite -> PostgreSQL -> SQLite.

Everything goes through the real command line and real databases. The data is generated
with bulk inserts so the round trip, not the set-up, is what takes the time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import insert

from comments_api.app import create_app
from comments_api.comments.rules import NewComment
from comments_api.identity.credentials import SCOPE_MODERATE, generate_api_key, hash_api_key
from comments_api.settings import Settings
from comments_api.store import transfer
from comments_api.store.repository import (
    Repository,
    audit_log,
    bans,
    comments,
    head_revision,
    make_engine,
    migrate,
    shipped_revisions,
)

from .authkit import AUDIENCE, ISSUER, api_key, bearer, hs_signer
from .support import VENV_BIN, ServiceProcess, bind_mount, missing, small_tmpfs, wait_until

BULK = "/api/v1/moderation/comments"

N_COMMENTS = 100_000
STATUSES = ("published", "published", "published", "pending", "hidden", "deleted")


def cli(
    *args: str, url: str, stdin=None, stderr=None, stdin_text: str | None = None
) -> subprocess.CompletedProcess:
    """The real command line; stderr goes to a pipe unless a terminal is given."""
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), *args],
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"},
        stdin=stdin,
        input=stdin_text,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        timeout=180,
        check=False,
    )


def empty_export_header(url: str) -> dict[str, Any]:
    """The header line of an export of ``url``, migrated and empty, made in process: the
    import that reads it is the command these tests run."""
    engine = make_engine(url)
    try:
        migrate(engine)
        out = io.StringIO()
        transfer.export(engine, out)
    finally:
        engine.dispose()
    return json.loads(out.getvalue().splitlines()[0])


def counted(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        return transfer.table_counts(engine, [table])[table]
    finally:
        engine.dispose()


def generate(url: str, n: int) -> str:
    """A migrated database with n comments in threads, every status, bans, an audit log
    and API keys; returns a moderator key that must still work after a round trip."""
    engine = make_engine(url)
    migrate(engine)
    rng = random.Random(8)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(1, n + 1):
        status = STATUSES[i % len(STATUSES)]
        content = f"article-{i % 997}"
        email = f"reader{i % 5003}@example.com" if i % 3 else None
        created = start + timedelta(seconds=i * 7, microseconds=rng.randrange(1_000_000))
        deleted = status == "deleted"
        rows.append(
            {
                "id": i,
                "content_id": content,
                # Replies point at an earlier comment: threads several levels deep.
                "parent_id": rng.randrange(1, i) if i > 10 and i % 4 == 0 else None,
                "body": None if deleted else f"comment {i} — naïve café ✓ 👍 «{rng.random()}»",
                "email": None if deleted else email,
                "author_name": None if deleted else ("Zoë" if i % 2 else None),
                "author_subject": None if deleted or i % 7 else f"sub-{i % 11}",
                "status": status,
                "created_at": created,
                "updated_at": created + timedelta(seconds=i % 60),
                "deleted_at": created + timedelta(minutes=5) if deleted else None,
                # Every fifth comment edited by its author (tombstones keep no edit time).
                "edited_at": created + timedelta(seconds=30)
                if i % 5 == 1 and not deleted
                else None,
                "author_key": None if deleted or not email else f"email:{email}",
            }
        )
    with engine.begin() as conn:
        for chunk in range(0, n, 10_000):
            conn.execute(insert(comments), rows[chunk : chunk + 10_000])
        conn.execute(
            insert(bans),
            [
                {
                    "target": f"email:troll{i}@example.com",
                    "reason": None if i % 2 else f"spam #{i}",
                    "created_by": "api_key:mod",
                    "created_at": start + timedelta(hours=i),
                }
                for i in range(50)
            ],
        )
        conn.execute(
            insert(audit_log),
            [
                {
                    "actor": f"jwt:moderator-{i % 3}",
                    "action": ("hide", "approve", "delete", "ban")[i % 4],
                    "target": None,
                    # Comments there are: an import gives no id the audit log names.
                    "comment_ids": json.dumps([j for j in (i, i + 1) if j <= n]),
                    "details": json.dumps({"note": f"ü{i}"}) if i % 5 == 0 else None,
                    "created_at": start + timedelta(minutes=i),
                }
                for i in range(1, 501)
            ],
        )
    repo = Repository(engine)
    key = generate_api_key()
    repo.add_api_key(key.key_id, "moderators", key.key_hash, [SCOPE_MODERATE])
    other = generate_api_key()
    repo.add_api_key(other.key_id, "old backend", other.key_hash, ["comments:write"])
    repo.revoke_api_key(other.key_id)
    engine.dispose()
    return key.key


def rows_of(dump: Path) -> list[str]:
    lines = dump.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "comments-api-export"
    return lines[1:]


def test_round_trip_of_100k_comments_between_sqlite_and_postgres(tmp_path, postgres_url):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    key = generate(source, N_COMMENTS)
    first = tmp_path / "from-sqlite.jsonl"
    result = cli("export", str(first), url=source)
    assert result.returncode == 0, result.stderr
    assert f"{N_COMMENTS} comments" in result.stderr
    header = json.loads(first.read_text(encoding="utf-8").split("\n", 1)[0])
    assert header["tables"] == {"api_keys": 2, "bans": 50, "comments": N_COMMENTS, "audit_log": 500}
    dumped = first.read_text(encoding="utf-8")
    assert hash_api_key(key) in dumped
    assert key not in dumped  # the stored hash only, never a key

    result = cli("import", str(first), url=postgres_url)
    assert result.returncode == 0, result.stderr
    second = tmp_path / "from-postgres.jsonl"
    assert cli("export", str(second), url=postgres_url).returncode == 0
    # Row for row the same: ids, timestamps (to the microsecond), threads, statuses, text.
    assert rows_of(second) == rows_of(first)

    back = f"sqlite:///{tmp_path / 'back.db'}"
    with second.open() as stdin:  # import reads stdin too
        result = cli("import", "-", url=back, stdin=stdin)
    assert result.returncode == 0, result.stderr
    # Back in SQLite: every table identical to the source, compared by SQLite itself.
    with sqlite3.connect(tmp_path / "back.db") as conn:
        conn.execute("ATTACH DATABASE ? AS src", (str(tmp_path / "source.db"),))
        for table in ("comments", "bans", "audit_log", "api_keys"):
            for a, b in ((table, f"src.{table}"), (f"src.{table}", table)):
                assert conn.execute(
                    f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b})"  # noqa: S608
                ).fetchone() == (0,), f"{a} has rows {b} lacks"
            assert (
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                == conn.execute(f"SELECT count(*) FROM src.{table}").fetchone()  # noqa: S608
            )

    # The imported PostgreSQL database is live: new ids continue after the imported ones
    # (sequences were moved), the moderator key still works, bans still apply.
    app = create_app(Settings(database_url=postgres_url, ratelimit_enabled=False))
    client = app.test_client()
    created = client.post("/api/v1/contents/article-1/comments", json={"body": "after the move"})
    assert created.status_code == 201, created.json
    assert created.json["id"] == N_COMMENTS + 1
    moderator = {"Authorization": f"Bearer {key}"}
    hidden = client.post(
        "/api/v1/moderation/comments", json={"action": "hide", "ids": [N_COMMENTS + 1]},
        headers=moderator,
    )  # fmt: skip
    assert hidden.status_code == 200, hidden.json
    audit = client.get("/api/v1/admin/audit-log?limit=1", headers=moderator)
    assert audit.status_code in (200, 403)  # admin scope needed; the key itself was accepted
    banned = client.post(
        "/api/v1/contents/a/comments", json={"body": "hi", "email": "troll3@example.com"}
    )
    assert banned.status_code == 403
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT max(id) FROM audit_log").scalar() == 501
    engine.dispose()


def test_import_refuses_a_non_empty_or_incomplete_target(tmp_path):
    source = f"sqlite:///{tmp_path / 'a.db'}"
    generate(source, 50)
    dump = tmp_path / "a.jsonl"
    assert cli("export", str(dump), url=source).returncode == 0
    again = cli("import", str(dump), url=source)
    assert again.returncode != 0
    assert "import only into an empty one" in again.stderr
    assert "Traceback" not in again.stderr
    # A truncated file imports nothing at all: into an empty database, nothing is written;
    # into a new file, none is left behind.
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(dump.read_text().splitlines()[:30]) + "\n")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    migrate(make_engine(empty))
    target = f"sqlite:///{tmp_path / 'b.db'}"
    for url in (empty, target):
        result = cli("import", str(cut), url=url)
        assert result.returncode != 0
        assert "incomplete" in result.stderr
    with sqlite3.connect(tmp_path / "empty.db") as conn:
        assert conn.execute("SELECT count(*) FROM comments").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
    assert not list(tmp_path.glob("b.db*"))
    not_export = tmp_path / "x.jsonl"
    not_export.write_text('{"hello": 1}\n')
    result = cli("import", str(not_export), url=target)
    assert result.returncode != 0
    assert "not a comments-api export" in result.stderr


GOOD_ROW = {
    "id": 7,
    "content_id": "a",
    "parent_id": None,
    "body": "kept out too",
    "email": None,
    "author_name": None,
    "author_subject": None,
    "author_key": None,
    "status": "published",
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
    "deleted_at": None,
    "edited_at": None,
}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"created_at": "yesterday"}, "line 3: comments.created_at is not an ISO 8601 timestamp"),
        ({"updated_at": 5}, "line 3: comments.updated_at is not an ISO 8601 timestamp: 5"),
        ({"id": 7}, "lines 2-3: the database refused a row of comments:"),  # a repeated id
        ({"content_id": None}, "lines 2-3: the database refused a row of comments:"),
        ({"content_id": ["a"]}, "line 3: comments.content_id is a JSON list"),
        ({"body": {"text": "x"}}, "line 3: comments.body is a JSON dict"),
        ({"status": "weird"}, "line 3: comments.status must be one of published, pending"),
        # SQLite stored each of these as given (PostgreSQL refused or converted them), and
        # a number past 64 bits was SQLite's OverflowError traceback.
        ({"id": "seven"}, "line 3: comments.id must be an integer, got 'seven'"),
        ({"id": True}, "line 3: comments.id must be an integer, got True"),
        ({"parent_id": 7.5}, "line 3: comments.parent_id must be an integer, got 7.5"),
        ({"id": 2**64}, "line 3: comments.id is out of the 64-bit integer range"),
        ({"body": 5}, "line 3: comments.body must be a string, got 5"),
        ({"content_id": "x" * 129}, "line 3: comments.content_id is longer than 128 characters"),
        ({"created_at": "9999-12-31T23:59:59-01:00"}, "line 3: comments.created_at is not an"),
        # SQLite stored a NUL that PostgreSQL refused (its export then moved nowhere), and a
        # "\ud800" escape was a UnicodeEncodeError traceback on both.
        ({"body": "a\x00b"}, "line 3: comments.body contains a NUL character"),
        ({"author_name": "\ud800"}, "line 3: comments.author_name contains an unpaired surrogate"),
        ({"content_id": "a\udfff\ud800"}, "line 3: comments.content_id contains an unpaired"),
    ],
)
def test_import_of_a_damaged_row_is_one_line_and_imports_nothing(database_url, bad, message):
    # Hand-edited or damaged exports: each of these ended the import in a traceback.
    head = empty_export_header(database_url)
    head["tables"]["comments"] = 2
    lines = [
        json.dumps(head),
        json.dumps({"table": "comments", "row": GOOD_ROW}),
        json.dumps({"table": "comments", "row": {**GOOD_ROW, "id": 8, **bad}}),
    ]
    result = cli("import", "-", url=database_url, stdin_text="\n".join(lines) + "\n")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert counted(database_url, "comments") == 0


def test_a_row_too_large_for_an_index_on_postgres_blames_its_lines(postgres_url):
    # A body too large for a B-tree index (one a DBA added on comments.body): psycopg
    # raises SQLSTATE 54000 as an OperationalError, which the import took for the database
    # failing: "the database failed at line 3", the file's lines never named.
    engine = make_engine(postgres_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE INDEX comments_body_test ON comments (body)")
    finally:
        engine.dispose()
    head = empty_export_header(postgres_url)
    head["tables"]["comments"] = 2
    # Random letters: incompressible, so the index entry stays past its ~2.7 kB limit.
    huge = "".join(random.Random(54).choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", k=6000))
    lines = [
        json.dumps(head),
        json.dumps({"table": "comments", "row": GOOD_ROW}),
        json.dumps({"table": "comments", "row": {**GOOD_ROW, "id": 8, "body": huge}}),
    ]
    result = cli("import", "-", url=postgres_url, stdin_text="\n".join(lines) + "\n")
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]  # after the progress label
    assert last.startswith("Error: lines 2-3: the database refused a row of comments: index row")
    assert "Traceback" not in result.stderr
    assert counted(postgres_url, "comments") == 0


def test_a_corrupt_sqlite_target_is_the_database_failing_not_the_files_lines(tmp_path):
    # SQLite's "database disk image is malformed" (SQLITE_CORRUPT) comes as a plain
    # DatabaseError, not an OperationalError: the import blamed the file for the target's
    # damage, "lines 4-53: the database refused a row of bans", and an operator went
    # looking for a bad line in a good export.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 50)
    dump = tmp_path / "dump.jsonl"
    assert cli("export", str(dump), url=f"sqlite:///{source}").returncode == 0
    target = tmp_path / "target.db"
    url = f"sqlite:///{target}"
    assert cli("migrate", url=url).returncode == 0
    # Free pages, then a freelist trunk page claiming more leaves than a page can hold:
    # SQLite finds the damage when the import's rows need a new page.
    with contextlib.closing(sqlite3.connect(target)) as conn:
        conn.execute("CREATE TABLE junk (x)")
        conn.executemany("INSERT INTO junk VALUES (?)", [(b"x" * 3000,) for _ in range(300)])
        conn.commit()
        conn.execute("DROP TABLE junk")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    image = bytearray(target.read_bytes())
    page_size = int.from_bytes(image[16:18], "big")
    trunk = int.from_bytes(image[32:36], "big")  # the first freelist trunk page
    assert trunk > 0
    leaves = (trunk - 1) * page_size + 4
    image[leaves : leaves + 4] = (0xFFFFFF00).to_bytes(4, "big")
    target.write_bytes(image)

    done = cli("import", str(dump), url=url)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]  # after the progress label
    assert "refused a row" not in last, last
    assert last.startswith("Error: the database failed at line "), last
    assert last.endswith("database disk image is malformed; nothing was imported"), last


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"details": "not json"}, "line 2: audit_log.details must be the text of a JSON dict"),
        ({"details": "[1]"}, "line 2: audit_log.details must be the text of a JSON dict"),
        ({"comment_ids": "{}"}, "line 2: audit_log.comment_ids must be the text of a JSON list"),
    ],
)
def test_an_audit_entry_the_log_cannot_read_is_refused(database_url, bad, message):
    # Imported as given, each made the admin audit-log listing answer 500 (json.loads).
    head = empty_export_header(database_url)
    head["tables"]["audit_log"] = 1
    entry = {"id": 1, "actor": "key:ops", "action": "hide", "target": None,
             "comment_ids": "[1, 2]", "details": '{"reason": "spam"}',
             "created_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    line = json.dumps({"table": "audit_log", "row": {**entry, **bad}})
    result = cli("import", "-", url=database_url, stdin_text=f"{json.dumps(head)}\n{line}\n")
    assert result.returncode == 1, result.stderr
    assert f"Error: {message}" in result.stderr
    line = json.dumps({"table": "audit_log", "row": entry})
    result = cli("import", "-", url=database_url, stdin_text=f"{json.dumps(head)}\n{line}\n")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        # Each was a traceback (int() of the count), before any row was read.
        ('{"comments": "x"}', "the export header does not list its tables and their row counts"),
        ('{"comments": null}', "the export header does not list its tables and their row"),
        ('{"comments": 1e999}', "the export header does not list its tables and their row"),
        ('{"comments": [1]}', "the export header does not list its tables and their row"),
        ('{"comments": -1}', "the export header does not list its tables and their row"),
        # A RecursionError traceback from the JSON parser.
        ("[" * 100_000 + "]" * 100_000, "not a comments-api export: the first line is not"),
    ],
)
def test_a_header_without_row_counts_is_one_line(sqlite_url, tables, message):
    header = (
        f'{{"format": "comments-api-export", "version": 1, "schema_revision": '
        f'"{head_revision()}", "tables": {tables}}}'
    )
    result = cli("import", "-", url=sqlite_url, stdin_text=header + "\n")
    assert result.returncode == 1, result.stderr
    assert f"Error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_hostile_line_is_one_line_not_a_traceback(sqlite_url):
    nested = "[" * 100_000 + "]" * 100_000  # Python's JSON parser recursed past its limit
    for header, line, message in (
        (nested, "", "not a comments-api export: the first line is not its header"),
        (None, nested, "line 2: not a row of a known table"),
    ):
        if header is None:
            header = json.dumps(
                {"format": "comments-api-export", "version": 1,
                 "schema_revision": head_revision(), "tables": {"comments": 1}}
            )  # fmt: skip
        result = cli("import", "-", url=sqlite_url, stdin_text=f"{header}\n{line}\n")
        assert result.returncode == 1, result.stderr
        assert f"Error: {message}" in result.stderr
        assert "Traceback" not in result.stderr


def test_timestamps_with_another_offset_are_imported_as_the_same_instant(database_url):
    # SQLite kept the wall-clock time and dropped the offset: 10:00+02:00 came back as
    # 10:00 UTC, two hours late, where PostgreSQL kept the instant (08:00 UTC).
    head = empty_export_header(database_url)
    head["tables"]["comments"] = 2
    rows = [
        {**GOOD_ROW, "id": 1, "created_at": "2026-01-01T10:00:00+02:00",
         "updated_at": "2026-01-01T03:30:00.250000-05:00"},
        # Without an offset: UTC, as the export's own timestamps are (never the server's zone).
        {**GOOD_ROW, "id": 2, "created_at": "2026-01-01T10:00:00",
         "deleted_at": "2026-06-30T23:00:00+00:00", "status": "deleted", "body": None},
    ]  # fmt: skip
    lines = [json.dumps(head)] + [json.dumps({"table": "comments", "row": r}) for r in rows]
    result = cli("import", "-", url=database_url, stdin_text="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    exported = [
        json.loads(line)["row"]
        for line in cli("export", "-", url=database_url).stdout.splitlines()[1:]
    ]
    assert [(r["created_at"], r["updated_at"], r["deleted_at"]) for r in exported] == [
        ("2026-01-01T08:00:00+00:00", "2026-01-01T08:30:00.250000+00:00", None),
        ("2026-01-01T10:00:00+00:00", "2026-01-01T00:00:00+00:00", "2026-06-30T23:00:00+00:00"),
    ]


def test_edited_at_survives_export_import_and_backup_and_older_exports_import(
    tmp_path, postgres_url
):
    """An author's edit time goes SQLite -> PostgreSQL -> SQLite and into a backup. An
    export made before comments had `edited_at` (schema 0007, rows without the field) still
    imports: never edited, as far as anyone can tell."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    migrate(make_engine(source))
    repo = Repository(make_engine(source))
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    edited = repo.create(NewComment(content_id="e", body="first"), now=at)
    plain = repo.create(NewComment(content_id="e", body="never edited"), now=at)
    repo.edit_body(
        edited.id, "second", "published", "jwt:alice", expected_status="published",
        now=at + timedelta(minutes=3),
    )  # fmt: skip
    repo.engine.dispose()

    def edit_times(url: str) -> dict[int, datetime | None]:
        store = Repository(make_engine(url))
        try:
            return {cid: store.get(cid).edited_at for cid in (edited.id, plain.id)}
        finally:
            store.engine.dispose()

    expected = {edited.id: at + timedelta(minutes=3), plain.id: None}
    assert edit_times(source) == expected
    first = tmp_path / "first.jsonl"
    assert cli("export", str(first), url=source).returncode == 0
    result = cli("import", str(first), url=postgres_url)
    assert result.returncode == 0, result.stderr
    assert edit_times(postgres_url) == expected
    second = tmp_path / "second.jsonl"
    assert cli("export", str(second), url=postgres_url).returncode == 0
    assert rows_of(second) == rows_of(first)
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert cli("import", str(second), url=back).returncode == 0
    assert edit_times(back) == expected
    result = cli("backup", str(tmp_path / "copy.db"), url=source)
    assert result.returncode == 0, result.stderr
    assert edit_times(f"sqlite:///{tmp_path / 'copy.db'}") == expected

    # The release before wrote schema 0007 and no edited_at in its rows.
    header, *lines = first.read_text(encoding="utf-8").splitlines()
    older = [json.dumps({**json.loads(header), "schema_revision": "0007"})]
    for line in lines:
        record = json.loads(line)
        record["row"].pop("edited_at", None)
        older.append(json.dumps(record))
    old = f"sqlite:///{tmp_path / 'old.db'}"
    result = cli("import", "-", url=old, stdin_text="\n".join(older) + "\n")
    assert result.returncode == 0, result.stderr
    assert edit_times(old) == {edited.id: None, plain.id: None}
    # 0009-0012 changed indexes and triggers only: exports of 0008-0011 have every
    # column, and import as they are.
    for revision in ("0008", "0009", "0010", "0011"):
        at = [json.dumps({**json.loads(header), "schema_revision": revision}), *lines]
        target = f"sqlite:///{tmp_path / f'{revision}.db'}"
        result = cli("import", "-", url=target, stdin_text="\n".join(at))
        assert result.returncode == 0, (revision, result.stderr)
        assert edit_times(target) == expected
    # Only the columns added since may be missing: a row lacking another is still refused.
    header = {**json.loads(older[0]), "tables": {"comments": 1}}
    lacking = {k: v for k, v in GOOD_ROW.items() if k not in ("edited_at", "updated_at")}
    broken = [json.dumps(header), json.dumps({"table": "comments", "row": lacking})]
    result = cli(
        "import", "-", url=f"sqlite:///{tmp_path / 'broken.db'}", stdin_text="\n".join(broken)
    )
    assert result.returncode == 1
    assert "comments: a row has columns" in result.stderr


def test_export_draws_a_progress_bar_on_a_terminal(tmp_path):
    source = f"sqlite:///{tmp_path / 'p.db'}"
    generate(source, 3000)
    controller, terminal = pty.openpty()
    try:
        result = cli("export", str(tmp_path / "p.jsonl"), url=source, stderr=terminal)
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    text = output.decode("utf-8", "replace")
    assert "exporting" in text
    assert "100%" in text
    assert "3552/3552" in text  # 3000 comments, 50 bans, 500 audit entries, 2 keys


def test_no_api_keys_leaves_them_out(tmp_path):
    source = f"sqlite:///{tmp_path / 'k.db'}"
    generate(source, 10)
    result = cli("export", "--no-api-keys", url=source)
    assert result.returncode == 0
    assert '"api_keys"' not in result.stdout
    assert '"table": "comments"' in result.stdout


def test_sqlite_online_backup(tmp_path, postgres_url):
    db = tmp_path / "live.db"
    source = f"sqlite:///{db}"
    generate(source, 2000)
    # A writer holds the database open in WAL mode while the backup runs.
    repo = Repository(make_engine(source))
    repo.create(NewComment(content_id="x", body="in the WAL only", email=None, author_name=None))
    copy = tmp_path / "copy.db"
    result = cli("backup", str(copy), url=source)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM comments").fetchone() == (2001,)
        assert conn.execute(
            "SELECT count(*) FROM comments WHERE body = 'in the WAL only'"
        ).fetchone() == (1,)
    assert cli("backup", str(copy), url=source).returncode != 0  # never overwrites
    result = cli("backup", str(tmp_path / "pg.db"), url=postgres_url)
    assert result.returncode != 0
    assert "pg_dump" in result.stderr
    # A destination SQLite cannot open was a sqlite3 traceback.
    nowhere = tmp_path / "no-such-dir" / "copy.db"
    result = cli("backup", str(nowhere), url=source)
    assert result.returncode == 1, result.stderr
    assert f"Error: no backup written to {nowhere}: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not nowhere.exists()


def test_an_import_from_a_missing_file_creates_no_database(tmp_path):
    """The target was migrated (a new SQLite file made) before the source was opened."""
    target = tmp_path / "new" / "target.db"
    refused = cli("import", str(tmp_path / "no-such-export.jsonl"), url=f"sqlite:///{target}")
    assert refused.returncode == 1, refused.stderr
    assert "No such file" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not target.exists()


def test_an_export_that_cannot_be_written_is_one_line_and_leaves_no_partial_file(tmp_path):
    # Each was an OSError traceback; a full disk left a truncated file that looked like an
    # export (the header line came first).
    url = f"sqlite:///{tmp_path / 'source.db'}"
    generate(url, 2_000)
    refused = cli("export", "/proc/no-such-dir/out.jsonl", url=url)
    assert refused.returncode == 1, refused.stderr
    assert "Error: no export written to /proc/no-such-dir/out.jsonl: No such file" in (
        refused.stderr
    )
    full = cli("export", "/dev/full", url=url)
    assert full.returncode == 1
    assert "Error: no export written to /dev/full: No space left on device" in full.stderr
    assert Path("/dev/full").is_char_device()  # a device is never removed
    with small_tmpfs(tmp_path / "volume", "64k") as volume:
        target = volume / "out.jsonl"
        result = cli("export", str(target), url=url)
        assert result.returncode == 1, result.stderr
        assert f"Error: no export written to {target}: No space left on device" in result.stderr
        assert "Traceback" not in result.stderr
        assert not target.exists()


def test_an_export_to_a_pipe_closed_after_its_first_rows_says_it_is_incomplete(tmp_path):
    # `export | import -` into a target the import refuses: the reader had taken the
    # header and rows, then the pipe broke, and the export said "no export written to -".
    url = f"sqlite:///{tmp_path / 'source.db'}"
    generate(url, 2_000)
    export = subprocess.Popen(
        [str(VENV_BIN / "comments-api"), "export"],
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None
    assert export.stderr is not None
    taken = export.stdout.read(20_000)
    export.stdout.close()
    stderr = export.stderr.read().decode()
    assert export.wait(timeout=60) == 1, stderr
    assert taken.startswith(b'{"format": "comments-api-export"')
    assert "Error: the export to - is incomplete: Broken pipe" in stderr
    assert "Traceback" not in stderr


def test_an_export_started_with_stdout_closed_says_so_in_one_line(tmp_path):
    # `comments-api export >&-`: Python starts with sys.stdout None, and the export ended
    # in an AttributeError traceback.
    url = f"sqlite:///{tmp_path / 'source.db'}"
    generate(url, 5)
    export = subprocess.run(
        [str(VENV_BIN / "comments-api"), "export"],
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
        timeout=60,
        check=False,
    )
    stderr = export.stderr.decode()
    assert export.returncode == 1, stderr
    assert "Error: no export written to -: standard output is closed" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("stdin", ["closed", "terminal"])
def test_an_import_from_a_stdin_that_cannot_hold_an_export_says_so_in_one_line(tmp_path, stdin):
    # `import - <&-` was an AttributeError traceback (sys.stdin None); `import -` typed
    # without a pipe waited, without a word, for an export to be typed in.
    target = tmp_path / "target.db"
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [str(VENV_BIN / "comments-api"), "import", "-"],
            env={**os.environ, "DATABASE_URL": f"sqlite:///{target}", "LOG_LEVEL": "warning"},
            stdin=terminal,
            capture_output=True,
            text=True,
            preexec_fn=(lambda: os.close(0)) if stdin == "closed" else None,
            timeout=30,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr
        == {
            "closed": "Error: standard input is closed; nothing was imported\n",
            "terminal": "Error: standard input is a terminal: pipe an export into it "
            "(comments-api export | comments-api import -) or give the file's name\n",
        }[stdin]
    )
    assert not target.exists()


@pytest.mark.parametrize("name", ["live.db", "./live.db-wal", "link.db", "hard.db"])
def test_an_export_onto_the_database_itself_is_refused(tmp_path, name):
    # `export /data/comments.db` (a backup's argument) renamed the export onto the live
    # database, exit 0: the service then found "file is not a database" there.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 5)
    (tmp_path / "link.db").symlink_to(source)
    os.link(source, tmp_path / "hard.db")
    before = source.read_bytes()
    files = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run(
        [str(VENV_BIN / "comments-api"), "export", name],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{source}", "LOG_LEVEL": "warning"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"Error: Invalid value for OUTPUT: {name} is the database in DATABASE_URL (or one "
        "of its files): an export there would replace it; give it its own file"
    )
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    if name == "./live.db-wal":  # not there (no connection open): a backup would be made
        backup = cli("backup", str(tmp_path / name), url=f"sqlite:///{source}")
        assert backup.returncode == 2, backup.stderr
        assert "a backup there would replace it" in backup.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == files


@pytest.mark.parametrize("command", ["export", "backup"])
@pytest.mark.parametrize("name", ["live.db-wal", "live.db-shm", "live.db"])
def test_the_database_reached_through_a_bind_mount_is_refused(tmp_path, command, name):
    # The database's directory by another path (a bind mount, as a container's volume
    # is): its -wal and -shm, compared by their resolved paths only, were not caught. A
    # backup named as the WAL, none there, was taken by SQLite for a broken WAL.
    data = tmp_path / "data"
    data.mkdir()
    source = data / "live.db"
    generate(f"sqlite:///{source}", 5)
    files = sorted(p.name for p in data.iterdir())
    before = source.read_bytes()
    with bind_mount(data, tmp_path / "volume") as volume:
        done = cli(command, str(volume / name), url=f"sqlite:///{source}")
        assert sorted(p.name for p in data.iterdir()) == files
    assert done.returncode == 2, done.stderr
    what = "an export" if command == "export" else "a backup"
    assert f"is the database in DATABASE_URL (or one of its files): {what} there" in done.stderr
    assert source.read_bytes() == before


def test_a_failed_export_keeps_the_export_it_was_to_replace(tmp_path):
    # The file was opened in place: truncated at once, then removed when the disk filled,
    # so the good export of yesterday was gone and no new one written.
    small = f"sqlite:///{tmp_path / 'small.db'}"
    generate(small, 5)
    big = f"sqlite:///{tmp_path / 'big.db'}"
    generate(big, 2_000)
    # Room for two small exports (about 110 kB each), not for the big one beside them.
    with small_tmpfs(tmp_path / "volume", "400k") as volume:
        target = volume / "comments.jsonl"
        assert cli("export", str(target), url=small).returncode == 0
        good = target.read_bytes()
        target.chmod(0o640)
        result = cli("export", str(target), url=big)
        assert result.returncode == 1, result.stderr
        assert f"Error: no export written to {target}: No space left on device" in result.stderr
        assert target.read_bytes() == good
        assert sorted(p.name for p in volume.iterdir()) == ["comments.jsonl"]  # no leftovers
        # A complete export replaces it, keeping its permissions.
        assert cli("export", str(target), url=small).returncode == 0
        assert oct(target.stat().st_mode & 0o777) == "0o640"
        assert len(rows_of(target)) == len(good.decode().splitlines()) - 1
    # Through a symlink (a "latest" link): the file it points at is replaced, not the link.
    latest = tmp_path / "latest.jsonl"
    real = tmp_path / "exports" / "2026-12-05.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    latest.symlink_to(real)
    assert cli("export", str(latest), url=small).returncode == 0
    assert latest.is_symlink()
    assert rows_of(real)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a comments-api export: the first line is not its header"),
        (
            b'{"format": "comments-api-export", "version": 1, "schema_revision": "0001"}\n',
            "the export is of schema revision 0001",
        ),
        (
            b"\x1f\x8b\x08\x00\xff\xfe compressed",
            "not a comments-api export: the file is not UTF-8",
        ),
    ],
)
def test_an_import_of_a_file_that_is_no_export_leaves_the_target_as_it_was(
    tmp_path, content, message
):
    """The target was migrated before the file was read: a new SQLite file was made, an
    older schema upgraded, and then the import refused."""
    source = tmp_path / "wrong.jsonl"
    source.write_bytes(content)
    new = tmp_path / "new.db"
    refused = cli("import", str(source), url=f"sqlite:///{new}")
    assert refused.returncode == 1, refused.stderr
    assert f"Error: {message}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not new.exists()
    older = tmp_path / "older.db"
    previous = max(shipped_revisions()[1])  # the migration before the newest
    migrate(make_engine(f"sqlite:///{older}"), previous)
    refused = cli("import", str(source), url=f"sqlite:///{older}")
    assert refused.returncode == 1, refused.stderr
    with sqlite3.connect(older) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (previous,)


def test_a_backup_of_a_large_database_finishes_while_the_service_keeps_writing(tmp_path):
    """`backup` is for a live database: here 24 MiB (12,000 of SQLite's 2 KiB pages) while
    `serve` stores comments back to back. Copied 4096 pages at a time, every commit the
    service made between two steps restarted the copy from its first page, and the backup
    never finished (a 400 MB database at 17 creates/s: still copying after a minute)."""
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) "
            "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
            "SELECT 'article-' || (i % 500), printf('%.400c', 'x') || i, 'published', "
            "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000' FROM n"
        )
    assert db.stat().st_size > 3 * 4096 * 2048
    copy = tmp_path / "copy.db"
    stored: list[int] = []
    failed: list[int] = []
    env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "DUPLICATE_WINDOW": "0"}
    with ServiceProcess(env, tmp_path) as service:
        stop = threading.Event()

        def writer() -> None:
            with requests.Session() as session:
                for i in range(20_000):  # bounded; stopped once the backup has ended
                    if stop.is_set():
                        return
                    answer = session.post(
                        f"{service.base}/api/v1/contents/live/comments",
                        json={"body": f"during the backup {i}", "email": f"r{i}@example.com"},
                        timeout=10,
                    )
                    (stored if answer.status_code == 201 else failed).append(answer.status_code)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert wait_until(lambda: len(stored) >= 20, timeout=30)
            before = len(stored)
            backup = subprocess.run(
                [str(VENV_BIN / "comments-api"), "backup", str(copy)],
                env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"},
                capture_output=True,
                text=True,
                timeout=30,  # a few seconds here; it never ended before
                check=False,
            )
            during = len(stored) - before
        finally:
            stop.set()
            thread.join(timeout=30)
    assert backup.returncode == 0, backup.stderr
    assert during > 0, "the service stored nothing while the backup ran"
    assert failed == []
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (kept,) = conn.execute("SELECT count(*) FROM comments WHERE content_id = 'live'").fetchone()
    assert before <= kept <= len(stored)


def interrupted(args: list[str], database_url: str, begun: Callable[[], bool]) -> None:
    """Run ``comments-api ARGS`` and send it SIGINT (Ctrl-C) once ``begun()`` says its work
    is under way (or it has ended, or after 30 s): it must stop with "Aborted!", exit 1."""
    process = subprocess.Popen(
        [str(VENV_BIN / "comments-api"), *args],
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(6000):
        if begun() or process.poll() is not None:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "Aborted!" in stderr


def test_a_backup_stopped_by_ctrl_c_leaves_no_file(tmp_path):
    # Written in place, the copy stood at DEST after "Aborted!" and exit 1: a file that
    # looked like a backup (and blocked the retry: "exists; choose a new file").
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 100_000)
    backups = tmp_path / "backups"
    backups.mkdir()
    dest = backups / "copy.db"
    # The copy has begun once a file appears: interrupted then.
    interrupted(["backup", str(dest)], f"sqlite:///{source}", lambda: any(backups.iterdir()))
    assert list(backups.iterdir()) == []
    assert cli("backup", str(dest), url=f"sqlite:///{source}").returncode == 0  # a retry works


# In the CLI's own process (a sitecustomize on its PYTHONPATH): Ctrl-C arrives the moment
# mkstemp has made the partial file, before the CLI holds its name.
CTRL_C_AT_MKSTEMP = """
import os, signal, tempfile
_mkstemp = tempfile.mkstemp
def mkstemp(*args, **kwargs):
    made = _mkstemp(*args, **kwargs)
    if made[1].endswith(".partial"):
        os.kill(os.getpid(), signal.SIGINT)
    return made
tempfile.mkstemp = mkstemp
"""


@pytest.mark.parametrize("command", ["backup", "export"])
def test_ctrl_c_as_the_partial_file_is_made_leaves_no_file(tmp_path, command):
    # The KeyboardInterrupt came between mkstemp making the file and the name reaching the
    # cleanup: ".copy.db.XXXX.partial" stayed (seen once in CI, after a backup's Ctrl-C).
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 50)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CTRL_C_AT_MKSTEMP)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [str(VENV_BIN / "comments-api"), command, str(out / "copy")],
        env={
            **os.environ,
            "DATABASE_URL": f"sqlite:///{source}",
            "LOG_LEVEL": "warning",
            "PYTHONPATH": str(hooks),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Aborted!" in done.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", ["backup", "export"])
def test_ctrl_c_with_stderr_closed_writes_nothing_to_stdout(tmp_path, command):
    # click answers Ctrl-C with a line break on sys.stderr, which is None with stderr
    # closed (`2>&-`, a daemon's): click.echo then wrote it to stdout, into an export
    # streamed there or a cron job's mail.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 50)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CTRL_C_AT_MKSTEMP)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [str(VENV_BIN / "comments-api"), command, str(out / "copy")],
        env={
            **os.environ,
            "DATABASE_URL": f"sqlite:///{source}",
            "LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
        },
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.close(2),  # stderr closed, as `2>&-` does
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == b""
    assert list(out.iterdir()) == []


# In the CLI's own process (a sitecustomize on its PYTHONPATH): SIGTERM arrives as the
# partial file is made (export, backup) or once the import's first rows are in.
SIGTERM_MID_WAY = """
import os, signal, tempfile
_mkstemp = tempfile.mkstemp
def mkstemp(*args, **kwargs):
    made = _mkstemp(*args, **kwargs)
    if made[1].endswith(".partial"):
        os.kill(os.getpid(), signal.SIGTERM)
    return made
tempfile.mkstemp = mkstemp
from comments_api.store import transfer
_import = transfer.import_
def import_(engine, lines, *, progress=lambda n: None):
    def stop(n):
        progress(n)
        os.kill(os.getpid(), signal.SIGTERM)
    return _import(engine, lines, progress=stop)
transfer.import_ = import_
"""


@pytest.mark.parametrize("command", ["backup", "export", "import"])
def test_sigterm_leaves_no_file(tmp_path, command):
    # SIGTERM (`timeout`, a CronJob's deadline, `docker stop`) ended the process at once:
    # ".copy.XXXX.partial" (and its -journal) stayed beside DEST, a copy of the database
    # as large as it, and an import left the new SQLite file it had made.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 3_000)
    out = tmp_path / "out"
    out.mkdir()
    if command == "import":
        dump = tmp_path / "dump.jsonl"
        assert cli("export", str(dump), url=f"sqlite:///{source}").returncode == 0
        args, url = [str(dump)], f"sqlite:///{out / 'new.db'}"
    else:
        args, url = [str(out / "copy")], f"sqlite:///{source}"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SIGTERM_MID_WAY)
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [str(VENV_BIN / "comments-api"), command, *args],
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "Terminated." in done.stderr
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []


def test_sigterm_while_postgres_runs_a_batch_is_exit_143_and_imports_nothing(
    tmp_path, postgres_url
):
    # SIGTERM raised its own exception inside psycopg's wait for a batch's answers: psycopg
    # cancels the query only for KeyboardInterrupt, so the pipeline was left busy and its
    # error replaced the signal's: "the database refused a row of comments: cannot exit
    # pipeline mode while busy", a traceback and exit 1 (a held lock: no exit at all).
    import psycopg

    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 50)
    dump = tmp_path / "dump.jsonl"
    assert cli("export", str(dump), url=f"sqlite:///{source}").returncode == 0
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    libpq = postgres_url.replace("+psycopg", "")
    blocked = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    with psycopg.connect(libpq, autocommit=True) as monitor, psycopg.connect(libpq) as holder:
        # The first batch's change-marker bump waits for this row: SIGTERM meets psycopg
        # waiting for that batch. (No table an export holds: the target is still empty.)
        holder.execute("INSERT INTO content_versions VALUES ('article-1', 1)")
        holder.commit()
        holder.execute("SELECT 1 FROM content_versions FOR UPDATE")
        importing = subprocess.Popen(
            [str(VENV_BIN / "comments-api"), "import", str(dump)],
            env={**os.environ, "DATABASE_URL": postgres_url, "LOG_LEVEL": "warning"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_until(lambda: monitor.execute(blocked).fetchone()[0] > 0, timeout=60)
            importing.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                importing.wait(timeout=10)
            holder.rollback()  # without a cancel, the batch waited for this row
            _, err = importing.communicate(timeout=60)
        finally:
            if importing.poll() is None:
                importing.kill()
                importing.wait()
        with psycopg.connect(libpq) as check:
            assert check.execute("SELECT count(*) FROM comments").fetchone()[0] == 0
    assert importing.returncode == 128 + signal.SIGTERM, err
    assert "Terminated." in err
    assert "Traceback" not in err
    assert "refused" not in err


def _import_losing_its_connection(
    tmp_path: Path, postgres_url: str, hold: str | None, waiting: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """`import` into ``postgres_url`` (migrated), with its server session ended, as a
    failover or restart would, while a session of ours holds it up: its first batch (a
    change marker locked), or with ``hold`` (SQL run first) wherever that waits for the
    advisory lock (7, 7). ``waiting``: the pg_stat_activity condition on the import's."""
    import psycopg

    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 50)
    dump = tmp_path / "dump.jsonl"
    assert cli("export", str(dump), url=f"sqlite:///{source}").returncode == 0
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    libpq = postgres_url.replace("+psycopg", "")
    with psycopg.connect(libpq, autocommit=True) as monitor, psycopg.connect(libpq) as holder:
        if hold is None:
            holder.execute("INSERT INTO content_versions VALUES ('article-1', 1)")
            holder.commit()
            holder.execute("SELECT 1 FROM content_versions FOR UPDATE")
        else:
            monitor.execute(hold)
            holder.execute("SELECT pg_advisory_xact_lock(7, 7)")
        importing = subprocess.Popen(
            [str(VENV_BIN / "comments-api"), "import", str(dump)],
            env={**os.environ, "DATABASE_URL": postgres_url, "LOG_LEVEL": "warning"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            found = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
            assert wait_until(lambda: monitor.execute(found + waiting).fetchone(), timeout=60)
            (pid,) = monitor.execute(found + waiting).fetchone()
            monitor.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _, err = importing.communicate(timeout=60)
        finally:
            if importing.poll() is None:
                importing.kill()
                importing.wait()
        holder.rollback()
    return subprocess.CompletedProcess(importing.args, importing.returncode, "", err), dump


def test_an_import_that_loses_the_database_mid_way_does_not_blame_the_file(tmp_path, postgres_url):
    # The server went away under a batch: "lines 2-53: the database refused a row of
    # comments: ... server closed the connection", as though those lines were damaged.
    done, _ = _import_losing_its_connection(
        tmp_path, postgres_url, None, "wait_event_type = 'Lock'"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "refused a row" not in done.stderr
    assert "Error: the database failed at line " in done.stderr
    assert done.stderr.rstrip().endswith("; nothing was imported")
    assert counted(postgres_url, "comments") == 0


def test_an_import_that_loses_the_database_at_its_commit_says_so_and_can_be_run_again(
    tmp_path, postgres_url
):
    # A connection lost at COMMIT escaped as an OperationalError traceback; the server may
    # or may not have committed, which the operator must be told, and a re-run settles it.
    # A deferred trigger holds the COMMIT.
    hold = (
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_advisory_xact_lock_shared(7, 7); RETURN NULL; END $$; "
        "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON audit_log DEFERRABLE "
        "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()"
    )
    done, dump = _import_losing_its_connection(
        tmp_path, postgres_url, hold, "wait_event = 'advisory'"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Error: the connection was lost at the commit: " in done.stderr
    assert "may or may not have been committed: run it again" in done.stderr
    assert counted(postgres_url, "comments") == 0
    again = cli("import", str(dump), url=postgres_url)
    assert again.returncode == 0, again.stderr
    assert counted(postgres_url, "comments") == 50


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_a_new_backup_or_export_is_no_more_readable_than_the_database(tmp_path, mode):
    # Made under the umask (0644 with the usual 022): the copy of a 0600 database, readers'
    # email addresses and all, was readable by every local user.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 20)
    source.chmod(mode)
    for command, name in (("backup", "copy.db"), ("export", "copy.jsonl")):
        copy = tmp_path / name
        assert cli(command, str(copy), url=f"sqlite:///{source}").returncode == 0
        assert oct(copy.stat().st_mode & 0o777) == oct(mode), command


def test_a_read_only_database_is_backed_up_with_its_mode(tmp_path):
    # The copy was given the database's mode before it was written: from a 0444 database,
    # a file SQLite could not write ("no backup written to ...: attempt to write a readonly
    # database"). Root is held to file modes too, without its capabilities.
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 20)
    source.chmod(0o444)
    as_user: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            missing("setpriv, to run the backup without root's capabilities")
        as_user = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    copy = tmp_path / "copy.db"
    done = subprocess.run(
        [*as_user, str(VENV_BIN / "comments-api"), "backup", str(copy)],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{source}", "LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert oct(copy.stat().st_mode & 0o777) == "0o444"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM comments").fetchone() == (20,)


def test_a_new_export_of_postgres_is_readable_by_its_owner_only(tmp_path, postgres_url):
    generate(postgres_url, 20)
    copy = tmp_path / "copy.jsonl"
    assert cli("export", str(copy), url=postgres_url).returncode == 0
    assert oct(copy.stat().st_mode & 0o777) == "0o600"


def test_a_backup_onto_a_full_disk_leaves_no_journal(tmp_path):
    # The copy was removed and its rollback journal, ".copy.db.XXXX.partial-journal",
    # left behind: "a backup that fails leaves no file" (operations.md). A copy larger than
    # SQLite's page cache (2 MB) spills to its file, and that writes the journal first.
    source = tmp_path / "live.db"
    engine = make_engine(f"sqlite:///{source}")
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(source) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
            "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
            "SELECT 'article-' || (i % 500), printf('%.400c', 'x') || i, 'published', "
            "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000' FROM n"
        )
    with small_tmpfs(tmp_path / "volume", "1m") as volume:
        dest = volume / "copy.db"
        result = cli("backup", str(dest), url=f"sqlite:///{source}")
        assert result.returncode == 1, result.stderr
        assert "database or disk is full" in result.stderr
        assert list(volume.iterdir()) == []


def test_an_export_saved_with_a_byte_order_mark_imports_and_bad_bytes_are_one_line(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    generate(source, 3_000)
    export = tmp_path / "export.jsonl"
    assert cli("export", str(export), url=source).returncode == 0
    data = export.read_bytes()
    # Saved by a Windows editor: the header was unreadable, "not a comments-api export".
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + data)
    target = f"sqlite:///{tmp_path / 'bom.db'}"
    result = cli("import", str(bom), url=target)
    assert result.returncode == 0, result.stderr
    assert "imported 2 api_keys, 50 bans, 3000 comments, 500 audit_log" in result.stderr
    # A byte that is not UTF-8 far into the file (past the first read) said only
    # "'utf-8' codec can't decode byte 0xff in position …".
    damaged = tmp_path / "damaged.jsonl"
    middle = data.index(b"\n", len(data) // 2) + 1
    damaged.write_bytes(data[:middle] + b"\xff\xfe\n" + data[middle:])
    db = tmp_path / "damaged.db"
    result = cli("import", str(damaged), url=f"sqlite:///{db}")
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(
        "Error: the file is damaged: it holds bytes that are not UTF-8 text; nothing was imported\n"
    )
    assert not db.exists()  # a new file: none is left behind


def test_a_backup_onto_a_file_system_without_hard_links_is_written(tmp_path):
    """The backup is named DEST by a hard link (never replacing a file). FAT, exFAT and some
    SMB or FUSE mounts have none: link() fails with EPERM there, and the backup must still
    be written. No such file system can be mounted here, so link() is made to fail as it
    does on one, in the CLI's own process (a sitecustomize on its PYTHONPATH)."""
    source = tmp_path / "live.db"
    generate(f"sqlite:///{source}", 500)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import errno, os\n"
        "def _no_links(*args, **kwargs):\n"
        "    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))\n"
        "os.link = _no_links\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{source}",
        "LOG_LEVEL": "warning",
        "PYTHONPATH": str(hooks),
    }
    backups = tmp_path / "backups"
    backups.mkdir()
    dest = backups / "copy.db"
    command = [str(VENV_BIN / "comments-api"), "backup", str(dest)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(backups.iterdir()) == [dest], "the backup, and no partial file beside it"
    # A second run still never replaces it.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert "exists; choose a new file" in again.stderr
    assert list(backups.iterdir()) == [dest]
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT count(*) FROM comments").fetchone() == (500,)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_an_import_into_a_non_empty_older_schema_refuses_and_leaves_it_as_it_was(request, store):
    """The target was migrated first and found non-empty only then: a refused import had
    upgraded the schema of a database still served by the older release."""
    url = request.getfixturevalue(f"{store}_url")
    previous = max(shipped_revisions()[1])  # the migration before the newest
    engine = make_engine(url)
    migrate(engine, previous)
    with engine.begin() as conn:
        conn.execute(
            insert(bans),
            [{"target": "email:t@example.com", "reason": None, "created_by": "api_key:mod",
              "created_at": datetime(2026, 1, 1, tzinfo=UTC)}],
        )  # fmt: skip
    engine.dispose()
    head = {"format": "comments-api-export", "version": 1,
            "schema_revision": head_revision(), "tables": {"comments": 0}}  # fmt: skip
    refused = cli("import", "-", url=url, stdin_text=json.dumps(head) + "\n")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        "Error: the target database already has bans: import only into an empty one\n"
    )
    engine = make_engine(url)
    try:
        assert Repository(engine).schema_revision() == previous
    finally:
        engine.dispose()


def test_an_import_stopped_by_ctrl_c_into_a_new_file_leaves_no_database(tmp_path):
    # The target was made and migrated, and stood there empty after "Aborted!": a re-run,
    # or `serve` and `keys`, then found a database that had not been there.
    source = f"sqlite:///{tmp_path / 'source.db'}"
    generate(source, N_COMMENTS)
    dump = tmp_path / "dump.jsonl"
    assert cli("export", str(dump), url=source).returncode == 0
    targets = tmp_path / "targets"
    targets.mkdir()
    target = targets / "new.db"
    wal = targets / "new.db-wal"
    # Rows are going in once the WAL grows: interrupted then.
    interrupted(
        ["import", str(dump)],
        f"sqlite:///{target}",
        lambda: _size(wal) > 1_000_000,
    )
    assert list(targets.iterdir()) == []
    # A re-run imports into a new file, as the first run would have.
    done = cli("import", str(dump), url=f"sqlite:///{target}")
    assert done.returncode == 0, done.stderr
    assert f"{N_COMMENTS} comments" in done.stderr


def _size(path: Path) -> int:
    """0 for a file that is not there. SQLite removes the WAL when a database's last
    connection closes (the import's migration step opens and closes its own), so it could
    go between an exists() and a stat(): a FileNotFoundError in CI once."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_a_refused_import_leaves_the_file_in_its_journal_mode(tmp_path, mode):
    """The emptiness check opened the target through the server's engine, whose connect
    hook sets WAL: an operator's file in rollback-journal mode was switched to WAL by an
    import that was then refused. (A WAL file must not be left -wal and -shm files.)"""
    path = tmp_path / "kept.db"
    url = f"sqlite:///{path}"
    generate(url, 3)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(f"PRAGMA journal_mode={mode}").fetchone() == (mode,)
    finally:
        conn.close()
    before, files = path.read_bytes(), sorted(tmp_path.iterdir())
    head = {"format": "comments-api-export", "version": 1,
            "schema_revision": head_revision(), "tables": {"comments": 0}}  # fmt: skip
    refused = cli("import", "-", url=url, stdin_text=json.dumps(head) + "\n")
    assert refused.returncode == 1, refused.stderr
    assert "import only into an empty one" in refused.stderr
    assert sorted(tmp_path.iterdir()) == files  # no -wal, no -shm
    assert path.read_bytes() == before  # the header's journal mode bytes among them
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == (mode,)
    finally:
        conn.close()


@pytest.mark.parametrize("imported", [1, 0], ids=["comments", "no-comments"])
def test_an_import_never_gives_an_id_the_audit_log_names_again(tmp_path, database_url, imported):
    """A pending comment that held the newest id, deleted, is removed for good; the source
    never gives its id again (PostgreSQL's sequence, SQLite's AUTOINCREMENT: 0014), and
    its audit entry names it. After an import the next comment got that id: the audit log
    said a moderator had deleted a comment posted after the move."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    signer = hs_signer()
    settings = Settings(
        database_url=source,
        ratelimit_enabled=False,
        moderation_mode="pre",
        jwt_hs256_secret=signer.key,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    engine = make_engine(source)
    migrate(engine)
    engine.dispose()
    client = create_app(settings).test_client()
    mod = bearer(api_key(client.application, SCOPE_MODERATE))
    ann = bearer(signer.token("ann"))
    first, second = (
        client.post("/api/v1/contents/a/comments", json={"body": body}, headers=ann).json["id"]
        for body in ("kept", "removed")
    )
    if imported:
        client.post(BULK, json={"action": "approve", "ids": [first]}, headers=mod)
    removed = [second] if imported else [first, second]
    deleted = client.post(BULK, json={"action": "delete", "ids": removed}, headers=mod)
    assert deleted.json["changed"] == removed
    dump = tmp_path / "export.jsonl"
    assert cli("export", str(dump), url=source).returncode == 0
    result = cli("import", str(dump), url=database_url)
    assert result.returncode == 0, result.stderr
    assert counted(database_url, "comments") == imported

    target = create_app(replace(settings, database_url=database_url)).test_client()
    new = target.post("/api/v1/contents/a/comments", json={"body": "after"}, headers=ann)
    assert new.status_code == 202, new.data
    assert new.json["id"] == second + 1
