"""deploy/monitoring against the real tools: promtool, amtool and a running Prometheus."""

from __future__ import annotations

import importlib.util
import re
import shutil
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


def test_alertmanager_config_is_valid() -> None:
    run(tool("amtool"), "check-config", str(MON / "alertmanager.yml"))


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


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        binary = tool("prometheus")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
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
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                return requests.get(f"{self.base}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        if not wait_until(ready, 30):
            self.stop()
            raise RuntimeError("prometheus never became ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]  # type: ignore[no-any-return]

    def alerts(self) -> list[dict[str, Any]]:
        body = requests.get(f"{self.base}/api/v1/alerts", timeout=10).json()
        return body["data"]["alerts"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


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
    assert "CommentsApiTargetDown" not in active

    # Stop the service: the real TargetDown rule (for: 1m) goes pending at the next
    # evaluation after a failed scrape. Waiting the full minute for "firing" would only
    # test Prometheus' own `for` handling, which promtool's unit tests already cover.
    service.stop()

    def target_down() -> bool:
        return any(
            a["labels"]["alertname"] == "CommentsApiTargetDown"
            and a["state"] in {"pending", "firing"}
            for a in prom.alerts()
        )

    assert wait_until(target_down, 30, interval=0.5)


def test_rules_exclude_exactly_the_probe_routes_the_app_exempts() -> None:
    # One list of probe routes (telemetry.http_hooks.OPS_ROUTES, also the rate-limit exemptions);
    # the SLO rules' route!~ matchers must name the same set.
    from comments_api.telemetry.http_hooks import OPS_ROUTES
    from comments_api.web.protection import EXEMPT_PATHS

    assert set(OPS_ROUTES) == EXEMPT_PATHS
    matchers = re.findall(
        r'route!~"([^"]*)"', "".join(path.read_text() for path in MON.glob("rules/*.yml"))
    )
    assert matchers, "no route!~ matcher found: the rules changed shape"
    for matcher in matchers:
        assert set(matcher.split("|")) == set(OPS_ROUTES), matcher
