"""Fixtures for the offline Kubernetes and workflow checks (run by `make k8s-check`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support import missing

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# production-aws: production with PostgreSQL on RDS (components/database-rds).
OVERLAYS = ("local", "staging", "production", "production-aws")
NAMESPACES = {env: f"comments-{env.removesuffix('-aws')}" for env in OVERLAYS}
# The Kubernetes minor the manifests target (preStop sleep action, matchLabelKeys,
# unhealthyPodEvictionPolicy are all on by default from 1.30; minikube's default is newer).
KUBERNETES_VERSION = "1.33.0"


def tool(name: str, *fallbacks: str) -> str:
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    missing(name)
    raise AssertionError("unreachable")


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {env: render(K8S / "overlays" / env) for env in OVERLAYS}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


BUILTIN_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
}


# Custom resources every overlay may render (validated by validate/validate.mjs where a
# schema exists; CloudNativePG fields are asserted in the tests).
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "Cluster",
    "ScheduledBackup",
    "ObjectStore",
    "SecretStore",
    "ExternalSecret",
}


def secret_names(pod: dict[str, Any]) -> set[str]:
    """Secrets a pod mounts, as plain secret volumes or projected sources."""
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for v in pod.get("volumes", []):
        sources = v.get("projected", {}).get("sources", [])
        names |= {s["secret"]["name"] for s in sources if "secret" in s}
    return names


def is_builtin(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"] in BUILTIN_GROUPS


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload that defines pods itself."""
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
    ]
