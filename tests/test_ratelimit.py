"""Rate limits: in-process (memory://) and across two real gunicorn workers on Redis."""

from __future__ import annotations

import json
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from comments_api.identity.credentials import SCOPE_WRITE

from .authkit import AUDIENCE, ISSUER, api_key, bearer, hs_signer
from .support import RedisServer, ServiceProcess, wait_until

pytestmark = pytest.mark.timeout(120)


def post_v1(client, body, headers=None, **environ):
    return client.post(
        "/api/v1/contents/a1/comments",
        json={"body": body},
        headers=headers,
        environ_base=environ or {},
    )


def post_legacy(client, comment, **environ):
    return client.post(
        "/api/comment/new",
        json={"email": "ann@example.com", "comment": comment, "content_id": "a1"},
        environ_base=environ or {},
    )


@pytest.fixture
def limited(make_app):
    def build(**overrides):
        return make_app(ratelimit_enabled=True, **overrides).test_client()

    return build


def test_anonymous_writes_per_address_shared_by_legacy_and_v1(limited):
    client = limited(ratelimit_anonymous_write="3/minute")
    ok = [post_v1(client, "v1-a"), post_legacy(client, "legacy-b"), post_v1(client, "v1-c")]
    assert [r.status_code for r in ok] == [201, 200, 201]
    assert ok[0].headers["X-RateLimit-Limit"] == "3"
    assert [r.headers["X-RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
    assert "Retry-After" not in ok[0].headers  # only refusals carry it

    refused = post_v1(client, "v1-d")
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert "too many comments from this address" in refused.json["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Each header once, on answers and refusals alike (the limiter adds them, unchecked).
    for response in (*ok, refused):
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            assert len(response.headers.getlist(name)) == 1, (name, response.headers)
    assert len(refused.headers.getlist("Retry-After")) == 1
    legacy = post_legacy(client, "legacy-e")
    assert legacy.status_code == 429
    assert legacy.json["status"] == "TOO-MANY-REQUESTS"
    assert "Retry-After" in legacy.headers
    # Another address has its own budget; reads are a separate budget too.
    assert post_v1(client, "other", REMOTE_ADDR="192.0.2.10").status_code == 201
    assert client.get("/api/v1/contents/a1/comments").status_code == 200
    # Only four comments got in.
    assert len(client.get("/api/v1/contents/a1/comments").json["items"]) == 4


def test_authenticated_writes_are_limited_per_identity(limited):
    signer = hs_signer()
    client = limited(
        ratelimit_anonymous_write="1/minute",
        ratelimit_authenticated_write="2/minute",
        jwt_hs256_secret=signer.key,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    alice, bob = bearer(signer.token("alice")), bearer(signer.token("bob"))
    assert [post_v1(client, f"a{i}", alice).status_code for i in range(3)] == [201, 201, 429]
    # Same address, other identity: its own budget. Anonymous from there: its own too.
    assert [post_v1(client, f"b{i}", bob).status_code for i in range(2)] == [201, 201]
    assert post_v1(client, "anon").status_code == 201
    assert post_v1(client, "anon2").status_code == 429
    # An API key is an identity of its own.
    key = bearer(api_key(client.application, SCOPE_WRITE))
    assert post_v1(client, "k1", key).status_code == 201


def test_reads_are_limited_but_probes_never(limited):
    client = limited(ratelimit_read="3/minute")
    statuses = [client.get("/api/v1/counts?content_id=1").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert client.get("/api/comment/list/1").json["status"] == "TOO-MANY-REQUESTS"
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
    # Writes are not charged to the read budget.
    assert post_v1(client, "still can post").status_code == 201


@pytest.mark.parametrize(("trusted", "separate_budgets"), [(1, True), (0, False)])
def test_forwarded_for_is_used_only_through_trusted_proxies(limited, trusted, separate_budgets):
    client = limited(ratelimit_anonymous_write="2/minute", trusted_proxies=trusted)

    def from_client(address: str, body: str):
        # The proxy appends the address it saw; a client may have forged earlier entries.
        forwarded = f"10.9.9.9, {address}"
        return client.post(
            "/api/v1/contents/a1/comments",
            json={"body": body},
            headers={"X-Forwarded-For": forwarded},
        )

    first = [from_client("203.0.113.7", f"x{i}").status_code for i in range(3)]
    assert first == [201, 201, 429]
    second = from_client("203.0.113.8", "y").status_code
    # Trusted: each forwarded address is its own client. Untrusted: everyone is the proxy.
    assert second == (201 if separate_budgets else 429)


def test_forged_forwarded_entries_do_not_escape_the_limit(limited):
    client = limited(ratelimit_anonymous_write="2/minute", trusted_proxies=1)
    statuses = []
    for i in range(4):
        # The client rotates a fake left-most entry; our proxy's entry stays the same.
        forwarded = f"198.51.100.{i}, 203.0.113.50"
        statuses.append(
            client.post(
                "/api/v1/contents/a1/comments",
                json={"body": f"z{i}"},
                headers={"X-Forwarded-For": forwarded},
            ).status_code
        )
    assert statuses == [201, 201, 429, 429]


def test_ipv6_clients_are_limited_per_64(limited):
    client = limited(ratelimit_anonymous_write="2/minute")
    statuses = [
        post_v1(client, f"v6-{i}", REMOTE_ADDR=f"2001:db8:1:2::{i + 1}").status_code
        for i in range(3)
    ]
    assert statuses == [201, 201, 429]
    assert post_v1(client, "other /64", REMOTE_ADDR="2001:db8:1:3::1").status_code == 201


@pytest.mark.redis
def test_limits_hold_across_two_gunicorn_workers_with_redis(redis_server, tmp_path):
    limit, extra = 5, 7
    db = random.randint(1, 15)  # a Redis database of its own: no counters from other tests
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_STORAGE_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
        "RATELIMIT_ANONYMOUS_WRITE": f"{limit}/minute",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "METRICS_ENABLED": "false",
        # One request at a time per worker: concurrent requests must use both workers.
        "THREADS": "1",
    }
    with ServiceProcess(env, tmp_path, workers=2) as service:

        def pids(method: str) -> set[int]:
            found = set()
            for line in service.log().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("message") == "request" and entry.get("method") == method:
                    found.add(entry["pid"])
            return found

        def probe(_: int) -> int:
            url = f"{service.base}/healthz"
            return requests.get(url, headers={"Connection": "close"}, timeout=10).status_code

        # /readyz answered from one worker; make sure the other has booted too, or the
        # whole flood could land on the first one and prove nothing.
        def both_workers_up() -> bool:
            with ThreadPoolExecutor(max_workers=3) as pool:
                list(pool.map(probe, range(6)))
            return len(pids("GET")) == 2

        assert wait_until(both_workers_up, timeout=20), service.log()[-2000:]

        def post(i: int) -> requests.Response:
            # A fresh connection each time (no Session), so the kernel hands requests
            # to whichever worker accepts first; three in flight keep both busy.
            return requests.post(
                f"{service.base}/api/v1/contents/a1/comments",
                json={"body": f"flood {i}"},
                headers={"Connection": "close"},
                timeout=10,
            )

        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(post, range(limit + extra)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * limit + [429] * extra
        for response in responses:
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) > 0
                assert response.headers["Content-Type"].startswith("application/problem+json")
        listed = requests.get(f"{service.base}/api/v1/contents/a1/comments", timeout=10).json()
        assert len(listed["items"]) == limit
        # The flood really was spread over both workers: only shared storage explains
        # exactly `limit` successes.
        assert len(pids("POST")) == 2, service.log()[-2000:]


@pytest.mark.redis
def test_limiter_uses_the_password_bearing_url_from_its_file(tmp_path):
    import redis

    password = secrets.token_urlsafe(18)
    server = RedisServer(requirepass=password)
    try:
        db = 3
        url_file = tmp_path / "ratelimit-storage-url"
        url_file.write_text(f"redis://:{password}@127.0.0.1:{server.port}/{db}\n")
        url_file.chmod(0o600)
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
            "RATELIMIT_STORAGE_URL": "",  # nothing inherited: only the file names the storage
            "RATELIMIT_STORAGE_URL_FILE": str(url_file),
            "RATELIMIT_ANONYMOUS_WRITE": "2/minute",
            "METRICS_ENABLED": "false",
        }
        with ServiceProcess(env, tmp_path, workers=1) as service:
            statuses = [
                requests.post(
                    f"{service.base}/api/v1/contents/a1/comments",
                    json={"body": f"from file {i}"},
                    timeout=10,
                ).status_code
                for i in range(3)
            ]
            log = service.log()
        assert statuses == [201, 201, 429], log[-2000:]
        # The counters are in that Redis database, which only the password opens: the
        # limiter used the URL from the file, not its per-process fallback.
        owner = redis.Redis(host="127.0.0.1", port=server.port, db=db, password=password)
        counters = {key: owner.get(key) for key in owner.keys("*")}
        assert counters, log[-2000:]
        assert b"3" in counters.values(), counters
        stranger = redis.Redis(host="127.0.0.1", port=server.port, db=db)
        with pytest.raises(redis.AuthenticationError):
            stranger.keys("*")
    finally:
        server.stop()


def test_a_malformed_limit_refuses_to_start_instead_of_silently_not_limiting(make_app):
    from comments_api.settings import SettingsError

    with pytest.raises(SettingsError, match="RATELIMIT_READ"):
        make_app(ratelimit_enabled=True, ratelimit_read="lots")
    # Switched off, the limiter is never built: nothing to validate.
    assert make_app(ratelimit_enabled=False, ratelimit_read="lots") is not None


def test_memory_storage_needs_no_timer_thread_per_hit(limited):
    import threading

    client = limited(ratelimit_read="1000/minute")
    client.get("/api/v1/counts?content_id=1")
    time.sleep(0.05)  # the storage's one start-up sweep timer has fired
    timers_seen = 0
    for _ in range(30):
        client.get("/api/v1/counts?content_id=1")
        timers_seen += sum(isinstance(t, threading.Timer) for t in threading.enumerate())
        time.sleep(0.012)  # longer than the stock storage's 10 ms timer
    assert timers_seen == 0
    assert client.get("/api/v1/counts?content_id=1").headers["X-RateLimit-Remaining"] == "968"


def test_process_counters_open_a_new_window_after_the_last_one_ends():
    from comments_api.web.protection import ProcessCounters

    counters = ProcessCounters()
    assert [counters.incr("ip:a", expiry=1) for _ in range(3)] == [1, 2, 3]
    assert counters.incr("ip:b", expiry=1) == 1  # another key, its own window
    reset = counters.get_expiry("ip:a")
    assert time.time() < reset <= time.time() + 1
    time.sleep(1.05)
    assert counters.incr("ip:a", expiry=1) == 1  # the window ended: a new one
    assert counters.get_expiry("ip:a") > reset
    assert counters.get_expiry("never-hit") <= time.time()


def test_process_counters_sweep_windows_nobody_hits_again():
    from comments_api.web.protection import ProcessCounters

    counters = ProcessCounters()
    for i in range(100):
        counters.incr(f"ip:{i}", expiry=0.05)  # type: ignore[arg-type]
    assert len(counters._windows) == 100
    time.sleep(0.1)
    counters._next_sweep = 0.0  # the sweep is due
    assert counters.incr("ip:new", expiry=60) == 1
    assert set(counters._windows) == {"ip:new"}


def test_process_counters_count_exactly_under_threads():
    # gthread workers share one limiter: no hit may be lost between threads.
    from concurrent.futures import ThreadPoolExecutor

    from comments_api.web.protection import ProcessCounters

    counters = ProcessCounters()
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda _: counters.incr("ip:a", expiry=60), range(4000)))
    assert sorted(counts) == list(range(1, 4001))


def test_unreachable_redis_falls_back_to_per_process_limits(limited):
    from .support import free_port

    # Nothing listens there: every storage call fails at once (connection refused).
    client = limited(
        ratelimit_storage_url=f"redis://127.0.0.1:{free_port()}/0",
        ratelimit_anonymous_write="2/minute",
    )
    statuses = [post_v1(client, f"fallback {i}").status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    assert client.get("/api/v1/counts?content_id=1").status_code == 200


def test_one_storage_call_per_limit_per_request(limited):
    # The lean limiter's promise (bench/README.md, "Leaner layers"): one incr per limit,
    # the window's reset asked of storage at most once per key; Flask-Limiter made three
    # calls per limit. Counted on the real per-process storage, whose whole interface is
    # these three calls (``get`` is asked only on a refusal, of the longer windows).
    client = limited(ratelimit_read="1000/minute;5000/hour")
    limiter = client.application.extensions["comments_api_limiter"]
    calls = []
    storage = limiter.primary
    assert {n for n in dir(storage) if not n.startswith("_")} == {
        "SWEEP_SECONDS",
        "incr",
        "get",
        "get_expiry",
    }
    for name in ("incr", "get", "get_expiry"):
        real = getattr(storage, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(storage, name, counted)
    for _ in range(5):
        response = client.get("/api/v1/counts?content_id=1")
        assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "995"
    assert calls.count("incr") == 10
    assert calls.count("get_expiry") == 0  # the first hit opened both windows
    assert calls.count("get") == 0


def test_a_limit_written_twice_is_counted_once(limited):
    # The settings accept it (both spellings are valid limits syntax); one storage key.
    client = limited(ratelimit_anonymous_write="3/minute;3 per 1 minute;100/hour")
    responses = [post_v1(client, f"twice {i}") for i in range(4)]
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]


def test_a_port_in_the_forwarded_address_is_not_a_new_client(limited):
    # Some proxies (Azure Application Gateway, IIS ARR) append "address:port".
    client = limited(ratelimit_anonymous_write="2/minute", trusted_proxies=1)

    def forwarded(entry: str, body: str) -> int:
        return client.post(
            "/api/v1/contents/a1/comments",
            json={"body": body},
            headers={"X-Forwarded-For": entry},
        ).status_code

    v4 = ["203.0.113.7:40001", "203.0.113.7:40002", "203.0.113.7", "203.0.113.7:40003"]
    assert [forwarded(e, f"v4 {i}") for i, e in enumerate(v4)] == [201, 201, 429, 429]
    v6 = ["[2001:db8:1:2::1]:443", "[2001:db8:1:2::2]", "2001:db8:1:2::3"]
    assert [forwarded(e, f"v6 {i}") for i, e in enumerate(v6)] == [201, 201, 429]
    # Another address, with or without a port, is its own client.
    assert forwarded("203.0.113.8:40001", "other") == 201


def test_what_the_read_budget_counts(limited):
    origin = "https://www.news.example"
    client = limited(ratelimit_read="5/minute", cors_origins=(origin,))
    # A browser's preflight is never charged: a page's preflights must not eat its
    # reader's budget.
    for _ in range(6):
        preflight = client.options(
            "/api/v1/contents/a1/comments",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
    # HEAD, a plain OPTIONS (it checks credentials like any read), a 404 and a 405 are
    # requests like any other: each costs one.
    assert client.options("/api/v1/counts").status_code == 200
    assert client.head("/api/v1/counts?content_id=1").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    assert client.put("/api/v1/counts").status_code == 405
    last = client.get("/api/v1/counts?content_id=1")
    assert last.headers["X-RateLimit-Remaining"] == "0"
    refused = client.get("/no/such/page")
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    # Probes still answer, HEAD included.
    assert client.head("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_refused_requests_do_not_use_up_the_longer_window(limited):
    client = limited(ratelimit_anonymous_write="2/2 seconds;3/hour")
    statuses = [post_v1(client, f"burst {i}").status_code for i in range(7)]
    assert statuses == [201, 201] + [429] * 5
    time.sleep(2.1)  # the short window ends; the hour has served two of its three
    assert post_v1(client, "third of the hour").status_code == 201
    refused = post_v1(client, "fourth of the hour")
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600


def test_windows_are_ordered_by_length_not_by_unit(limited):
    # limits sorts "1/90 minutes" (a minute unit) before "5/hour"; the hour is shorter.
    client = limited(ratelimit_read="3/90 minutes;2/hour")
    first = client.get("/api/v1/counts?content_id=1")
    assert first.headers["X-RateLimit-Limit"] == "2"  # the shortest window's
    assert client.get("/api/v1/counts?content_id=1").status_code == 200
    refused = client.get("/api/v1/counts?content_id=1")
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    # Shortest window first, whatever the unit.
    limiter = client.application.extensions["comments_api_limiter"]
    assert [item.get_expiry() for item in limiter.read.items] == [3600, 5400]


def test_another_guards_429_tells_when_the_limiter_will_let_the_client_in(limited):
    # The flood guard (a view) refuses the third comment by one author on one content for
    # 60 s; the same request used the address's last comment of the hour. Its Retry-After
    # said 60 and its X-RateLimit-* the hour's budget: a client that obeyed Retry-After was
    # refused again, now by the limiter, for the rest of the hour.
    client = limited(
        ratelimit_anonymous_write="100/minute;3/hour",
        thread_author_max=2,
        thread_author_window=60,
    )
    for i in range(2):
        assert post_legacy(client, f"ok {i}").status_code == 200
    flooded = post_legacy(client, "flood")
    assert flooded.status_code == 429
    assert "at most 2 comments" in flooded.json["message"]  # the flood guard's refusal
    retry_after = int(flooded.headers["Retry-After"])
    assert 3590 < retry_after <= 3600, flooded.headers
    # The headers describe the window that holds the client back, and agree with it.
    assert flooded.headers["X-RateLimit-Limit"] == "3"
    assert flooded.headers["X-RateLimit-Remaining"] == "0"
    reset = int(flooded.headers["X-RateLimit-Reset"])
    assert abs(reset - (time.time() + retry_after)) <= 2
    assert len(flooded.headers.getlist("Retry-After")) == 1
    # Obeying the limiter's budget is what the client needs: its next write is refused by it.
    refused = post_v1(client, "after the flood")
    assert refused.status_code == 429
    assert "too many comments from this address" in refused.json["detail"]


def test_another_guards_429_keeps_its_own_retry_after_while_budget_remains(limited):
    # The address budget has room: the flood guard's window is the wait; the headers
    # describe the address budget as on every limited answer, and Retry-After wins.
    client = limited(ratelimit_anonymous_write="10/minute", thread_author_max=1)
    assert post_legacy(client, "ok").status_code == 200
    flooded = post_legacy(client, "flood")
    assert flooded.status_code == 429
    assert flooded.headers["Retry-After"] == "3600"  # THREAD_AUTHOR_WINDOW's default
    assert flooded.headers["X-RateLimit-Limit"] == "10"
    assert flooded.headers["X-RateLimit-Remaining"] == "8"


def test_remaining_never_promises_a_request_a_longer_window_refuses(limited):
    # The headers described the smallest window whatever the others said: "7 left" in the
    # minute while the hour had none, and the next request was a 429.
    client = limited(ratelimit_read="10/minute;3/hour")
    answers = [client.get("/api/v1/counts?content_id=1") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    # While no window is used up, the one with the fewest requests left.
    assert [a.headers["X-RateLimit-Limit"] for a in answers[:2]] == ["3", "3"]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    used_up = answers[2]
    assert used_up.headers["X-RateLimit-Limit"] == "3"
    assert 3590 < int(used_up.headers["X-RateLimit-Reset"]) - time.time() <= 3602


def test_a_refusal_waits_for_every_window_the_client_has_used_up(limited):
    # The second's 429 said "Retry-After: 1" while the minute was used up as well: a
    # client that obeyed it was refused again, for the rest of the minute.
    client = limited(ratelimit_read="2/second;2/minute")
    answers = [client.get("/api/v1/counts?content_id=1") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert 55 <= int(refused.headers["Retry-After"]) <= 60, refused.headers
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert abs(int(refused.headers["X-RateLimit-Reset"]) - (time.time() + 60)) <= 2
    # The served request that used both up said so too.
    assert int(answers[1].headers["X-RateLimit-Reset"]) - time.time() > 55
    # The longer window was read, not charged: after the second ends the minute still
    # holds two, so the client is refused by it (and not by a count of three).
    limiter = client.application.extensions["comments_api_limiter"]
    minute = limiter.read.items[1]
    key = minute.key_for(limiter.KEY_PREFIX, "127.0.0.1", "read")
    assert limiter.primary.get(key) == 2


def test_the_reset_is_never_in_the_past(limited):
    # A window that ends while the request is served (a slow write: the SQLite lock, a 503
    # after DB_STATEMENT_TIMEOUT) was reported as ending before the answer was sent.
    client = limited(ratelimit_read="100/second")

    @client.application.after_request  # runs before the limiter's (hooks run reversed)
    def slow(response):
        time.sleep(2.1)  # past the window's end, and past the header's rounding up (+1)
        return response

    answer = client.get("/api/v1/counts?content_id=1")
    assert answer.status_code == 200
    assert int(answer.headers["X-RateLimit-Reset"]) >= time.time()


def test_a_limit_of_zero_is_refused_at_start_in_one_line(tmp_path):
    # Taken literally, `0/minute` refused every request; an operator meaning "no limit"
    # is told how to say so.
    import os
    import subprocess

    from .support import VENV_BIN

    result = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
            "RATELIMIT_ANONYMOUS_WRITE": "0/minute",
        },
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: configuration error: RATELIMIT_ANONYMOUS_WRITE: '0/minute' allows no "
        "request at all; a limit's amount is at least 1 (to turn rate limits off, set "
        "RATELIMIT_ENABLED=false)"
    ]
    assert not (tmp_path / "c.db").exists()
