"""The floor under our legacy create, measured side by side (bench/README.md, "The floor").

Runs, interleaved and rotated each round, `wrk -t1 -c16` creates against:
- the original (bench/baseline_app.py, `gunicorn -w 1`);
- floor-plain: bench/floor_app.py, Flask and a shared SQLite file with one index;
- floor-ours: the same app on our migrated schema, running our author check and INSERT;
- each ``--variant NAME:SQL[;SQL]``: floor-ours with those statements run on its database
  first (e.g. ``notrigger:DROP TRIGGER comments_insert_bump``);
- ours: `comments-api serve` with the bench's relaxed guards, and each
  ``--ours NAME:KEY=VALUE[,KEY=VALUE]`` copy with those settings on top.
The floor apps run under our worker class with ``--workers`` workers, as ours does. Every
create a server acknowledged must be stored (checked after the runs).

    .venv/bin/python bench/floor.py [--rounds 4] [--duration 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from floor_app import create_plain
from run import (
    HOST,
    LOAD_LUA,
    RELAXED_GUARDS,
    ROOT,
    Server,
    baseline_app_path,
    bin_path,
    count_v1,
    free_port,
    launch,
    parse_wrk,
    tree_cpu,
)

from comments_api.worker import BufferedSyncWorker

WORKER_CLASS = f"{BufferedSyncWorker.__module__}.{BufferedSyncWorker.__name__}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=4, help="whole seconds per wrk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:SQL[;SQL]")
    parser.add_argument(
        "--ours",
        dest="ours_settings",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run ours with these settings (e.g. nolog:LOG_LEVEL=warning)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60:
        sys.exit("floor: keep runs bounded: 1..20 rounds of 1..60 s")
    args.variants = {}
    for item in args.variant:
        name, _, sql = item.partition(":")
        if not name or not sql or name in {"original", "floor-plain", "floor-ours", "ours"}:
            sys.exit(f"floor: --variant wants NAME:SQL[;SQL], got {item!r}")
        args.variants[name] = [s for s in sql.split(";") if s.strip()]
    args.ours = {}
    taken = {"original", "floor-plain", "floor-ours", "ours", *args.variants}
    for item in args.ours_settings:
        name, _, pairs = item.partition(":")
        if not name or "=" not in pairs or name in taken:
            sys.exit(f"floor: --ours wants NAME:KEY=VALUE[,KEY=VALUE], got {item!r}")
        args.ours[name] = dict(pair.split("=", 1) for pair in pairs.split(","))
    return args


def start_floor(name: str, db: Path, schema: str, workers: int, workdir: Path) -> Server:
    port = free_port()
    cmd = [bin_path("gunicorn"), "-w", str(workers), "-k", WORKER_CLASS, "--keep-alive", "5"]
    cmd += ["-b", f"{HOST}:{port}", "--chdir", str(ROOT / "bench"), "floor_app:app"]
    env = {**os.environ, "FLOOR_DB": str(db), "FLOOR_SCHEMA": schema}
    server = launch(name, cmd, env, workdir, port)
    server.kind, server.db = "floor", str(db)
    return server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="comments-floor-"))
    baseline = baseline_app_path()
    servers: dict[str, Server] = {}
    try:
        port = free_port()
        cmd = [bin_path("gunicorn"), "-w", "1", "-b", f"{HOST}:{port}", "--chdir"]
        cmd += [str(baseline.parent), f"{baseline.stem}:app"]
        servers["original"] = launch("original", cmd, os.environ, workdir, port)
        servers["original"].kind = "baseline"
        create_plain(str(workdir / "plain.db"))
        servers["floor-plain"] = start_floor(
            "floor-plain", workdir / "plain.db", "plain", args.workers, workdir
        )
        for name, statements in {"floor-ours": [], **args.variants}.items():
            db = workdir / f"{name}.db"
            subprocess.run(
                [bin_path("comments-api"), "migrate"],
                env={**os.environ, "DATABASE_URL": f"sqlite:///{db}"},
                check=True,
                capture_output=True,
            )
            with contextlib.closing(sqlite3.connect(db)) as conn:
                for statement in statements:
                    conn.execute(statement)
                conn.commit()
            servers[name] = start_floor(name, db, "ours", args.workers, workdir)
        for name, extra in {"ours": {}, **args.ours}.items():
            port = free_port()
            env = {
                **os.environ,
                **RELAXED_GUARDS,
                "HOST": HOST,
                "PORT": str(port),
                "WORKERS": str(args.workers),
                "DATABASE_URL": f"sqlite:///{workdir / name}.db",
            }
            for unset in ("THREADS", "LOG_LEVEL"):  # `serve` defaults, as bench/run.py has
                env.pop(unset, None)
            servers[name] = launch(
                name, [bin_path("comments-api"), "serve"], env | extra, workdir, port
            )
            servers[name].kind = "ours"
        for server in servers.values():
            server.wait_up()

        results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        names = list(servers)
        for turn in range(args.rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                server = servers[name]
                content = f"floor-{turn}-{name}"
                before = tree_cpu(server.proc.pid)
                wrk = ["wrk", "-t1", "-c16", f"-d{args.duration}s", "--timeout", "5s"]
                wrk += ["--latency", "-s", str(LOAD_LUA), f"http://{HOST}:{server.port}"]
                out = subprocess.run(
                    [*wrk, "--", "post", content],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=args.duration + 60,
                ).stdout
                after = tree_cpu(server.proc.pid)
                part = parse_wrk(out)
                # Sums, not per PID: a worker reaped since left its time in the master's.
                cpu = sum(after.values()) - sum(before.values())
                stored = stored_count(server, content)
                # In flight when wrk stopped: stored, not counted by wrk (one per connection).
                if part["non_2xx"] or (
                    stored is not None and not part["requests"] <= stored <= part["requests"] + 16
                ):
                    raise RuntimeError(
                        f"{name}: {stored} stored of {part['requests']} acknowledged creates "
                        f"({part['non_2xx']} not 2xx)"
                    )
                part["cpu_ms"] = 1000 * cpu / part["requests"]
                results[name].append(part)
                print(
                    f"round {turn + 1} {name:14} {part['rps']:8,.0f} creates/s  "
                    f"p99 {part['p99_ms']:6.2f} ms  CPU {part['cpu_ms']:.3f} ms/create",
                    flush=True,
                )
        print_table(results, args)
    finally:
        for server in servers.values():
            server.stop()
    return 0


def stored_count(server: Server, content: str) -> int | None:
    if server.kind == "floor":
        with contextlib.closing(sqlite3.connect(server.db)) as conn:
            row = conn.execute("SELECT count(*) FROM comments WHERE content_id = ?", (content,))
            return int(row.fetchone()[0])
    if server.kind == "ours":  # every copy of ours
        return count_v1(server.port, content)
    return None  # the original keeps its dict to itself


def print_table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    original = statistics.median(r["rps"] for r in results["original"])
    print(
        f"\nLegacy create, medians of {args.rounds} rounds of {args.duration} s, "
        f"{args.workers} workers (the original: 1)"
    )
    print(f"{'server':16} | {'creates/s':>9} | {'ratio':>6} | {'p99 ms':>6} | CPU ms/create")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        cpu = statistics.median(r["cpu_ms"] for r in runs)
        print(f"{name:16} | {rps:9,.0f} | {rps / original:5.2f}x | {p99:6.1f} | {cpu:.3f}")


if __name__ == "__main__":
    sys.exit(main())
