"""The worker-saturation signal the production HPA scales on, evaluated by promtool.

prometheus-adapter serves comments_api_worker_saturation per pod from the metricsQuery in
components/hpa-worker-saturation/prometheus-adapter-values.yaml. The query is filled in as
the adapter does for a Pods metric (GroupBy `pod`, the namespace and pods as matchers) and
run by `promtool test rules` over series shaped like one pod's scrapes: the in-flight gauge
counts the scrape that reads it (docs/operations.md, "Metrics"), so an idle pod with 2
request slots reports 1 in flight. Before the fix that pod showed 0.5, and the HPA's target
of 0.7 was reached with 20 % of the slots busy, not 70 %.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import K8S, one, tool

pytestmark = pytest.mark.k8s

VALUES = K8S / "components" / "hpa-worker-saturation" / "prometheus-adapter-values.yaml"
SLOTS = 2  # WORKERS=2 x THREADS=1 (base/config.env)


def saturation_rule(metric: str) -> dict[str, Any]:
    values = yaml.safe_load(VALUES.read_text())
    (rule,) = [r for r in values["rules"]["custom"] if r["name"]["as"] == metric]
    return rule


def hpa_target(docs: list[dict[str, Any]]) -> tuple[str, float]:
    hpa = one(docs, "HorizontalPodAutoscaler", "comments-api")["spec"]
    (pods,) = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    value = str(pods["target"]["averageValue"])
    return pods["metric"]["name"], int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_hpa_saturation_counts_busy_slots_only(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    docs = rendered["production"]
    config = next(
        d["data"] for d in docs if d["metadata"]["name"].startswith("comments-api-config")
    )
    assert int(config["WORKERS"]) * int(config["THREADS"]) == SLOTS
    metric, target = hpa_target(docs)
    query = (
        saturation_rule(metric)["metricsQuery"]
        .replace("<<.GroupBy>>", "pod")
        .replace("<<.LabelMatchers>>", 'namespace="comments-production",pod=~"p-.*"')
    )
    # pod name -> requests in flight at each scrape, the scrape itself included.
    busy = {"p-idle": 1, "p-half": 1 + SLOTS / 2, "p-target": 1 + SLOTS * target, "p-full": 3}
    series = []
    for pod, in_flight in busy.items():
        labels = f'namespace="comments-production",pod="{pod}",job="comments-api"'
        series += [
            {
                "series": f"comments_api_http_requests_in_flight{{{labels}}}",
                "values": f"{in_flight}+0x12",
            },
            {"series": f"comments_api_worker_slots{{{labels}}}", "values": f"{SLOTS}+0x12"},
        ]
    expected = {"p-idle": 0.0, "p-half": 0.5, "p-target": target, "p-full": 1.0}
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": f'{{pod="{pod}"}}', "value": value}
                            for pod, value in expected.items()
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "saturation_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
