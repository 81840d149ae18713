"""Where ours spends its CPU under load: py-spy on `comments-api serve` while wrk runs.

Starts ours (SQLite, serve defaults, the bench's relaxed guards), seeds it like bench/run.py,
runs one scenario with wrk (-t1 -c16) and samples every worker with py-spy at the same time,
then prints the share of samples spent in each layer (inclusive: a sample counts for every
layer on its stack) and the hottest leaf functions. py-spy is not in our lock: it is
installed from PyPI at first use into /opt/comments-bench/py-spy (or $BENCH_PYSPY_DIR).

Usage: python bench/profile.py [--scenario list|create|v1page|counts50] [--seconds 10]
       [--env DATABASE_URL=postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the harness next to this file

PYSPY_DIR = Path(os.environ.get("BENCH_PYSPY_DIR", "/opt/comments-bench/py-spy"))
# Layer -> substrings of a frame's "function (file:line)"; first match per layer per stack.
LAYERS = {
    "gunicorn (accept, parse, write)": ["gunicorn/"],
    "werkzeug + flask dispatch": ["werkzeug/", "flask/app.py", "flask/ctx.py"],
    "our views": ["comments_api/comments/legacy_views.py", "comments_api/comments/v1_views.py"],
    "store/repository.py (our queries)": ["comments_api/store/repository.py"],
    "SQLAlchemy": ["sqlalchemy/"],
    "DB driver calls (do_execute/commit)": ["do_execute (sqlalchemy", "do_commit (sqlalchemy"],
    "psycopg (PostgreSQL round trips)": ["psycopg/"],
    "metrics (prometheus_client)": ["prometheus_client/"],
    "access log + logging": ["logging/", "telemetry/log_format.py", "telemetry/http_hooks.py"],
    "JSON encoding": ["json/encoder", "flask/json/"],
    "rate limiting (limits)": [
        "limits/",
        "check (comments_api/web/protection.py",
        "headers (comments_api/web/protection.py",
    ],
    "auth + protection hooks": [
        "comments_api/web/protection.py",
        "comments_api/identity/guards.py",
    ],
}


def ensure_pyspy() -> str:
    binary = PYSPY_DIR / "bin" / "py-spy"
    if not binary.exists():
        print(f"profile: installing py-spy from PyPI into {PYSPY_DIR} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--only-binary", ":all:", "--target", str(PYSPY_DIR), "py-spy"],
            check=True,
            timeout=300,
        )  # fmt: skip
    return str(binary)


def user_sys(pids: list[int]) -> tuple[float, float]:
    """user and system CPU seconds of these processes."""
    user = system = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / bench._TICK
        system += int(fields[12]) / bench._TICK
    return user, system


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", default="list", choices=["list", "create", "v1page",
                                                               "counts50"])  # fmt: skip
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60:
        sys.exit("profile: 1..60 seconds")
    pyspy = ensure_pyspy()
    workdir = Path(tempfile.mkdtemp(prefix="comments-profile-"))
    port = bench.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("WORKERS", "THREADS")},
        "HOST": bench.HOST,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{workdir / 'ours.db'}",
        **bench.RELAXED_GUARDS,
        **dict(item.split("=", 1) for item in args.env),
    }
    server = bench.launch("ours", [bench.bin_path("comments-api"), "serve"], env, workdir, port)
    try:
        server.wait_up()
        bench.seed(port)
        workers = [p for p in bench.tree_cpu(server.proc.pid) if p != server.proc.pid]
        spies = [
            subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--duration", str(args.seconds),
                 "--rate", "250", "--format", "raw", "--nonblocking",
                 "--output", str(workdir / f"spy-{pid}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in workers
        ]  # fmt: skip
        time.sleep(0.5)
        before = user_sys(workers)
        wrk_args = argparse.Namespace(
            wrk=shutil.which("wrk") or "wrk", threads=1, connections=16,
            current_duration=args.seconds,
        )  # fmt: skip
        scenario = bench.SCENARIOS[args.scenario]
        result = bench.run_load(wrk_args, [server], args.scenario, scenario, "profile")
        after = user_sys(workers)
        for spy in spies:
            spy.wait(timeout=args.seconds + 30)
    finally:
        server.stop()
    stacks: collections.Counter[str] = collections.Counter()
    for path in workdir.glob("spy-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    shutil.rmtree(workdir, ignore_errors=True)
    total = sum(stacks.values())
    if not total:
        sys.exit("profile: py-spy recorded no samples (needs ptrace: run as root)")
    # Samples inside a request, i.e. under the WSGI app; the rest is gunicorn's own loop.
    print(
        f"\n{args.scenario}: {result['rps']:,.0f} req/s, server CPU "
        f"{result['server_cpu_ms_per_req']:.3f} ms/req, {total} samples from "
        f"{len(workers)} workers (idle samples dropped by py-spy)"
    )
    user, system = after[0] - before[0], after[1] - before[1]
    served = max(result["requests"], 1)
    print(
        f"workers' CPU per request: user {1000 * user / served:.3f} ms, system (kernel: "
        f"loopback TCP, accept/close) {1000 * system / served:.3f} ms"
    )
    # py-spy samples a worker whenever it is not asleep, which on a busy machine includes
    # waiting for a core; that waiting shows up where the kernel preempts it (the socket
    # write that wakes wrk, the close). So layers are given as shares of the samples inside
    # the WSGI app (Flask's wsgi_app on the stack), where the CPU work is.
    in_app = {st: c for st, c in stacks.items() if "wsgi_app (flask/app.py" in st}
    app_total = max(sum(in_app.values()), 1)
    print(
        f"samples inside the WSGI app: {app_total / total:.0%} of all; the rest is gunicorn "
        "(accept, parse, socket write and close, including waits for a core)"
    )
    print(f"{'layer (inclusive share of in-app samples)':<44} {'share':>6}")
    for layer, needles in LAYERS.items():
        if layer.startswith("gunicorn"):
            continue
        hits = sum(c for st, c in in_app.items() if any(n in st for n in needles))
        print(f"{layer:<44} {hits / app_total:>6.1%}")
    leaves: collections.Counter[str] = collections.Counter()
    for stack, count in in_app.items():
        leaves[stack.rsplit(";", 1)[-1]] += count
    print("\nhottest leaf frames inside the app (self time, share of in-app samples):")
    for frame, count in leaves.most_common(15):
        print(f"  {count / app_total:6.1%}  {frame[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
