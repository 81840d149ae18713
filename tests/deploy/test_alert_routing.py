"""The cluster's Alertmanager routes as deploy/monitoring/alertmanager.yml (one source), with
the receivers' URLs in a Secret that scripts/provision-k8s.sh creates once from the
operator's environment. Before, the chart's default routing sent every alert to `null`."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..test_monitoring import (
    check_one_instance_down_silences_no_page,
    check_service_down_holds_back_the_rest,
)
from .conftest import K8S, ROOT, tool
from .test_tools import KUBECTL_SECRETS

pytestmark = pytest.mark.k8s

SOURCE = ROOT / "deploy" / "monitoring" / "alertmanager.yml"
VALUES = K8S / "provision" / "alertmanager-values.yaml"
SCRIPT = ROOT / "scripts" / "provision-k8s.sh"
# Keys of kube-prometheus-stack's default `alertmanager.config.route`: Helm merges our map
# into it, so a key we leave out would keep the chart's value.
CHART_ROUTE_KEYS = {"receiver", "group_by", "group_wait", "group_interval", "repeat_interval"}
PAGE_URL = "https://pager.example.test/hook/s3cr3t-page"
TICKET_URL = "https://tickets.example.test/hook/s3cr3t-ticket"


def run(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def source() -> dict[str, Any]:
    return yaml.safe_load(SOURCE.read_text())


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def script_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), re.M)
    assert match, f"{name} not set in provision-k8s.sh"
    return match.group(1)


def test_cluster_routing_is_alertmanager_yml() -> None:
    src = source()
    am = values()["alertmanager"]
    config = am["config"]
    secret = script_setting("RECEIVERS_SECRET")
    assert am["alertmanagerSpec"]["secrets"] == [secret]
    assert script_setting("ROUTING_VALUES") == str(VALUES.relative_to(ROOT))

    route = copy.deepcopy(config["route"])
    assert set(route) >= CHART_ROUTE_KEYS | {"routes"}
    # The chart's meta-alerts first (or the source's routes would catch them), to no one.
    null_routes = [r for r in route["routes"] if r["receiver"] == "null"]
    assert route["routes"][: len(null_routes)] == null_routes
    assert [r["matchers"] for r in null_routes] == [
        ['alertname="Watchdog"'],
        ['alertname="InfoInhibitor"'],
    ]
    route["routes"] = route["routes"][len(null_routes) :]
    assert route == src["route"]

    # Receivers: the source's, with only the URL moved to a file of the mounted Secret.
    by_name = {r["name"]: r for r in config["receivers"]}
    assert by_name.pop("null") == {"name": "null"}
    expected = copy.deepcopy(src["receivers"])
    for receiver in expected:
        (hook,) = receiver["webhook_configs"]
        assert hook.pop("url").startswith("http://127.0.0.1:")
        hook["url_file"] = f"/etc/alertmanager/secrets/{secret}/{receiver['name']}-url"
    assert [by_name[r["name"]] for r in expected] == expected
    assert set(by_name) == {r["name"] for r in expected}
    assert "127.0.0.1" not in VALUES.read_text()

    # Inhibit rules: the source's, then the chart's own, which never touch our alerts.
    rules = config["inhibit_rules"]
    assert rules[: len(src["inhibit_rules"])] == src["inhibit_rules"]
    for rule in rules[len(src["inhibit_rules"]) :]:
        text = json.dumps(rule)
        for ours in ("CommentsApi", "page", "ticket"):
            assert ours not in text, rule


def cluster_config(tmp_path: Path, amtool: str) -> Path:
    """The config the chart hands Alertmanager: the generated part, plus the chart's
    `global` (kept by Helm's merge). Alertmanager 0.26 brought `url_file` (chart 88.5.3
    ships 0.34); an older amtool (Debian's 0.25 rejects the field) gets `url` instead."""
    config = copy.deepcopy(values()["alertmanager"]["config"])
    config["global"] = {"resolve_timeout": "5m"}
    version = re.search(r"version (\d+)\.(\d+)", run(amtool, "--version").stdout)
    assert version, "amtool --version"
    if (int(version.group(1)), int(version.group(2))) < (0, 26):
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = "https://receiver.example.test/" + hook.pop("url_file")
    path = tmp_path / "cluster-alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_cluster_config_passes_amtool(tmp_path: Path) -> None:
    amtool = tool("amtool")
    proc = run(amtool, "check-config", str(cluster_config(tmp_path, amtool)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert re.search(r"- 3 receivers", proc.stdout), proc.stdout
    assert re.search(r"- 6 inhibit rules", proc.stdout), proc.stdout


def receiver_of(amtool: str, config: Path, labels: dict[str, str]) -> str:
    pairs = [f"{k}={v}" for k, v in labels.items()]
    proc = run(amtool, "config", "routes", "test", f"--config.file={config}", *pairs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_every_alert_reaches_the_same_receiver_as_with_the_source(tmp_path: Path) -> None:
    amtool = tool("amtool")
    cluster = cluster_config(tmp_path, amtool)
    alerts = [
        rule
        for path in sorted((ROOT / "deploy" / "monitoring" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 6
    seen = set()
    for alert in alerts:
        labels = {"alertname": alert["alert"], "job": "comments-api", **alert["labels"]}
        expected = receiver_of(amtool, SOURCE, labels)
        assert receiver_of(amtool, cluster, labels) == expected, alert["alert"]
        seen.add(expected)
    assert seen == {"page", "ticket"}
    # The chart's dead man's switch and helper notify no one; its other alerts are tickets.
    assert receiver_of(amtool, cluster, {"alertname": "Watchdog", "severity": "none"}) == "null"
    assert (
        receiver_of(amtool, cluster, {"alertname": "InfoInhibitor", "severity": "none"}) == "null"
    )
    assert receiver_of(amtool, cluster, {"alertname": "KubePodCrashLooping"}) == "ticket"


def test_cluster_alertmanager_holds_back_as_the_source_does(tmp_path: Path) -> None:
    """The generated config, with the chart's own inhibit rules beside ours, in a real
    Alertmanager: one pod that cannot be scraped silences no page; the whole job unseen
    holds back the rest of its alerts (tests/test_monitoring.py runs the same on
    alertmanager.yml)."""
    tool("amtool")
    config = cluster_config(tmp_path, tool("amtool"))
    check_one_instance_down_silences_no_page(config, tmp_path / "one-pod")
    check_service_down_holds_back_the_rest(config, tmp_path / "service")


# --- provision-k8s.sh, against stand-ins for the cluster's tools ---------------------------


class Cluster:
    """provision-k8s.sh run against kubectl/helm/minikube/openssl stand-ins."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "cluster"
        self.store.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "kubectl").write_text(KUBECTL_SECRETS)
        (bin_dir / "helm").write_text('#!/bin/sh\necho "helm $*" >>"$FAKE_STORE/calls.log"\n')
        (bin_dir / "minikube").write_text("#!/bin/sh\nexit 0\n")  # status: already running
        (bin_dir / "openssl").write_text("#!/bin/sh\necho 0123456789abcdef\n")
        for stand_in in bin_dir.iterdir():
            stand_in.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ALERT_")},
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_STORE": str(self.store),
        }

    def provision(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run("bash", str(SCRIPT), *args, env={**self.env, **env})

    def calls(self) -> str:
        log = self.store / "calls.log"
        return log.read_text() if log.exists() else ""

    def secret(self, name: str) -> dict[str, str]:
        data = json.loads((self.store / f"{name}.json").read_text())
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def kps_install(self) -> str:
        (line,) = [c for c in self.calls().splitlines() if "install kube-prometheus-stack " in c]
        return line


def routed(helm_line: str) -> bool:
    return f"--values {VALUES.relative_to(ROOT)}" in helm_line


def test_provision_creates_the_receivers_secret_once(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    secret = script_setting("RECEIVERS_SECRET")
    proc = cluster.provision(ALERT_PAGE_URL=PAGE_URL, ALERT_TICKET_URL=TICKET_URL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # The keys the generated config reads its URLs from.
    keys = {
        hook["url_file"].rsplit("/", 1)[1]: receiver["name"]
        for receiver in values()["alertmanager"]["config"]["receivers"]
        for hook in receiver.get("webhook_configs", [])
    }
    assert cluster.secret(secret) == {
        key: {"page": PAGE_URL, "ticket": TICKET_URL}[name] for key, name in keys.items()
    }
    assert routed(cluster.kps_install())
    assert f"-n monitoring create secret generic {secret} " in cluster.calls()
    # The URLs carry tokens: never on a command line, nor printed.
    for url in (PAGE_URL, TICKET_URL):
        assert url not in cluster.calls()
        assert url not in proc.stdout + proc.stderr
    assert "alerts reach no one" not in (proc.stdout + proc.stderr).lower()

    # Re-run with other URLs: the Secret stays as it is, the routing stays on.
    created = cluster.calls().count(f"create secret generic {secret}")
    (cluster.store / "calls.log").unlink()
    proc = cluster.provision(
        ALERT_PAGE_URL="https://other.example.test/p",
        ALERT_TICKET_URL="https://other.example.test/t",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "create secret generic " + secret not in cluster.calls()
    assert created == 1
    assert cluster.secret(secret)["page-url"] == PAGE_URL
    assert "kept" in proc.stdout
    assert routed(cluster.kps_install())

    # And without the variables, the existing Secret keeps the routing (a run without them
    # must not silently put alerts back on the null receiver).
    (cluster.store / "calls.log").unlink()
    proc = cluster.provision()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert routed(cluster.kps_install())


def test_provision_without_receivers_keeps_the_null_routing_and_says_so(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    proc = cluster.provision()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not routed(cluster.kps_install())
    assert "create secret generic " + script_setting("RECEIVERS_SECRET") not in cluster.calls()
    assert "WARNING: no alert receivers" in proc.stderr
    assert "Alerts reach no one" in proc.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALERT_PAGE_URL": PAGE_URL}, "ALERT_TICKET_URL is empty"),
        ({"ALERT_TICKET_URL": TICKET_URL}, "ALERT_PAGE_URL is empty"),
        ({"ALERT_PAGE_URL": "pager.example.test", "ALERT_TICKET_URL": TICKET_URL}, "not an http"),
    ],
)
def test_provision_refuses_half_a_receiver_set_before_any_change(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    cluster = Cluster(tmp_path)
    proc = cluster.provision(**env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert cluster.calls() == ""


def test_provision_refuses_a_receivers_secret_without_its_keys(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    secret = script_setting("RECEIVERS_SECRET")
    page = base64.b64encode(PAGE_URL.encode()).decode()
    (cluster.store / f"{secret}.json").write_text(json.dumps({"page-url": page}))
    proc = cluster.provision()
    assert proc.returncode == 1
    assert "has no key ticket-url" in proc.stderr
    assert "install kube-prometheus-stack " not in cluster.calls()


def test_provision_dry_run_prints_the_secret_without_its_values(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    proc = cluster.provision("--dry-run", ALERT_PAGE_URL=PAGE_URL, ALERT_TICKET_URL=TICKET_URL)
    assert proc.returncode == 0, proc.stderr
    assert cluster.calls() == ""
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    (create,) = [c for c in commands if "create secret generic alertmanager-receivers" in c]
    assert create.startswith("kubectl --context comments -n monitoring ")
    assert "<ALERT_PAGE_URL>" in create
    assert "<ALERT_TICKET_URL>" in create
    (install,) = [c for c in commands if "install kube-prometheus-stack " in c]
    assert routed(install)
    assert PAGE_URL not in proc.stdout + proc.stderr


def test_provision_never_puts_the_grafana_password_on_a_command_line(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    proc = cluster.provision()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    password = cluster.secret("grafana-admin")["admin-password"]
    assert password == "0123456789abcdef"  # what the openssl stand-in printed, newline cut
    assert password not in cluster.calls()
    assert password not in proc.stdout + proc.stderr
