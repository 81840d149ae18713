"""/metrics under a real multi-worker gunicorn: totals add up, labels hold no user data."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from comments_api import __version__
from comments_api.app import create_app
from comments_api.settings import Settings
from comments_api.telemetry.http_hooks import UNMATCHED_ROUTE, route_label
from comments_api.telemetry.metrics import METHODS, OTHER

from .support import ServiceProcess, scrape, value, wait_until

LIST_ROUTE = "/api/v1/contents/<content_id>/comments"


def _service(tmp_path: Path, workers: int = 3, **env: str) -> ServiceProcess:
    return ServiceProcess(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
            "LOG_LEVEL": "info",
            "RATELIMIT_ENABLED": "false",
            **env,
        },
        tmp_path,
        workers=workers,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    with _service(tmp_path, DB_POOL_SIZE="4", GIT_REVISION="abc1234") as svc:
        yield svc


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def access_lines(svc: ServiceProcess) -> list[dict]:
    lines = []
    for line in svc.log().splitlines():
        record = json.loads(line)
        if record.get("logger") == "comments_api.access":
            lines.append(record)
    return lines


def test_totals_add_up_exactly_across_workers(service: ServiceProcess) -> None:
    reads, writes = 150, 12
    url = f"{service.base}/api/v1/contents/article-1/comments"

    def read(_: int) -> int:
        # A new connection per request: the kernel hands them to different workers.
        return requests.get(url, timeout=10).status_code

    def write(i: int) -> int:
        return requests.post(url, json={"body": f"comment {i}"}, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        read_codes = list(pool.map(read, range(reads)))
        write_codes = list(pool.map(write, range(writes)))
    assert read_codes == [200] * reads
    assert write_codes == [201] * writes

    # The traffic really was spread: several worker pids served the list route.
    assert wait_until(lambda: len(access_lines(service)) >= reads + writes, 10)
    pids = {r["pid"] for r in access_lines(service) if r["route"] == LIST_ROUTE}
    assert len(pids) >= 2, f"all requests went to one worker: {pids}"

    samples = scrape(service.base)
    total = "comments_api_http_requests_total"
    assert value(samples, total, method="GET", route=LIST_ROUTE, status="200") == reads
    assert value(samples, total, method="POST", route=LIST_ROUTE, status="201") == writes
    hist = "comments_api_http_request_duration_seconds"
    assert value(samples, f"{hist}_count", method="GET", route=LIST_ROUTE) == reads
    assert value(samples, f"{hist}_bucket", method="GET", route=LIST_ROUTE, le="+Inf") == reads
    created = "comments_api_comments_created_total"
    assert value(samples, created, api="v1", status="published") == writes
    # Only the scrape itself is in flight; live gauges cover exactly the 3 live workers.
    assert value(samples, "comments_api_http_requests_in_flight") == 1
    assert value(samples, "comments_api_workers") == 3
    assert value(samples, "comments_api_db_pool_size") == 3 * 4
    assert value(samples, "comments_api_db_pool_checked_out") == 0
    assert value(samples, "comments_api_ready") == 1
    assert value(samples, "comments_api_build_info", version=__version__, revision="abc1234") == 1
    queries = value(samples, "comments_api_db_query_duration_seconds_count", operation="select")
    # Each worker built the page once (its read cache was empty) and served the rest from
    # its cache (docs/caching.md). Its marker SELECTs count too, but on SQLite they run
    # only on a miss or after a write: here, around each worker's one build.
    assert len(pids) <= queries < reads
    assert value(samples, "comments_api_db_query_duration_seconds_count", operation="insert") >= (
        writes
    )

    # A worker dies: gunicorn replaces it. Its counts stay in the totals, its live
    # gauges go (child_exit -> mark_process_dead), so nothing is counted twice.
    assert service.proc is not None
    master = service.proc.pid
    before = worker_pids(master)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(
        lambda: victim not in worker_pids(master) and len(worker_pids(master)) == 3, 20
    )
    # The new worker reports in once it has booted.
    assert wait_until(lambda: value(scrape(service.base), "comments_api_workers") == 3, 20)
    after = scrape(service.base)
    assert value(after, total, method="GET", route=LIST_ROUTE, status="200") == reads
    assert value(after, created, api="v1", status="published") == writes
    assert value(after, "comments_api_workers") == 3
    assert value(after, "comments_api_db_pool_size") == 3 * 4
    assert value(after, "comments_api_http_requests_in_flight") == 1


def test_labels_never_hold_user_data(service: ServiceProcess, tmp_path: Path) -> None:
    secrets_sent = [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "987654321",
        "secret-content-xyz",
        "SECRETTEXT",
        "reqid-SECRET123",
        "BREW",
    ]
    base = service.base
    headers = {"X-Request-ID": "reqid-SECRET123"}
    requests.get(f"{base}/api/v1/comments/987654321", headers=headers, timeout=10)
    requests.get(f"{base}/api/comment/list/secret-content-xyz", timeout=10)
    requests.get(f"{base}/nope/alice@example.com", timeout=10)
    requests.get(f"{base}/api/v1/contents/bob@example.com/comments", timeout=10)
    requests.post(
        f"{base}/api/comment/new",
        json={"email": "carol@example.com", "comment": "SECRETTEXT", "content_id": 7},
        timeout=10,
    )
    requests.post(f"{base}/api/comment/new", json={"email": "carol@example.com"}, timeout=10)
    requests.get(f"{base}/api/v1/counts?content_id=dave@example.com", timeout=10)
    requests.request("BREW", f"{base}/api/v1/comments/1", timeout=10)

    text = requests.get(f"{base}/metrics", timeout=10).text
    for secret in secrets_sent:
        assert secret not in text, f"{secret!r} leaked into /metrics"

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'labels.db'}"))
    templates = {route_label(rule.rule) for rule in app.url_map.iter_rules()} | {UNMATCHED_ROUTE}
    samples = scrape(base)
    routes = {dict(labels).get("route") for _, labels in samples} - {None}
    assert routes <= templates
    assert UNMATCHED_ROUTE in routes  # /nope/... and BREW
    methods = {dict(labels).get("method") for _, labels in samples} - {None}
    assert methods <= METHODS | {OTHER}
    assert OTHER in methods  # BREW
    statuses = {
        dict(labels)["status"]
        for name, labels in samples
        if name == "comments_api_http_requests_total"
    }
    assert all(s.isdigit() and len(s) == 3 for s in statuses)
    rejected = "comments_api_comments_rejected_total"
    assert value(samples, rejected, reason="validation-error") >= 1


def test_multiprocess_dir_is_wiped_at_start(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    route = "/healthz"
    with _service(tmp_path, workers=2, **env) as first:
        for _ in range(5):
            requests.get(f"{first.base}{route}", timeout=10)
        assert value(scrape(first.base), "comments_api_http_requests_total",
                     method="GET", route=route, status="200") == 5  # fmt: skip
    assert any(metrics_dir.glob("counter_*.db"))  # the first run left its files
    (metrics_dir / "counter_999999.db").write_bytes(b"stale garbage from another run")

    with _service(tmp_path, workers=2, **env) as second:
        for _ in range(2):
            requests.get(f"{second.base}{route}", timeout=10)
        samples = scrape(second.base)
    assert not (metrics_dir / "counter_999999.db").exists()
    total = value(
        samples, "comments_api_http_requests_total", method="GET", route=route, status="200"
    )
    assert total == 2


def test_metrics_can_be_disabled_but_request_ids_stay(make_app) -> None:
    client = make_app(metrics_enabled=False).test_client()
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.is_json or response.mimetype.endswith("+json")
    assert response.headers["X-Request-ID"]


def test_in_process_metrics_count_requests(make_app) -> None:
    client = make_app().test_client()

    def count() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return value(samples, "comments_api_http_requests_total",
                     method="GET", route="/healthz", status="200")  # fmt: skip

    before = count()
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert count() == before + 3


def test_business_labels_outside_the_allowlist_become_other(make_app) -> None:
    from comments_api.events import comment_created, comment_rejected, moderation_action

    app = make_app()
    client = app.test_client()

    def samples() -> dict:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before = samples()
    comment_rejected.send(app, reason="eve@example.com")
    comment_created.send(app, api="v1; drop", status="published")
    moderation_action.send(app, action="approve", count=3)
    moderation_action.send(app, action="<script>", count=1)
    moderation_action.send(app, action="hide", count=0)  # bulk action that changed nothing
    after = samples()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("comments_api_comments_rejected_total", reason=OTHER) == 1
    assert delta("comments_api_comments_created_total", api=OTHER, status="published") == 1
    assert delta("comments_api_moderation_actions_total", action="approve") == 3
    assert delta("comments_api_moderation_actions_total", action=OTHER) == 1
    assert delta("comments_api_moderation_actions_total", action="hide") == 0
    text = client.get("/metrics").get_data(as_text=True)
    for leaked in ("eve@example.com", "drop", "<script>"):
        assert leaked not in text


def test_every_metric_is_documented_in_operations_md(make_app) -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = readme.split("<!-- BEGIN operating -->")[1].split("<!-- END operating -->")[0]
    text = make_app().test_client().get("/metrics").get_data(as_text=True)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names
    for name in names:
        documented = f"`{name}`" in section or f"`{name}_total`" in section
        assert documented, f"{name} is not in the metrics table of docs/operations.md"


def test_each_routes_errors_are_counted_from_zero(service: ServiceProcess) -> None:
    # A route's first 500 or 503 in a pod's life came on a series born counting it, and
    # rate() starts from a series' first sample: the SLO rules never saw it.
    name = "comments_api_http_requests_total"
    before = scrape(service.base)
    for method, route, status in (
        ("POST", LIST_ROUTE, "503"),
        ("POST", LIST_ROUTE, "507"),
        ("GET", LIST_ROUTE, "500"),
        ("GET", "/api/comment/list/<content_id>", "503"),
        ("DELETE", "/api/v1/moderation/bans/<target>", "500"),
    ):
        labels = (("method", method), ("route", route), ("status", status))
        assert before.get((name, labels)) == 0.0, (method, route, status)
    errors = {
        dict(labels)["route"]
        for (metric, labels) in before
        if metric == name and dict(labels)["status"].startswith("5")
    }
    assert LIST_ROUTE in errors
    assert not errors & {"/healthz", "/readyz", "/metrics"}  # outside the SLOs
    assert not any(
        dict(labels)["status"] == "507" and dict(labels)["method"] == "GET"
        for (metric, labels) in before
        if metric == name
    )


def test_server_refusal_reasons_are_the_documented_ones() -> None:
    # Each has its series at 0 from the start (the SLO rules' rate() needs the series
    # before the first refusal); the metrics table names the same set.
    from comments_api.telemetry.metrics import server_refusal_reasons

    readme = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    row = next(
        line for line in readme.splitlines() if "`comments_api_server_refusals_total`" in line
    )
    documented = row.split("`reason` (", 1)[1].split(")", 1)[0].replace(";", ",")
    assert {r.strip() for r in documented.split(",")} == set(server_refusal_reasons())


def test_every_status_the_server_answers_itself_is_a_refusal_reason() -> None:
    # A reason missing from the list had no series until its first refusal (which rate()
    # then skips) and was not in the documented set: a target outside SCRIPT_NAME (404) and
    # an Expect other than 100-continue (417) were counted under such reasons.
    from comments_api.telemetry.metrics import SERVER_REFUSAL_STATUSES
    from comments_api.worker import _CLIENT_ERRORS, _REFUSAL_KINDS, ReadTimeout, classify

    answered = {status for _, status, _ in _CLIENT_ERRORS} | set(_REFUSAL_KINDS)
    answered |= {classify(ReadTimeout())[0], classify(SystemExit(1))[0], 413, 414, 431}
    assert answered <= set(SERVER_REFUSAL_STATUSES), answered - set(SERVER_REFUSAL_STATUSES)


def test_scrape_while_a_worker_boots(tmp_path: Path) -> None:
    # A booting worker creates its metrics file and sizes it a moment later; a scrape in
    # between read an empty file and answered 500 (seen under load in CI-like runs).
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with _service(tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as svc:
        requests.get(f"{svc.base}/healthz", timeout=10)
        booting = metrics_dir / "counter_4194303.db"  # the file state of a booting worker
        booting.write_bytes(b"")
        samples = scrape(svc.base)
        assert value(samples, "comments_api_http_requests_total",
                     method="GET", route="/healthz", status="200") == 1  # fmt: skip
        booting.unlink()


def test_reject_reasons_are_the_problem_slugs_the_app_emits(make_app) -> None:

    from comments_api.comments.rules import DomainError
    from comments_api.contract.problems import problem_types
    from comments_api.settings import Settings
    from comments_api.telemetry.metrics import reject_reasons

    reasons = reject_reasons()
    assert len(reasons) == len(set(reasons))  # no duplicates
    # Every reason is a registered client-error problem type (the one registry).
    registry = problem_types(Settings())
    assert all(400 <= registry[reason]["status"] < 500 for reason in reasons)
    # Every rule's code has its series, including ones defined outside comments/rules.py.
    make_app()  # imports every module that defines a DomainError

    def codes(cls: type[DomainError]) -> set[str]:
        return {cls.code}.union(*(codes(sub) for sub in cls.__subclasses__()))

    assert codes(DomainError) <= set(reasons)
    assert {"duplicate", "author-banned", "idempotency-key-reused"} <= set(reasons)
    # Reasons nothing emits are gone.
    assert not {"payload-too-large", "rate-limited", "banned-words", "gone"} & set(reasons)


def test_a_rejection_is_counted_under_its_problem_slug(make_app) -> None:
    client = make_app().test_client()

    def rejected(reason: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "comments_api_comments_rejected_total" and s.labels == {
                    "reason": reason
                }:
                    return s.value
        raise AssertionError(f"no series for reason={reason}")

    before = rejected("unsupported-media-type"), rejected("validation-error")
    response = client.post("/api/v1/contents/a1/comments", data="hi", content_type="text/plain")
    assert response.status_code == 415
    assert client.post("/api/v1/contents/a1/comments", json={"body": " "}).status_code == 400
    assert rejected("unsupported-media-type") == before[0] + 1
    assert rejected("validation-error") == before[1] + 1


def test_prometheus_value_class_override(tmp_path: Path) -> None:
    # telemetry/metrics.py switches prometheus_client to multiprocess storage when it was
    # imported before PROMETHEUS_MULTIPROC_DIR was set (checked against prometheus_client
    # 0.26.0, which has no public way to do it). Fails if values.ValueClass or
    # values.get_value_class change, or the switch stops writing to the directory.
    import subprocess
    import sys

    from prometheus_client import values

    assert hasattr(values, "ValueClass")
    assert callable(values.get_value_class)
    script = (
        "import os, prometheus_client\n"
        "from prometheus_client import values\n"
        "assert not getattr(values.ValueClass, '_multiprocess', False)\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
        "from comments_api.telemetry.metrics import metrics\n"
        "metrics().rejected.labels('duplicate').inc()\n"
        "assert values.ValueClass._multiprocess\n"
        # The pid is remembered, not asked per sample: a forked child must still get files
        # of its own, or parent and child would overwrite each other's counts.
        "child = os.fork()\n"
        "if child == 0:\n"
        "    metrics().rejected.labels('duplicate').inc(5)\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "metrics().rejected.labels('duplicate').inc()\n"
        "print(os.getpid(), child)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    parent, child = result.stdout.split()
    assert {p.name for p in tmp_path.glob("counter_*.db")} == {
        f"counter_{parent}.db",
        f"counter_{child}.db",
    }
    from prometheus_client.multiprocess import MultiProcessCollector

    by_pid = {
        pid: MultiProcessCollector.merge([str(tmp_path / f"counter_{pid}.db")], accumulate=True)
        for pid in (parent, child)
    }

    def rejected(families) -> float:
        family = next(f for f in families if f.name == "comments_api_comments_rejected")
        return sum(s.value for s in family.samples if s.labels.get("reason") == "duplicate")

    assert rejected(by_pid[parent]) == 2
    assert rejected(by_pid[child]) == 5


def test_statements_are_counted_by_verb_and_their_texts_remembered_up_to_a_bound() -> None:
    from comments_api.telemetry import metrics as metrics_module

    m = metrics_module.metrics()
    children = m._db_children

    def count(op: str) -> float:
        return float(sum(b.get() for b in children[op]._buckets))

    before = {op: count(op) for op in ("select", "insert", "update", "delete", OTHER)}
    texts = ["  select 1", "INSERT INTO t VALUES (1)", "with x as (select 1) select 1", "BEGIN"]
    for _ in range(2):  # the second time from the remembered child
        for text in texts:
            m.observe_query(text, 0.001)
    assert count("select") - before["select"] == 4
    assert count("insert") - before["insert"] == 2
    assert count(OTHER) - before[OTHER] == 2
    # Texts past the bound are still counted, just not remembered.
    remembered = len(m._db_by_statement)
    for i in range(metrics_module._STATEMENTS_REMEMBERED + 10):
        m.observe_query("DELETE FROM t WHERE id = " + str(i), 0.001)  # noqa: S608 - a test text
    assert len(m._db_by_statement) <= max(remembered, metrics_module._STATEMENTS_REMEMBERED)
    assert count("delete") - before["delete"] == metrics_module._STATEMENTS_REMEMBERED + 10
