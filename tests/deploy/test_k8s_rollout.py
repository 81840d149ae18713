"""Rollouts, drains and scale-out, against what the app and the cluster actually do.

Where a premise is the app's behaviour (what /readyz says once the migration Job has run,
what `comments-api migrate` does with no database), the test asks the app itself; where it
is Kubernetes' (surge and PDB rounding, the Job back-off, the scheduler's spread filter),
the rule is written out here from the Kubernetes documentation.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from comments_api.health import HealthService
from comments_api.store import repository
from comments_api.store.repository import Repository, make_engine, migrate

from ..support import VENV_BIN, free_port
from .conftest import CONNECTIONS_PER_POD, OVERLAYS, ROOT, find, one

pytestmark = pytest.mark.k8s


def app_container(deploy: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    return c


def scaled(value: int | str, total: int, round_up: bool) -> int:
    """An int-or-percent field of a Deployment or a PDB, for `total` pods."""
    if isinstance(value, int):
        return value
    share = total * int(value.rstrip("%")) / 100
    return math.ceil(share) if round_up else math.floor(share)


def hpa_range(docs: list[dict[str, Any]]) -> range:
    spec = one(docs, "HorizontalPodAutoscaler", "comments-api")["spec"]
    return range(spec["minReplicas"], spec["maxReplicas"] + 1)


# --- a release with a migration ---------------------------------------------------------


def previous_release_ready_after_the_migration(tmp_path: Path) -> bool:
    """What a pod of the release before says on /readyz once this release's migration Job
    has run: the app's own readiness check (health.py) on a real database."""
    scripts = ScriptDirectory(str(repository._MIGRATIONS_DIR))
    head = scripts.get_current_head()
    assert head
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str), "the newest migration has one parent"
    engine = make_engine(f"sqlite:///{tmp_path / 'comments.db'}")
    try:
        migrate(engine, previous)
        old_pod = HealthService(Repository(engine), previous, None)
        assert old_pod.readiness().ready, "the previous release serves before the Job"
        migrate(engine)  # the Job of this release
        return old_pod.readiness().ready
    finally:
        engine.dispose()


@pytest.mark.parametrize("env", OVERLAYS)
def test_a_migration_never_leaves_the_service_on_a_few_pods(
    rendered: dict[str, list[dict[str, Any]]], env: str, tmp_path: Path
) -> None:
    """The Job and the new pods start together (one `kubectl apply`). The previous
    release's pods turned unready the moment the Job moved the schema (/readyz wanted
    exactly their revision; it now accepts a newer one), so whatever new pods existed by
    then were all that served: with maxSurge 1, one pod at any scale. Either fix holds it."""
    docs = rendered[env]
    rolling = one(docs, "Deployment", "comments-api")["spec"]["strategy"]["rollingUpdate"]
    old_stays_ready = previous_release_ready_after_the_migration(tmp_path)
    for replicas in hpa_range(docs):
        # maxSurge rounds up, maxUnavailable down (Deployment docs).
        surge = scaled(rolling["maxSurge"], replicas, round_up=True)
        unavailable = scaled(rolling["maxUnavailable"], replicas, round_up=False)
        assert unavailable == 0, "never fewer pods than asked"
        new_from_the_start = min(replicas, surge)
        serving = (replicas if old_stays_ready else 0) + new_from_the_start
        assert serving >= replicas, (
            f"{env}: at {replicas} replicas, {serving} serve once the migration has run"
        )


@pytest.mark.parametrize("env", OVERLAYS)
def test_rollout_progress_deadline_outlasts_the_migration_job(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """New pods stay unready until the Job is done, and the Deployment records no progress
    meanwhile. Past progressDeadlineSeconds it reports ProgressDeadlineExceeded, and
    `kubectl rollout status` fails at once (main.yml then rolls production back), though
    the Job was allowed to run on and the rollout would complete."""
    docs = rendered[env]
    deploy = one(docs, "Deployment", "comments-api")
    job = one(docs, "Job", "comments-api-migrate")["spec"]
    c = app_container(deploy)
    startup = c["startupProbe"]
    # The longest migration the Job may run, then a pod that had to start over meanwhile
    # (its whole start-up budget), its first ready probe and minReadySeconds.
    needed = (
        job["activeDeadlineSeconds"]
        + startup["periodSeconds"] * startup["failureThreshold"]
        + c["readinessProbe"]["periodSeconds"]
        + deploy["spec"]["minReadySeconds"]
    )
    assert deploy["spec"]["progressDeadlineSeconds"] >= needed


def retries_span(backoff_limit: int) -> int:
    """Seconds from a Job's first failed pod to the start of its last retry: the Job
    controller waits 10 s, 20 s, 40 s ... (capped at six minutes) before each new pod."""
    return sum(min(10 * 2**k, 360) for k in range(backoff_limit))


def test_migrate_does_not_wait_for_the_database(tmp_path: Path) -> None:
    """The premise of the next test: with no database answering, `comments-api migrate`
    exits non-zero at once; only the Job's retries wait."""
    url = f"postgresql+psycopg://app:x@127.0.0.1:{free_port()}/app"
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "cannot reach the database" in proc.stderr
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("env", OVERLAYS)
def test_migration_job_keeps_retrying_while_the_database_starts(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """On a first install the database starts beside the Job (image pull, new volume,
    initdb; a CloudNativePG bootstrap). backoffLimit 3 gave up ~70 s after the first
    failure: the Job failed and stayed failed while the database came up."""
    job = one(rendered[env], "Job", "comments-api-migrate")["spec"]
    span = retries_span(job["backoffLimit"])
    # Still retrying as long as the scripts wait for the database to start...
    local = (ROOT / "scripts" / "k8s-local.sh").read_text()
    waits = [int(s) for s in re.findall(r"statefulset/comments-db --timeout=(\d+)s", local)]
    assert waits
    assert span >= max(waits), f"the last retry starts {span} s in"
    # ...and the deadline, not the retry count, is what ends a Job that keeps failing.
    assert span >= job["activeDeadlineSeconds"]


def migration_waits(*command: str) -> dict[str, int]:
    """Namespace -> the --timeout (seconds) a script's dry run waits for the migration Job."""
    proc = subprocess.run(
        ["bash", *command], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    waits = re.findall(
        r"(?:-n|--namespace) (\S+) wait --for=condition=complete job/comments-api-migrate"
        r" --timeout=(\d+)s",
        proc.stdout,
    )
    assert waits, proc.stdout[-2000:]
    return {ns: int(seconds) for ns, seconds in waits}


def test_scripts_wait_for_the_migration_job_as_long_as_it_may_run(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """A first install starts the database beside the Job, which retries for up to its
    activeDeadlineSeconds (a CloudNativePG bootstrap on minikube takes minutes). The
    scripts gave up after 300 s: deploy.sh then stopped in staging, or rolled production
    back, while the Job went on and succeeded."""
    waits = migration_waits("scripts/k8s-local.sh", "--dry-run")
    waits |= migration_waits(
        "scripts/deploy.sh", "--target", "minikube", "--dry-run", "--skip-tests", "--skip-scans"
    )
    assert set(waits) == {"comments-local", "comments-staging", "comments-production"}
    for ns, seconds in waits.items():
        job = one(rendered[ns.removeprefix("comments-")], "Job", "comments-api-migrate")
        assert seconds >= job["spec"]["activeDeadlineSeconds"], f"{ns}: waits {seconds} s"


def test_workflows_wait_for_the_migration_job_as_long_as_it_may_run(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The same for dev.yml's E2E deploy (a fresh CloudNativePG database on kind) and
    main.yml's production deploy: a shorter wait fails a run whose Job later succeeds."""
    deadline = one(rendered["staging"], "Job", "comments-api-migrate")["spec"][
        "activeDeadlineSeconds"
    ]
    for flow in ("dev.yml", "main.yml"):
        text = (ROOT / ".github" / "workflows" / flow).read_text()
        waits = re.findall(
            r"wait --for=condition=complete job/comments-api-migrate"
            r" --timeout=(\d+)s",
            text,
        )
        assert waits, flow
        for seconds in waits:
            assert int(seconds) >= deadline, f"{flow}: waits {seconds} s"


# --- drains and scale-out -----------------------------------------------------------------


def evictable(pdb: dict[str, Any], replicas: int) -> int:
    """Pods the eviction API lets go at once, all being healthy (PDB percentages round up)."""
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return scaled(spec["maxUnavailable"], replicas, round_up=True)
    return replicas - scaled(spec["minAvailable"], replicas, round_up=True)


@pytest.mark.parametrize("env", OVERLAYS)
def test_evictions_leave_the_capacity_the_hpa_scaled_out_for(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """Above its minimum the HPA chose the count so the pods run at its CPU target: what a
    drain (node upgrades, the cluster autoscaler consolidating, several at once) may evict
    must leave pods that carry that load within their CPU request. minAvailable 2 let 18
    of 20 go. (At the minimum, test_spread_and_pdb_survive_losing_a_node: two of three.)"""
    docs = rendered[env]
    pdb = one(docs, "PodDisruptionBudget", "comments-api")
    hpa = one(docs, "HorizontalPodAutoscaler", "comments-api")["spec"]
    (cpu,) = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    target = cpu["resource"]["target"]["averageUtilization"]
    for replicas in hpa_range(docs)[1:]:
        left = replicas - evictable(pdb, replicas)
        assert left * 100 >= replicas * target, f"{env}: {left} of {replicas} left"
    assert evictable(pdb, hpa["minReplicas"]) >= 1, "a drain must always be possible"


# A cluster as it often is: the three nodes of scripts/provision-k8s.sh (one per zone) and one
# that these pods may not run on (a tainted system or GPU node group, a control-plane node).
NODES = [
    {"name": "node-a", "zone": "zone-a", "tainted": False},
    {"name": "node-b", "zone": "zone-b", "tainted": False},
    {"name": "node-c", "zone": "zone-c", "tainted": False},
    {"name": "system-a", "zone": "zone-a", "tainted": True},
]


def node_labels(node: dict[str, Any]) -> dict[str, str]:
    return {"kubernetes.io/hostname": node["name"], "topology.kubernetes.io/zone": node["zone"]}


def schedulable(replicas: int, spread: list[dict[str, Any]]) -> int:
    """How many of `replicas` identical pods (tolerating no taint) the scheduler places, one
    at a time, under the DoNotSchedule constraints: skew = pods in the node's domain + 1 -
    the fewest in any eligible domain, at most maxSkew. Eligible domains come from the nodes
    the constraint counts: with nodeTaintsPolicy Ignore (the default) tainted ones too."""
    counts = {n["name"]: 0 for n in NODES}
    hard = [c for c in spread if c["whenUnsatisfiable"] == "DoNotSchedule"]
    for placed in range(replicas):
        fits = []
        for node in (n for n in NODES if not n["tainted"]):
            ok = True
            for c in hard:
                key = c["topologyKey"]
                honor = c.get("nodeTaintsPolicy", "Ignore") == "Honor"
                domains: dict[str, int] = {}
                for other in NODES:
                    if other["tainted"] and honor:
                        continue
                    domain = node_labels(other)[key]
                    domains[domain] = domains.get(domain, 0) + counts[other["name"]]
                skew = domains[node_labels(node)[key]] + 1 - min(domains.values())
                ok = ok and skew <= c["maxSkew"]
            if ok:
                fits.append(node["name"])
        if not fits:
            return placed
        counts[min(fits, key=lambda name: counts[name])] += 1
    return replicas


@pytest.mark.parametrize("env", OVERLAYS)
def test_hpa_can_scale_out_beside_a_node_the_pods_cannot_use(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    docs = rendered[env]
    spread = one(docs, "Deployment", "comments-api")["spec"]["template"]["spec"][
        "topologySpreadConstraints"
    ]
    assert schedulable(3, [c for c in spread if c["topologyKey"] == "kubernetes.io/hostname"]) == 3
    most = hpa_range(docs)[-1]
    placed = schedulable(most, spread)
    assert placed == most, f"{env}: {placed} of {most} pods schedulable; the rest stay Pending"


# PostgreSQL's own default, which the official image keeps unless given `-c max_connections`.
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100


def max_connections(docs: list[dict[str, Any]]) -> int:
    """max_connections of the overlay's in-cluster database: the CloudNativePG Cluster's
    parameter, or the single-pod StatefulSet's `-c max_connections=N` argument."""
    if find(docs, "Cluster", "comments-db"):
        params = one(docs, "Cluster", "comments-db")["spec"]["postgresql"]["parameters"]
        return int(params["max_connections"])
    (db,) = one(docs, "StatefulSet", "comments-db")["spec"]["template"]["spec"]["containers"]
    args = db.get("args", [])
    pairs = [b for a, b in itertools.pairwise(args) if a == "-c"]
    found = [int(p.split("=", 1)[1]) for p in pairs if p.startswith("max_connections=")]
    return found[-1] if found else POSTGRES_DEFAULT_MAX_CONNECTIONS


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_database_connections_fit_a_full_surge_at_the_hpa_maximum(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """The in-cluster database (CloudNativePG in production, the single PostgreSQL pod in
    local and staging) takes every pod of a rollout at the HPA's maximum: old and surged
    pods both hold connections. The single pod kept PostgreSQL's default 100: 2 x 10 x 5
    plus the Job's and the reserved ones did not fit."""
    docs = rendered[env]
    deploy = one(docs, "Deployment", "comments-api")
    (config,) = [
        d
        for d in find(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("comments-api-config")
    ]
    # CONNECTIONS_PER_POD was measured (and test_pod_env checks it) with these.
    assert (config["data"]["WORKERS"], config["data"]["THREADS"]) == ("2", "1")
    most = hpa_range(docs)[-1]
    surge = scaled(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], most, round_up=True)
    migration_job, superuser_reserved = 2, 3  # migrate's engine; PostgreSQL's default
    needed = (most + surge) * CONNECTIONS_PER_POD + migration_job + superuser_reserved
    assert max_connections(docs) >= needed, f"{env}: {max_connections(docs)} < {needed}"
