"""The rendered overlays' NetworkPolicies, evaluated as Kubernetes evaluates them, for the
connections the service needs (no CNI can run here).

A connection is allowed when the source pod may send it (no policy selecting the source
for Egress, or one of them allows it) and the destination pod may receive it (no policy
selecting it for Ingress, or one of them allows it): policies only add allowances, and a
pod selected by none is not isolated ("Network Policies", kubernetes.io). Pods outside the
overlay's namespace (ingress-nginx, Prometheus) are governed by no policy of ours.

The flow this was written for: cert-manager's ACME HTTP-01 solver pod, which cert-manager
runs in the Certificate's namespace, is reached by the ACME server and by cert-manager's
self-check through ingress-nginx. The namespace's default-deny dropped it: no certificate
was ever issued or renewed on any overlay with components/ingress-tls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import NAMESPACES, OVERLAYS, find, one

pytestmark = pytest.mark.k8s


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    # Container ports by name, for policies that name a port.
    ports: dict[str, int] = field(default_factory=dict)


# What ingress-nginx's chart runs (namespace ingress-nginx, as scripts/provision-k8s.sh
# installs it), and the pod cert-manager makes for an HTTP-01 challenge (its labels and
# its one container port, 8089, named http: cert-manager's pkg/issuer/acme/http/pod.go).
INGRESS_NAMESPACE_LABEL = "kubernetes.io/metadata.name"
CONTROLLER_LABELS = {
    "app.kubernetes.io/name": "ingress-nginx",
    "app.kubernetes.io/component": "controller",
}
SOLVER_PORT = 8089
SOLVER_LABELS = {
    "acme.cert-manager.io/http01-solver": "true",
    "acme.cert-manager.io/http-domain": "1234567890",
    "acme.cert-manager.io/http-token": "0987654321",
}


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions, all of them (an empty selector
    selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def namespace_labels(namespace: str) -> dict[str, str]:
    # The label every namespace gets from the API server since 1.22.
    return {INGRESS_NAMESPACE_LABEL: namespace}


def peer_matches(peer: dict[str, Any], policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic here, never an ipBlock's
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(pod.namespace)):
            return False
    elif pod.namespace != policy_ns:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], pod.labels)


def port_matches(rule: dict[str, Any], target: Pod, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        end = entry.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


def policy_types(policy: dict[str, Any]) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def direction_allows(
    policies: list[dict[str, Any]],
    direction: str,
    subject: Pod,
    peer: Pod,
    port_owner: Pod,
    port: int,
    protocol: str,
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in policy_types(p)
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                peer_matches(p, policy["metadata"]["namespace"], peer) for p in peers
            )
            if peer_ok and port_matches(rule, port_owner, port, protocol):
                return True
    return False


def allowed(
    policies: list[dict[str, Any]], source: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    return direction_allows(
        policies, "Egress", source, target, target, port, protocol
    ) and direction_allows(policies, "Ingress", target, source, target, port, protocol)


def issues_certificates(docs: list[dict[str, Any]]) -> bool:
    """The overlay's Ingress has TLS from cert-manager (components/ingress-tls)."""
    (ingress,) = find(docs, "Ingress")
    notes = ingress["metadata"].get("annotations", {})
    return bool(ingress["spec"].get("tls")) and "cert-manager.io/cluster-issuer" in notes


def app_pod(docs: list[dict[str, Any]], namespace: str) -> Pod:
    deploy = one(docs, "Deployment", "comments-api")
    template = deploy["spec"]["template"]
    ports = {
        p["name"]: p["containerPort"]
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }
    return Pod(namespace, template["metadata"]["labels"], ports)


TLS_OVERLAYS = [env for env in OVERLAYS if env != "local"]


def test_every_overlay_but_local_issues_certificates(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert [env for env in OVERLAYS if issues_certificates(rendered[env])] == TLS_OVERLAYS


@pytest.mark.parametrize("env", TLS_OVERLAYS)
def test_ingress_controller_reaches_the_acme_http01_solver(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    docs = rendered[env]
    policies = find(docs, "NetworkPolicy")
    namespace = NAMESPACES[env]
    controller = Pod("ingress-nginx", CONTROLLER_LABELS)
    solver = Pod(namespace, SOLVER_LABELS, {"http": SOLVER_PORT})
    assert allowed(policies, controller, solver, SOLVER_PORT), (
        f"{env}: ingress-nginx cannot reach cert-manager's HTTP-01 solver on {SOLVER_PORT}:"
        " the certificate is never issued or renewed"
    )
    # Only that: another port, another namespace, the namespace's own pods.
    assert not allowed(policies, controller, solver, 8000)
    assert not allowed(policies, controller, solver, SOLVER_PORT, "UDP")
    assert not allowed(policies, Pod("default", CONTROLLER_LABELS), solver, SOLVER_PORT)
    assert not allowed(policies, app_pod(docs, namespace), solver, SOLVER_PORT)


@pytest.mark.parametrize("env", OVERLAYS)
def test_the_evaluator_sees_the_flows_the_service_needs(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    """The evaluator against the flows the other policies are there for, so that a pass
    above means the policies, not an evaluator that allows everything."""
    docs = rendered[env]
    policies = find(docs, "NetworkPolicy")
    namespace = NAMESPACES[env]
    app = app_pod(docs, namespace)
    controller = Pod("ingress-nginx", CONTROLLER_LABELS)
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    redis = Pod(namespace, {"app.kubernetes.io/name": "comments-redis"})
    assert allowed(policies, controller, app, 8000)
    assert allowed(policies, prometheus, app, 8000)
    assert allowed(policies, app, redis, 6379)
    # Denied by default-deny-all: anything else in, any pod of the namespace out.
    assert not allowed(policies, Pod("default", {}), app, 8000)
    assert not allowed(policies, controller, app, 8081)
    assert not allowed(policies, app, Pod("default", {}), 443)
    assert not allowed(policies, controller, redis, 6379)


@pytest.mark.parametrize("env", OVERLAYS)
def test_only_the_api_pods_reach_redis(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    """The migration Job carries app.kubernetes.io/name=comments-api too (it needs the
    database), and a rule on that label alone let it reach Redis, whose password it is
    never given and whose counters it never uses."""
    docs = rendered[env]
    policies = find(docs, "NetworkPolicy")
    namespace = NAMESPACES[env]
    job = Pod(
        namespace,
        one(docs, "Job", "comments-api-migrate")["spec"]["template"]["metadata"]["labels"],
    )
    redis_labels = one(docs, "Deployment", "comments-redis")["spec"]["template"]["metadata"][
        "labels"
    ]
    redis = Pod(namespace, redis_labels)
    assert allowed(policies, app_pod(docs, namespace), redis, 6379)
    assert not allowed(policies, job, redis, 6379), f"{env}: the migration Job reaches Redis"
    # The Job still reaches the database it migrates.
    if find(docs, "StatefulSet", "comments-db"):
        db = one(docs, "StatefulSet", "comments-db")["spec"]["template"]["metadata"]["labels"]
        assert allowed(policies, job, Pod(namespace, db), 5432)
    if find(docs, "Cluster", "comments-db"):
        assert allowed(policies, job, Pod(namespace, {"cnpg.io/cluster": "comments-db"}), 5432)
