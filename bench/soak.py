"""Soak run: `comments-api serve` under a fixed request rate for minutes (issue #8, item 8).

Sends a fixed rate (``--rate`` per second, open loop: latency counts from when a request
was due, so a stall shows up as latency instead of being hidden) of mixed traffic to a
fresh server on a loopback port: 80 % reads (a thread page, a single comment, counts),
20 % writes (v1 creates, half with an Idempotency-Key). Every ``--interval`` seconds it
prints throughput, p50/p99, errors and the RSS of the master and of each worker; a leak
shows as RSS growing interval after interval. At the end it checks that every
acknowledged write is stored, that no answer was a 5xx, and that the comments-created
counter equals the comments stored, and writes everything to artifacts/soak.json.

``--kill-every S`` also SIGKILLs one worker, picked at random, about every S seconds
(0.5-1.5 x S apart) while the traffic runs: what the master must survive (an OOM kill, a
segfault) without a lost acknowledged write, a 5xx or a count gone from /metrics. Requests
the killed worker was serving end without an answer and are counted as errors by kind.
``--reload-every S`` sends the master SIGHUP about as often (gunicorn's reload: new
workers, the old ones drained): no request may fail at all. ``--end-sessions-every S``
(PostgreSQL) ends every server session of the service's database about as often, as a
failover, a restart or ``idle_session_timeout`` would, without waiting for them to go:
reads and writes that meet an ended session are tried again on a fresh connection, so
the only failures allowed are the 503s of creates whose connection was lost at their
COMMIT (such a write may have committed, so it is not tried again), which the server logs
as such and the soak counts from its log.

Not a test: bounded (``--duration`` at most 30 min, ``--rate`` at most 500/s) and run by
hand (`make soak`). Usage:

    python bench/soak.py [--duration 180] [--rate 40] [--interval 15] [--workers N]
                         [--kill-every S] [--reload-every S] [--end-sessions-every S]
                         [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comments_api.app import COMMIT_LOST

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only
CONTENTS = [f"soak-{i}" for i in range(20)]
MAX_DURATION = 1800.0
MAX_RATE = 500.0
CLIENT_THREADS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None, headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        hdrs = dict(headers or {})
        payload = None
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            payload = json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=hdrs)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def now_and_then(action: Callable[[], None], every: float, until: float) -> None:
    """Run ``action`` every 0.5-1.5 x ``every`` seconds (``every`` first) until ``until``."""
    rng = random.Random()
    time.sleep(every)
    while time.monotonic() < until:
        action()
        time.sleep(rng.uniform(0.5, 1.5) * every)


def send_signal(sig: int, pick: Callable[[], int | None], sent: list[int]) -> None:
    """Send ``sig`` to the process ``pick`` names, if any; note its PID in ``sent``."""
    pid = pick()
    if pid:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:  # a worker that exited on its own meanwhile
            pass


def end_sessions(database_url: str, ended: list[int]) -> None:
    """End every other session of ``database_url``'s database (the service's role may end
    its own role's sessions); note how many were told to end in ``ended``."""
    import psycopg  # the service's driver: only PostgreSQL runs need it

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    ended.append(int(row[0]) if row else 0)


def created_counted(port: int) -> int:
    """comments_api_comments_created_total, status published, summed over every series."""
    status, body = call(port, "GET", "/metrics")
    if status != 200:
        raise SystemExit(f"soak: /metrics answered {status}")
    return round(
        sum(
            float(line.rsplit(None, 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("comments_api_comments_created_total{")
            and 'status="published"' in line
        )
    )


def published_stored(port: int) -> int:
    query = "&".join(f"content_id={c}" for c in CONTENTS)
    status, body = call(port, "GET", f"/api/v1/counts?{query}")
    if status != 200:
        raise SystemExit(f"soak: /api/v1/counts answered {status}")
    return sum(json.loads(body)["counts"].values())


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    writes: int = 0


class Soak:
    def __init__(self, port: int, rate: float, duration: float) -> None:
        self.port = port
        self.rate = rate
        self.duration = duration
        self.lock = threading.Lock()
        self.window = Window()
        self.acked: list[str] = []  # bodies answered 201
        self.error_kinds: dict[str, int] = {}  # "http 503", "RemoteDisconnected", ...
        self.known_ids: list[int] = []
        self.start = 0.0

    def one(self, rng: random.Random, n: int) -> tuple[bool, bool, int]:
        """One request; returns (ok, was_write, status)."""
        roll = rng.random()
        content = rng.choice(CONTENTS)
        if roll < 0.2:
            body = f"soak {n} {uuid.uuid4().hex[:8]}"
            headers = {"Idempotency-Key": str(uuid.uuid4())} if n % 2 else None
            status, data = call(
                self.port, "POST", f"/api/v1/contents/{content}/comments",
                {"body": body, "author_name": "soak"}, headers,
            )  # fmt: skip
            if status == 201:
                with self.lock:
                    self.acked.append(body)
                    self.known_ids.append(json.loads(data)["id"])
            return status == 201, True, status
        if roll < 0.6:
            status, _ = call(self.port, "GET", f"/api/v1/contents/{content}/comments?limit=20")
        elif roll < 0.8 and self.known_ids:
            status, _ = call(self.port, "GET", f"/api/v1/comments/{rng.choice(self.known_ids)}")
        else:
            query = "&".join(f"content_id={c}" for c in rng.sample(CONTENTS, 5))
            status, _ = call(self.port, "GET", f"/api/v1/counts?{query}")
        return status == 200, False, status

    def client(self, k: int) -> None:
        rng = random.Random(k)
        i = 0
        while True:
            n = i * CLIENT_THREADS + k
            due = self.start + n / self.rate
            if due - self.start >= self.duration:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                ok, write, status = self.one(rng, n)
                kind = None if ok else f"http {status}"
            except (OSError, http.client.HTTPException) as exc:
                ok, write, kind = False, False, exc.__class__.__name__
            latency = time.monotonic() - due
            with self.lock:
                self.window.latencies.append(latency)
                self.window.writes += write
                if kind is not None:
                    self.window.errors += 1
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            i += 1

    def take_window(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (max 1800)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s (max 500)")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds per report row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--kill-every", type=float, default=0.0, help="SIGKILL a worker about every S seconds"
    )
    parser.add_argument(
        "--reload-every", type=float, default=0.0, help="SIGHUP the master every S seconds"
    )
    parser.add_argument(
        "--end-sessions-every",
        type=float,
        default=0.0,
        help="PostgreSQL: end the database's sessions about every S seconds",
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args(argv)
    if args.end_sessions_every > 0 and not (args.database_url or "").startswith("postgresql"):
        parser.error("--end-sessions-every needs a PostgreSQL --database-url")
    duration = min(max(args.duration, 10.0), MAX_DURATION)
    rate = min(max(args.rate, 1.0), MAX_RATE)

    workdir = Path(tempfile.mkdtemp(prefix="comments-soak-"))
    port = free_port()
    env = {
        **os.environ,
        "HOST": HOST,
        "PORT": str(port),
        "WORKERS": str(args.workers),
        "DATABASE_URL": args.database_url or f"sqlite:///{workdir / 'soak.db'}",
        # One client address sends everything: the per-address limit would refuse it.
        "RATELIMIT_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    exe = Path(sys.executable).parent / "comments-api"
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([str(exe), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if call(port, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((workdir / "serve.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        time.sleep(2)  # every worker booted
        for content in CONTENTS:  # a thread to read from the first second
            for j in range(5):
                call(port, "POST", f"/api/v1/contents/{content}/comments", {"body": f"seed {j}"})

        soak = Soak(port, rate, duration)
        soak.start = time.monotonic()
        threads = [
            threading.Thread(target=soak.client, args=(k,), daemon=True)
            for k in range(CLIENT_THREADS)
        ]
        for t in threads:
            t.start()
        kills: list[int] = []  # workers SIGKILLed
        reloads: list[int] = []  # SIGHUPs sent to the master
        ended: list[int] = []  # sessions told to end, per round
        master = server.pid
        chooser = random.Random()

        def kill_a_worker() -> None:
            send_signal(signal.SIGKILL, lambda: chooser.choice(children(master) or [0]), kills)

        for every, action in (
            (args.kill_every, kill_a_worker),
            (args.reload_every, lambda: send_signal(signal.SIGHUP, lambda: master, reloads)),
            (args.end_sessions_every, lambda: end_sessions(args.database_url, ended)),
        ):
            if every > 0:
                until = soak.start + duration - 5
                threading.Thread(
                    target=now_and_then, args=(action, every, until), daemon=True
                ).start()
        rows: list[dict[str, Any]] = []
        killing = (
            (f", a worker SIGKILLed every ~{args.kill_every:g} s" if args.kill_every > 0 else "")
            + (f", SIGHUP every ~{args.reload_every:g} s" if args.reload_every > 0 else "")
            + (
                f", sessions ended every ~{args.end_sessions_every:g} s"
                if args.end_sessions_every > 0
                else ""
            )
        )
        print(
            f"soak: {rate:g} req/s for {duration:g} s, {args.workers} workers{killing}, "
            f"{env['DATABASE_URL'].split(':')[0]}, report every {args.interval:g} s"
        )
        heading = f"{'t(s)':>6} {'req/s':>7} {'p50ms':>7} {'p99ms':>7} {'errors':>6}"
        print(f"{heading}  RSS MiB master | workers")
        next_report = soak.start + args.interval
        last_report = soak.start
        total = 0
        while any(t.is_alive() for t in threads):
            time.sleep(max(0.0, min(next_report, soak.start + duration + 15) - time.monotonic()))
            now = time.monotonic()
            window = soak.take_window()
            workers = children(server.pid)
            row = {
                "t": round(now - soak.start, 1),
                # Over the time this window really covered (the last one may be short).
                "rps": round(len(window.latencies) / max(now - last_report, 1e-3), 1),
                "p50_ms": round(pct(window.latencies, 0.5) * 1000, 1),
                "p99_ms": round(pct(window.latencies, 0.99) * 1000, 1),
                "errors": window.errors,
                "writes": window.writes,
                "rss_master_kib": rss_kib(server.pid),
                "rss_workers_kib": {pid: rss_kib(pid) for pid in workers},
            }
            rows.append(row)
            worker_mib = " ".join(
                f"{pid}:{(kib or 0) / 1024:.1f}" for pid, kib in row["rss_workers_kib"].items()
            )
            print(
                f"{row['t']:>6} {row['rps']:>7} {row['p50_ms']:>7} {row['p99_ms']:>7} "
                f"{row['errors']:>6}  {(row['rss_master_kib'] or 0) / 1024:.1f} | {worker_mib}",
                flush=True,
            )
            next_report += args.interval
            last_report = now
            total += len(window.latencies)
            if now > soak.start + duration + 15:
                break
        # Every acknowledged write must be readable.
        missing = 0
        for comment_id in soak.known_ids:
            if call(port, "GET", f"/api/v1/comments/{comment_id}")[0] != 200:
                missing += 1
        counted, stored = created_counted(port), published_stored(port)
        server_errors = sum(n for kind, n in soak.error_kinds.items() if kind.startswith("http 5"))
        # Ending sessions may cut a create at its COMMIT: a 503, and not tried again.
        lost_at_commit = (workdir / "serve.log").read_text(errors="replace").count(COMMIT_LOST)
        # The counter moves right after the commit: only a kill between the two (or a
        # COMMIT whose answer was lost) can leave a stored comment uncounted, never the
        # other way round.
        metrics_exact = 0 <= stored - counted <= len(kills) + lost_at_commit
        all_latencies = [r["p99_ms"] for r in rows if r["rps"]]
        first, last = rows[0], rows[-1]
        growth = {
            pid: (last["rss_workers_kib"].get(pid) or 0) - (first["rss_workers_kib"].get(pid) or 0)
            for pid in last["rss_workers_kib"]
            if pid in first["rss_workers_kib"]
        }
        summary = {
            "rate": rate,
            "duration": duration,
            "workers": args.workers,
            "database": env["DATABASE_URL"].split(":")[0],
            "requests": int(total),
            "errors": sum(r["errors"] for r in rows),
            "error_kinds": soak.error_kinds,
            "acknowledged_writes": len(soak.acked),
            "acknowledged_writes_missing": missing,
            "server_errors": server_errors,
            "workers_killed": len(kills),
            "reloads": len(reloads),
            "session_endings": len(ended),
            "sessions_ended": sum(ended),
            "writes_lost_at_commit_503": lost_at_commit,
            "comments_counted": counted,
            "comments_stored": stored,
            "worst_window_p99_ms": max(all_latencies) if all_latencies else None,
            "median_window_p99_ms": (
                round(statistics.median(all_latencies), 1) if all_latencies else None
            ),
            "worker_rss_growth_kib_first_to_last": growth,
            "worker_restarts": sorted(set(last["rss_workers_kib"]) ^ set(first["rss_workers_kib"])),
            "rows": rows,
        }
        print(
            f"\nrequests {summary['requests']}, errors {summary['errors']} {soak.error_kinds}, "
            f"writes acknowledged {len(soak.acked)}, missing {missing}; workers killed "
            f"{len(kills)}, reloads {len(reloads)}"
            + (
                f", sessions ended {sum(ended)} in {len(ended)} rounds "
                f"({lost_at_commit} creates lost at COMMIT)"
                if ended
                else ""
            )
            + f"; comments stored {stored}, counted by "
            f"/metrics {counted}; p99 per window: "
            f"median {summary['median_window_p99_ms']} ms, "
            f"worst {summary['worst_window_p99_ms']} ms; "
            f"worker RSS growth first->last window (KiB): {growth}"
        )
        out = ROOT / "artifacts" / "soak.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        print(f"details: {out.relative_to(ROOT)}")
        failed = []
        if missing:
            failed.append(f"{missing} acknowledged writes missing")
        if server_errors - lost_at_commit:
            failed.append(f"{server_errors - lost_at_commit} answers were 5xx")
        if reloads and not kills and soak.error_kinds:
            failed.append(f"requests failed across reloads: {soak.error_kinds}")
        if not metrics_exact:
            failed.append(f"/metrics counted {counted} comments created, {stored} are stored")
        for reason in failed:
            print(f"soak: FAILED: {reason}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        # The server's warnings and errors say what a failed request met.
        kept = ROOT / "artifacts" / "soak-serve.log"
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(workdir / "serve.log", kept)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
