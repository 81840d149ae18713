"""`bench/run.py` still works from the repository: a tiny run of the real harness.

Not a performance test (one round of one second proves nothing about speed): it proves the
harness starts the original app and ours (SQLite and a throwaway PostgreSQL), drives wrk
through bench/load.lua, and that its correctness checks pass and can see what they check
(rows persisted, lists compared across workers, the request counter summed exactly).
Marked `bench`: outside plain `make test`, run by `make bench-smoke`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support import find_binary, missing

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.bench


def needs_postgres() -> None:
    if not find_binary("initdb"):
        missing("PostgreSQL server binaries (initdb, pg_ctl)")


def quick_run(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict]:
    """`bench/run.py --quick` with these arguments: its output and its JSON report."""
    if not shutil.which("wrk"):
        missing("wrk")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", *args, "--json", str(out)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Correctness: OK." in done.stdout
    report = json.loads(out.read_text())
    assert report["checks"]["problems"] == []
    return done.stdout, report


def test_bench_quick_run_passes_its_checks(tmp_path: Path) -> None:
    needs_postgres()
    _, report = quick_run(
        tmp_path,
        "--database",
        "both",
        "--scenarios",
        "list,create,v1page,counts50,mix,createmany",
        "--servers",
        "sync",
        "--no-scaling",
        "--no-ratelimit",
        timeout=170,
    )
    ran = {(r["row"], r["scenario"]) for r in report["runs"]}
    for scenario in ("list", "create", "v1page", "counts50", "mix", "createmany"):
        assert ("ours", scenario) in ran
        assert ("pg", scenario) in ran
    assert {("baseline", s) for s in ("list", "create", "list25", "mix", "createmany")} <= ran
    assert {row["scenario"] for row in report["summary"]["main"]} == {
        "list", "create", "v1page", "counts50", "mix", "createmany"
    }  # fmt: skip
    for name in ("ours", "pg"):
        check = report["checks"]["servers"][name]
        # The checks looked at real data: writes were counted, two workers answered, and the
        # request counter fell inside the range wrk and the bench account for.
        assert check["posts_issued"] > 0
        assert check["persisted"] > 0
        assert check["list_workers_seen"] == 2
        low, high = check["metrics_expected_range"]
        assert low <= check["metrics_counted"] <= high
        assert low > 0
        # Every create the server wrote, counted once by its created counter.
        assert check["created_counted"] == check["created_rows"] > check["persisted"]


def test_bench_scaling_rows_run_two_instances_on_one_database(tmp_path: Path) -> None:
    # The scaling table's two-instance rows. SQLite: two one-worker instances on one file
    # (the second opens the file the first migrated and seeded) and two on a file each.
    # PostgreSQL: two instances of two workers, and of one, each pair on one database.
    needs_postgres()
    stdout, report = quick_run(
        tmp_path,
        "--database",
        "both",
        "--scenarios",
        "list,create",
        "--servers",
        "",
        "--no-ratelimit",
        # bench/README's own example: a variant without /metrics still gets every other check.
        "--variant",
        "nometrics:METRICS_ENABLED=false",
        timeout=180,
    )
    for what in ("SQLite", "PostgreSQL"):
        assert f"Same list from both {what} instances on one database: True" in stdout
        assert report["checks"][f"{what.lower()}_instances_same_list"] is True
    scaling = {row["row"]: row for row in report["summary"]["scaling"]}
    pairs = {"sqlite-2inst", "sqlite-2files", "pg-2inst", "pg-2inst-w1"}
    assert pairs | {"sqlite-w1", "ours", "pg-w1", "pg"} <= set(scaling)
    for row in pairs:
        assert scaling[row]["create"]["rps"] > 0
    servers = report["checks"]["servers"]
    for name, workers in {
        "sq1-a": 1, "sq1-b": 1, "own-a": 1, "own-b": 1, "pg-b": 2, "pg1-a": 1, "pg1-b": 1,
    }.items():  # fmt: skip
        # Each instance's own creates, counted in the database it wrote to.
        assert servers[name]["posts_issued"] > 0
        assert servers[name]["persisted"] > 0
        assert servers[name]["list_workers_seen"] == workers
    nometrics = servers["nometrics"]
    assert nometrics["persisted"] > 0
    assert nometrics["list_workers_seen"] == 2
    assert nometrics["metrics_counted"] is None
    assert "metrics off: no request counter to check" in stdout
    assert servers["ours"]["metrics_counted"] > 0


def test_rounds_rotate_each_block_so_every_run_takes_every_place() -> None:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    lists = [("baseline", "list"), ("ours", "list"), ("pg", "list")]
    creates = [("baseline", "create"), ("ours", "create")]
    rounds = [bench.rotated([lists, creates], turn) for turn in range(3)]
    # Blocks stay blocks (interleaving by scenario), each round holds every run once...
    for runs in rounds:
        assert runs[:3] in ([lists[i:] + lists[:i] for i in range(3)])
        assert sorted(runs) == sorted(lists + creates)
    # ...and over three rounds every list run was first, second and third once.
    for run in lists:
        assert sorted(r[:3].index(run) for r in rounds) == [0, 1, 2]
    assert [r[3][0] for r in rounds] == ["baseline", "ours", "baseline"]


def test_the_floor_runner_measures_and_checks_every_server(tmp_path: Path) -> None:
    # bench/floor.py (bench/README.md, "The floor"): the original, the floor app on a plain
    # and on our migrated schema (one schema variant), ours and one copy of ours with other
    # settings, each a round of creates whose acknowledged rows must all be stored.
    if not shutil.which("wrk"):
        missing("wrk")
    cmd = [sys.executable, str(ROOT / "bench" / "floor.py"), "--rounds", "1", "--duration", "1"]
    cmd += ["--variant", "notrigger:DROP TRIGGER comments_insert_bump"]
    cmd += ["--ours", "nolog:LOG_LEVEL=warning"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    table = done.stdout.split("Legacy create, medians of 1 rounds of 1 s, 2 workers")[1]
    rows = {line.split("|")[0].strip(): line for line in table.splitlines() if "|" in line}
    assert set(rows) == {
        "server", "original", "floor-plain", "floor-ours", "notrigger", "ours", "nolog"
    }  # fmt: skip
    assert rows["original"].split("|")[2].strip() == "1.00x"


def _load_bench_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_run_cpu", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    return bench


def test_process_tree_cpu_keeps_a_reaped_workers_time() -> None:
    # A worker that exits mid-run (max_requests, a crash) took its CPU time out of the tree
    # unless its parent's reaped-children time is counted.
    bench = _load_bench_module()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time\n"
         f"subprocess.run([sys.executable, '-c', {burn!r}])\ntime.sleep(30)"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(bench.tree_cpu(parent.pid).values()) < 0.4:
            time.sleep(0.1)
        assert sum(bench.tree_cpu(parent.pid).values()) >= 0.4
    finally:
        parent.kill()
        parent.wait()


# Deliberately broken copies of src/: each must fail the run, with the problem named.
BROKEN = {
    "drops acknowledged creates": (
        "comments/legacy_views.py",
        "    comment = svc.comments.create(new)\n",
        "    import random\n"
        "    if 'bench-' in str(payload) and random.random() < 0.05:  # the load's, not seeds\n"
        "        return jsonify({'message': 'lost', 'status': 'SUCCESS'})\n"
        "    comment = svc.comments.create(new)\n",
        "acknowledged creates have no row",
    ),
    "one worker never revalidates its cache": (
        "comments/cache.py",
        "        generation = self.markers.generation()\n        entry = self._get(key)\n",
        "        entry = self._get(key)\n"
        "        if entry is not None and entry.value is not None and _stale():\n"
        "            return Read(entry.etag, entry.value)\n"
        "        generation = self.markers.generation()\n",
        "probe create(s)",
    ),
    "answers the counts call with a fast 400": (
        "comments/v1_views.py",
        '    ids = parse_count_ids(request.args.getlist("content_id"))\n',
        '    ids = parse_count_ids(request.args.getlist("content_id"))\n'
        "    if len(ids) > 40:\n"
        "        return Response('{}', status=400, mimetype='application/json')\n",
        "non-2xx answers",
    ),
    "counts each created comment twice": (
        "telemetry/metrics.py",
        "        api if api in CREATED_APIS else OTHER, status if status in STATUSES else OTHER\n"
        "    ).inc()\n",
        "        api if api in CREATED_APIS else OTHER, status if status in STATUSES else OTHER\n"
        "    ).inc(2)\n",
        "comments created counter sums to",
    ),
}


# The first worker to ask claims a file: exactly one worker of the server is stale.
STALE_CLAIM = """

def _stale() -> bool:
    import os

    if not _CLAIM:
        try:
            claim = os.path.join(os.path.dirname(__file__), "stale")
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL))
            _CLAIM.append(True)
        except FileExistsError:
            _CLAIM.append(False)
    return _CLAIM[0]


_CLAIM: list[bool] = []
"""


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_the_checks_fail_a_broken_service(tmp_path: Path, broken: str) -> None:
    if not shutil.which("wrk"):
        missing("wrk")
    path, old, new, problem = BROKEN[broken]
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src)
    target = src / "comments_api" / path
    code = target.read_text()
    assert code.count(old) == 1, f"{path} changed: update this test's patch"
    tail = STALE_CLAIM if "_stale()" in new else ""
    target.write_text(code.replace(old, new) + tail)
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--database", "sqlite"]
    cmd += ["--scenarios", "create,counts50", "--servers", "", "--no-scaling", "--no-ratelimit"]
    cmd += ["--json", str(tmp_path / "bench.json")]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(src),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Correctness: PROBLEMS:" in done.stdout
    assert problem in done.stdout, done.stdout[-4000:]
