"""deploy/monitoring against the real tools: promtool, amtool and a running Prometheus."""

from __future__ import annotations

import importlib.util
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

from .support import ServiceProcess, free_port, missing, wait_until

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "deploy" / "monitoring"
RULE_FILES = [
    MON / "rules" / "comments-api-recording.yml",
    MON / "rules" / "comments-api-alerts.yml",
]
DASHBOARDS = MON / "grafana" / "dashboards"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(name)
    assert path is not None
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_gen", MON / "grafana" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules(kind: str) -> list[dict[str, Any]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [r for r in group["rules"] if kind in r]
    return found


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = yaml.safe_load(path.read_text())  # JSON is YAML
        panels = list(board["panels"])
        for panel in panels:
            panels += panel.get("panels") or []  # collapsed rows nest theirs
            for target in panel.get("targets") or []:
                found.append((path.name, panel["title"], target["expr"]))
    return found


# --------------------------------------------------------------------------- static checks


def test_prometheus_config_and_rules_are_valid() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "config", str(MON / "prometheus.yml"))
    run(promtool, "check", "rules", *map(str, RULE_FILES))


def test_alert_unit_tests_pass() -> None:
    run(tool("promtool"), "test", "rules", str(MON / "tests" / "alerts_test.yml"))


def test_recording_rule_unit_tests_pass() -> None:
    run(tool("promtool"), "test", "rules", str(MON / "tests" / "recording_test.yml"))
    # The 30-day SLO ratio, from the recorded 5-minute rates (its own file: hourly rules).
    run(tool("promtool"), "test", "rules", str(MON / "tests" / "slo_30d_test.yml"))


DURATION = re.compile(r"(\d+)([smhdwy])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def seconds(duration: str) -> int:
    """A Prometheus duration (`30d`, `1h30m`) in seconds."""
    parts = DURATION.findall(duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * SECONDS[u] for n, u in parts)


def gigabytes(size: str) -> float:
    """A Prometheus size (`22GB`: powers of 1024, as --storage.tsdb.retention.size) or a
    Kubernetes quantity (`25Gi`) in GiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(GB|Gi|TB|Ti)", size)
    assert match, size
    return float(match.group(1)) * (1024 if match.group(2) in ("TB", "Ti") else 1)


def test_prometheus_keeps_every_window_the_rules_read() -> None:
    """The SLO dashboard's 30-day availability and error budget read
    job:comments_api_slo_errors:ratio_rate30d; with 15 days kept they covered 15 and said
    30. The cluster's Prometheus (kube-prometheus-stack's values) keeps a day more than
    the longest range any rule or panel reads, and its size limit, which deletes the
    oldest blocks first, does not come before that: it grows with the days kept from the
    9GB the 15 days had, and fits the volume."""
    values = yaml.safe_load(
        (ROOT / "deploy" / "k8s" / "provision" / "kube-prometheus-stack-values.yaml").read_text()
    )["prometheus"]["prometheusSpec"]
    exprs = [r["expr"] for r in rules("record") + rules("alert")]
    exprs += [e for _, _, e in panel_queries()]
    ranges = [seconds(r) for e in exprs for r in re.findall(r"\[(\w+)(?::\w*)?\]", e)]
    assert max(ranges) >= seconds("30d"), "the 30-day SLO window is read somewhere"
    retention = seconds(values["retention"])
    assert retention >= max(ranges) + seconds("1d"), (values["retention"], max(ranges))
    size = gigabytes(values["retentionSize"])
    assert size / (retention / 86400) >= 9 / 15, "the size limit would cut the days short"
    volume = values["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]
    assert size <= 0.9 * gigabytes(volume["storage"]), "WAL and compaction need room beside"
    # The local stack (compose.yaml) as well: Prometheus' own default is 15 days.
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    flags = compose["services"]["prometheus"]["command"]
    kept = [f.split("=", 1)[1] for f in flags if f.startswith("--storage.tsdb.retention.time=")]
    assert kept, flags
    assert seconds(kept[0]) >= max(ranges) + seconds("1d"), kept


def test_alertmanager_config_is_valid() -> None:
    run(tool("amtool"), "check-config", str(MON / "alertmanager.yml"))


# --------------------------------------------------------------------------- Alertmanager


def alertmanager_binary() -> str:
    """Upstream's name, or Debian's (package prometheus-alertmanager)."""
    for name in ("alertmanager", "prometheus-alertmanager"):
        if path := shutil.which(name):
            return path
    missing("alertmanager")
    raise AssertionError("unreachable")


class LocalDaemon:
    """A Prometheus-family daemon the test starts on 127.0.0.1 (``port``) and stops: its
    output kept in a log file, ready once its /-/ready answers 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def _start(self, name: str, workdir: Path, args: list[str]) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_path.read_text()}")
            try:
                return requests.get(f"{self.base}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        if not wait_until(ready, 30):
            self.stop()
            raise RuntimeError(f"{name} never became ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Alertmanager(LocalDaemon):
    """A real Alertmanager on 127.0.0.1 with `config` (a file), its receivers' webhooks
    pointed at a closed local port: what it would notify is not what is tested (that is
    routing, amtool's), what it holds back is. No gossip cluster (an empty
    --cluster.listen-address: it would listen on every interface)."""

    def __init__(self, workdir: Path, config: Path) -> None:
        doc = yaml.safe_load(config.read_text())
        closed = f"http://127.0.0.1:{free_port()}/"
        for receiver in doc.get("receivers", []):
            for hook in receiver.get("webhook_configs", []):
                hook.pop("url_file", None)
                hook["url"] = closed + receiver["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        super().__init__()
        self._start(
            "alertmanager",
            workdir,
            [
                alertmanager_binary(),
                f"--config.file={path}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
        )

    def post(self, labelsets: list[dict[str, str]]) -> None:
        """Alerts as Prometheus sends them: firing now (no end: resolve_timeout)."""
        response = requests.post(
            f"{self.base}/api/v2/alerts", json=[{"labels": ls} for ls in labelsets], timeout=10
        )
        assert response.status_code == 200, response.text

    def states(self) -> dict[tuple[str, str, str], str]:
        """(alertname, job, instance) -> active | suppressed (inhibited or silenced)."""
        alerts = requests.get(f"{self.base}/api/v2/alerts", timeout=10).json()
        return {
            (
                a["labels"]["alertname"],
                a["labels"].get("job", ""),
                a["labels"].get("instance", ""),
            ): a["status"]["state"]
            for a in alerts
        }


INSTANCE = "10.0.1.5:8000"


def firing(job: str = "comments-api") -> list[dict[str, str]]:
    """Every alert of the rules as Prometheus would send it for `job`: the rule's labels,
    and an instance for those that do not aggregate it away."""
    found = []
    for rule in rules("alert"):
        labels = {"alertname": rule["alert"], "job": job, **rule["labels"]}
        if "by (job)" not in rule["expr"] and "job:" not in rule["expr"]:
            labels["instance"] = INSTANCE
        found.append(labels)
    return found


def held_back(config: Path, workdir: Path, alerts: list[dict[str, str]]) -> dict[Any, str]:
    """The state Alertmanager (with `config`) gives each of `alerts`, once its inhibitor
    has taken them in. Its inhibitor reads alerts in the order they arrive: a barrier
    posted after them, a pair that alertmanager.yml's burn-rate rule inhibits (of another
    job), tells when they are all in."""
    manager = Alertmanager(workdir, config)
    try:
        manager.post(alerts)
        barrier = [
            {"alertname": "CommentsApiErrorBudgetBurn", "job": "barrier", "severity": "page"},
            {"alertname": "CommentsApiErrorBudgetBurnSlow", "job": "barrier"},
        ]
        manager.post(barrier)
        slow = ("CommentsApiErrorBudgetBurnSlow", "barrier", "")
        assert wait_until(lambda: manager.states().get(slow) == "suppressed", 15, interval=0.2), (
            manager.log_path.read_text()
        )
        return {k: v for k, v in manager.states().items() if k[1] != "barrier"}
    finally:
        manager.stop()


def alert_key(labels: dict[str, str]) -> tuple[str, str, str]:
    return labels["alertname"], labels["job"], labels.get("instance", "")


def check_one_instance_down_silences_no_page(config: Path, workdir: Path) -> None:
    """One pod that cannot be scraped (CommentsApiTargetDown, per instance), with the
    service's own alerts firing: every one of them still reaches its receiver. It used to
    inhibit every CommentsApi alert of the job: a hung pod or a lost node among 3 to 20
    silenced the error-budget, latency, readiness and database pages."""
    alerts = [a for a in firing() if a["alertname"] != "CommentsApiDown"]
    assert "CommentsApiTargetDown" in {a["alertname"] for a in alerts}
    pages = [a for a in alerts if a.get("severity") == "page"]
    assert len(pages) >= 4
    states = held_back(config, workdir, alerts)
    # The fast burn page covers the slow burn ticket (their own rule), nothing else.
    slow = ("CommentsApiErrorBudgetBurnSlow", "comments-api", "")
    assert {alert_key(a): states.get(alert_key(a)) for a in alerts} == {
        alert_key(a): "suppressed" if alert_key(a) == slow else "active" for a in alerts
    }


def check_service_down_holds_back_the_rest(config: Path, workdir: Path) -> None:
    """No instance scraped (CommentsApiDown, per job): one page, for the cause; every other
    alert of that job is held back, another job's are not."""
    other = [a for a in firing("comments-api-canary") if a["alertname"] != "CommentsApiDown"]
    alerts = firing() + other
    down = ("CommentsApiDown", "comments-api", "")
    states = held_back(config, workdir, alerts)
    # The other job's: their own rules only (the fast burn covers the slow one).
    other_slow = ("CommentsApiErrorBudgetBurnSlow", "comments-api-canary", "")
    expected = {
        alert_key(a): (
            "active"
            if alert_key(a) == down or (a["job"] != "comments-api" and alert_key(a) != other_slow)
            else "suppressed"
        )
        for a in alerts
    }
    assert {alert_key(a): states.get(alert_key(a)) for a in alerts} == expected


def test_alertmanager_one_instance_down_silences_no_page(tmp_path: Path) -> None:
    check_one_instance_down_silences_no_page(MON / "alertmanager.yml", tmp_path)


def test_alertmanager_service_down_holds_back_the_rest(tmp_path: Path) -> None:
    check_service_down_holds_back_the_rest(MON / "alertmanager.yml", tmp_path)


def test_every_alert_is_documented_and_unit_tested() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text()
    section = readme.split("<!-- BEGIN operating -->")[1].split("<!-- END operating -->")[0]
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", section, re.M)
    }
    tests = yaml.safe_load((MON / "tests" / "alerts_test.yml").read_text())["tests"]
    alerts = rules("alert")
    assert len(alerts) >= 6
    for alert in alerts:
        name = alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        anchor = annotations["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{name}: no heading in docs/operations.md for #{anchor}"
        cases = [
            case for test in tests for case in test["alert_rule_test"] if case["alertname"] == name
        ]
        assert any(case["exp_alerts"] for case in cases), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in cases), f"{name}: no silent case"


def test_committed_dashboards_equal_the_generator_output() -> None:
    rendered = load_generator().render()
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert set(rendered) == set(committed)
    for name, text in rendered.items():
        assert committed[name] == text, (
            f"{name} is stale: run deploy/monitoring/grafana/generate.py"
        )
    for provisioning in (MON / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1


# --------------------------------------------------------------------------- end to end


class Prometheus(LocalDaemon):
    def __init__(self, workdir: Path, target: str) -> None:
        binary = tool("prometheus")
        super().__init__()
        config = {
            # Short intervals so the test runs in seconds; the rules are the real files.
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [
                {
                    "job_name": "comments-api",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._start(
            "prometheus",
            workdir,
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]  # type: ignore[no-any-return]

    def alerts(self) -> list[dict[str, Any]]:
        body = requests.get(f"{self.base}/api/v1/alerts", timeout=10).json()
        return body["data"]["alerts"]  # type: ignore[no-any-return]


@pytest.fixture
def prometheus_and_service(tmp_path: Path) -> Iterator[tuple[Prometheus, ServiceProcess]]:
    tool("prometheus")
    service = ServiceProcess(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
            "RATELIMIT_ENABLED": "false",
        },
        tmp_path,
        workers=2,
    ).start()
    prom = None
    try:
        prom = Prometheus(tmp_path, f"127.0.0.1:{service.port}")
        yield prom, service
    finally:
        if prom is not None:
            prom.stop()
        service.stop()


def unreadable_request(base: str) -> bytes:
    """A request line the server itself refuses (400), before any route sees it."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"NOT A REQUEST\r\n\r\n")
        answer = sock.recv(256)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    return answer


def drive_traffic(base: str, seconds: float) -> None:
    """Reads, writes, client errors and probes, spread over a few scrapes (bounded)."""
    deadline = time.monotonic() + seconds
    calls: list[Callable[[], object]] = [
        lambda: requests.get(f"{base}/api/v1/contents/a1/comments", timeout=5),
        lambda: requests.post(
            f"{base}/api/v1/contents/a1/comments", json={"body": "hello"}, timeout=5
        ),
        lambda: requests.post(f"{base}/api/comment/new", json={"comment": "x"}, timeout=5),
        lambda: requests.get(f"{base}/api/comment/list/a1", timeout=5),
        lambda: requests.get(f"{base}/no/such/route", timeout=5),
        lambda: requests.get(f"{base}/readyz", timeout=5),
        lambda: unreadable_request(base),
    ]
    rounds = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        while time.monotonic() < deadline and rounds < 200:
            list(pool.map(lambda call: call(), calls))
            rounds += 1
            time.sleep(0.05)


def test_dashboards_and_rules_return_data_from_a_real_prometheus(
    prometheus_and_service: tuple[Prometheus, ServiceProcess],
) -> None:
    prom, service = prometheus_and_service
    assert wait_until(lambda: prom.query('up{job="comments-api"} == 1') != [], 20)
    drive_traffic(service.base, seconds=6)
    # Rules evaluate every second; give rate() windows a couple of samples after traffic.
    time.sleep(3)

    def has_data(expr: str) -> bool:
        return wait_until(lambda: prom.query(expr) != [], 15, interval=0.5)

    empty_rules = [r["record"] for r in rules("record") if not has_data(r["record"])]
    assert not empty_rules, f"recording rules without data: {empty_rules}"

    queries = panel_queries()
    assert len(queries) >= 20
    empty_panels = [f"{b} / {t}: {e}" for b, t, e in queries if not has_data(e)]
    assert not empty_panels, "panels without data:\n" + "\n".join(empty_panels)

    # Alert rules load and evaluate; none of ours may be active while the service is up.
    active = {a["labels"]["alertname"] for a in prom.alerts()}
    assert not active & {"CommentsApiDown", "CommentsApiTargetDown"}, active

    # Stop the service: the real CommentsApiDown (for: 1m) and CommentsApiTargetDown
    # (for: 5m) rules go pending at the next evaluation after a failed scrape. Waiting for
    # "firing" would only test Prometheus' own `for` handling, which promtool's unit tests
    # already cover.
    service.stop()

    def down() -> bool:
        pending = {
            a["labels"]["alertname"] for a in prom.alerts() if a["state"] in {"pending", "firing"}
        }
        return {"CommentsApiDown", "CommentsApiTargetDown"} <= pending

    assert wait_until(down, 30, interval=0.5)


def test_rules_exclude_exactly_the_probe_routes_the_app_exempts() -> None:
    # One list of probe routes (contract.headers.OPS_ROUTES, also the rate-limit exemptions);
    # the SLO rules' route!~ matchers must name the same set.
    from comments_api.contract.headers import OPS_ROUTES
    from comments_api.web.protection import EXEMPT_PATHS

    assert set(OPS_ROUTES) == EXEMPT_PATHS
    matchers = re.findall(
        r'route!~"([^"]*)"', "".join(path.read_text() for path in MON.glob("rules/*.yml"))
    )
    assert matchers, "no route!~ matcher found: the rules changed shape"
    for matcher in matchers:
        assert set(matcher.split("|")) == set(OPS_ROUTES), matcher


def test_slo_counts_the_503s_a_reload_answers_to_requests_still_being_read(
    tmp_path: Path,
) -> None:
    """The SLO rules add comments_api_server_refusals_total{reason="service-unavailable"}:
    the 503s an old worker of a reload (SIGHUP) answers past GRACEFUL_TIMEOUT to requests
    it was still reading. Their series used to be born with the reload, already counting
    its whole burst, and rate() starts from a series' first sample: a real Prometheus read
    3 refusals and an SLO error rate of 0. The series now exist at 0 from the start."""
    tool("prometheus")
    service = ServiceProcess(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
            "RATELIMIT_ENABLED": "false",
            "GRACEFUL_TIMEOUT": "3",
        },
        tmp_path,
        workers=2,
    ).start()
    prom = None
    unfinished: list[socket.socket] = []
    try:
        prom = Prometheus(tmp_path, f"127.0.0.1:{service.port}")
        assert wait_until(lambda: prom.query('up{job="comments-api"} == 1') != [], 20)
        time.sleep(2)  # a few scrapes before the reload: the series' start
        for _ in range(3):  # bodies that never finish: still being read at the reload
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=15)
            sock.sendall(
                b"POST /api/v1/contents/a1/comments HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            unfinished.append(sock)
        time.sleep(0.5)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        for sock in unfinished:
            assert sock.recv(64).startswith(b"HTTP/1.1 503"), "the reload did not refuse it"

        def scraped() -> float:
            found = prom.query(
                'sum(comments_api_server_refusals_total{reason="service-unavailable"})'
            )
            return float(found[0]["value"][1]) if found else 0.0

        assert wait_until(lambda: scraped() == 3, 20, interval=0.5)
        # Reader traffic, so the SLO ratio has a denominator.
        for _ in range(10):
            requests.get(f"{service.base}/api/v1/contents/a1/comments", timeout=5)
        assert wait_until(
            lambda: prom.query("job:comments_api_slo_errors:rate5m > 0") != [], 15, interval=0.5
        ), prom.query("job:comments_api_slo_errors:rate5m")
        assert prom.query("job:comments_api_slo_errors:ratio_rate5m > 0")
    finally:
        for sock in unfinished:
            sock.close()
        if prom is not None:
            prom.stop()
        service.stop()
