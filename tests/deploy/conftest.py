"""Fixtures for the offline Kubernetes and workflow checks (run by `make k8s-check`)."""

from __future__ import annotations

import re
import shlex
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
# unhealthyPodEvictionPolicy are all on by default from 1.30); the EKS default in
# deploy/terraform/modules/cluster, and what provision-k8s.sh starts on minikube.
KUBERNETES_VERSION = "1.35.0"


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


Secrets = dict[str, dict[str, str]]  # Secret name -> key -> value


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (its last FROM): what every container of
    the image starts with. Kubernetes only adds to it or overrides a name the pod sets, so a
    pod's settings are these plus the pod's own, never the pod's alone. (The distroless
    base adds SSL_CERT_FILE and LANG, which name no setting of the app.)"""
    text = (ROOT / "Dockerfile").read_text()
    runtime = re.split(r"^FROM\s", text, flags=re.M)[-1]
    env: dict[str, str] = {}
    for line in re.sub(r"\\\n", " ", runtime).splitlines():
        if match := re.match(r"\s*ENV\s+(.*)", line):
            for token in shlex.split(match.group(1)):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def write_secret_volume(volume: dict[str, Any], local: Path, secrets: Secrets) -> None:
    """The files Kubernetes puts in a Secret volume (every key, or only its `items`), or in
    a projected volume of Secrets."""
    sources = [
        {"name": s["secret"]["name"], "items": s["secret"].get("items")}
        for s in volume.get("projected", {}).get("sources", [])
        if "secret" in s
    ]
    if "secret" in volume:
        sources.append(
            {"name": volume["secret"]["secretName"], "items": volume["secret"].get("items")}
        )
    for source in sources:
        data = secrets[source["name"]]
        for item in source["items"] or [{"key": key, "path": key} for key in data]:
            (local / item["path"]).write_text(data[item["key"]])


def pod_env(
    docs: list[dict[str, Any]],
    kind: str,
    name: str,
    root: Path,
    secrets: Secrets,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as Kubernetes would assemble it on top of `base` (the
    image's ENV), with every mounted path mapped under root (Secret volumes written)."""
    workload = one(docs, kind, name)
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = dict(base or {})
    own: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (cm,) = [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        own.update(cm["data"])
    own.update({e["name"]: e["value"] for e in container.get("env", [])})
    env.update(own)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    unmapped = {var for var, value in own.items() if value.startswith("/")}
    for mount_path, volume in mounts.items():
        local = root / mount_path.strip("/").replace("/", "_")
        local.mkdir(parents=True, exist_ok=True)
        if "secret" in volumes[volume] or "projected" in volumes[volume]:
            write_secret_volume(volumes[volume], local, secrets)
        for var, value in list(own.items()):
            if value == mount_path or value.startswith(mount_path + "/"):
                env[var] = str(local) + value[len(mount_path) :]
                unmapped.discard(var)
    # Every path setting must be on a mounted volume (the root filesystem is read-only).
    assert not unmapped, f"not on a mounted volume: {sorted(unmapped)}"
    return env


# PostgreSQL connections one app pod holds at most (WORKERS=2, THREADS=1, DB_POOL_SIZE=5):
# measured 5 under 64 concurrent connections of reads, creates and /readyz (wrk, 8-15 s);
# a sync worker runs one request at a time, so its pool never fills. test_pod_env checks
# it on every run; the database's max_connections is sized from it (test_k8s_rollout).
CONNECTIONS_PER_POD = 5
