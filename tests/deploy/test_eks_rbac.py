"""The production CI role may apply, on EKS, everything main.yml applies there.

The role's Kubernetes rights are its EKS access entry (deploy/terraform/modules/ci-identity):
AmazonEKSAdminPolicy associated with the app's namespace, a fixed rule set of the
built-in API groups, plus the Kubernetes RBAC of deploy/k8s/cluster-rbac bound to the
entry's group, for what that policy leaves out (custom resources, the Namespace object).
A kind added to the overlay that neither grants fails here, not as a Forbidden apply in
the middle of a production release.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import K8S, KUBERNETES_VERSION, ROOT, render
from .test_tools import checkov_passes, run, venv_tool, write_docs

pytestmark = pytest.mark.k8s

# What main.yml may apply to EKS (vars.K8S_OVERLAY): CloudNativePG in the cluster (the
# default) or RDS. The CI role must be able to apply either.
OVERLAYS = ("production", "production-aws")
CLUSTER_RBAC = K8S / "cluster-rbac"
CI_IDENTITY = ROOT / "deploy" / "terraform" / "modules" / "ci-identity"
TF_PROD = ROOT / "deploy" / "terraform" / "environments" / "production"
MAIN_YML = ROOT / ".github" / "workflows" / "main.yml"
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str] = frozenset()  # resourceNames; empty: any

    def grants(self, group: str, resource: str, verb: str, name: str) -> bool:
        return (
            (group in self.groups or "*" in self.groups)
            and (resource in self.resources or "*" in self.resources)
            and (verb in self.verbs or "*" in self.verbs)
            and (not self.names or name in self.names)
        )


def rule(group: str, resources: str, verbs: str) -> Rule:
    """One row of an access policy's table: one API group ("" the core one)."""
    return Rule(frozenset({group}), frozenset(resources.split()), frozenset(verbs.split()))


WRITE = "create delete deletecollection patch update"
READ = "get list watch"
# AmazonEKSAdminPolicy, one Rule a row of the table at
# https://docs.aws.amazon.com/eks/latest/userguide/access-policy-permissions.html
# (section "AmazonEKSAdminPolicy"; its source is awsdocs/amazon-eks-user-guide,
# latest/ug/manage-access/k8s-access/access-policy-reference.adoc), read 2026-12-04.
# AWS owns it and nobody can change it: re-read the page before trusting a new kind to it.
ADMIN_POLICY: tuple[Rule, ...] = (
    rule(
        "apps",
        "daemonsets deployments deployments/rollback deployments/scale replicasets"
        " replicasets/scale statefulsets statefulsets/scale",
        WRITE,
    ),
    rule(
        "apps",
        "controllerrevisions daemonsets daemonsets/status deployments deployments/scale"
        " deployments/status replicasets replicasets/scale replicasets/status statefulsets"
        " statefulsets/scale statefulsets/status",
        READ,
    ),
    rule("authorization.k8s.io", "localsubjectaccessreviews", "create"),
    rule("autoscaling", "horizontalpodautoscalers", WRITE),
    rule("autoscaling", "horizontalpodautoscalers horizontalpodautoscalers/status", READ),
    rule("batch", "cronjobs jobs", WRITE),
    rule("batch", "cronjobs cronjobs/status jobs jobs/status", READ),
    rule("discovery.k8s.io", "endpointslices", READ),
    rule(
        "extensions",
        "daemonsets deployments deployments/rollback deployments/scale ingresses"
        " networkpolicies replicasets replicasets/scale replicationcontrollers/scale",
        WRITE,
    ),
    rule(
        "extensions",
        "daemonsets daemonsets/status deployments deployments/scale deployments/status"
        " ingresses ingresses/status networkpolicies replicasets replicasets/scale"
        " replicasets/status replicationcontrollers/scale",
        READ,
    ),
    rule("networking.k8s.io", "ingresses ingresses/status networkpolicies", READ),
    rule("networking.k8s.io", "ingresses networkpolicies", WRITE),
    rule("policy", "poddisruptionbudgets", WRITE),
    rule("policy", "poddisruptionbudgets poddisruptionbudgets/status", READ),
    rule(RBAC_GROUP, "rolebindings roles", f"{WRITE} {READ}"),
    rule(
        "",
        "configmaps endpoints persistentvolumeclaims persistentvolumeclaims/status pods"
        " replicationcontrollers replicationcontrollers/scale serviceaccounts services"
        " services/status",
        READ,
    ),
    rule("", "pods/attach pods/exec pods/portforward pods/proxy secrets services/proxy", READ),
    rule(
        "",
        "configmaps events persistentvolumeclaims replicationcontrollers"
        " replicationcontrollers/scale secrets serviceaccounts services services/proxy",
        WRITE,
    ),
    rule("", "pods pods/attach pods/exec pods/portforward pods/proxy", WRITE),
    rule("", "serviceaccounts", "impersonate"),
    rule(
        "",
        "bindings events limitranges namespaces/status pods/log pods/status"
        " replicationcontrollers/status resourcequotas resourcequotas/status",
        READ,
    ),
    rule("", "namespaces", READ),
)

# Client-side `kubectl apply` reads each object, then creates or patches it. The
# Namespace exists before the first release (the cluster admin creates it with the
# RBAC, whose RoleBinding lives in it): the pipeline only reads and patches it.
APPLY_VERBS = ("get", "create", "patch")
EXISTING_NAMESPACE_VERBS = ("get", "patch")

# main.yml's other kubectl calls (apart from `apply` and the local `kustomize`), as
# "subcommand kind": the (group, resource) -> verbs each needs in the namespace.
KUBECTL_CALLS: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    "get deployment": {("apps", "deployments"): ("get",)},
    # --wait=true watches the Job until it is gone.
    "delete job": {("batch", "jobs"): ("delete", "get", "list", "watch")},
    "wait job": {("batch", "jobs"): ("get", "list", "watch")},
    "rollout status deployment": {("apps", "deployments"): ("get", "list", "watch")},
    # undo reads the Deployment's ReplicaSets (its revisions) and patches the template.
    "rollout undo deployment": {
        ("apps", "deployments"): ("get", "patch"),
        ("apps", "replicasets"): ("get", "list", "watch"),
    },
    # The ConfigMaps the manifest mounts and does not make (rds-ca-bundle), checked first.
    "get configmap": {("", "configmaps"): ("get",)},
    # What a release that did not complete prints (the Job, its pods, warnings, its log).
    "get job": {("batch", "jobs"): ("get",)},
    "get pods": {("", "pods"): ("list",)},
    "get events": {("", "events"): ("list",)},
    # logs job/NAME: the Job's selector, its pods, one pod's log.
    "logs job": {("batch", "jobs"): ("get",), ("", "pods"): ("list",), ("", "pods/log"): ("get",)},
}


@dataclass(frozen=True)
class Need:
    group: str
    resource: str
    namespace: str | None  # None: a cluster-scoped object
    name: str
    verb: str

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "cluster-scoped"
        return f"{self.verb} {self.resource}.{self.group or 'core'} {self.name} ({where})"


@dataclass(frozen=True)
class Grant:
    rule: Rule
    namespace: str | None  # None: cluster-wide (a ClusterRoleBinding)
    source: str

    def covers(self, need: Need) -> bool:
        # A namespace-scoped grant (access-policy scope or RoleBinding) says nothing about
        # cluster-scoped objects such as the Namespace itself.
        if self.namespace is not None and need.namespace != self.namespace:
            return False
        return self.rule.grants(need.group, need.resource, need.verb, need.name)


def resource_of(kind: str) -> str:
    """The plural the API serves a kind under, by kubectl's own guess for kinds it has not
    discovered (meta.UnsafeGuessKindToResource); every kind of the overlay, the CRDs'
    included, follows it."""
    lower = kind.lower()
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + "s"


def group_of(doc: dict[str, Any]) -> str:
    api_version: str = doc["apiVersion"]
    return api_version.rpartition("/")[0]


def apply_needs(docs: Iterable[dict[str, Any]]) -> list[Need]:
    """What `kubectl apply` of these objects asks the API server for. kustomize puts a
    namespace on every namespaced object of an overlay with `namespace:`, and none on a
    cluster-scoped one."""
    needs = []
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        verbs = EXISTING_NAMESPACE_VERBS if doc["kind"] == "Namespace" else APPLY_VERBS
        needs += [
            Need(group_of(doc), resource_of(doc["kind"]), namespace, doc["metadata"]["name"], v)
            for v in verbs
        ]
    return needs


def terraform_group() -> str:
    """The ci-identity module's kubernetes_group default: the group its access entry puts
    the CI role in (the environments do not override it)."""
    text = (CI_IDENTITY / "variables.tf").read_text()
    block = re.search(r'^variable "kubernetes_group" \{\n(.*?)^\}', text, re.M | re.S)
    assert block, "modules/ci-identity has no kubernetes_group variable"
    default = re.search(r'^  default\s*=\s*"([^"]+)"', block.group(1), re.M)
    assert default, "kubernetes_group has no default"
    callers = [
        p for p in (ROOT / "deploy" / "terraform").rglob("*.tf") if "ci-identity" not in p.parts
    ]
    # An argument in a module call; outputs and descriptions may name it.
    sets = re.compile(r"^\s*kubernetes_group\s*=", re.M)
    assert not [p for p in callers if sets.search(p.read_text())], (
        "a caller sets kubernetes_group: read it from there"
    )
    return default.group(1)


def app_namespace() -> str:
    """The namespace production's access entry is scoped to (modules/platform passes
    app_namespace to ci-identity as deploy_cluster.namespaces; the plan test checks it)."""
    found = re.findall(
        r'^\s*app_namespace\s*=\s*"([^"]+)"', (TF_PROD / "main.tf").read_text(), re.M
    )
    assert len(found) == 1, found
    return found[0]


def rbac_rules(doc: dict[str, Any]) -> list[Rule]:
    return [
        Rule(
            frozenset(r.get("apiGroups", [])),
            frozenset(r.get("resources", [])),
            frozenset(r["verbs"]),
            frozenset(r.get("resourceNames", [])),
        )
        for r in doc.get("rules", [])
    ]


def rbac_grants(docs: list[dict[str, Any]], group: str) -> list[Grant]:
    """What the bindings among docs give the Kubernetes group."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    grants = []
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects", [])
        if not any(s["kind"] == "Group" and s["name"] == group for s in subjects):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        key_ns = namespace if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], key_ns, ref["name"]))
        assert role, f"{binding['kind']}/{binding['metadata']['name']}: no {ref['kind']} {ref}"
        source = f"{binding['kind']}/{binding['metadata']['name']} -> {ref['kind']}/{ref['name']}"
        grants += [Grant(r, namespace, source) for r in rbac_rules(role)]
    return grants


def policy_grants(namespace: str) -> list[Grant]:
    return [Grant(r, namespace, "AmazonEKSAdminPolicy") for r in ADMIN_POLICY]


def uncovered(needs: Iterable[Need], grants: list[Grant]) -> list[Need]:
    return [n for n in needs if not any(g.covers(n) for g in grants)]


@pytest.fixture(scope="module")
def overlay(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every object of the overlays main.yml may apply, once each."""
    objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
    for name in OVERLAYS:
        for doc in rendered[name]:
            meta = doc["metadata"]
            objects[(doc["apiVersion"], doc["kind"], meta.get("namespace"), meta["name"])] = doc
    return list(objects.values())


def test_the_overlays_checked_are_those_main_yml_accepts() -> None:
    accepted = re.findall(r"^\s*([a-z|\- ]+)\) ;;$", MAIN_YML.read_text(), re.MULTILINE)
    assert accepted, "main.yml's K8S_OVERLAY check not found"
    for line in accepted:
        assert {o.strip() for o in line.split("|")} == set(OVERLAYS), line


@pytest.fixture(scope="module")
def cluster_rbac() -> list[dict[str, Any]]:
    return render(CLUSTER_RBAC)


def release_kubectl_calls() -> list[str]:
    """Every kubectl command line of main.yml's job that deploys (the one whose env names
    the namespace), as written."""
    workflow = yaml.safe_load(MAIN_YML.read_text())
    (job,) = [j for j in workflow["jobs"].values() if "NS" in j.get("env", {})]
    assert job["env"]["NS"] == app_namespace()
    script = "\n".join(s.get("run", "") for s in job["steps"])
    script = script.replace("\\\n", " ")
    # `--local` runs offline (the manifest turned into JSON): nothing reaches the cluster.
    return [line for line in re.findall(r"\bkubectl\b.*", script) if "--local" not in line]


def call_key(line: str) -> str:
    """`kubectl -n "$NS" rollout status deployment/x --timeout=1s` -> "rollout status
    deployment"."""
    words = line.split()[1:]
    if words[:1] == ["-n"]:
        words = words[2:]
    verb = words.pop(0)
    if verb == "rollout":
        verb += " " + words.pop(0)
    if verb in ("apply", "kustomize"):
        return verb
    target = next(w for w in words if not w.startswith("-"))
    return f"{verb} {target.split('/')[0]}"


# --- the fault this guards against, and the checker able to see it ---------------------


def test_the_access_policy_alone_leaves_out_custom_resources_and_the_namespace(
    overlay: list[dict[str, Any]],
) -> None:
    """What the access entry gave before deploy/k8s/cluster-rbac: `kubectl apply` of the
    overlay was Forbidden for these (AmazonEKSAdminPolicy is built-in groups only, and a
    namespace-scoped association covers no cluster-scoped object)."""
    missing = uncovered(apply_needs(overlay), policy_grants(app_namespace()))
    assert {(n.group, n.resource, n.namespace is None) for n in missing} == {
        ("monitoring.coreos.com", "servicemonitors", False),
        ("monitoring.coreos.com", "prometheusrules", False),
        ("monitoring.coreos.com", "podmonitors", False),  # production: CloudNativePG's
        ("postgresql.cnpg.io", "clusters", False),
        ("postgresql.cnpg.io", "scheduledbackups", False),
        ("barmancloud.cnpg.io", "objectstores", False),
        ("external-secrets.io", "secretstores", False),  # production-aws: RDS
        ("external-secrets.io", "externalsecrets", False),
        ("", "namespaces", True),
    }


# --- the CI role's rights cover the release ---------------------------------------------


def test_every_object_main_yml_applies_is_granted_to_the_ci_role(
    overlay: list[dict[str, Any]], cluster_rbac: list[dict[str, Any]]
) -> None:
    namespace = app_namespace()
    needs = apply_needs(overlay)
    assert {n.namespace for n in needs} == {namespace, None}, "one namespace, the entry's"
    grants = policy_grants(namespace) + rbac_grants(cluster_rbac, terraform_group())
    missing = uncovered(needs, grants)
    assert not missing, "Forbidden on EKS:\n" + "\n".join(map(str, missing))


def test_the_release_jobs_other_kubectl_calls_are_granted() -> None:
    calls = {call_key(line) for line in release_kubectl_calls()}
    assert {"apply", "kustomize"} <= calls
    unknown = calls - set(KUBECTL_CALLS) - {"apply", "kustomize"}
    assert not unknown, f"main.yml calls kubectl in a way KUBECTL_CALLS does not list: {unknown}"
    namespace = app_namespace()
    needs = [
        Need(group, resource, namespace, "comments-api", verb)
        for call in calls - {"apply", "kustomize"}
        for (group, resource), verbs in KUBECTL_CALLS[call].items()
        for verb in verbs
    ]
    assert needs
    missing = uncovered(needs, policy_grants(namespace))
    assert not missing, "\n".join(map(str, missing))


# --- least privilege of the cluster RBAC ------------------------------------------------


def test_cluster_rbac_grants_only_what_the_policy_leaves_out(
    overlay: list[dict[str, Any]], cluster_rbac: list[dict[str, Any]]
) -> None:
    """Each rule of deploy/k8s/cluster-rbac, verb by verb and resource by resource, is
    needed by an object of the overlay that AmazonEKSAdminPolicy does not cover: no
    wildcard, no extra verb, no other namespace; the ClusterRole names its one namespace."""
    namespace = app_namespace()
    needed = uncovered(apply_needs(overlay), policy_grants(namespace))
    grants = rbac_grants(cluster_rbac, terraform_group())
    assert grants
    for grant in grants:
        r = grant.rule
        assert "*" not in r.groups | r.resources | r.verbs, grant
        assert grant.namespace in (namespace, None), grant
        if grant.namespace is None:
            assert r.names == {namespace}, grant
            assert r.resources == {"namespaces"}, grant
        for group in r.groups:
            for resource in r.resources:
                for verb in r.verbs:
                    assert any(
                        n.group == group
                        and n.resource == resource
                        and n.verb == verb
                        and grant.covers(n)
                        for n in needed
                    ), f"{grant.source}: {verb} {resource}.{group or 'core'} is needed by nothing"


def test_cluster_rbac_binds_the_terraform_group_only(cluster_rbac: list[dict[str, Any]]) -> None:
    group = terraform_group()
    bindings = [d for d in cluster_rbac if d["kind"].endswith("Binding")]
    assert {d["kind"] for d in bindings} == {"RoleBinding", "ClusterRoleBinding"}
    for binding in bindings:
        assert binding["subjects"] == [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}]
    roles = [d for d in cluster_rbac if d["kind"] in ("Role", "RoleBinding")]
    assert {d["metadata"]["namespace"] for d in roles} == {app_namespace()}
    assert {d["kind"] for d in cluster_rbac} == {
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }


# --- the manifests themselves -------------------------------------------------------------


def test_cluster_rbac_is_valid_kubernetes(
    cluster_rbac: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = write_docs(tmp_path / "cluster-rbac.yaml", cluster_rbac)
    run(
        venv_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)
    )
    checkov_passes("kubernetes", tmp_path)


def test_hand_over_docs_create_the_namespace_then_apply_the_rbac(
    overlay: list[dict[str, Any]],
) -> None:
    """The RoleBinding lives in the namespace, and the pipeline may not create it: the
    admin's commands create it first, from the file the overlay's Namespace comes from."""
    docs = (ROOT / "docs" / "terraform.md").read_text()
    namespace_file = "deploy/k8s/overlays/production/namespace.yaml"
    first = f"kubectl apply -f {namespace_file}"
    second = "kubectl apply -k deploy/k8s/cluster-rbac"
    assert first in docs
    assert second in docs
    assert docs.index(first) < docs.index(second)
    (created,) = list(yaml.safe_load_all((ROOT / namespace_file).read_text()))
    (applied,) = [d for d in overlay if d["kind"] == "Namespace"]
    assert created["metadata"]["name"] == applied["metadata"]["name"] == app_namespace()
