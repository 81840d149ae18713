"""CPU per request of each layer on the hot path, in-process, side by side (issue 11 item 4).

Builds the WSGI app (SQLite file in a temp dir, multiprocess metrics directory, the JSON
access log written to /dev/null) and calls it directly with a prepared WSGI environ: no
network, no HTTP server, so the numbers isolate what the app's layers cost. Every variant
runs in its own process (metrics and blinker receivers are per process), the variants are
interleaved over --rounds, and each result is the best of --batches batches of --requests
requests (process CPU time / requests), the steadiest figure on a shared machine.

Variants (the bench's relaxed abuse guards everywhere, like bench/run.py):
  defaults      metrics on, access log on (LOG_LEVEL=info), rate limiting off
  nometrics     METRICS_ENABLED=false
  noaccesslog   LOG_LEVEL=warning
  rl-memory     rate limiting on, memory:// storage, limits too high to trip
  rl-redis      rate limiting on, a local redis-server (started on a free loopback port)

Usage: python bench/layers.py [--rounds 3] [--requests 400] [--batches 5]
       [--variants defaults,nometrics,...] [--src SRC] [--before OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELAXED = {
    "RATELIMIT_ENABLED": "false",
    "DUPLICATE_WINDOW": "0",
    "THREAD_AUTHOR_MAX": "1000000000",
    "THREAD_AUTHOR_WINDOW": "0",
    "LOG_LEVEL": "info",
}
HIGH = "1000000/minute"
VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "nometrics": {"METRICS_ENABLED": "false"},
    "noaccesslog": {"LOG_LEVEL": "warning"},
    "rl-memory": {
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_STORAGE_URL": "memory://",
        "RATELIMIT_READ": HIGH,
        "RATELIMIT_ANONYMOUS_WRITE": HIGH,
        "RATELIMIT_AUTHENTICATED_WRITE": HIGH,
    },
    "rl-redis": {
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_STORAGE_URL": "redis://",  # the port is filled in at run time
        "RATELIMIT_READ": HIGH,
        "RATELIMIT_ANONYMOUS_WRITE": HIGH,
        "RATELIMIT_AUTHENTICATED_WRITE": HIGH,
    },
}
SCENARIOS = ("list", "create")


def child(requests: int, batches: int) -> dict[str, float]:
    """Runs inside the variant's process: returns µs of CPU per request per scenario."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    real_stdout = sys.stdout
    sys.stdout = devnull  # the log handler binds to sys.stdout when configured
    from werkzeug.test import EnvironBuilder

    from comments_api.app import create_app
    from comments_api.cli import configure_logging
    from comments_api.settings import Settings

    try:
        from comments_api.store.repository import make_engine, migrate
    except ImportError:  # a --before checkout from before the store/ package (6d45e21)
        from comments_api.storage import make_engine, migrate  # type: ignore[no-redef]

    settings = Settings.from_env()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    app = create_app(settings)
    wsgi = app.wsgi_app

    def environ(method: str, path: str, body: dict | None = None) -> dict:
        builder = EnvironBuilder(
            path=path,
            method=method,
            json=body,
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        try:
            return builder.get_environ()
        finally:
            builder.close()

    def call(env: dict) -> int:
        import io

        env = dict(env)
        if "wsgi.input" in env:
            env["wsgi.input"] = io.BytesIO(env["_body"])
        status: list[str] = []
        out = wsgi(env, lambda s, h, exc_info=None: status.append(s))
        for _ in out:
            pass
        if hasattr(out, "close"):
            out.close()
        return int(status[0][:3])

    def prepared(method: str, path: str, body: dict | None = None) -> dict:
        env = environ(method, path, body)
        env["_body"] = env["wsgi.input"].read()
        return env

    post = {"email": "bench@example.com", "comment": "a benchmark comment", "content_id": 1}
    seed = prepared("POST", "/api/comment/new", post)
    for _ in range(20):
        assert call(seed) == 200, "seeding failed"
    cases = {
        "list": (prepared("GET", "/api/comment/list/1"), 200),
        "create": (prepared("POST", "/api/comment/new", {**post, "content_id": 2}), 200),
    }
    results: dict[str, float] = {}
    for name, (env, expected) in cases.items():
        for _ in range(100):  # warm-up: caches, first-time imports
            assert call(env) == expected, f"{name}: unexpected status"
        best = float("inf")
        for _ in range(batches):
            start = time.process_time()
            for _ in range(requests):
                call(env)
            best = min(best, (time.process_time() - start) / requests)
        results[name] = best * 1e6
    sys.stdout = real_stdout
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if not binary:
        sys.exit("layers: redis-server is not installed (scripts/install-system-deps.sh)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("layers: redis-server did not start")


def run_variant(
    name: str, args: argparse.Namespace, redis_url: str | None, src: str
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="layers-") as tmp:
        metrics_dir = Path(tmp) / "metrics"
        metrics_dir.mkdir()
        env = {
            **os.environ,
            **RELAXED,
            **VARIANTS[name],
            "DATABASE_URL": f"sqlite:///{tmp}/comments.db",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONPATH": src,
        }
        if name == "rl-redis":
            assert redis_url
            env["RATELIMIT_STORAGE_URL"] = redis_url
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(args.requests), str(args.batches)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if out.returncode != 0:
            sys.exit(f"layers: variant {name} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--src", default=str(HERE.parent / "src"))
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="another checkout's src/ (e.g. a worktree at the commit before a change): "
        "each variant runs on both, interleaved, and the table adds after/before ratios",
    )
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        sys.exit(f"layers: unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    srcs = {"after": args.src, "before": args.before} if args.before else {"this": args.src}
    redis = start_redis() if "rl-redis" in names else None
    runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (label, n): [] for label in srcs for n in names
    }
    try:
        for r in range(args.rounds):
            for name in names:
                for label, src in srcs.items():
                    url = redis[1] if redis else None
                    runs[(label, name)].append(run_variant(name, args, url, src))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        if redis:
            redis[0].terminate()
            redis[0].wait(10)

    def median(label: str, name: str, scenario: str) -> float:
        return statistics.median(x[scenario] for x in runs[(label, name)])

    print(
        f"app CPU µs per request, median of {args.rounds} rounds (each the best of "
        f"{args.batches} x {args.requests}); 'vs {names[0]}' = ratio to that variant"
    )
    for label, src in srcs.items():
        print(f"\n{label}: {src}")
        print(f"{'variant':<12} | {'list µs':>8} | vs {names[0][:8]:<8} | "
              f"{'create µs':>9} | vs {names[0][:8]:<8}")  # fmt: skip
        for name in names:
            row = {sc: median(label, name, sc) for sc in SCENARIOS}
            base = {sc: median(label, names[0], sc) for sc in SCENARIOS}
            print(
                f"{name:<12} | {row['list']:8.1f} | {row['list'] / base['list']:11.3f} | "
                f"{row['create']:9.1f} | {row['create'] / base['create']:11.3f}"
            )
    if args.before:
        print("\nafter / before, CPU per request (< 1: cheaper)")
        for name in names:
            ratios = [median("after", name, sc) / median("before", name, sc) for sc in SCENARIOS]
            print(f"{name:<12} | list {ratios[0]:.3f} | create {ratios[1]:.3f}")


if __name__ == "__main__":
    main()
