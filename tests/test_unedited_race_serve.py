"""Approve-if-unedited against a real `comments-api serve` on PostgreSQL."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

import requests
from sqlalchemy import text

from comments_api.identity.credentials import SCOPE_ADMIN, generate_api_key
from comments_api.store.repository import Repository, make_engine, migrate

from .authkit import AUDIENCE, ISSUER, bearer, hs_signer
from .support import ServiceProcess, wait_until


def test_an_edit_in_flight_during_the_listing_is_not_approved_unseen(tmp_path, postgres_url):
    signer = hs_signer()
    engine = make_engine(postgres_url)
    migrate(engine)
    new = generate_api_key()
    Repository(engine).add_api_key(new.key_id, "t", new.key_hash, [SCOPE_ADMIN])
    moderator = bearer(new.key)
    author = bearer(signer.token("author-1"))
    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "MODERATION_MODE": "pre",
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "METRICS_ENABLED": "false",
    }
    with ServiceProcess(env, tmp_path, workers=2) as service:
        base = service.base
        made = requests.post(
            f"{base}/api/v1/contents/a1/comments",
            json={"body": "a nice comment"},
            headers=author,
            timeout=10,
        )
        assert made.status_code == 202, made.text
        cid = made.json()["id"]
        edit: dict[str, object] = {}
        with engine.connect() as holder:
            # Something holding the row a moment: the edit has read its clock, and waits.
            holder.execute(text("SELECT 1 FROM comments WHERE id = :i FOR UPDATE"), {"i": cid})

            def send_edit() -> None:
                edit["r"] = requests.patch(
                    f"{base}/api/v1/comments/{cid}",
                    json={"body": "BUY PILLS"},
                    headers=author,
                    timeout=10,
                )

            editing = threading.Thread(target=send_edit, daemon=True)
            editing.start()
            with engine.connect() as probe:
                waited = (
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                )
                assert wait_until(lambda: probe.execute(text(waited)).scalar() == 1, 10, 0.01)
            time.sleep(1.05)  # a listing in a later second than the edit's clock read

            def read_queue() -> None:
                edit["listing"] = requests.get(
                    f"{base}/api/v1/moderation/pending", headers=moderator, timeout=10
                )

            reading = threading.Thread(target=read_queue, daemon=True)
            reading.start()
            reading.join(1)  # it read (the code before) or waits for the edit in flight
            holder.commit()
            reading.join(10)
        editing.join(10)
        assert edit["r"].status_code == 200, edit["r"].text
        listing = edit["listing"]
        assert listing.status_code == 200, listing.text
        [row] = listing.json()["items"]
        # What the console sends (console.js): the listing's read_at, else its Date.
        read_at = listing.json().get("read_at")
        since = read_at or parsedate_to_datetime(listing.headers["Date"]).isoformat()
        body = {"action": "approve", "ids": [cid], "if_status": ["pending"]}
        approved = requests.post(
            f"{base}/api/v1/moderation/comments",
            json={**body, "if_unedited_since": since},
            headers=moderator,
            timeout=10,
        )
        assert approved.status_code == 200, approved.text
        public = requests.get(f"{base}/api/v1/contents/a1/comments", timeout=10).json()["items"]
        # Published only as the moderator read it; else unchanged, to be read anew.
        assert [c["body"] for c in public] == [row["body"]] * len(approved.json()["changed"])
